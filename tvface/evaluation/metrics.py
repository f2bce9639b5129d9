"""Benchmark metrics: similarity alignment, face-region vertex error (mm), landmark NME (%), and the
temporal ones: acceleration error (mm/frame^2) and jitter (mm/frame^2).

The vertex error aligns the prediction onto the ground truth with a similarity transform (Umeyama
1991) fitted on the face region before measuring, so the head pose, the camera and the global
scale do not count: it measures the shape, the expression and the jaw opening only.

The temporal metrics work on the same face region, on second differences over frames,
``a_t = x_{t+1} - 2 x_t + x_{t-1}`` (t = 1 .. T-2; a sequence shorter than 3 frames has none):

* **acceleration error** (:func:`acceleration_error_mm`, as in HMR/VIBE-style video benchmarks): the
  mean ``|a^pred_t - a^gt_t|`` per vertex, with the prediction similarity-aligned onto the ground
  truth frame by frame first (as for the vertex error), so a prediction that follows the true motion
  exactly scores 0 even while the face moves;
* **jitter** (:func:`jitter_mm`, no ground truth needed: real video): the mean ``|a_t|`` per vertex
  of the prediction, after each frame is rigidly aligned onto the sequence's first frame, so head
  motion does not count and what remains is the non-rigid shake of shape and expression (in the
  face model's metric units: no scale is fitted).
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


def second_difference(x: Tensor) -> Tensor:
    """``x[t+1] - 2 x[t] + x[t-1]`` over the first axis: (T, ...) -> (T-2, ...) (empty for T < 3)."""
    if x.shape[0] < 3:
        return x[:0]
    return x[2:] - 2 * x[1:-1] + x[:-2]


def _check_sequence(name: str, x: Tensor) -> None:
    if x.ndim != 3 or x.shape[-1] != 3:
        raise ValueError(f"{name} must be (T, V, 3) vertices of one sequence, got {tuple(x.shape)}")


def acceleration_error_mm(pred_verts: Tensor, gt_verts: Tensor, region: Tensor) -> Tensor:
    """Per interior frame, the mean ``|a^pred - a^gt|`` (mm/frame^2) on ``region`` (module docstring).

    Args:
        pred_verts, gt_verts: (T, V, 3) one sequence, metres; pred in any pose and scale (each frame
            is similarity-aligned onto its ground truth on ``region`` first).
        region: (K,) long vertex indices.
    Returns:
        (T-2,) in the prediction's dtype; empty for T < 3.
    """
    _check_sequence("pred_verts", pred_verts)
    if pred_verts.shape != gt_verts.shape:
        raise ValueError(f"pred_verts and gt_verts must have one shape, got {tuple(pred_verts.shape)} and "
                         f"{tuple(gt_verts.shape)}")
    pred, gt = pred_verts[:, region].double(), gt_verts[:, region].double()
    diff = second_difference(align(pred, gt)) - second_difference(gt)  # (T-2, K, 3)
    return (torch.linalg.vector_norm(diff, dim=-1).mean(1) * METRES_TO_MM).to(pred_verts.dtype)


def jitter_mm(pred_verts: Tensor, region: Tensor) -> Tensor:
    """Per interior frame, the mean ``|a|`` (mm/frame^2) of the prediction on ``region``, each frame
    rigidly aligned onto the first frame (rotation and translation removed; the model's metric scale kept).

    Args:
        pred_verts: (T, V, 3) one sequence, metres. region: (K,) long vertex indices.
    Returns:
        (T-2,); empty for T < 3.
    """
    _check_sequence("pred_verts", pred_verts)
    pred = pred_verts[:, region].double()
    canonical = align(pred, pred[:1].expand_as(pred), with_scale=False)
    return (torch.linalg.vector_norm(second_difference(canonical), dim=-1).mean(1)
            * METRES_TO_MM).to(pred_verts.dtype)
