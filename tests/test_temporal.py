"""Temporal encoder: alignment known answer, second-order and bidirectional propagation, shapes,
gradients, SPyNet freezing, sliding windows, configurations."""
from pathlib import Path

import pytest
import torch

from tvface.config import PAPER_TEMPORAL, ConfigError, TemporalConfig, load_config
from tvface.models.alignment import flow_guided_deform_align
from tvface.models.flow import SequenceFlowEstimator, SequenceFlows
from tvface.models.spynet import SPyNet, set_trainable
from tvface.models.temporal import (
    GridPropagation,
    TemporalEncoder,
    TemporalEncoders,
    branch_names,
    encode_long_sequence,
    most_central_windows,
    window_starts,
)
from tvface.ops.flow_warp import flow_warp

CONFIG_DIR = Path(__file__).resolve().parent.parent / "data" / "configs"
TINY = TemporalConfig(channels=16, deform_groups=4, offset_channels=8, n_blocks=1, head_blocks=1,
                      fusion_blocks=1, down2_blocks=0, propagation_scale=2, head_stride=1, flow_size=16,
                      fc_dim=32)


def _flows(b, t, h, w, value=(0.0, 0.0)):
    f = torch.zeros(b, max(t - 1, 0), 2, h, w)
    f[:, :, 0], f[:, :, 1] = value
    return SequenceFlows(f.clone(), -f.clone())


