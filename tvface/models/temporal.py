"""Temporal encoders E_Tc and E_Td (report Sec. 4.4, Table 1, eq. 6-8).

DECA's per-frame ResNet50 encoders are replaced by encoders that see the whole sequence::

    frames (B, T, 3, 224, 224)
      head      3x3 conv -> C at 224^2 (head_stride 2: at 112^2)         g^0
      down1     head_blocks residual blocks + stride-2 conv -> 112^2     g_i   (eq. 6)
                (propagation_scale 4: one more stride-2 conv -> 56^2, or the head's stride)
      rnn_propagation  2L branches backward_1, forward_1, ..., backward_L, forward_L (eq. 7):
                f^j_i = f̂^j_i + R^j(...), f̂^j_i = second-order flow-guided deformable alignment of
                f^j_{i∓1}, f^j_{i∓2} (:mod:`tvface.models.alignment`)
      rnn_fusion  R(c(g_i, f^1_i, ..., f^2L_i))                           (eq. 8)
      per code: down2 (down2_blocks + stride-2 conv -> 56^2), ResNet50 layer1..layer4, average
                pooling, two fully connected layers -> the code

Every residual block has BatchNorm between its two convolutions (Table 1's caption).

Refinement input (``dense_refinement``). Eq. 7 writes R(c(f^{j-1}_i, f̂^j_i)), the previous
branch's feature and the aligned one. The report's code and BasicVSR++ instead feed R the input
feature g_i plus the features of *all* earlier branches for frame i, plus f̂^j_i; the ``paper``
configuration uses that dense form (``dense_refinement: true``), the efficient one eq. 7's.

Missing neighbours at the sequence ends are zeros (the report's footnote): the first frame of each
branch has nothing to align (f̂ = 0), the second has only its first-order neighbour.

Shapes: ``frames`` (B, T, 3, H, W) RGB in [0, 1] -> codes (B, T, n) for any T >= 1 with the same
weights. Flows come from :class:`tvface.models.flow.SequenceFlowEstimator` (or precomputed, same
convention as :mod:`tvface.ops.flow_warp`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import torch
from torch import Tensor, nn

from tvface.config import TemporalConfig
from tvface.models.alignment import SecondOrderDeformableAlignment
from tvface.models.flow import SequenceFlowEstimator, SequenceFlows
from tvface.models.resnet_encoder import CodeMLP, resnet50_layers
from tvface.models.spynet import SPyNet
from tvface.ops.flow_warp import compose_flows

__all__ = ["ResidualBlockBN", "ResidualBlocksWithInputConv", "GridPropagation", "TemporalTrunk",
           "CodeHead", "TemporalEncoder", "init_he", "TemporalEncoders", "TemporalCodes", "branch_names",
           "build_flow_estimator", "window_starts", "most_central_windows", "window_latency", "encode_long_sequence"]

DETAIL_CODE_SIZE = 128  # DECA's detail code
RESNET_IN_CHANNELS = 64  # ResNet50 layer1 input


class ResidualBlockBN(nn.Module):
    """x + conv(ReLU(BN(conv(x)))) — Table 1: BatchNorm between the two 3x3 convolutions."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1)
        # BasicVSR++ scales the residual branch's initialisation down (default_init_weights 0.1).
        with torch.no_grad():
            self.conv2.weight.mul_(0.1)
            self.conv2.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(torch.relu(self.bn(self.conv1(x))))


class ResidualBlocksWithInputConv(nn.Module):
    """R: 3x3 conv (in -> C), LeakyReLU(0.1), ``n_blocks`` residual blocks (BasicVSR++)."""

    def __init__(self, in_channels: int, channels: int, n_blocks: int) -> None:
        super().__init__()
        self.main = nn.Sequential(nn.Conv2d(in_channels, channels, 3, 1, 1), nn.LeakyReLU(0.1, inplace=True),
                                  *[ResidualBlockBN(channels) for _ in range(n_blocks)])

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x)


