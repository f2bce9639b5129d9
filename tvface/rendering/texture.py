"""Texture sampling on packed pixels: ``grid_sample`` (bilinear, zeros padding, align_corners=False)
without padding the batch to full images.

UV coordinates follow the OBJ convention, [0, 1] with origin bottom-left; UV images are stored with
row 0 at v = 1 (image convention), DECA's ``uvcoords * 2 - 1; uvcoords[..., 1] *= -1``.
"""
from __future__ import annotations

import torch
from torch import Tensor


def uv_to_grid(uv: Tensor) -> Tensor:
    """(..., 2) UVs in [0, 1] (bottom-left origin) -> ``grid_sample`` grid in [-1, 1] (y down)."""
    return torch.stack([uv[..., 0] * 2 - 1, 1 - uv[..., 1] * 2], dim=-1)


def sample_texture(texture: Tensor, uv: Tensor, batch_idx: Tensor | None = None) -> Tensor:
    """Bilinear lookup of packed UVs, identical to ``F.grid_sample(texture, uv_to_grid(uv))``.

    Args:
        texture: (B, C, Ht, Wt) UV maps (row 0 at v = 1).
        uv: (N, 2) in [0, 1]; batch_idx: (N,) long batch element of each UV (all 0 if None).
    Returns:
        (N, C), differentiable in ``texture`` and ``uv``.
    """
    _, channels, ht, wt = texture.shape
    flat = texture.permute(0, 2, 3, 1).reshape(-1, channels)  # (B*Ht*Wt, C)
    ix = uv[:, 0] * wt - 0.5
    iy = (1 - uv[:, 1]) * ht - 0.5
    with torch.no_grad():
        x0f, y0f = torch.floor(ix), torch.floor(iy)
    fx, fy = (ix - x0f)[:, None], (iy - y0f)[:, None]
    x0, y0 = x0f.long(), y0f.long()
    base = (batch_idx * (ht * wt)) if batch_idx is not None else torch.zeros_like(x0)
    out = 0
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            xs, ys = x0 + dx, y0 + dy
            ok = (xs >= 0) & (xs < wt) & (ys >= 0) & (ys < ht)
            idx = base + ys.clamp(0, ht - 1) * wt + xs.clamp(0, wt - 1)
            out = out + flat[idx] * (wx * wy * ok[:, None].to(flat.dtype))
    return out