def _rand_flows(b, t, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return SequenceFlows(torch.randn(b, t - 1, 2, h, w, generator=g),
                         torch.randn(b, t - 1, 2, h, w, generator=g))


def test_alignment_with_zero_residual_and_unit_mask_is_flow_warp():
    c, g = 8, 4
    gen = torch.Generator().manual_seed(0)
    feat_n1, feat_n2 = torch.randn(2, c, 10, 12, generator=gen), torch.randn(2, c, 10, 12, generator=gen)
    flow = torch.zeros(2, 2, 10, 12)
    flow[:, 0], flow[:, 1] = 1.5, -0.75
    weight = torch.zeros(c, 2 * c, 3, 3)
    weight[torch.arange(c), torch.arange(c), 1, 1] = 1.0  # identity on n1's channels, centre tap
    out = flow_guided_deform_align(feat_n1, feat_n2, flow, torch.zeros_like(flow),
                                   torch.zeros(2, 2 * g * 9, 10, 12), torch.ones(2, g * 9, 10, 12),
                                   weight, None, g)
    assert torch.allclose(out, flow_warp(feat_n1, flow), atol=1e-5)


def _prop_outputs(prop, feats, flows):
    with torch.no_grad():
        return prop([f.clone() for f in feats], flows)


def test_second_order_is_real():
    """With the i-1 input of the alignment zeroed, frame 2 still depends on frame 0 (via i-2)."""
    torch.manual_seed(0)
    prop = GridPropagation(TINY).eval()
    align = prop.align["forward_1"]
    original = align.forward
    align.forward = lambda cur, n1, n2, f1, f2: original(cur, torch.zeros_like(n1), n2, f1, f2)
    feats = [torch.randn(1, 16, 8, 8) for _ in range(3)]
    flows = _flows(1, 3, 8, 8, (0.5, 0.25))
    a = _prop_outputs(prop, feats, flows)["forward_1"][2]
    feats[0] = feats[0] + 1.0
    b = _prop_outputs(prop, feats, flows)["forward_1"][2]
    assert (a - b).abs().max() > 1e-4


def test_both_directions_propagate():
    torch.manual_seed(0)
    prop = GridPropagation(TINY).eval()
    feats = [torch.randn(1, 16, 8, 8) for _ in range(5)]
    flows = _rand_flows(1, 5, 8, 8)
    a = _prop_outputs(prop, feats, flows)
    feats[2] = feats[2] + 1.0
    b = _prop_outputs(prop, feats, flows)
    assert (a["forward_1"][3] - b["forward_1"][3]).abs().max() > 1e-4  # reaches i+1
    assert (a["backward_1"][1] - b["backward_1"][1]).abs().max() > 1e-4  # reaches i-1
    assert torch.equal(a["backward_1"][3], b["backward_1"][3])  # backward_1 frame 3 sees only 3, 4
    assert branch_names(2) == ["backward_1", "forward_1", "backward_2", "forward_2"]


def test_shapes_for_t_1_to_8_and_code_blocks():
    torch.manual_seed(0)
    blocks = {"shape": 100, "tex": 50, "exp": 50, "pose": 6, "cam": 3, "light": 27}
    enc = TemporalEncoder(TINY, blocks).eval()
    with torch.no_grad():
        for t in range(1, 9):
            out = enc(torch.rand(1, t, 3, 16, 16), _flows(1, t, 8, 8))
            assert {k: tuple(v.shape) for k, v in out.items()} == {k: (1, t, n) for k, n in blocks.items()}


def test_encoders_pair_shared_and_separate():
    torch.manual_seed(0)
    frames = torch.rand(2, 3, 3, 32, 32)
    for shared in (True, False):
        cfg = TemporalConfig(**{**TINY.__dict__, "shared_trunk": shared})
        enc = TemporalEncoders(cfg, 236).eval()
        with torch.no_grad():
            codes = enc(frames)  # DIS flows computed inside
        assert codes.coarse.shape == (2, 3, 236) and codes.detail.shape == (2, 3, 128)
        assert (enc.trunk_d is None) == shared


def test_gradients_reach_head_propagation_offsets_and_spynet_only_when_unfrozen():
    torch.manual_seed(0)
    spynet = SPyNet(frozen=True)
    enc = TemporalEncoder(TINY, 10, SequenceFlowEstimator("spynet", 16, spynet))
    frames = torch.rand(1, 3, 3, 16, 16)
    enc(frames).square().sum().backward()
    trunk = enc.trunk
    for name, p in [("head", trunk.head[0].weight),
                    ("propagation refine", trunk.rnn_propagation.refine["forward_1"].main[0].weight),
                    ("offset branch", trunk.rnn_propagation.align["backward_1"].conv_offset[-1].weight),
                    ("dcn", trunk.rnn_propagation.align["forward_2"].weight),
                    ("fusion", trunk.rnn_fusion.main[0].weight)]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in spynet.parameters())
    set_trainable(spynet, True)
    enc.zero_grad()
    enc(frames).square().sum().backward()
    assert all(p.grad is not None for p in spynet.parameters())
    assert sum(p.grad.abs().sum() for p in spynet.parameters()) > 0


def test_sliding_windows_23_frames():
    n, window, stride = 23, 5, 3
    starts = window_starts(n, window, stride)
    assert starts[0] == 0 and starts[-1] == n - window
    picks = most_central_windows(n, window, stride)
    for f, (w, pos) in enumerate(picks):
        assert starts[w] + pos == f
        best = min(abs(f - s - 2) for s in starts if s <= f < s + window)
        assert abs(pos - 2) == best
    frames = torch.arange(n, dtype=torch.float32).view(1, n, 1, 1, 1).expand(1, n, 3, 4, 4)
    seen = []

    def encode(fr):  # code = (frame id, window start)
        seen.append(int(fr[0, 0, 0, 0, 0]))
        return torch.stack([fr[:, :, 0, 0, 0], fr[:, :1, 0, 0, 0].expand(-1, fr.shape[1])], -1)

    codes = encode_long_sequence(encode, frames, window, stride)
    assert codes.shape == (1, n, 2)
    assert torch.equal(codes[0, :, 0], torch.arange(n, dtype=torch.float32))
    assert [int(codes[0, f, 1]) for f in range(n)] == [starts[w] for w, _ in picks]
    assert seen == starts
    short = encode_long_sequence(encode, frames[:, :3], window, stride)  # shorter than a window
    assert short.shape == (1, 3, 2)