def _down(channels: int, n_blocks: int, stride_conv: bool) -> nn.Sequential:
    """``n_blocks`` residual blocks then (optionally) a stride-2 3x3 conv (Table 1's down1/down2)."""
    layers: list[nn.Module] = [ResidualBlockBN(channels) for _ in range(n_blocks)]
    if stride_conv:
        layers += [nn.Conv2d(channels, channels, 3, 2, 1), nn.LeakyReLU(0.1, inplace=True)]
    return nn.Sequential(*layers)


def init_he(module: nn.Module) -> int:
    """He (fan-in) initialisation of the plain convolutions under ``module``, biases 0; returns their count.

    Every conv followed by LeakyReLU(0.1) gets the gain of that nonlinearity; a residual block's first
    conv (followed by a norm and ReLU) ReLU's gain, its second conv the same scaled by 0.1 (BasicVSR++'s
    ``default_init_weights(0.1)``: blocks start near identity). The deformable convolutions, their zero
    initialised last offset layers and any ResNet/MLP layers are not touched.

    Why: with PyTorch's default (``kaiming_uniform(a=sqrt(5))``, a variance gain of 1/3 per layer) the
    image's share of the trunk's output falls with every layer while the biases (±1/sqrt(fan_in)) do
    not, so at the ResNet layers the frames differ by little more than noise on constant bias maps,
    and learning from random weights starts late (the supervised probe of
    ``benchmarks/probe_encoder.py --arch temporal``).
    """
    blocks = [m for m in module.modules() if isinstance(m, ResidualBlockBN)]
    for m in blocks:
        nn.init.kaiming_normal_(m.conv1.weight, nonlinearity="relu")
        nn.init.kaiming_normal_(m.conv2.weight, nonlinearity="relu")
        with torch.no_grad():
            m.conv2.weight.mul_(0.1)
    # residual convs done above; the last layer of each offset CNN stays zero (zero residual offsets)
    skip = {id(c) for m in blocks for c in (m.conv1, m.conv2)}
    skip |= {id(m.conv_offset[-1]) for m in module.modules() if isinstance(m, SecondOrderDeformableAlignment)}
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    for m in convs:
        if id(m) not in skip:
            nn.init.kaiming_normal_(m.weight, a=0.1, nonlinearity="leaky_relu")
        if m.bias is not None:  # the offset heads' biases are zero already
            nn.init.zeros_(m.bias)
    return len(convs) - len(skip) + 2 * len(blocks)


def branch_names(n_levels: int) -> list[str]:
    """['backward_1', 'forward_1', ..., 'backward_L', 'forward_L']."""
    return [f"{d}_{level}" for level in range(1, n_levels + 1) for d in ("backward", "forward")]


