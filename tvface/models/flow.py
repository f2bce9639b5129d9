"""Optical flow between consecutive frames of a sequence, for the temporal encoder.

Two estimators, both returning flows in the convention of :mod:`tvface.ops.flow_warp`
((B, 2, h, w), (dx, dy) pixels at the flow resolution, backward-warping semantics):

* ``"dis"``: OpenCV's DIS optical flow (no weights; the offline default). Not differentiable.
* ``"spynet"``: :class:`tvface.models.spynet.SPyNet`, BasicVSR++'s learned flow, with the pretrained
  asset ``spynet`` when present.

As in the report's code, flows are computed on frames downsampled by 0.5 (112x112 for 224x224
frames); :func:`resize_flow` brings them to the propagation resolution when that differs.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tvface.models.spynet import SPyNet
from tvface.ops.flow_warp import resize_flow

__all__ = ["SequenceFlows", "dis_flow", "SequenceFlowEstimator", "FLOW_SIZE"]

FLOW_SIZE = 112  # the report: flows at 112^2, frames downsampled x0.5


@dataclass(frozen=True)
class SequenceFlows:
    """Flows between neighbouring frames of (B, T) sequences.

    Attributes:
        to_prev: (B, T-1, 2, h, w); ``to_prev[:, i-1]`` is flow_{i -> i-1} (used by forward branches).
        to_next: (B, T-1, 2, h, w); ``to_next[:, i]`` is flow_{i -> i+1} (used by backward branches).
    """

    to_prev: Tensor
    to_next: Tensor

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.to_prev.shape[-2:])

    def resized(self, size: tuple[int, int]) -> "SequenceFlows":
        """Same flows at another resolution (values rescaled to the new pixel size)."""
        if tuple(size) == self.size or self.to_prev.shape[1] == 0:
            if self.to_prev.shape[1] == 0:
                b = self.to_prev.shape[0]
                empty = self.to_prev.new_zeros(b, 0, 2, *size)
                return SequenceFlows(empty, empty)
            return self

        def rs(f: Tensor) -> Tensor:
            b, t = f.shape[:2]
            return resize_flow(f.flatten(0, 1), tuple(size)).unflatten(0, (b, t))

        return SequenceFlows(rs(self.to_prev), rs(self.to_next))


def dis_flow(ref: np.ndarray, supp: np.ndarray, preset: int = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM) -> np.ndarray:
    """OpenCV DIS flow_{ref->supp} between two uint8 grey images (H, W) -> (H, W, 2) float32 (dx, dy).

    OpenCV's convention ``ref(y, x) ~ supp(y + f[..., 1], x + f[..., 0])`` is ours (backward warping).
    """
    dis = cv2.DISOpticalFlow_create(preset)
    return dis.calc(ref, supp, None)


def _to_grey_u8(frames: Tensor) -> np.ndarray:
    """(N, 3, h, w) RGB in [0, 1] -> (N, h, w) uint8 grey."""
    grey = 0.299 * frames[:, 0] + 0.587 * frames[:, 1] + 0.114 * frames[:, 2]
    return (grey.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


class SequenceFlowEstimator(nn.Module):
    """frames (B, T, 3, H, W) RGB in [0, 1] -> :class:`SequenceFlows` at ``flow_size``.

    Args:
        kind: ``"dis"`` or ``"spynet"``.
        flow_size: side of the square flow grid (112 in the report).
        spynet: a SPyNet for ``kind="spynet"`` (constructed by the caller, weights loaded or not).
    """

    def __init__(self, kind: str = "dis", flow_size: int = FLOW_SIZE, spynet: SPyNet | None = None) -> None:
        super().__init__()
        if kind not in ("dis", "spynet"):
            raise ValueError(f"flow kind {kind!r}; expected 'dis' or 'spynet' (temporal.flow)")
        if kind == "spynet" and spynet is None:
            raise ValueError("kind='spynet' needs a SPyNet module")
        self.kind, self.flow_size = kind, flow_size
        self.spynet = spynet if kind == "spynet" else None

    def forward(self, frames: Tensor) -> SequenceFlows:
        b, t = frames.shape[:2]
        size = (self.flow_size, self.flow_size)
        if t < 2:
            empty = frames.new_zeros(b, 0, 2, *size)
            return SequenceFlows(empty, empty)
        small = F.interpolate(frames.flatten(0, 1), size=size, mode="bilinear", align_corners=False,
                              antialias=True).unflatten(0, (b, t))  # (B, T, 3, h, w)
        cur, nxt = small[:, :-1].flatten(0, 1), small[:, 1:].flatten(0, 1)  # frames i, i+1
        if self.kind == "spynet":
            to_next = self.spynet(cur, nxt)
            to_prev = self.spynet(nxt, cur)
        else:
            g_cur, g_nxt = _to_grey_u8(cur.detach()), _to_grey_u8(nxt.detach())
            to_next = np.stack([dis_flow(a, c) for a, c in zip(g_cur, g_nxt)])
            to_prev = np.stack([dis_flow(c, a) for a, c in zip(g_cur, g_nxt)])
            to_next = torch.from_numpy(to_next).permute(0, 3, 1, 2).to(frames)
            to_prev = torch.from_numpy(to_prev).permute(0, 3, 1, 2).to(frames)
        return SequenceFlows(to_prev.unflatten(0, (b, t - 1)), to_next.unflatten(0, (b, t - 1)))
