"""Cost of the temporal encoders against DECA's per-frame ResNet50 encoder: parameters, FLOPs, time.

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matrix
products; the deformable convolution's im2col product is counted, its bilinear gathering is not).
"Per encoder" for the efficient configuration is the pair (shared trunk, coarse head, detail head)
divided by two, compared with one ResNet50 encoder; the paper configuration is one encoder (E_Tc).
Times are fp32 forward and forward+backward per frame, medians, measured in the same run; flows are
precomputed (zero) so that the numbers measure the network.
"""
from __future__ import annotations

import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from tvface.config import PAPER_TEMPORAL, TemporalConfig
from tvface.models.flow import SequenceFlowEstimator, SequenceFlows
from tvface.models.resnet_encoder import ResnetEncoder
from tvface.models.temporal import TemporalEncoder, TemporalEncoders

COARSE = 236  # FLAME code as DECA


def _zero_flows(b: int, t: int, size: int) -> SequenceFlows:
    f = torch.zeros(b, t - 1, 2, size // 2, size // 2)
    return SequenceFlows(f, f)


def models(size: int, with_paper: bool) -> dict:
    """name -> (module, call(frames) -> output, frames per call factor, encoders represented)."""
    dis = SequenceFlowEstimator("dis")
    out = {"ResNet50 encoder (DECA, per frame)": (ResnetEncoder(COARSE), "frame", 1)}
    eff = TemporalConfig()
    out["efficient pair (E_Tc+E_Td, shared trunk)"] = (TemporalEncoders(eff, COARSE, flow_estimator=dis), "seq", 2)
    if with_paper:
        paper = TemporalConfig(variant="paper", **PAPER_TEMPORAL)
        out["paper E_Tc (one encoder)"] = (TemporalEncoder(paper, COARSE, dis), "seq", 1)
    return out


def _call(model, kind, frames, flows):
    if kind == "frame":
        return model(frames.flatten(0, 1))
    y = model(frames, flows)
    return torch.cat([y.coarse, y.detail], -1) if hasattr(y, "coarse") else y


def flop_table(size: int = 224, t: int = 5, with_paper: bool = True) -> list[dict]:
    """Rows: model, params (M), forward GFLOP per frame per encoder."""
    rows = []
    frames = torch.rand(1, t, 3, size, size)
    for name, (m, kind, n_enc) in models(size, with_paper).items():
        m.eval()
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            _call(m, kind, frames, _zero_flows(1, t, size))
        rows.append({"model": name, "params_M": sum(p.numel() for p in m.parameters()) / 1e6,
                     "gflop_per_frame_per_encoder": fc.get_total_flops() / t / n_enc / 1e9})
    return rows


def _median_ms(fn, repeats: int) -> float:
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return sorted(ts)[len(ts) // 2]


def time_table(size: int = 224, t: int = 5, repeats: int = 3, with_paper: bool = True) -> list[dict]:
    rows = []
    frames = torch.rand(1, t, 3, size, size)
    flows = _zero_flows(1, t, size)
    for name, (m, kind, n_enc) in models(size, with_paper).items():
        m.train()

        def fwd(m=m, kind=kind):
            with torch.no_grad():
                _call(m, kind, frames, flows)

        def fwd_bwd(m=m, kind=kind):
            m.zero_grad(set_to_none=True)
            _call(m, kind, frames, flows).square().mean().backward()

        rows.append({"model": name, "fwd_ms_per_frame_per_encoder": _median_ms(fwd, repeats) / t / n_enc,
                     "fwd_bwd_ms_per_frame_per_encoder": _median_ms(fwd_bwd, repeats) / t / n_enc})
    base = rows[0]
    for r in rows:
        r["fwd_bwd_ratio_to_resnet"] = r["fwd_bwd_ms_per_frame_per_encoder"] / base["fwd_bwd_ms_per_frame_per_encoder"]
    return rows