class GridPropagation(nn.Module):
    """rnn_propagation: 2L bidirectional branches with second-order grid propagation (eq. 7)."""

    def __init__(self, cfg: TemporalConfig) -> None:
        super().__init__()
        c = cfg.channels
        self.names = branch_names(cfg.n_levels)
        self.dense = cfg.dense_refinement
        self.second_order, self.flow_guided = cfg.second_order, cfg.flow_guided
        self.align = nn.ModuleDict()
        self.refine = nn.ModuleDict()
        for j, name in enumerate(self.names):
            self.align[name] = SecondOrderDeformableAlignment(c, cfg.deform_groups, cfg.offset_channels,
                                                              cfg.max_residue)
            in_ch = (2 + j) * c if self.dense else 2 * c
            self.refine[name] = ResidualBlocksWithInputConv(in_ch, c, cfg.n_blocks)

    def forward(self, feats: list[Tensor], flows: SequenceFlows) -> dict[str, list[Tensor]]:
        """feats: T tensors (B, C, h, w) (g_i); flows at (h, w). Returns branch -> T features."""
        t = len(feats)
        if not self.flow_guided:  # ablation: offsets from the features alone, no flow prior or pre-warp
            flows = SequenceFlows(torch.zeros_like(flows.to_prev), torch.zeros_like(flows.to_next))
        out: dict[str, list[Tensor]] = {"spatial": feats}
        for j, name in enumerate(self.names):
            backward = name.startswith("backward")
            order = range(t - 1, -1, -1) if backward else range(t)
            # flow_{i -> i-1 or i+1}: the step towards the previously processed frame.
            step = (lambda i: flows.to_next[:, i]) if backward else (lambda i: flows.to_prev[:, i - 1])
            direction = -1 if backward else 1  # previous processed frame is i - direction
            prop: dict[int, Tensor] = {}
            for n, i in enumerate(order):
                cur = feats[i]
                if n == 0:
                    aligned = torch.zeros_like(cur)  # no neighbour: zeros (report's footnote)
                else:
                    i1 = i - direction
                    flow_n1 = step(i)
                    feat_n1 = prop[i1]
                    if n > 1 and self.second_order:
                        feat_n2 = prop[i1 - direction]
                        # Second-order flow i -> i-2 composed from i -> i-1 and i-1 -> i-2.
                        flow_n2 = compose_flows(flow_n1, step(i1))
                    else:  # the second frame of a branch (or first-order propagation): no i-2 neighbour
                        feat_n2, flow_n2 = torch.zeros_like(cur), torch.zeros_like(flow_n1)
                    aligned = self.align[name](cur, feat_n1, feat_n2, flow_n1, flow_n2)
                if self.dense:
                    ctx = [cur] + [out[k][i] for k in self.names[:j]]
                else:
                    ctx = [out[self.names[j - 1]][i] if j > 0 else cur]
                prop[i] = aligned + self.refine[name](torch.cat(ctx + [aligned], 1))
            out[name] = [prop[i] for i in range(t)]
        return out


class TemporalTrunk(nn.Module):
    """frames (B, T, 3, H, W) + flows -> fused features (B*T, C, H/s, W/s), s = propagation_scale."""

    def __init__(self, cfg: TemporalConfig) -> None:
        super().__init__()
        cfg.check_paper()
        c = cfg.channels
        self.scale = cfg.propagation_scale
        self.head = nn.Sequential(nn.Conv2d(3, c, 3, cfg.head_stride, 1), nn.LeakyReLU(0.1, inplace=True))
        down1 = _down(c, cfg.head_blocks, stride_conv=True)
        if cfg.propagation_scale == 4 and cfg.head_stride == 1:
            down1.append(nn.Conv2d(c, c, 3, 2, 1))
            down1.append(nn.LeakyReLU(0.1, inplace=True))
        self.down1 = down1
        self.rnn_propagation = GridPropagation(cfg)
        n_branches = 2 * cfg.n_levels
        self.rnn_fusion = ResidualBlocksWithInputConv((n_branches + 1) * c, c, cfg.fusion_blocks)
        if cfg.init == "he":
            init_he(self)

    def features(self, frames: Tensor) -> Tensor:
        """g_i of eq. 6, frame by frame: (B, T, 3, H, W) -> (B, T, C, h, w) (no temporal context)."""
        return self.down1(self.head(frames.flatten(0, 1))).unflatten(0, frames.shape[:2])

    def propagate_and_fuse(self, g: Tensor, flows: SequenceFlows, frames: list[int] | None = None) -> Tensor:
        """Eq. 7-8 on a window of features ``g`` (B, T, C, h, w): the fused features of the window's
        positions ``frames`` (default all), (B, len(frames), C, h, w). Every position's propagation runs;
        fusion only where asked."""
        t = g.shape[1]
        branches = self.rnn_propagation([g[:, i] for i in range(t)], flows.resized(g.shape[-2:]))
        names = ["spatial"] + self.rnn_propagation.names
        picked = range(t) if frames is None else frames
        return torch.stack([self.rnn_fusion(torch.cat([branches[k][i] for k in names], 1)) for i in picked], 1)

    def forward(self, frames: Tensor, flows: SequenceFlows) -> Tensor:
        return self.propagate_and_fuse(self.features(frames), flows).flatten(0, 1)  # (B*T, C, h, w)


