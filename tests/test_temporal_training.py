"""The temporal encoders through the baseline's machinery: shared initialisation, flows once per
sequence, sliding-window inference with one code per frame, and a smoke run whose loss goes down."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _training_fixtures import training_cfg

from tvface.models.reconstructor import build_reconstructor
from tvface.models.temporal import window_starts
from tvface.training import Trainer

TEMPORAL = {"model.encoder": "temporal", "temporal.n_frames": 3, "temporal.window_stride": 2,
            "temporal.flow_size": 32, "temporal.channels": 16, "temporal.offset_channels": 8,
            "temporal.deform_groups": 4}


def _state(module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_shared_parts_start_equal_for_one_seed(tiny_synth):
    per_frame = build_reconstructor(training_cfg(tiny_synth), seed=7)
    temporal = build_reconstructor(training_cfg(tiny_synth, **TEMPORAL), seed=7)
    again = build_reconstructor(training_cfg(tiny_synth), seed=7)
    other = build_reconstructor(training_cfg(tiny_synth), seed=8)
    net = temporal.encoder.net
    _assert_same(_state(per_frame.encoder.coarse.layers), _state(net.head_c.resnet))
    _assert_same(_state(per_frame.encoder.coarse.head), _state(net.head_c.mlp))
    _assert_same(_state(per_frame.encoder.detail.layers), _state(net.head_d.resnet))
    _assert_same(_state(per_frame.encoder.detail.head), _state(net.head_d.mlp))
    _assert_same(_state(per_frame.detail_decoder), _state(temporal.detail_decoder))
    _assert_same(_state(per_frame.encoder), _state(again.encoder))  # a function of the seed only
    w, w8 = per_frame.encoder.coarse.layers[0][0].conv1.weight, other.encoder.coarse.layers[0][0].conv1.weight
    assert not torch.equal(w, w8)


def test_training_flows_are_slices_of_the_sequence_flows(tiny_synth, tmp_path):
    cfg = training_cfg(tiny_synth, **TEMPORAL)
    tr = Trainer(cfg, tmp_path / "run", progress=False)
    assert tr.data.flow_estimator is tr.model.encoder.net.flow_estimator
    batch = tr.data.batch(3)
    t = cfg.data.n_frames
    assert batch.flows.to_prev.shape == (cfg.train.batch_size, t - 1, 2, 32, 32)
    direct = tr.data.flow_estimator(batch.image)  # flows of the windows themselves
    for got, want in ((batch.flows.to_prev, direct.to_prev), (batch.flows.to_next, direct.to_next)):
        assert want.abs().max() > 0.05  # the synthetic faces move
        torch.testing.assert_close(got, want, rtol=0, atol=2e-3 * max(1.0, float(want.abs().max())))


@pytest.mark.parametrize("n_frames", [1, 2, 3, 7, 8])
def test_sliding_window_inference_gives_every_frame_a_code(tiny_synth, n_frames):
    model = build_reconstructor(training_cfg(tiny_synth, **TEMPORAL), seed=0).eval()
    torch.manual_seed(0)
    frames = torch.rand(1, n_frames, 3, 32, 32)
    with torch.no_grad():
        codes = model.encode_sequence(frames, with_detail=True)
        out = model.predict(frames)
    assert codes.coarse["shape"].shape[:2] == (1, n_frames) and codes.detail.shape == (1, n_frames, 128)
    assert out["verts"].shape[0] == n_frames and out["lmks_2d"].shape == (n_frames, 68, 2)
    if n_frames >= 7:  # frame 1 is most central in the first window: its code is that window's
        with torch.no_grad():
            first = model.encode(frames[:, :3], with_detail=True)
        torch.testing.assert_close(codes.coarse["exp"][:, 1], first.coarse["exp"][:, 1])
        assert window_starts(n_frames, 3, 2)[-1] == n_frames - 3


def test_per_frame_sequence_encoding_is_frame_by_frame(tiny_synth):
    model = build_reconstructor(training_cfg(tiny_synth), seed=0).eval()
    frames = torch.rand(1, 4, 3, 32, 32)
    with torch.no_grad():
        whole = model.encode_sequence(frames, with_detail=False)
        single = model.encode(frames[:, 2:3], with_detail=False)
    torch.testing.assert_close(whole.coarse["pose"][:, 2], single.coarse["pose"][:, 0], rtol=1e-4, atol=1e-5)


def test_temporal_smoke_training_reduces_the_loss(tiny_synth, tmp_path):
    """The temporal encoder overfits a fixed batch through the baseline's trainer and losses."""
    cfg = training_cfg(tiny_synth, **TEMPORAL, **{"train.pretrain_steps": 25, "train.lr": 1e-3,
                                                 "train.batch_size": 1})
    tr = Trainer(cfg, tmp_path / "run", progress=False)
    fixed = next(b for b in map(tr.data.batch, range(50)) if (b.landmark[..., 2] > 0).sum() >= 68)
    tr.data.batch = lambda step, device="cpu", dist=None: fixed
    (res,) = tr.run(["pretrain"])
    assert res.steps == 25 and res.skipped == 0
    lm = [json.loads(line)["landmark"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert np.mean(lm[-5:]) < 0.7 * np.mean(lm[:3]), lm
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["model"]["encoder"] == "TemporalEncoderPair"


def test_temporal_detail_stage_keeps_e_tc_fixed(tiny_synth, tmp_path):
    cfg = training_cfg(tiny_synth, **TEMPORAL, **{"train.pretrain_steps": 1, "train.coarse_steps": 1,
                                                 "train.detail_steps": 2, "temporal.shared_trunk": False})
    tr = Trainer(cfg, tmp_path / "run", progress=False)
    tr.run(["pretrain", "coarse"])
    net = tr.model.encoder.net
    before_c = {**_state(net.trunk_c), **{f"h.{k}": v for k, v in _state(net.head_c).items()}}
    before_d = _state(net.trunk_d)
    tr.run(["detail"])
    after_c = {**_state(net.trunk_c), **{f"h.{k}": v for k, v in _state(net.head_c).items()}}
    _assert_same(before_c, after_c)  # E_Tc fixed, BatchNorm statistics included
    assert any(not torch.equal(v, _state(net.trunk_d)[k]) for k, v in before_d.items())


def test_imagenet_trunks_when_the_file_is_there(tiny_synth, tmp_path):
    """model.encoder_init=auto: torchvision's ResNet50 file in the assets folder -> both trunks start from
    it (and a temporal pair shares them); a wrong file -> one error naming it; absent -> random."""
    import torchvision

    torch.manual_seed(5)
    ref = torchvision.models.resnet50(weights=None)
    import shutil

    from tvface import assets as asset_registry

    assets = tmp_path / "assets"
    assets.mkdir()

    ict = asset_registry.find("ict_model")
    shutil.copy(ict, assets / ict.name)
    torch.save(ref.state_dict(), assets / "resnet50-0676ba61.pth")
    per_frame = build_reconstructor(training_cfg(tiny_synth), assets_root=assets, seed=0)
    temporal = build_reconstructor(training_cfg(tiny_synth, **TEMPORAL), assets_root=assets, seed=0)
    assert per_frame.encoder_init.startswith("imagenet:")
    for enc in (per_frame.encoder.coarse, per_frame.encoder.detail):
        torch.testing.assert_close(enc.stem[0].weight, ref.conv1.weight, rtol=0, atol=0)
        torch.testing.assert_close(enc.layers[3][2].bn3.running_var, ref.layer4[2].bn3.running_var, rtol=0, atol=0)
    _assert_same(_state(temporal.encoder.net.head_c.resnet), _state(per_frame.encoder.coarse.layers))
    assert build_reconstructor(training_cfg(tiny_synth, **{"model.encoder_init": "random"}),
                               assets_root=assets).encoder_init == "random"
    bad = tmp_path / "bad.pth"
    torch.save({"conv1.weight": torch.zeros(3)}, bad)
    with pytest.raises(ValueError, match=r"bad.pth: not torchvision's ResNet50 weights: missing \['bn1"):
        build_reconstructor(training_cfg(tiny_synth, **{"model.encoder_init": str(bad)}))
    with pytest.raises(FileNotFoundError, match="model.encoder_init=/nonexistent.pth: no such file"):
        build_reconstructor(training_cfg(tiny_synth, **{"model.encoder_init": "/nonexistent.pth"}))
