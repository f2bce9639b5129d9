"""Benchmark metrics: similarity alignment, face-region vertex error (mm) and landmark NME (%).

The vertex error aligns the prediction onto the ground truth with a similarity transform (Umeyama
1991) fitted on the face region before measuring, so the head pose, the camera and the global
scale do not count: it measures the shape, the expression and the jaw opening only.
"""
from __future__ import annotations

import torch
from torch import Tensor

from tvface.data.evaluate import OUTER_EYE_CORNERS

METRES_TO_MM = 1000.0  # face models are in metres (tvface.face_models.base)


def _check_points(name: str, x: Tensor) -> None:
    if x.ndim not in (2, 3) or x.shape[-1] != 3:
        raise ValueError(f"{name} must be (N, 3) or (B, N, 3) points, got {tuple(x.shape)}")


def umeyama(src: Tensor, dst: Tensor, with_scale: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """Least-squares similarity ``dst ~ scale * src @ R.T + t`` (Umeyama 1991, Eqs. 40-42).

    Reflection-safe: the sign correction of Eq. 43 keeps det(R) = +1 even when the best
    orthogonal fit is a reflection. Computed in float64, returned in ``src``'s dtype.

    Args:
        src: (N, 3) or (B, N, 3) points to move.
        dst: same shape, the target points.
        with_scale: False fits a rigid motion (scale = 1).
    Returns:
        scale (B,), R (B, 3, 3), t (B, 3); without the batch dimension for (N, 3) input.
    """
    _check_points("src", src)
    if dst.shape != src.shape:
        raise ValueError(f"src and dst must have the same shape, got {tuple(src.shape)} and {tuple(dst.shape)}")
    unbatched = src.ndim == 2
    a = src.double()[None] if unbatched else src.double()  # (B, N, 3)
    b = dst.double()[None] if unbatched else dst.double()
    mu_a, mu_b = a.mean(1, keepdim=True), b.mean(1, keepdim=True)  # (B, 1, 3)
    a_c, b_c = a - mu_a, b - mu_b
    cov = b_c.transpose(1, 2) @ a_c / a.shape[1]  # (B, 3, 3), Eq. 38
    u, sig, vt = torch.linalg.svd(cov)
    d = torch.ones_like(sig)  # (B, 3)
    sign = torch.sign(torch.linalg.det(u) * torch.linalg.det(vt))  # (B,), -1: the best fit reflects
    d[:, 2] = torch.where(sign == 0, torch.ones_like(sign), sign)
    rot = u @ torch.diag_embed(d) @ vt  # (B, 3, 3), Eq. 40
    if with_scale:
        var_a = a_c.square().sum((1, 2)) / a.shape[1]  # (B,), Eq. 36
        scale = (sig * d).sum(1) / var_a.clamp_min(torch.finfo(torch.float64).tiny)  # Eq. 42
    else:
        scale = torch.ones_like(sig[:, 0])
    t = mu_b[:, 0] - scale[:, None] * (rot @ mu_a[:, 0, :, None])[..., 0]  # (B, 3), Eq. 41
    out = tuple(x.to(src.dtype) for x in (scale, rot, t))
    return tuple(x[0] for x in out) if unbatched else out


def apply_similarity(points: Tensor, scale: Tensor, rot: Tensor, t: Tensor) -> Tensor:
    """``scale * points @ R.T + t`` for (N, 3) or (B, N, 3) points (shapes as :func:`umeyama` returns)."""
    if points.ndim == 2:
        return scale * points @ rot.T + t
    return scale[:, None, None] * points @ rot.transpose(1, 2) + t[:, None]


def align(src: Tensor, dst: Tensor, idx: Tensor | None = None, with_scale: bool = True) -> Tensor:
    """``src`` moved onto ``dst`` by the similarity fitted on the points ``idx`` (default: all).

    Args:
        src, dst: (N, 3) or (B, N, 3).
        idx: (K,) long indices of the points the transform is fitted on; all points are moved.
    Returns:
        aligned ``src``, same shape.
    """
    fit_src, fit_dst = (src, dst) if idx is None else (src[..., idx, :], dst[..., idx, :])
    return apply_similarity(src, *umeyama(fit_src, fit_dst, with_scale))


def face_region_vertices(model) -> Tensor:
    """(K,) long, sorted vertex indices of the face region the vertex error is measured on.

    ICT (``model.name == "ict"``): the vertices of ICT's "narrow face area" polygons
    (``face_poly < N_NARROW_FACE_POLYS``), the DECA-like face mask without ears, neck and scalp.
    Other models: the vertices of the ``skin_faces`` triangles.
    """
    if model.name == "ict":
        from tvface.face_models.ict import N_NARROW_FACE_POLYS

        tri = model.face_poly < N_NARROW_FACE_POLYS  # (F,)
    else:
        tri = model.skin_faces
    return torch.unique(model.faces[tri].reshape(-1))


def vertex_error_mm(pred_verts: Tensor, gt_verts: Tensor, region: Tensor) -> Tensor:
    """Mean per-vertex distance (mm) on ``region`` after similarity-aligning pred onto gt there.

    Args:
        pred_verts: (N, V, 3) predicted vertices (metres, any pose and scale).
        gt_verts: (N, V, 3) ground-truth vertices, same topology.
        region: (K,) long vertex indices (:func:`face_region_vertices`).
    Returns:
        (N,) errors in millimetres.
    """
    if pred_verts.ndim != 3 or pred_verts.shape != gt_verts.shape or pred_verts.shape[-1] != 3:
        raise ValueError(f"pred_verts and gt_verts must both be (N, V, 3), got {tuple(pred_verts.shape)} "
                         f"and {tuple(gt_verts.shape)}")
    pred, gt = pred_verts[:, region].double(), gt_verts[:, region].double()  # (N, K, 3)
    aligned = align(pred, gt)
    return (torch.linalg.vector_norm(aligned - gt, dim=-1).mean(1) * METRES_TO_MM).to(pred_verts.dtype)


def landmark_nme(pred_px: Tensor, gt_px: Tensor) -> Tensor:
    """Normalised mean error (%) per frame: :func:`tvface.data.evaluate.nme`, vectorised.

    Mean point-to-point distance over the 68 landmarks divided by the ground truth's outer-eye-corner
    distance (points 36 and 45, 0-based), times 100.

    Args:
        pred_px, gt_px: (N, 68, 2) landmarks in pixels (any pixel convention, the same for both).
    Returns:
        (N,) percent.
    """
    if pred_px.ndim != 3 or pred_px.shape != gt_px.shape or pred_px.shape[1:] != (68, 2):
        raise ValueError(f"pred_px and gt_px must both be (N, 68, 2), got {tuple(pred_px.shape)} "
                         f"and {tuple(gt_px.shape)}")
    pred, gt = pred_px.double(), gt_px.double()
    iod = torch.linalg.vector_norm(gt[:, OUTER_EYE_CORNERS[0]] - gt[:, OUTER_EYE_CORNERS[1]], dim=-1)  # (N,)
    err = torch.linalg.vector_norm(pred - gt, dim=-1).mean(1)  # (N,)
    return (err / iod * 100).to(pred_px.dtype)