class CodeHead(nn.Module):
    """down2 + ResNet50 layer1..4 + average pooling + two FC layers: (N, C, h, w) -> (N, code)."""

    def __init__(self, cfg: TemporalConfig, code_size: int) -> None:
        super().__init__()
        c = cfg.channels
        self.down2 = _down(c, cfg.down2_blocks, stride_conv=cfg.propagation_scale == 2)
        self.adapt = nn.Identity() if c == RESNET_IN_CHANNELS else nn.Conv2d(c, RESNET_IN_CHANNELS, 1)
        self.resnet = resnet50_layers()
        self.mlp = CodeMLP(code_size, cfg.fc_dim)
        if cfg.init == "he":
            init_he(self.down2)
            init_he(self.adapt)

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(self.resnet(self.adapt(self.down2(x))))


def _split(code: Tensor, sizes: int | Mapping[str, int]) -> Tensor | dict[str, Tensor]:
    if isinstance(sizes, int):
        return code
    return dict(zip(sizes, code.split(list(sizes.values()), dim=-1)))


def _total(sizes: int | Mapping[str, int]) -> int:
    return sizes if isinstance(sizes, int) else sum(sizes.values())


def build_flow_estimator(cfg: TemporalConfig, spynet_weights: str | None = None) -> SequenceFlowEstimator:
    """DIS (default) or SPyNet (weights from ``spynet_weights``, else the asset ``spynet``, which must
    then be present: an untrained SPyNet would give meaningless flows)."""
    if cfg.flow == "spynet":
        if spynet_weights is None:
            from tvface import assets

            spynet_weights = str(assets.require("spynet"))
        return SequenceFlowEstimator("spynet", cfg.flow_size, SPyNet(spynet_weights, frozen=True))
    return SequenceFlowEstimator("dis", cfg.flow_size)


def _check_frames(frames: Tensor) -> None:
    if frames.dim() != 5 or frames.shape[2] != 3:
        raise ValueError(f"frames must be (B, T, 3, H, W); got {tuple(frames.shape)}")


class TemporalEncoder(nn.Module):
    """One temporal encoder (E_Tc or E_Td): frames (B, T, 3, H, W) -> (B, T, code).

    Args:
        cfg: the ``temporal`` config section.
        code_sizes: total code size, or a dict of parameter blocks (e.g. FLAME's shape 100, tex 50,
            exp 50, pose 6, cam 3, light 27); with a dict the output is a dict of (B, T, n) blocks.
        flow_estimator: computes flows when ``forward`` is not given them (None: from ``cfg``).
    """

    def __init__(self, cfg: TemporalConfig, code_sizes: int | Mapping[str, int],
                 flow_estimator: SequenceFlowEstimator | None = None) -> None:
        super().__init__()
        self.cfg, self.code_sizes = cfg, dict(code_sizes) if not isinstance(code_sizes, int) else code_sizes
        self.flow_estimator = flow_estimator if flow_estimator is not None else build_flow_estimator(cfg)
        self.trunk = TemporalTrunk(cfg)
        self.head = CodeHead(cfg, _total(code_sizes))

    def forward(self, frames: Tensor, flows: SequenceFlows | None = None) -> Tensor | dict[str, Tensor]:
        _check_frames(frames)
        b, t = frames.shape[:2]
        if flows is None:
            flows = self.flow_estimator(frames)
        code = self.head(self.trunk(frames, flows)).unflatten(0, (b, t))  # (B, T, n)
        return _split(code, self.code_sizes)


