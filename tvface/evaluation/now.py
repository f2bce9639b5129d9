"""NoW-style scan-to-mesh error: predicted meshes against ground-truth 3D scans.

The protocol of the NoW benchmark (Sanyal et al., "Learning to Regress 3D Face Shape and Expression
from an Image without 3D Supervision", CVPR 2019; ``compute_mask``, ``compute_rigid_alignment`` and
``compute_errors`` in github.com/soubhiksanyal/now_evaluation ``scan2mesh_computations.py``)::

    tvface evaluate now --images PRED_DIR --scans SCAN_DIR [--json OUT.json] [--pred-units m]

Per image:

1. **Crop** the scan to NoW's face disc (:func:`now_face_crop`): the scan vertices within
   ``r = 1.4 * (|ex_r - ex_l| + |bridge - nose|) / 2`` of ``c = nose + 0.3 * (bridge - nose)``,
   where ``bridge`` is the midpoint of the inner eye corners and ``nose`` the nose bottom. The radius
   is relative to the face (about 100 mm on an adult); ``--crop-radius-mm R`` replaces it with a
   fixed radius around the same centre. (NoW's centre sits 30 % of the way from the nose bottom up
   to the nose bridge, not on the nose tip.)
2. **Landmark alignment**: Umeyama similarity (rotation, translation, scale) of the 7 predicted
   landmarks onto the scan's 7 (NoW: Procrustes with scaling). ``--metrical``: rigid only, the
   prediction's size taken at face value after the unit conversion (NoW's metrical protocol).
3. **Refinement**: Gauss-Newton steps on the sum of squared scan-to-mesh distances over the
   rotation and translation of the predicted mesh (the scale is kept from step 2; NoW's
   non-metrical script refines the scale too: ``--refine-scale``), at most ``--refine-iters``
   (default 20) steps, each kept only if it lowers the sum, stopping when it no longer drops by a
   relative 1e-5. NoW minimises the same sum with chumpy's dogleg.
4. **Error**: for each cropped scan vertex, the distance to the closest point on the aligned
   predicted mesh's surface (exact point-to-triangle, :func:`point_triangle_distance`), in mm.

Reported per image and pooled over every point of every image (as NoW pools them): median, mean and
std (population, as ``np.std``) in mm, and the cumulative error curve: the fraction of points within
``d`` mm for ``d = 0, 0.1, ..., 10``.

**Units.** Scans and their landmarks are millimetres (NoW's scans are). The predictions are in
``--pred-units`` (default ``m``: tvface's face models and ``tvface reconstruct``'s OBJ/PLY files are
metres, ICT's raw centimetres are converted when the model is built) and are converted to mm first.
Without ``--metrical`` the fitted scale absorbs any unit error and the distances do not depend on the
units; the per-image ``scale`` in the JSON is then the landmark scale the prediction needed (about 1
when the units and the face size are right).

**Input layout** (matched by file stem; a stem on one side only is reported and skipped)::

    PRED_DIR/STEM.obj        predicted mesh (pred units), e.g. tvface's write_obj; polygons are fan-triangulated
    PRED_DIR/STEM_lmk7.txt   its 7 landmarks, 7 lines "x y z" (pred units), NoW order; if this file is
                             missing, --pred-lmk-idx I0,...,I6 takes them from these mesh vertices
    SCAN_DIR/STEM.obj        the ground-truth scan (mm); only its vertices are used
    SCAN_DIR/STEM_lmk7.txt   the scan's 7 landmarks, 7 lines "x y z" (mm), NoW order

NoW's 7 landmarks, in order (its ``scans_lmks_onlypp`` files; iBUG-68 points 36, 39, 42, 45, 33, 48,
54, 0-based, on a 68-point layout): right eye outer corner, right eye inner corner, left eye inner
corner, left eye outer corner, nose bottom (subnasale), right mouth corner, left mouth corner (the
subject's right and left). Real NoW data keeps one scan per subject and its landmarks as MeshLab
``.pp`` files: link or convert them into the layout above.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from tvface.evaluation.metrics import umeyama

LMK7_NAMES = ("right eye outer corner", "right eye inner corner", "left eye inner corner",
              "left eye outer corner", "nose bottom", "right mouth corner", "left mouth corner")
IBUG68_TO_LMK7 = (36, 39, 42, 45, 33, 48, 54)  # the same 7 on a 68-point iBUG layout (DECA, MICA)
NOW_CROP_FACTOR = 1.4  # compute_mask: radius = 1.4 * (outer-eye distance + nose length) / 2
NOW_CENTRE_UP = 0.3  # compute_mask: centre 30 % of the way from the nose bottom to the bridge
UNIT_TO_MM = {"mm": 1.0, "cm": 10.0, "m": 1000.0}
CUMULATIVE_STEP_MM = 0.1
CUMULATIVE_MAX_MM = 10.0
DEFAULT_REFINE_ITERS = 20
REFINE_REL_TOL = 1e-5  # stop when a step lowers the mean squared distance by less than this fraction
LMK_SUFFIX = "_lmk7.txt"
# Point-group pairs screened at once by point_triangle_distance (about 20 bytes each); the exact
# closest-point test runs on at most 1/16 of this many point-triangle pairs at once (~300 bytes each).
CHUNK_PAIRS = 1 << 20
FACE_GROUP = 32  # triangles per bounding-sphere group in point_triangle_distance


class NowInputError(ValueError):
    """A NoW input file is missing or unreadable (the message names the file and the fix)."""


# --------------------------------------------------------------------------- point to triangle


@dataclass(frozen=True)
class SurfacePoints:
    """The closest points on a triangle mesh's surface to a set of query points."""

    dist: Tensor  # (P,) Euclidean distance from each query point to the surface
    closest: Tensor  # (P, 3) the closest surface point
    face: Tensor  # (P,) long, the triangle it lies on