@pytest.mark.parametrize("shared", [True, False])
def test_encode_windows_equals_sliding_windows_of_forward_and_runs_each_frame_once(shared):
    """encode_windows == encode_long_sequence over forward (codes from the most central window), for
    sequences longer than, equal to and shorter than a window, windows batched or one by one; g_i is
    computed once per frame."""
    from dataclasses import replace

    cfg = replace(TINY, shared_trunk=shared, dense_refinement=True)
    torch.manual_seed(0)
    enc = TemporalEncoders(cfg, {"a": 5, "b": 3}, detail_size=4).eval()
    seen: list[int] = []  # frames each call of a trunk's per-frame features saw
    for n in (23, 5, 3, 1):
        frames = torch.rand(2, n, 3, 32, 32)
        flows = _rand_flows(2, n, 32, 32, seed=n)
        for trunk in [enc.trunk_c] + ([] if shared else [enc.trunk_d]):
            inner = trunk.features
            trunk.features = lambda x, inner=inner: (seen.append(x.shape[1]), inner(x))[1]

        def forward(window, window_flows):
            codes = enc(window, window_flows)
            return torch.cat([codes.coarse["a"], codes.coarse["b"], codes.detail], -1)

        with torch.no_grad():
            ref = encode_long_sequence(forward, frames, 5, 3, flows)
            seen.clear()
            got = enc.encode_windows(frames, 5, 3, flows)
            n_features = sum(seen)
            coarse_only = enc.encode_windows(frames, 5, 3, flows, with_detail=False)
            one_by_one = enc.encode_windows(frames, 5, 3, flows, windows_per_batch=1)
            in_twos = enc.encode_windows(frames, 5, 3, flows, windows_per_batch=2)
        for trunk in (enc.trunk_c, enc.trunk_d):
            if trunk is not None:
                del trunk.features
        torch.testing.assert_close(torch.cat([got.coarse["a"], got.coarse["b"], got.detail], -1), ref)
        torch.testing.assert_close(coarse_only.coarse["a"], got.coarse["a"])
        for other in (one_by_one, in_twos):  # windows batched or not: the same codes
            torch.testing.assert_close(other.coarse["b"], got.coarse["b"])
            torch.testing.assert_close(other.detail, got.detail)
        assert coarse_only.detail is None
        assert n_features == n * (1 if shared else 2)
    def no_flows(_frames):
        raise AssertionError("a single frame has no pairs to estimate flows for")

    enc.flow_estimator.forward = no_flows  # one frame and no flows given: none estimated
    with torch.no_grad():
        one = enc.encode_windows(frames[:, :1], 5, 3)
    torch.testing.assert_close(one.coarse["a"], got.coarse["a"])  # the last n above was 1: the same frame


def test_head_stride_keeps_the_propagation_size_and_is_checked():
    from dataclasses import replace

    frames = torch.rand(1, 2, 3, 32, 32)
    sizes = {}
    for stride in (1, 2):
        trunk = TemporalEncoder(replace(TINY, propagation_scale=4, head_stride=stride), 3).trunk
        assert trunk.head[0].stride == (stride, stride)
        sizes[stride] = trunk.features(frames).shape
    assert sizes[1] == sizes[2] == (1, 2, 16, 8, 8)
    with pytest.raises(ConfigError, match="head_stride"):
        TemporalConfig(propagation_scale=2, head_stride=2)


def test_paper_config_is_exact_and_yaml_configs_load():
    with pytest.raises(ConfigError, match="paper"):
        TemporalConfig(variant="paper").check_paper()
    paper = load_config(CONFIG_DIR / "temporal-paper.yaml").temporal
    assert all(getattr(paper, k) == v for k, v in PAPER_TEMPORAL.items())
    eff = load_config(CONFIG_DIR / "temporal-efficient.yaml").temporal
    assert eff.variant == "efficient" and eff.propagation_scale == 4 and eff.shared_trunk


