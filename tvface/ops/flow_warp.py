"""Optical-flow warping and composition: THE flow convention of tvface.

Flow convention (used by every module, the stored DIS flows and SPyNet alike):

* Layout: ``(B, 2, H, W)`` float tensors, channels ``(dx, dy)`` in pixels of the flow's own
  resolution (the temporal encoder works at 112x112 for 224x224 frames: frames are downsampled by
  0.5 before the flow is estimated, and the flow is in 112-grid pixels).
* Direction: a flow is stored on frame ``i``'s grid and points to its neighbour ``nb``:
  ``flow_{i->nb}(x)`` is the displacement such that pixel ``x`` of frame ``i`` shows the same point
  as ``x + flow_{i->nb}(x)`` of frame ``nb``.
* Backward warping: ``warped_i(x) = nb(x + flow_{i->nb}(x))``, bilinear, zeros outside the image.
  :func:`flow_warp` implements exactly that, so warping the neighbour's features with
  ``flow_{i->nb}`` aligns them to frame ``i``.
* Composition: ``flow_{i->i-2}(x) = flow_{i->i-1}(x) + warp(flow_{i-1->i-2}, flow_{i->i-1})(x)``
  (:func:`compose_flows`).

Pixel centres are at integer coordinates; ``grid_sample`` is called with ``align_corners=False`` and
coordinates normalised as ``(2 p + 1) / size - 1``, which is the same pixel mapping as BasicVSR++'s
``flow_warp`` (``align_corners=True`` with ``2 p / (size - 1) - 1``) but also valid for size 1.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["flow_warp", "compose_flows", "flow_to_hw2", "flow_from_hw2", "resize_flow"]


def _check_flow(x: Tensor, flow: Tensor) -> None:
    if flow.dim() != 4 or flow.shape[1] != 2:
        raise ValueError(f"flow must be (B, 2, H, W) with channels (dx, dy); got {tuple(flow.shape)}. "
                         "Use flow_from_hw2() to convert a (B, H, W, 2) flow.")
    if x.dim() != 4 or x.shape[0] != flow.shape[0] or x.shape[-2:] != flow.shape[-2:]:
        raise ValueError(f"features {tuple(x.shape)} and flow {tuple(flow.shape)} must share batch and "
                         "H, W: (B, C, H, W) and (B, 2, H, W)")


def sampling_grid(flow: Tensor) -> Tensor:
    """grid_sample grid (B, H, W, 2), normalised (x, y), of the positions ``x + flow(x)``."""
    b, _, h, w = flow.shape
    ys = torch.arange(h, device=flow.device, dtype=flow.dtype).view(1, h, 1)
    xs = torch.arange(w, device=flow.device, dtype=flow.dtype).view(1, 1, w)
    gx = (xs + flow[:, 0]) * (2.0 / w) + (1.0 / w - 1.0)  # (B, H, W)
    gy = (ys + flow[:, 1]) * (2.0 / h) + (1.0 / h - 1.0)
    return torch.stack((gx, gy), dim=-1)


def flow_warp(x: Tensor, flow: Tensor, mode: str = "bilinear", padding_mode: str = "zeros") -> Tensor:
    """Backward-warp features by optical flow: ``out(p) = x(p + flow(p))``.

    Args:
        x: (B, C, H, W) features of the neighbour frame.
        flow: (B, 2, H, W) pixel displacements (dx, dy) from the current frame to the neighbour.
        mode: ``"bilinear"`` or ``"nearest"``.
        padding_mode: ``"zeros"`` (default, BasicVSR++), ``"border"`` or ``"reflection"``.
    Returns:
        (B, C, H, W) neighbour features aligned to the current frame; zeros outside.
    """
    _check_flow(x, flow)
    return F.grid_sample(x, sampling_grid(flow.to(x.dtype)), mode=mode, padding_mode=padding_mode,
                         align_corners=False)


def compose_flows(flow_ab: Tensor, flow_bc: Tensor) -> Tensor:
    """Chain two flows: a->c from a->b and b->c (both (B, 2, H, W), same convention).

    ``flow_ac(x) = flow_ab(x) + flow_bc(x + flow_ab(x))``; used for the second-order flow
    ``i -> i-2`` from ``i -> i-1`` and ``i-1 -> i-2``. Where ``x + flow_ab(x)`` leaves the image the
    second term is zero.
    """
    return flow_ab + flow_warp(flow_bc, flow_ab)


def flow_from_hw2(flow: Tensor) -> Tensor:
    """(B, H, W, 2) -> (B, 2, H, W), channels kept as (dx, dy)."""
    return flow.permute(0, 3, 1, 2).contiguous()


def flow_to_hw2(flow: Tensor) -> Tensor:
    """(B, 2, H, W) -> (B, H, W, 2), channels kept as (dx, dy) (e.g. for OpenCV / numpy)."""
    return flow.permute(0, 2, 3, 1).contiguous()


def resize_flow(flow: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of a (B, 2, H, W) flow to ``size`` = (H', W'), rescaling the pixel values."""
    h, w = flow.shape[-2:]
    if (h, w) == tuple(size):
        return flow
    out = F.interpolate(flow, size=size, mode="bilinear", align_corners=False)
    scale = torch.tensor([size[1] / w, size[0] / h], dtype=flow.dtype, device=flow.device)
    return out * scale.view(1, 2, 1, 1)
