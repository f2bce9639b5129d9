"""The camera of a synthetic sequence: a face moving in a TV frame, seen through a tracker's crop.

A real training crop is a square a face tracker placed around the detected face (``data.crop_scale``
times the box), so the face drifts slowly in the crop and the crop jitters from frame to frame with
detector noise. We model the crop directly: per frame, the head's weak-perspective ``scale``
(screen units per metre) and ``trans`` (screen offset of the head origin; x right, y down, the
crop spans [-1, 1]) are the product of the subject's *source* motion (smooth, what blurs the image)
and the tracker's *jitter* (a digital crop: it moves the image but blurs nothing).

Projection is a pinhole at ``distance`` metres with focal length ``scale * distance`` (TV's long
lenses: 0.6-3 m), or DECA's orthographic camera when ``distance`` is infinite. The equivalent DECA
camera ``(s, tx, ty)`` is ``(scale, tx / scale, -ty / scale)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from tvface.synthetic.trajectories import FPS, smooth_noise

# A crop of 1.4-2 x an MTCNN box (about 0.14 m of face): 2 / (0.2 .. 0.3 m) = 6.5-10 per metre.
SCALE_RANGE = (6.5, 9.0)
DISTANCE_RANGE_M = (0.6, 3.0)
TRACKER_JITTER = 0.015  # std of the crop centre, in crop sides (about 3 px at 224)
TRACKER_SCALE_JITTER = 0.015  # std of log crop size
TRACKER_CORRELATION = 0.5  # AR(1) coefficient of the jitter: trackers smooth a little


@dataclass(frozen=True)
class CameraTrajectory:
    """Per-frame camera of one sequence (T frames). All arrays float64."""

    scale: np.ndarray  # (T,) head scale in the crop (screen units per metre), jitter included
    trans: np.ndarray  # (T, 2) head origin in the crop (screen units), jitter included
    source_scale: np.ndarray  # (T,) the same without the tracker's jitter (the subject's motion)
    source_trans: np.ndarray  # (T, 2)
    distance: float  # metres from the camera to the head origin; inf = orthographic

    @property
    def n_frames(self) -> int:
        return int(self.scale.shape[0])

    def deca_cam(self) -> np.ndarray:
        """(T, 3) DECA's (s, tx, ty): exact for an orthographic camera, weak-perspective otherwise."""
        return np.stack([self.scale, self.trans[:, 0] / self.scale, -self.trans[:, 1] / self.scale], axis=1)

    def crop_jitter_pixels(self, image_size: int) -> np.ndarray:
        """(T, 2) pixel offset of the crop against the source frame (what moves the background)."""
        return (self.source_trans - self.trans) * image_size / 2


def sample_camera_trajectory(rng: np.random.Generator, n_frames: int, face_center: np.ndarray,
                             speed: float = 1.0, perspective: bool = True,
                             jitter: float = TRACKER_JITTER) -> CameraTrajectory:
    """Smooth subject motion + tracker jitter.

    Args:
        face_center: (3,) model-space point the tracker centres (e.g. the landmarks' box centre).
        speed: multiplies the subject's translation speed (motion-blur condition: 3-5).
    """
    scale0 = rng.uniform(*SCALE_RANGE)
    drift = smooth_noise(rng, n_frames, 3, FPS * 0.8 / max(speed, 1e-3))
    # Subject motion: 4 % of the crop per 0.8 s at normal speed; zoom 3 %.
    source_scale = scale0 * np.exp(0.03 * drift[:, 0])
    source_trans = -source_scale[:, None] * np.asarray(face_center[:2], np.float64) * np.array([1.0, -1.0])
    source_trans = source_trans + 0.04 * speed * drift[:, 1:]
    # Tracker: AR(1) noise on the crop's centre and log-size, in crop units.
    eps = rng.standard_normal((n_frames, 3))
    jit = np.zeros_like(eps)
    rho = TRACKER_CORRELATION
    for t in range(n_frames):
        jit[t] = (rho * jit[t - 1] if t else 0) + math.sqrt(1 - rho * rho) * eps[t]
    crop_log_scale = TRACKER_SCALE_JITTER * (jitter / TRACKER_JITTER) * jit[:, 0]
    crop_shift = 2 * jitter * jit[:, 1:]  # screen units: the crop spans 2
    scale = source_scale * np.exp(-crop_log_scale)
    trans = (source_trans - crop_shift) * np.exp(-crop_log_scale)[:, None]
    distance = rng.uniform(*DISTANCE_RANGE_M) if perspective else math.inf
    return CameraTrajectory(scale=scale, trans=trans, source_scale=source_scale,
                            source_trans=source_trans, distance=float(distance))


def project_to_screen(points: Tensor, scale: Tensor, trans: Tensor, distance: float) -> Tensor:
    """Model-space points -> the renderer's screen space (x right, y down, z = depth, nearer smaller).

    Args:
        points: (B, N, 3) posed model-space points (metres, +z towards the camera).
        scale: (B,); trans: (B, 2) screen offsets; distance: metres (``math.inf``: orthographic).
    Returns:
        (B, N, 3). Perspective: x = f X / (d - Z) + tx with f = scale * d, y likewise and flipped,
        z = d - Z. Orthographic: x = s X + tx, y = -s Y + ty, z = -s Z (DECA's ``trans_verts``).
    """
    s = scale.view(-1, 1)
    x, y, z = points.unbind(-1)
    if math.isinf(distance):
        sx, sy, sz = s * x, -s * y, -s * z
    else:
        depth = (distance - z).clamp(min=1e-3)
        k = s * distance / depth
        sx, sy, sz = k * x, -k * y, depth
    return torch.stack([sx + trans[:, 0:1], sy + trans[:, 1:2], sz], dim=-1)


def screen_to_pixel_coords(screen_xy: Tensor | np.ndarray, image_size: int):
    """Screen [-1, 1] -> pixel coordinates with pixel centres at integers (OpenCV's convention,
    the one the landmark files use): u = (x + 1) * S / 2 - 0.5 (:func:`tvface.rendering.camera.screen_to_pixels`)."""
    from tvface.rendering.camera import screen_to_pixels

    return screen_to_pixels(screen_xy, image_size)