def test_branches_align_with_the_flows_of_their_direction():
    """forward_j at frame i gets flow i->i-1 and compose(i->i-1, i-1->i-2); backward_j gets i->i+1 ..."""
    from tvface.models.flow import SequenceFlows
    from tvface.ops.flow_warp import compose_flows

    t, h = 5, 6
    prop = GridPropagation(TINY).eval()
    to_prev = torch.randn(1, t - 1, 2, h, h)  # to_prev[:, i-1] = flow i -> i-1
    to_next = torch.randn(1, t - 1, 2, h, h)  # to_next[:, i] = flow i -> i+1
    seen: dict[str, list] = {}
    for name, module in prop.align.items():
        def record(cur, f1, f2, flow1, flow2, name=name, inner=module.forward):
            seen.setdefault(name, []).append((flow1.clone(), flow2.clone()))
            return inner(cur, f1, f2, flow1, flow2)
        module.forward = record
    with torch.no_grad():
        prop([torch.randn(1, 16, h, h) for _ in range(t)], SequenceFlows(to_prev, to_next))
    # forward branches visit i = 1..T-1 in order; backward branches i = T-2..0.
    for n, i in enumerate(range(1, t)):
        flow1, flow2 = seen["forward_1"][n]
        torch.testing.assert_close(flow1, to_prev[:, i - 1])
        if i >= 2:
            torch.testing.assert_close(flow2, compose_flows(to_prev[:, i - 1], to_prev[:, i - 2]))
    for n, i in enumerate(range(t - 2, -1, -1)):
        flow1, flow2 = seen["backward_1"][n]
        torch.testing.assert_close(flow1, to_next[:, i])
        if i <= t - 3:
            torch.testing.assert_close(flow2, compose_flows(to_next[:, i], to_next[:, i + 1]))


def test_window_stride_must_cover_every_frame_and_dict_codes_are_supported():
    from tvface.models.temporal import encode_long_sequence, window_starts

    with pytest.raises(ValueError, match="stride"):
        window_starts(23, 5, 7)
    frames = torch.arange(23, dtype=torch.float32).view(1, 23, 1, 1, 1).expand(1, 23, 3, 2, 2)

    def encode(x):  # code = the frame's own index, as two blocks
        idx = x[:, :, 0, 0, 0][..., None]
        return {"a": idx, "b": 2 * idx}

    codes = encode_long_sequence(encode, frames, 5, 3)
    torch.testing.assert_close(codes["a"][0, :, 0], torch.arange(23, dtype=torch.float32))
    torch.testing.assert_close(codes["b"], 2 * codes["a"])


def test_window_latency_counts_the_frames_until_the_answering_window_ends():
    from tvface.models.temporal import window_latency

    # T = 3, stride 2, 5 frames: windows [0, 2], [2, 4]; frames 0, 1, 2 from the first (2 is a tie,
    # the earlier window wins), 3, 4 from the second: waits 2, 1, 0, 1, 0
    assert window_latency(3, 2, n_frames=5) == pytest.approx(4 / 5)
    # stride 1: every frame central except at the ends, whose waits (4 + 3 and 1 + 0) balance: (T - 1) / 2
    assert window_latency(5, 1, n_frames=40) == pytest.approx(2.0)
    assert window_latency(5, 5, n_frames=40) == pytest.approx(2.0)  # positions 0..4 wait 4..0
    assert window_latency(5, 5, n_frames=3) == pytest.approx(1.0)  # one short window