def _dot(x: Tensor, y: Tensor) -> Tensor:
    return (x * y).sum(-1)


def _safe(den: Tensor) -> Tensor:
    """The denominator with exact zeros replaced by 1 (the branch using it is then not selected)."""
    return torch.where(den == 0, torch.ones_like(den), den)


def _closest_on_segment(p: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """(N, 3) closest points on the segments ``a b`` (a point when ``a == b``)."""
    ab = b - a
    t = (_dot(p - a, ab) / _safe(_dot(ab, ab))).clamp(0, 1)
    return a + t[..., None] * ab


def closest_point_on_triangles(p: Tensor, a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """Exact closest point on each triangle ``(a, b, c)`` to each point ``p``, row by row.

    Ericson's region test (Real-Time Collision Detection, 2005, section 5.1.5,
    ``ClosestPtPointTriangle``) picks the feature: vertex A, vertex B, edge AB, vertex C, edge AC,
    edge BC, else the interior, in that order of precedence. The point is then the projection onto
    that feature (the plane, or the edge's segment): the same point as Ericson's barycentric
    formulas, without their cancellation for points far from small triangles. Degenerate triangles
    (zero area, or an angle at ``a`` within 1e-6 rad of 0 or pi) are taken as the union of their
    three edges, where the region test has no plane to work with.

    Args:
        p: (N, 3) query points.
        a, b, c: (N, 3) triangle corners.
    Returns:
        (N, 3) closest points.
    """
    ab, ac, ap = b - a, c - a, p - a
    bp, cp = p - b, p - c
    d1, d2 = _dot(ab, ap), _dot(ac, ap)
    d3, d4 = _dot(ab, bp), _dot(ac, bp)
    d5, d6 = _dot(ab, cp), _dot(ac, cp)
    va = d3 * d6 - d5 * d4  # (N,) unnormalised barycentric weight of A (and of B, C below)
    vb = d5 * d2 - d1 * d6
    vc = d1 * d4 - d3 * d2
    # The regions come from Ericson's test; the points themselves from the direct projections
    # (onto the plane, or an edge's line), which do not suffer the cancellation in va, vb, vc.
    normal = torch.linalg.cross(ab, ac)  # (N, 3)
    cross_sq = _dot(normal, normal)
    out = p - (_dot(ap, normal) / _safe(cross_sq))[..., None] * normal  # interior: onto the plane
    # Lower precedence first, so that each later torch.where overrides.
    e_bc = (va <= 0) & (d4 >= d3) & (d5 >= d6)
    out = torch.where(e_bc[..., None], _closest_on_segment(p, b, c), out)
    e_ac = (vb <= 0) & (d2 >= 0) & (d6 <= 0)
    out = torch.where(e_ac[..., None], _closest_on_segment(p, a, c), out)
    out = torch.where(((d6 >= 0) & (d5 <= d6))[..., None], c, out)
    e_ab = (vc <= 0) & (d1 >= 0) & (d3 <= 0)
    out = torch.where(e_ab[..., None], _closest_on_segment(p, a, b), out)
    out = torch.where(((d3 >= 0) & (d4 <= d3))[..., None], b, out)
    out = torch.where(((d1 <= 0) & (d2 <= 0))[..., None], a, out)

    degenerate = cross_sq <= 1e-12 * _dot(ab, ab) * _dot(ac, ac)  # sin^2(angle at a) <= 1e-12
    if degenerate.any():
        i = degenerate.nonzero()[:, 0]
        pi, ai, bi, ci = p[i], a[i], b[i], c[i]
        cand = torch.stack([_closest_on_segment(pi, ai, bi), _closest_on_segment(pi, bi, ci),
                            _closest_on_segment(pi, ci, ai)], 1)  # (K, 3 edges, 3)
        best = (cand - pi[:, None]).square().sum(-1).argmin(1)  # (K,)
        out = out.index_copy(0, i, cand[torch.arange(len(i), device=p.device), best])
    return out


def _spread_bits(x: Tensor) -> Tensor:
    """10-bit integers -> every third bit (the x, y or z share of a 30-bit Morton code)."""
    x = (x | (x << 16)) & 0x030000FF
    x = (x | (x << 8)) & 0x0300F00F
    x = (x | (x << 4)) & 0x030C30C3
    return (x | (x << 2)) & 0x09249249


def _face_groups(centroid: Tensor, size: int) -> Tensor:
    """(ceil(F / size), size) face indices: runs of the Morton order of the centroids, so each group is
    spatially compact; the last group is padded with repeats of its last face (harmless for a minimum)."""
    lo, hi = centroid.amin(0), centroid.amax(0)
    cell = ((centroid - lo) / (hi - lo).clamp_min(1e-300) * 1023).long().clamp(0, 1023)  # (F, 3)
    code = _spread_bits(cell[:, 0]) | (_spread_bits(cell[:, 1]) << 1) | (_spread_bits(cell[:, 2]) << 2)
    order = code.argsort()
    pad = (-len(order)) % size
    return torch.cat([order, order[-1:].expand(pad)]).reshape(-1, size)


def point_triangle_distance(points: Tensor, verts: Tensor, faces: Tensor,
                            chunk_pairs: int = CHUNK_PAIRS) -> SurfacePoints:
    """Distance from each point to the closest point on a triangle mesh's surface (exact).

    Exhaustive in effect, pruned by bounding spheres so that only triangles that can hold the closest
    point get :func:`closest_point_on_triangles`. The triangles are grouped (:data:`FACE_GROUP`
    spatially close ones per group), each group and triangle bounded by a sphere. For a point, the
    nearest triangle centroid in the nearest group gives an upper bound ``u`` on its distance (a
    centroid lies on its triangle); a group, then a triangle, whose sphere lies farther than ``u``
    cannot hold the closest point and is dropped. Memory is bounded by ``chunk_pairs``: point-group
    pairs screened at once, and point-triangle pairs tested exactly at once (times 1/16).
    Computed in float64, returned in ``points``' dtype.

    Args:
        points: (P, 3) query points.
        verts: (V, 3) mesh vertices.
        faces: (F, 3) long triangle vertex indices, F >= 1.
        chunk_pairs: see above.
    Returns:
        :class:`SurfacePoints` with (P,) distances, (P, 3) closest points and (P,) triangle indices.
    """
    if points.ndim != 2 or points.shape[-1] != 3:
        raise ValueError(f"points must be (P, 3), got {tuple(points.shape)}")
    if verts.ndim != 2 or verts.shape[-1] != 3 or faces.ndim != 2 or faces.shape[-1] != 3 or not len(faces):
        raise ValueError(f"need (V, 3) vertices and (F>=1, 3) faces, got {tuple(verts.shape)} and {tuple(faces.shape)}")
    dtype, dev = points.dtype, points.device
    origin = verts.double().mean(0)  # centred coordinates keep cdist's |x|^2 + |y|^2 - 2xy precise
    pts = points.double() - origin  # (P, 3)
    tri = (verts.double() - origin)[faces.long()]  # (F, 3, 3)
    centroid = tri.mean(1)  # (F, 3)
    radius = (tri - centroid[:, None]).norm(dim=-1).amax(1)  # (F,)
    groups = _face_groups(centroid, FACE_GROUP)  # (NG, G)
    g_centre = centroid[groups].mean(1)  # (NG, 3)
    g_radius = ((centroid[groups] - g_centre[:, None]).norm(dim=-1) + radius[groups]).amax(1)  # (NG,)
    # cdist's rounding is about sqrt(eps) times the coordinates' size: screen groups with that much slack.
    size = max(float(tri.abs().max()), float(pts.abs().max()) if len(pts) else 0.0)
    slack = 1e-6 * size + 1e-30
    step = max(1, chunk_pairs // len(groups))
    block = max(1, chunk_pairs // (16 * groups.shape[1]))
    out_d2 = torch.empty(len(pts), dtype=torch.float64, device=dev)
    out_q, out_f = torch.empty_like(pts), torch.empty(len(pts), dtype=torch.long, device=dev)
    for start in range(0, len(pts), step):
        p = pts[start:start + step]  # (C, 3)
        dg = torch.cdist(p, g_centre)  # (C, NG)
        members = groups[dg.argmin(1)]  # (C, G): the nearest group's triangles
        upper = (p[:, None] - centroid[members]).norm(dim=-1).amin(1)  # (C,)
        pi, gi = ((dg - g_radius) <= upper[:, None] + slack).nonzero(as_tuple=True)  # candidate groups
        del dg
        best_d2 = torch.full((len(p),), math.inf, dtype=torch.float64, device=dev)
        best_q, best_f = torch.zeros_like(p), torch.zeros(len(p), dtype=torch.long, device=dev)
        for s in range(0, len(pi), block):
            f = groups[gi[s:s + block]]  # (K, G)
            bp = pi[s:s + block, None].expand_as(f)  # (K, G)
            near = (p[bp] - centroid[f]).norm(dim=-1) - radius[f] <= upper[bp] + slack  # (K, G)
            bp, bf = bp[near], f[near]  # candidate triangles, (M,)
            q = closest_point_on_triangles(p[bp], tri[bf, 0], tri[bf, 1], tri[bf, 2])  # (M, 3)
            d2 = (p[bp] - q).square().sum(-1)  # (M,)
            m = best_d2.scatter_reduce(0, bp, d2, "amin")  # (C,) incl. the best so far
            wins = d2 <= m[bp]
            k = torch.arange(len(bp), device=dev)
            first = torch.full_like(best_f, len(bp)).scatter_reduce(0, bp[wins], k[wins], "amin")  # (C,)
            idx = ((first < len(bp)) & (m < best_d2)).nonzero()[:, 0]
            best_d2[idx], best_q[idx], best_f[idx] = m[idx], q[first[idx]], bf[first[idx]]
        out_d2[start:start + step], out_q[start:start + step], out_f[start:start + step] = best_d2, best_q, best_f
    return SurfacePoints(out_d2.sqrt().to(dtype), (out_q + origin).to(dtype), out_f)


# --------------------------------------------------------------------------- alignment


@dataclass(frozen=True)
class Similarity:
    """``x -> scale * R x + t`` on (..., 3) points."""

    scale: Tensor  # () positive
    rot: Tensor  # (3, 3) rotation
    t: Tensor  # (3,)

    def apply(self, points: Tensor) -> Tensor:
        return self.scale * points @ self.rot.T + self.t

    def then(self, other: "Similarity") -> "Similarity":
        """``other`` applied after this one."""
        return Similarity(other.scale * self.scale, other.rot @ self.rot, other.apply(self.t))

    def to_dict(self) -> dict:
        return {"scale": float(self.scale), "rotation": self.rot.tolist(), "translation": self.t.tolist()}


@dataclass(frozen=True)
class Alignment:
    """The prediction's placement on the scan (:func:`rigid_align_to_scan`)."""

    transform: Similarity  # predicted mesh (mm) -> scan frame
    landmark_rms_mm: float  # landmark residual after the landmark step
    rms_mm: tuple[float, ...]  # scan-to-mesh RMS after the landmark step, then after each kept step


def _gauss_newton_step(scan: Tensor, sp: SurfacePoints, verts: Tensor, faces: Tensor,
                       refine_scale: bool) -> Tensor:
    """One Gauss-Newton step on sum_i dist_i^2 over a motion of the mesh about the scan centroid ``mu``.

    Moving the mesh's closest point ``q_i`` by ``dq`` changes ``dist_i`` by ``-n_i . dq`` to first
    order, ``n_i`` the unit direction from ``q_i`` to the scan point (the triangle's normal where
    the distance is 0). With ``dq = w x (q - mu) + tau + sigma (q - mu)`` that is a linear
    least-squares problem in ``x = (w, tau[, sigma])`` (point-to-plane ICP).

    Returns:
        (6,) or (7,) ``x``; :func:`_motion` turns it into the mesh's motion.
    """
    tri = verts[faces[sp.face]]  # (P, 3, 3)
    normal = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normal = normal / normal.norm(dim=-1, keepdim=True).clamp_min(1e-300)  # (P, 3)
    tiny = 1e-12 * float(scan.abs().max())
    n = torch.where((sp.dist > tiny)[:, None], (scan - sp.closest) / sp.dist.clamp_min(1e-300)[:, None],
                    normal)  # (P, 3)
    q = sp.closest - scan.mean(0)  # (P, 3)
    cols = [torch.linalg.cross(q, n), n] + ([_dot(q, n)[:, None]] if refine_scale else [])
    jac = torch.cat(cols, 1)  # (P, 6 or 7)
    jtj = jac.T @ jac
    damping = 1e-12 * jtj.diagonal().sum() + 1e-300  # keeps unobservable directions (a sphere's spin) at 0
    eye = torch.eye(len(jtj), dtype=jtj.dtype, device=jtj.device)
    return torch.linalg.solve(jtj + damping * eye, jac.T @ sp.dist)


def _motion(x: Tensor, mu: Tensor) -> Similarity:
    """``p -> mu + (1 + sigma) exp([w]x) (p - mu) + tau`` for ``x = (w, tau[, sigma])``."""
    s = 1 + x[6] if len(x) > 6 else torch.ones((), dtype=x.dtype, device=x.device)
    w = x[:3]
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    skew = torch.stack([torch.stack([zero, -w[2], w[1]]), torch.stack([w[2], zero, -w[0]]),
                        torch.stack([-w[1], w[0], zero])])
    rot = torch.linalg.matrix_exp(skew)
    return Similarity(s, rot, mu + x[3:6] - s * rot @ mu)


def _mean_sq(sp: SurfacePoints) -> float:
    return float(sp.dist.square().mean())


def rigid_align_to_scan(pred_verts: Tensor, faces: Tensor, pred_lmks: Tensor, scan_points: Tensor,
                        scan_lmks: Tensor, iters: int = DEFAULT_REFINE_ITERS, refine_scale: bool = False,
                        metrical: bool = False) -> Alignment:
    """Place a predicted mesh on a scan: landmark similarity, then scan-to-mesh refinement.

    Steps 2 and 3 of the module docstring: :func:`umeyama` on the landmarks (rigid when
    ``metrical``), then at most ``iters`` Gauss-Newton steps on the sum of squared distances from
    ``scan_points`` to the moved mesh's surface, each kept only if it lowers that sum (halving the
    step up to 4 times first). All inputs in mm; computed in float64.

    Args:
        pred_verts: (V, 3) predicted mesh vertices, mm.
        faces: (F, 3) long triangles.
        pred_lmks: (7, 3) predicted landmarks, mm.
        scan_points: (N, 3) the (cropped) scan's vertices, mm.
        scan_lmks: (7, 3) the scan's landmarks, mm.
        iters: refinement steps at most (0: landmarks only).
        refine_scale: let the refinement change the scale too (NoW's non-metrical script does).
        metrical: no scale at all (rigid landmark fit; the scale stays 1).
    Returns:
        :class:`Alignment` (its transform maps ``pred_verts`` into the scan frame).
    """
    for name, x, shape in (("pred_lmks", pred_lmks, (7, 3)), ("scan_lmks", scan_lmks, (7, 3))):
        if tuple(x.shape) != shape:
            raise ValueError(f"{name} must be {shape}, got {tuple(x.shape)}")
    verts, scan = pred_verts.double(), scan_points.double()
    scale, rot, t = umeyama(pred_lmks.double(), scan_lmks.double(), with_scale=not metrical)
    sim = Similarity(scale, rot, t)
    lmk_rms = float((sim.apply(pred_lmks.double()) - scan_lmks.double()).square().sum(-1).mean().sqrt())
    refine_scale = refine_scale and not metrical
    sp = point_triangle_distance(scan, sim.apply(verts), faces)
    mse = _mean_sq(sp)
    rms = [math.sqrt(mse)]
    for _ in range(iters):
        if mse == 0:
            break
        x = _gauss_newton_step(scan, sp, sim.apply(verts), faces, refine_scale)
        for halving in range(5):
            trial = sim.then(_motion(x / 2 ** halving, scan.mean(0)))
            sp_trial = point_triangle_distance(scan, trial.apply(verts), faces)
            if _mean_sq(sp_trial) < mse:
                break
        else:
            break
        improvement = (mse - _mean_sq(sp_trial)) / mse
        sim, sp, mse = trial, sp_trial, _mean_sq(sp_trial)
        rms.append(math.sqrt(mse))
        if improvement < REFINE_REL_TOL:
            break
    return Alignment(sim, lmk_rms, tuple(rms))


# --------------------------------------------------------------------------- the errors


def now_face_crop(scan_lmks: Tensor) -> tuple[Tensor, float]:
    """NoW's face disc from the scan's 7 landmarks (``compute_mask``; module docstring, step 1).

    Args:
        scan_lmks: (7, 3) NoW-ordered landmarks, mm.
    Returns:
        the centre (3,) and the radius in mm.
    """
    if tuple(scan_lmks.shape) != (7, 3):
        raise ValueError(f"scan_lmks must be (7, 3), got {tuple(scan_lmks.shape)}")
    nose = scan_lmks[4]
    bridge = (scan_lmks[1] + scan_lmks[2]) / 2  # between the inner eye corners
    centre = nose + NOW_CENTRE_UP * (bridge - nose)
    radius = NOW_CROP_FACTOR * float((scan_lmks[0] - scan_lmks[3]).norm() + (bridge - nose).norm()) / 2
    return centre, radius


@dataclass(frozen=True)
class NowErrors:
    """One image's NoW errors (:func:`now_errors`)."""

    dist: Tensor  # (M,) mm, scan-to-mesh distance of each cropped scan vertex
    scan_idx: Tensor  # (M,) long, which scan vertices the crop kept
    alignment: Alignment
    crop_centre: Tensor  # (3,) mm
    crop_radius_mm: float


def now_errors(scan_verts: Tensor, scan_lmks: Tensor, pred_verts: Tensor, faces: Tensor, pred_lmks: Tensor,
               crop_radius_mm: float | None = None, refine_iters: int = DEFAULT_REFINE_ITERS,
               refine_scale: bool = False, metrical: bool = False) -> NowErrors:
    """Crop, align, measure: the NoW protocol for one prediction (module docstring). All in mm.

    Args:
        scan_verts: (N, 3) scan vertices.
        scan_lmks: (7, 3) scan landmarks, NoW order.
        pred_verts: (V, 3) predicted mesh vertices.
        faces: (F, 3) long predicted triangles.
        pred_lmks: (7, 3) predicted landmarks, NoW order.
        crop_radius_mm: a fixed crop radius around NoW's face centre (None: NoW's face-relative one).
        refine_iters, refine_scale, metrical: see :func:`rigid_align_to_scan`.
    Returns:
        :class:`NowErrors`.
    """
    centre, radius = now_face_crop(scan_lmks.double())
    if crop_radius_mm is not None:
        if not crop_radius_mm > 0:
            raise ValueError(f"crop radius must be positive, got {crop_radius_mm} mm")
        radius = float(crop_radius_mm)
    keep = ((scan_verts.double() - centre).norm(dim=-1) <= radius).nonzero()[:, 0]  # (M,)
    if not len(keep):
        raise ValueError(f"no scan vertex lies within {radius:.1f} mm of the face centre "
                         f"{centre.tolist()}: are the scan and its landmarks both in mm, in the same frame?")
    scan = scan_verts.double()[keep]  # (M, 3)
    ali = rigid_align_to_scan(pred_verts, faces, pred_lmks, scan, scan_lmks, refine_iters, refine_scale, metrical)
    sp = point_triangle_distance(scan, ali.transform.apply(pred_verts.double()), faces)
    return NowErrors(sp.dist, keep, ali, centre, radius)


def summarise_errors(dist: Tensor) -> dict:
    """Median, mean, std (population) in mm and the cumulative curve of (M,) distances."""
    d = dist.double().cpu()
    thresholds = torch.arange(0, round(CUMULATIVE_MAX_MM / CUMULATIVE_STEP_MM) + 1, dtype=torch.float64)
    thresholds = thresholds * CUMULATIVE_STEP_MM
    within = (d[None] <= thresholds[:, None] + 1e-12).double().mean(1)  # (T,)
    return {"n_points": int(d.numel()), "median_mm": float(d.median()) if d.numel() else math.nan,
            "mean_mm": float(d.mean()), "std_mm": float(d.std(unbiased=False)),
            "cumulative": {"thresholds_mm": [round(float(x), 6) for x in thresholds],
                           "fraction": [float(x) for x in within]}}


# --------------------------------------------------------------------------- files


@dataclass(frozen=True)
class NowConfig:
    """Settings of :func:`evaluate_now_dir` (the CLI flags)."""

    pred_units: str = "m"
    pred_lmk_idx: tuple[int, ...] | None = None  # 7 vertex indices for predictions without STEM_lmk7.txt
    crop_radius_mm: float | None = None  # None: NoW's face-relative radius
    refine_iters: int = DEFAULT_REFINE_ITERS
    refine_scale: bool = False
    metrical: bool = False
    device: str = "cpu"


def read_lmk7(path: Path, what: str) -> np.ndarray:
    """(7, 3) float64 landmarks from a text file of 7 lines ``x y z`` (spaces or commas; ``#`` comments)."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise NowInputError(f"{what} landmarks not found: {path} (write 7 lines 'x y z' in NoW order: "
                            f"{', '.join(LMK7_NAMES)})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise NowInputError(f"{path}: cannot read the {what} landmarks ({e})") from None
    rows = [ln.replace(",", " ").split() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    try:
        lmks = np.array(rows, dtype=np.float64)
    except ValueError:
        lmks = None
    if lmks is None or lmks.shape != (7, 3) or not np.isfinite(lmks).all():
        raise NowInputError(f"{path}: expected 7 lines of 3 numbers 'x y z' ({what} landmarks, NoW order), "
                            f"got {len(rows)} lines{'' if lmks is None else ' of shape ' + str(lmks.shape)}; "
                            "rewrite the file")
    return lmks


def read_mesh(path: Path, what: str, need_faces: bool) -> tuple[np.ndarray, np.ndarray]:
    """(verts (V, 3) float64, faces (F, 3) int64) of an OBJ, with one-line errors naming the file."""
    from tvface.face_models.obj import ObjError, read_obj

    fix = ("re-export it (tvface reconstruct writes OBJs that read back)" if need_faces else
           "copy or export the scan again as a complete OBJ")
    try:
        mesh = read_obj(path)
        faces = mesh.triangulate()[0] if mesh.n_polys else np.zeros((0, 3), np.int64)
    except FileNotFoundError:
        raise NowInputError(f"{what} not found: {path}") from None
    except ObjError as e:
        raise NowInputError(f"{e} ({what}: {fix})") from None
    except (OSError, ValueError) as e:
        raise NowInputError(f"{path}: unreadable OBJ ({e}); {fix}") from None
    if not len(mesh.verts) or not np.isfinite(mesh.verts).all():
        raise NowInputError(f"{path}: {'no vertices' if not len(mesh.verts) else 'non-finite vertices'} "
                            f"(empty or truncated file?); {fix}")
    if need_faces and not len(faces):
        raise NowInputError(f"{path}: no triangles (truncated file?): the {what} must be a surface; {fix}")
    return mesh.verts, faces


def _stems(folder: Path, flag: str) -> set[str]:
    if not folder.is_dir():
        raise NowInputError(f"{flag} {folder}: not a folder")
    return {p.stem for p in folder.glob("*.obj")}


def evaluate_now_dir(images: Path, scans: Path, cfg: NowConfig = NowConfig(),
                     log: Callable[[str], None] | None = None) -> dict:
    """NoW errors of every prediction in ``images`` against its scan in ``scans`` (layout: module docstring).

    Args:
        images: folder of ``STEM.obj`` (+ ``STEM_lmk7.txt``) predictions.
        scans: folder of ``STEM.obj`` + ``STEM_lmk7.txt`` scans.
        cfg: units, landmark indices, crop and refinement settings.
        log: called with one line per image and per unmatched stem (e.g. ``print``).
    Returns:
        ``{"meta", "images": [per-image stats], "summary": pooled stats, "skipped": {...}}``.
    """
    images, scans = Path(images), Path(scans)
    if cfg.pred_units not in UNIT_TO_MM:
        raise ValueError(f"pred units must be one of {sorted(UNIT_TO_MM)}, got {cfg.pred_units!r}")
    if cfg.pred_lmk_idx is not None and len(cfg.pred_lmk_idx) != 7:
        raise ValueError(f"--pred-lmk-idx needs 7 vertex indices, got {len(cfg.pred_lmk_idx)}")
    log = log or (lambda _line: None)
    pred_stems, scan_stems = _stems(images, "--images"), _stems(scans, "--scans")
    matched = sorted(pred_stems & scan_stems)
    skipped = {"no_scan": sorted(pred_stems - scan_stems), "no_prediction": sorted(scan_stems - pred_stems)}
    for stem in skipped["no_scan"]:
        log(f"skipped {stem}: {images / (stem + '.obj')} has no scan {scans / (stem + '.obj')}")
    for stem in skipped["no_prediction"]:
        log(f"skipped {stem}: scan {scans / (stem + '.obj')} has no prediction {images / (stem + '.obj')}")
    if not matched:
        raise NowInputError(f"no prediction in {images} has a scan of the same stem in {scans} "
                            f"({len(pred_stems)} predictions, {len(scan_stems)} scans)")
    to_mm = UNIT_TO_MM[cfg.pred_units]
    dev = torch.device(cfg.device)
    rows, all_dist = [], []
    for i, stem in enumerate(matched):
        pred_file = images / f"{stem}.obj"
        pred_v, pred_f = read_mesh(pred_file, "predicted mesh", need_faces=True)
        lmk_file = images / f"{stem}{LMK_SUFFIX}"
        if lmk_file.exists():
            pred_l, lmk_source = read_lmk7(lmk_file, "predicted"), lmk_file.name
        elif cfg.pred_lmk_idx is None:
            raise NowInputError(f"predicted landmarks not found: {lmk_file} (write 7 lines 'x y z' in NoW order, "
                                "or pass --pred-lmk-idx with the 7 mesh vertex indices)")
        else:
            idx = np.asarray(cfg.pred_lmk_idx, np.int64)
            if idx.min() < 0 or idx.max() >= len(pred_v):
                raise NowInputError(f"--pred-lmk-idx {list(cfg.pred_lmk_idx)}: {pred_file} has {len(pred_v)} "
                                    "vertices; give indices of this mesh's vertices")
            pred_l, lmk_source = pred_v[idx], "--pred-lmk-idx"
        scan_v, _ = read_mesh(scans / f"{stem}.obj", "scan", need_faces=False)
        scan_l = read_lmk7(scans / f"{stem}{LMK_SUFFIX}", "scan")

        def t(x: np.ndarray, scale: float = 1.0) -> Tensor:
            return torch.as_tensor(x * scale, dtype=torch.float64, device=dev)

        try:
            err = now_errors(t(scan_v), t(scan_l), t(pred_v, to_mm), torch.as_tensor(pred_f, device=dev),
                             t(pred_l, to_mm), cfg.crop_radius_mm, cfg.refine_iters, cfg.refine_scale, cfg.metrical)
        except ValueError as e:
            raise NowInputError(f"{stem} (scan {scans / (stem + '.obj')}, landmarks "
                                f"{scans / (stem + LMK_SUFFIX)}): {e}") from None
        stats = summarise_errors(err.dist)
        del stats["cumulative"]
        ali = err.alignment
        rows.append({"image": stem, **stats, "landmarks": lmk_source, "crop_radius_mm": err.crop_radius_mm,
                     "landmark_rms_mm": ali.landmark_rms_mm, "refine_rms_mm": list(ali.rms_mm),
                     "scale": float(ali.transform.scale), "transform": ali.transform.to_dict()})
        all_dist.append(err.dist.cpu())
        log(f"[{i + 1}/{len(matched)}] {stem}: median {stats['median_mm']:.3f} mm, mean {stats['mean_mm']:.3f} mm "
            f"over {stats['n_points']} scan points")
    meta = {"protocol": "NoW scan-to-mesh (tvface.evaluation.now)", "images_dir": str(images),
            "scans_dir": str(scans), "pred_units": cfg.pred_units, "metrical": cfg.metrical,
            "crop": ("NoW face-relative radius (1.4 x (outer-eye distance + nose length) / 2)"
                     if cfg.crop_radius_mm is None else f"{cfg.crop_radius_mm} mm"),
            "refine_iters": cfg.refine_iters, "refine_scale": cfg.refine_scale and not cfg.metrical,
            "n_images": len(rows)}
    return {"meta": meta, "images": rows, "summary": summarise_errors(torch.cat(all_dist)), "skipped": skipped}


def to_markdown(result: dict) -> str:
    """Per-image and pooled NoW errors as a Markdown table, then the cumulative curve at whole mm."""
    lines = ["| image | scan points | median (mm) | mean (mm) | std (mm) | scale | landmark RMS (mm) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in result["images"]:
        lines.append(f"| {r['image']} | {r['n_points']} | {r['median_mm']:.3f} | {r['mean_mm']:.3f} | "
                     f"{r['std_mm']:.3f} | {r['scale']:.4f} | {r['landmark_rms_mm']:.2f} |")
    s = result["summary"]
    lines.append(f"| **all** | {s['n_points']} | **{s['median_mm']:.3f}** | **{s['mean_mm']:.3f}** | "
                 f"**{s['std_mm']:.3f}** | | |")
    cum = s["cumulative"]
    at_mm = [f"{d:g} mm: {100 * f:.1f} %" for d, f in zip(cum["thresholds_mm"], cum["fraction"])
             if abs(d - round(d)) < 1e-9 and d > 0]
    return "\n".join(lines) + "\n\nscan points within " + ", ".join(at_mm) + "\n"


# --------------------------------------------------------------------------- command line


def _parse_lmk_idx(text: str) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        idx = tuple(int(x) for x in text.replace(" ", "").split(","))
    except ValueError:
        idx = ()
    if len(idx) != 7:
        raise ValueError(f"--pred-lmk-idx {text!r}: give 7 comma-separated vertex indices, NoW order "
                         f"({', '.join(LMK7_NAMES)})")
    return idx


def _cmd_now(args) -> int:
    from tvface.io.atomic import atomic_write_text

    cfg = NowConfig(pred_units=args.pred_units, pred_lmk_idx=_parse_lmk_idx(args.pred_lmk_idx),
                    crop_radius_mm=args.crop_radius_mm, refine_iters=args.refine_iters,
                    refine_scale=args.refine_scale, metrical=args.metrical, device=args.device)
    result = evaluate_now_dir(Path(args.images), Path(args.scans), cfg, log=print)
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=1) + "\n")
    print(to_markdown(result), end="")
    return 0


def add_now_parser(subparsers) -> None:
    """``tvface evaluate now ...`` (added under ``tvface evaluate``'s own subcommands)."""
    p = subparsers.add_parser("now", help="NoW-style scan-to-mesh error of predicted meshes against 3D scans",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--images", required=True, help="folder of STEM.obj predictions (+ STEM_lmk7.txt)")
    p.add_argument("--scans", required=True, help="folder of STEM.obj scans (mm) + STEM_lmk7.txt")
    p.add_argument("--json", default="", help="write per-image and pooled results here")
    p.add_argument("--pred-units", default="m", choices=sorted(UNIT_TO_MM),
                   help="units of the predictions (default m: tvface's meshes are metres); scans are mm")
    p.add_argument("--pred-lmk-idx", default="", metavar="I0,...,I6",
                   help="mesh vertex indices of the 7 landmarks, for predictions without STEM_lmk7.txt")
    p.add_argument("--crop-radius-mm", type=float, default=None,
                   help="fixed scan crop radius around NoW's face centre (default: NoW's face-relative radius)")
    p.add_argument("--refine-iters", type=int, default=DEFAULT_REFINE_ITERS,
                   help="scan-to-mesh refinement steps at most (0: landmark alignment only)")
    p.add_argument("--refine-scale", action="store_true",
                   help="let the refinement change the scale too (as NoW's non-metrical script)")
    p.add_argument("--metrical", action="store_true",
                   help="fit no scale: rigid alignment of the unit-converted prediction (NoW's metrical protocol)")
    p.add_argument("--device", default="cpu", help="torch device for the distances (cpu, cuda)")
    p.set_defaults(func=_cmd_now)
