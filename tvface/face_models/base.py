"""One interface for every parametric face model (FLAME, ICT-FaceKit, test models).

Conventions (FLAME's, so that cameras, priors and loss weights carry over between models):
units are metres; +x is the subject's left (image right when facing the camera), +y up, +z out of
the face towards the camera; the neutral head sits near the origin. Landmarks are the 68 iBUG /
Multi-PIE points in their usual order (0-16 jaw contour, 17-26 brows, 27-35 nose, 36-47 eyes,
48-67 mouth).

A model maps ``(shape, exp, pose)`` to vertices and landmarks::

    out = model(shape, exp, pose)          # (B, n_shape), (B, n_exp), (B, 6)
    out.verts    # (B, V, 3)  every vertex, render-only parts included
    out.lmks_2d  # (B, 68, 3) landmarks whose jaw contour follows the silhouette with yaw
                 #            (DECA's ``landmarks2d``: what a 2D detector sees)
    out.lmks_3d  # (B, 68, 3) fixed-vertex landmarks (DECA's ``landmarks3d``)

Pose is 6 numbers, axis-angle: global rotation (3) then jaw (3), as DECA's ``pose_params``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

N_LANDMARKS = 68
N_POSE = 6  # global rotation (3) + jaw (3), axis-angle, as DECA


@dataclass(frozen=True)
class FaceModelOutput:
    verts: Tensor  # (B, V, 3)
    lmks_2d: Tensor  # (B, 68, 3), dynamic contour
    lmks_3d: Tensor  # (B, 68, 3), static


class FaceModel(nn.Module):
    """Base class. Subclasses register these buffers and implement :meth:`forward`.

    Buffers:
        faces: (F, 3) long, triangles into ``verts``.
        uv_coords: (Vt, 2) float in [0, 1], origin bottom-left (OBJ convention).
        uv_faces: (F, 3) long, triangles into ``uv_coords`` (same order as ``faces``).
        skin_faces: (F,) bool, triangles of the face/head skin: landmarks, displacement and
            photometric losses live there. The rest (eyeballs, mouth socket, teeth) is render-only.
    """

    name: str = "base"
    faces: Tensor
    uv_coords: Tensor
    uv_faces: Tensor
    skin_faces: Tensor

    def __init__(self, n_shape: int, n_exp: int) -> None:
        super().__init__()
        self.n_shape = int(n_shape)
        self.n_exp = int(n_exp)
        self.n_pose = N_POSE

    @property
    def param_sizes(self) -> dict[str, int]:
        """Sizes of the geometry parameter blocks (the encoder adds tex, cam and light)."""
        return {"shape": self.n_shape, "exp": self.n_exp, "pose": self.n_pose}

    @property
    def n_verts(self) -> int:
        return int(self.template.shape[0])

    def zeros(self, batch_size: int = 1, device=None, dtype=None) -> dict[str, Tensor]:
        """Zero parameters (the neutral mean face at rest), on the model's device and dtype by default."""
        device = self.template.device if device is None else device
        dtype = self.template.dtype if dtype is None else dtype
        return {k: torch.zeros(batch_size, n, device=device, dtype=dtype) for k, n in self.param_sizes.items()}

    def check_params(self, shape: Tensor, exp: Tensor, pose: Tensor) -> int:
        """Validate parameter shapes at the public boundary; returns the batch size."""
        batch = shape.shape[0] if shape.ndim == 2 else -1
        for name, t, n in (("shape", shape, self.n_shape), ("exp", exp, self.n_exp), ("pose", pose, self.n_pose)):
            if t.ndim != 2 or t.shape[1] != n or t.shape[0] != batch:
                raise ValueError(
                    f"{self.name}: {name} must have shape (B, {n}) with B={batch} shared by all blocks, "
                    f"got {tuple(t.shape)}")
        return batch

    def forward(self, shape: Tensor, exp: Tensor, pose: Tensor) -> FaceModelOutput:  # pragma: no cover
        raise NotImplementedError


def batch_rodrigues(rot_vecs: Tensor, eps: float = 1e-8) -> Tensor:
    """Axis-angle (N, 3) -> rotation matrices (N, 3, 3), differentiable at zero.

    Same formula as FLAME/SMPL's ``batch_rodrigues`` (R = I + sin(t) K + (1 - cos(t)) K^2).
    """
    angle = torch.linalg.vector_norm(rot_vecs + eps, dim=1, keepdim=True)  # (N, 1)
    axis = rot_vecs / angle
    cos = torch.cos(angle)[:, :, None]
    sin = torch.sin(angle)[:, :, None]
    rx, ry, rz = axis.unbind(1)
    zeros = torch.zeros_like(rx)
    K = torch.stack([zeros, -rz, ry, rz, zeros, -rx, -ry, rx, zeros], dim=1).view(-1, 3, 3)
    eye = torch.eye(3, dtype=rot_vecs.dtype, device=rot_vecs.device)[None]
    return eye + sin * K + (1 - cos) * torch.bmm(K, K)


def rot_mat_to_euler_y(rot_mats: Tensor) -> Tensor:
    """Yaw angle (radians) of rotation matrices (N, 3, 3), as FLAME's dynamic contour uses it."""
    sy = torch.sqrt(rot_mats[:, 0, 0] ** 2 + rot_mats[:, 1, 0] ** 2)
    return torch.atan2(-rot_mats[:, 2, 0], sy)