def test_he_init_known_weight_scale_zero_biases_and_kept_zero_offsets():
    """init="he": every plain conv's weights have std gain/sqrt(fan_in) (LeakyReLU(0.1) gain, residual
    second convs x0.1), biases 0; the offset CNNs' last layers stay zero; "pytorch" keeps the default."""
    import math
    from dataclasses import replace

    from tvface.models.alignment import SecondOrderDeformableAlignment
    from tvface.models.temporal import ResidualBlockBN, TemporalTrunk

    torch.manual_seed(0)
    cfg = replace(TINY, channels=64, deform_groups=8, offset_channels=64)
    trunk = TemporalTrunk(cfg)
    lrelu_gain = math.sqrt(2.0 / (1 + 0.1 ** 2))
    checked = 0
    for m in trunk.modules():
        if isinstance(m, SecondOrderDeformableAlignment):
            assert m.conv_offset[-1].weight.abs().max() == 0 and m.conv_offset[-1].bias.abs().max() == 0
    res2 = {id(b.conv2) for b in trunk.modules() if isinstance(b, ResidualBlockBN)}
    res1 = {id(b.conv1) for b in trunk.modules() if isinstance(b, ResidualBlockBN)}
    offset_last = {id(a.conv_offset[-1]) for a in trunk.modules() if isinstance(a, SecondOrderDeformableAlignment)}
    for m in trunk.modules():
        if not isinstance(m, torch.nn.Conv2d) or id(m) in offset_last:
            continue
        fan_in = m.weight[0].numel()
        want = (math.sqrt(2.0) * (0.1 if id(m) in res2 else 1.0) if id(m) in res1 | res2 else lrelu_gain) / math.sqrt(fan_in)
        assert abs(m.weight.std().item() / want - 1) < 0.1, (m, m.weight.std().item(), want)
        if m.bias is not None:
            assert m.bias.abs().max() == 0
        checked += 1
    assert checked >= 8
    default = TemporalTrunk(replace(cfg, init="pytorch"))
    head = default.head[0]
    bound = 1 / math.sqrt(head.weight[0].numel())  # kaiming_uniform(a=sqrt(5)): U(-1/sqrt(fan_in), ..)
    assert head.weight.abs().max() <= bound and head.weight.std().item() < 0.7 * lrelu_gain / math.sqrt(27)



def test_init_setting_is_checked():
    with pytest.raises(ConfigError, match="temporal.init"):
        TemporalConfig(init="xavier")


def test_ablation_first_order_feeds_no_second_neighbour():
    """second_order=False: every alignment gets a zero i-2 feature and flow; True: from the 3rd frame
    of a branch on, a non-zero one."""
    from dataclasses import replace

    frames_feats = [torch.rand(1, TINY.channels, 6, 6) for _ in range(4)]
    for second in (True, False):
        torch.manual_seed(0)
        prop = GridPropagation(replace(TINY, second_order=second))
        seen: list[float] = []

        def recording(forward, seen=seen):
            def wrapped(cur, n1, n2, f1, f2):
                seen.append(float(n2.detach().abs().sum()))  # the i-2 neighbour's feature
                return forward(cur, n1, n2, f1, f2)
            return wrapped

        for mod in prop.align.values():
            mod.forward = recording(mod.forward)
        prop(frames_feats, _rand_flows(1, 4, 6, 6))
        assert len(seen) == 3 * len(prop.names)  # T - 1 alignments per branch
        if second:
            assert sum(v > 0 for v in seen) == 2 * len(prop.names)
        else:
            assert max(seen) == 0


def test_ablation_without_flow_guidance_ignores_the_flows():
    """flow_guided=False: the output does not depend on the flows (equal to zero flows); with
    guidance it does."""
    from dataclasses import replace

    feats = [torch.rand(1, TINY.channels, 6, 6) for _ in range(3)]
    for guided in (True, False):
        torch.manual_seed(0)
        prop = GridPropagation(replace(TINY, flow_guided=guided))
        with torch.no_grad():
            a = prop(feats, _rand_flows(1, 3, 6, 6, seed=1))["forward_1"][2]
            b = prop(feats, _flows(1, 3, 6, 6))["forward_1"][2]
        assert torch.equal(a, b) != guided