@dataclass(frozen=True)
class TemporalCodes:
    """Per-frame codes: ``coarse`` (B, T, n) or dict of blocks; ``detail`` (B, T, 128)."""

    coarse: Tensor | dict[str, Tensor]
    detail: Tensor | None


class TemporalEncoders(nn.Module):
    """E_Tc and E_Td together: two encoders (``paper``) or one shared trunk with two heads.

    Args:
        cfg: the ``temporal`` section; ``shared_trunk`` picks the layout.
        coarse_sizes: coarse code size or dict of blocks (FLAME as DECA: 236 numbers).
        detail_size: detail code size (DECA: 128).
    """

    def __init__(self, cfg: TemporalConfig, coarse_sizes: int | Mapping[str, int],
                 detail_size: int = DETAIL_CODE_SIZE,
                 flow_estimator: SequenceFlowEstimator | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.coarse_sizes = coarse_sizes if isinstance(coarse_sizes, int) else dict(coarse_sizes)
        self.flow_estimator = flow_estimator if flow_estimator is not None else build_flow_estimator(cfg)
        self.trunk_c = TemporalTrunk(cfg)
        self.trunk_d = None if cfg.shared_trunk else TemporalTrunk(cfg)
        self.head_c = CodeHead(cfg, _total(coarse_sizes))
        self.head_d = CodeHead(cfg, detail_size)

    def forward(self, frames: Tensor, flows: SequenceFlows | None = None, with_detail: bool = True) -> TemporalCodes:
        """frames (B, T, 3, H, W) -> codes; ``with_detail=False`` skips E_Td (``detail`` None)."""
        _check_frames(frames)
        b, t = frames.shape[:2]
        if flows is None:
            flows = self.flow_estimator(frames)
        feat_c = self.trunk_c(frames, flows)
        coarse = self.head_c(feat_c).unflatten(0, (b, t))
        detail = None
        if with_detail:
            feat_d = feat_c if self.trunk_d is None else self.trunk_d(frames, flows)
            detail = self.head_d(feat_d).unflatten(0, (b, t))
        return TemporalCodes(_split(coarse, self.coarse_sizes), detail)

    def encode_windows(self, frames: Tensor, window: int, stride: int, flows: SequenceFlows | None = None,
                       with_detail: bool = True, windows_per_batch: int = 8) -> TemporalCodes:
        """Codes for every frame of a sequence (B, N, 3, H, W) of any length, in sliding windows.

        The same codes as :func:`encode_long_sequence` over :meth:`forward` (each frame from the window
        where it is most central), computing only the propagation once per window: the per-frame
        features g_i (the head and down1) once per frame, the fusion and the code heads once per
        frame, for the window that frame's code comes from.

        Windows are independent once their features exist, so up to ``windows_per_batch`` consecutive
        windows run as one batch (those that answer the same positions: at stride 3 of T = 5 every
        window but the first and last answers its positions 1..3): the propagation's convolutions
        are small (one window: batch B at 56^2); batched, a 20-frame sequence at 224^2 and stride 3
        ran 4-8 % faster than one window at a time (``benchmarks/bench_temporal_train.py``, 2 AMD
        EPYC threads). Memory is that of one batch: only the features of the frames its windows
        cover are kept.

        Args:
            flows: of the whole sequence (N - 1 pairs), else estimated here.
        Returns:
            :class:`TemporalCodes` with (B, N, ...) codes.
        """
        _check_frames(frames)
        b, n = frames.shape[:2]
        if windows_per_batch < 1:
            raise ValueError(f"windows_per_batch must be >= 1, got {windows_per_batch}")
        if flows is None:
            none = frames.new_zeros(b, 0, 2, 1, 1)  # one frame: no pairs
            flows = self.flow_estimator(frames) if n > 1 else SequenceFlows(none, none)
        if flows.to_prev.shape[1] != n - 1:
            raise ValueError(f"flows hold {flows.to_prev.shape[1]} pairs, a sequence of {n} frames has {n - 1}")
        starts = window_starts(n, window, stride)
        answers: list[list[int]] = [[] for _ in starts]  # per window, the positions whose codes it gives
        for w, pos in most_central_windows(n, window, stride):
            answers[w].append(pos)
        length = min(window, n)
        trunks = [self.trunk_c] + ([self.trunk_d] if with_detail and self.trunk_d is not None else [])
        cache: list[dict[int, Tensor]] = [{} for _ in trunks]  # frame -> g_i, per trunk
        codes: list[dict[int, Tensor]] = [{}, {}]  # frame -> (B, n) coarse code, detail code
        busy = [w for w in range(len(starts)) if answers[w]]
        for c0 in range(0, len(busy), windows_per_batch):
            chunk = busy[c0:c0 + windows_per_batch]
            first, end = starts[chunk[0]], starts[chunk[-1]] + length  # the frames these windows cover
            for trunk, feats in zip(trunks, cache):
                for f in [f for f in feats if f < first]:
                    del feats[f]
                new = [f for f in range(first, end) if f not in feats]
                if new:
                    g = trunk.features(frames[:, new])
                    feats.update({f: g[:, i] for i, f in enumerate(new)})
            groups: dict[tuple[int, ...], list[int]] = {}  # answered positions -> window starts
            for w in chunk:
                groups.setdefault(tuple(answers[w]), []).append(starts[w])
            for pos, ss in groups.items():
                # windows stacked along the batch: (len(ss) * B, T, ...), window-major
                win_flows = SequenceFlows(torch.cat([flows.to_prev[:, s:s + length - 1] for s in ss]),
                                          torch.cat([flows.to_next[:, s:s + length - 1] for s in ss]))
                fused = []
                for trunk, feats in zip(trunks, cache):
                    g = torch.cat([torch.stack([feats[f] for f in range(s, s + length)], 1) for s in ss])
                    fused.append(trunk.propagate_and_fuse(g, win_flows, list(pos)).flatten(0, 1))
                shape = (len(ss), b, len(pos))
                heads = [(self.head_c, fused[0])] + ([(self.head_d, fused[-1])] if with_detail else [])
                for out, (head, feat) in zip(codes, heads):
                    code = head(feat).unflatten(0, shape)  # (windows, B, positions, n)
                    out.update({s + p: code[i, :, j] for i, s in enumerate(ss) for j, p in enumerate(pos)})
        coarse = torch.stack([codes[0][f] for f in range(n)], 1)
        detail = torch.stack([codes[1][f] for f in range(n)], 1) if with_detail else None
        return TemporalCodes(_split(coarse, self.coarse_sizes), detail)


# --------------------------------------------------------------------------- sliding windows
def window_starts(n_frames: int, window: int, stride: int) -> list[int]:
    """Start frames of windows of length ``window`` every ``stride`` frames covering ``n_frames``.

    The last window ends at the last frame; sequences shorter than a window get one window.
    """
    if not 1 <= stride <= window:
        raise ValueError(f"window stride must be in 1..window ({window}) so that windows cover every frame, "
                         f"got {stride}")
    if n_frames <= window:
        return [0]
    starts = list(range(0, n_frames - window + 1, stride))
    if starts[-1] != n_frames - window:
        starts.append(n_frames - window)
    return starts


def most_central_windows(n_frames: int, window: int, stride: int) -> list[tuple[int, int]]:
    """For every frame, (window index, position in window) of the window where it is most central.

    Ties go to the earlier window.
    """
    starts = window_starts(n_frames, window, stride)
    length = min(window, n_frames)
    centre = (length - 1) / 2
    out = []
    for f in range(n_frames):
        best = min((abs(f - s - centre), w) for w, s in enumerate(starts) if s <= f < s + length)
        out.append((best[1], f - starts[best[1]]))
    return out


def window_latency(window: int, stride: int, n_frames: int | None = None) -> float:
    """Mean number of frames between a frame and the last frame of the window its code comes from
    (:func:`most_central_windows`): how far a live system runs behind. Over ``n_frames`` (default a
    long sequence, 100 windows, where the ends weigh little); (T - 1) / 2 for stride 1, 3 or T of T = 5."""
    n = n_frames or 100 * window
    starts = window_starts(n, window, stride)
    length = min(window, n)
    return sum(starts[w] + length - 1 - f for f, (w, _) in enumerate(most_central_windows(n, window, stride))) / n


def encode_long_sequence(encode: Callable[..., Tensor | dict[str, Tensor]], frames: Tensor, window: int,
                         stride: int, flows: SequenceFlows | None = None) -> Tensor | dict[str, Tensor]:
    """Per-frame codes for a sequence longer than the training window.

    Args:
        encode: frames (B, T, 3, H, W) -> codes (B, T, n) (e.g. a :class:`TemporalEncoder`); with
            ``flows`` it is called as ``encode(window_frames, window_flows)``.
        frames: (B, N, 3, H, W), any N >= 1.
        window, stride: window length (T) and step; each frame's code comes from the window where
            it is most central, so every frame, the first and last included, gets one.
        flows: optional flows of the whole sequence (N-1 pairs); each window gets its slice, so
            overlapping windows do not estimate a flow twice (flow i -> i+1 does not depend on the window).
    Returns:
        (B, N, n), or a dict of (B, N, n_k) when ``encode`` returns code blocks.
    """
    _check_frames(frames)
    n = frames.shape[1]
    starts = window_starts(n, window, stride)
    length = min(window, n)
    if flows is None:
        codes = [encode(frames[:, s:s + length]) for s in starts]  # each (B, length, n)
    else:
        if flows.to_prev.shape[1] != n - 1:
            raise ValueError(f"flows hold {flows.to_prev.shape[1]} pairs, a sequence of {n} frames has {n - 1}")
        codes = [encode(frames[:, s:s + length], SequenceFlows(flows.to_prev[:, s:s + length - 1],
                                                               flows.to_next[:, s:s + length - 1])) for s in starts]
    picks = most_central_windows(n, window, stride)
    if isinstance(codes[0], dict):
        return {k: torch.stack([codes[w][k][:, p] for w, p in picks], 1) for k in codes[0]}
    return torch.stack([codes[w][:, p] for w, p in picks], 1)


def describe_layout(encoder: TemporalEncoder | TemporalEncoders) -> list[tuple[str, str]]:
    """(stage, what) rows walked from a built encoder, in data-flow order (for diagrams and docs)."""
    trunk = encoder.trunk if isinstance(encoder, TemporalEncoder) else encoder.trunk_c
    head = encoder.head if isinstance(encoder, TemporalEncoder) else encoder.head_c
    n_params = lambda m: f"{sum(p.numel() for p in m.parameters()) / 1e6:.2f} M"  # noqa: E731
    n_res = lambda m: sum(isinstance(x, ResidualBlockBN) for x in m.modules())  # noqa: E731
    rows = [("head", f"3x3 conv 3->{trunk.head[0].out_channels}, stride {trunk.head[0].stride[0]}, "
                     f"{n_params(trunk.head)}"),
            ("down1", f"{n_res(trunk.down1)} res blocks + stride-2 conv(s) (1/{trunk.scale}), "
                      f"{n_params(trunk.down1)}")]
    prop = trunk.rnn_propagation
    for name in prop.names:
        al = prop.align[name]
        rows.append((name, f"2nd-order flow-guided DCN ({al.deform_groups} groups) + R "
                           f"({n_res(prop.refine[name])} blocks), {n_params(al) if al else ''}"))
    rows.append(("rnn_fusion", f"R over g + {len(prop.names)} branches, {n_params(trunk.rnn_fusion)}"))
    rows.append(("down2 + ResNet50 layer1-4 + FC", f"{n_params(head)}"))
    return rows
