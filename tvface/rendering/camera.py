"""Cameras: DECA's weak-perspective (orthographic) camera and a pinhole camera for synthetic data.

Both map model-space points (metres, +y up, +z towards the camera) to the renderer's screen space:
x right and y down in [-1, 1] over the image, z smaller = nearer (see :mod:`tvface.rendering`).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def batch_orth_proj(points: Tensor, cam: Tensor) -> Tensor:
    """DECA's ``batch_orth_proj``: scale * (x + tx, y + ty, z).

    Args:
        points: (B, N, 3) model-space points.
        cam: (B, 3) as (scale, tx, ty).
    Returns:
        (B, N, 3) projected points, still +y up and +z towards the camera.
    """
    if cam.ndim != 2 or cam.shape[1] != 3:
        raise ValueError(f"cam must be (B, 3) = (scale, tx, ty), got {tuple(cam.shape)}")
    cam = cam.view(-1, 1, 3)
    xy = points[..., :2] + cam[..., 1:]
    return cam[..., 0:1] * torch.cat([xy, points[..., 2:]], dim=-1)


def orth_to_screen(points: Tensor, cam: Tensor) -> Tensor:
    """Weak-perspective projection to screen space: DECA's ``trans_verts``.

    ``trans_verts = batch_orth_proj(verts, cam); trans_verts[:, :, 1:] = -trans_verts[:, :, 1:]``:
    flipping y makes it point down the image and flipping z makes nearer points smaller.
    Landmarks go through the same function; their x, y are DECA's ``landmarks2d`` in [-1, 1].
    """
    proj = batch_orth_proj(points, cam)
    return torch.cat([proj[..., :1], -proj[..., 1:]], dim=-1)


def screen_to_pixels(screen_xy: Tensor, height: int, width: int | None = None) -> Tensor:
    """Screen x, y in [-1, 1] -> pixel coordinates with pixel centres at integers.

    THE pixel convention of tvface (OpenCV's, dlib's, 2D-FAN's, iBUG ``.pts`` minus one): pixel j
    covers [j - 0.5, j + 0.5]. The renderer samples pixel j at screen -1 + (2j + 1) / W, so
    ``u = (x + 1) * W / 2 - 0.5``. Landmark files (``kpt/*.npy``), the synthetic ground truth, the
    detectors and :func:`tvface.data.dataset.normalize_landmarks` all use it.
    """
    width = height if width is None else width
    scale = screen_xy.new_tensor([width / 2.0, height / 2.0]) if isinstance(screen_xy, Tensor) else \
        np.array([width / 2.0, height / 2.0])
    return (screen_xy[..., :2] + 1.0) * scale - 0.5


def pixels_to_screen(pixels, height: int, width: int | None = None):
    """Inverse of :func:`screen_to_pixels`: ``x = (u + 0.5) * 2 / W - 1`` (tensor or array)."""
    width = height if width is None else width
    scale = pixels.new_tensor([width / 2.0, height / 2.0]) if isinstance(pixels, Tensor) else \
        np.array([width / 2.0, height / 2.0])
    return (pixels[..., :2] + 0.5) / scale - 1.0


def perspective_to_screen(points: Tensor, focal: Tensor, rot: Tensor, transl: Tensor,
                          near: float = 1e-3) -> Tensor:
    """Pinhole projection (OpenGL-style camera looking down its -z axis) to screen space.

    Args:
        points: (B, N, 3) model-space points.
        focal: (B,) focal length in screen units (focal_pixels / (width / 2)).
        rot: (B, 3, 3) model-to-camera rotation; transl: (B, 3) translation, p_cam = R p + t.
    Returns:
        (B, N, 3): x = f X / d, y = -f Y / d (down), z = d, the positive distance along the
        viewing axis (smaller = nearer). Screen-space interpolation is not perspective-correct
        (as DECA's rasteriser), which is accurate for faces far from the camera relative to
        their depth extent.
    """
    cam_pts = points @ rot.transpose(1, 2) + transl[:, None]  # (B, N, 3)
    depth = (-cam_pts[..., 2]).clamp(min=near)
    f = focal.view(-1, 1)
    return torch.stack([f * cam_pts[..., 0] / depth, -f * cam_pts[..., 1] / depth, depth], dim=-1)
