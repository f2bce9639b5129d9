"""Rasterisation: which triangle each pixel sees, and differentiable barycentrics.

Screen space (DECA's, see :mod:`tvface.rendering`): ``screen_verts`` (B, V, 3) with x to the image
right and y to the image bottom, both in [-1, 1] over the full width/height (pixel j's centre at
x = -1 + (2j + 1) / W, i.e. ``grid_sample(align_corners=False)``), and z smaller = nearer.

The ``torch`` backend is *deferred* (as nvdiffrast): visibility is discrete and computed without
gradients (a z-buffer; on CPU a small compiled C++ pass, else the PyTorch loop below), then
barycentrics of each covered pixel centre are recomputed with autograd from the screen vertices of
its visible triangle, so gradients reach vertex positions (interior pixels; silhouettes move
discretely) and anything interpolated with the barycentrics.

Cost grows with (pixels + total bounding-box area of the triangles), never pixels x triangles:
each triangle enumerates the pixel centres of its bounding box (prefix sum + ``repeat_interleave``),
keeps those inside, and a ``scatter_reduce('amin')`` over packed int64 keys ``(depth bits << 32) |
face id`` resolves the z-test and the tie-break (lowest face id) in one pass. Enumeration runs in
chunks of at most ``max_candidates`` so one large triangle cannot blow memory up.

Results are *packed*: only covered pixels are stored (:class:`Fragments`), which is what the
shading code works on; :meth:`Fragments.to_image` scatters values back into images.
"""
from __future__ import annotations

import ctypes
import functools
import itertools
from dataclasses import dataclass

import torch
from torch import Tensor

from tvface.ops.cpu_kernels import compile_library

# Candidates are counted in (triangle, pixel) pairs; 2**23 pairs use about 0.3 GB of temporaries.
MAX_CANDIDATES = 1 << 23
# Inclusive inside test, in barycentric units: pixel centres exactly on a shared edge (common when
# vertices sit on the pixel grid) are claimed by both triangles instead of neither, and the z-key
# tie-break picks one, so meshes rasterise without cracks.
INSIDE_EPS = 1e-6
_INT64_MAX = torch.iinfo(torch.int64).max
_FACE_BITS = 32


@dataclass(frozen=True)
class Fragments:
    """Covered pixels of a batch of renders, packed (N = covered pixels over the whole batch).

    Attributes:
        pix_idx: (N,) long, flat index into (B, H, W), sorted.
        face_idx: (N,) long, triangle index into ``faces`` (0..F-1).
        bary: (N, 3) barycentrics of the pixel centre in the visible triangle; differentiable
            w.r.t. the screen vertices (float32, or float64 for float64 input).
        depth: (N,) screen z of the pixel centre (differentiable like ``bary``).
        batch_size, height, width: image layout.
    """

    pix_idx: Tensor
    face_idx: Tensor
    bary: Tensor
    depth: Tensor
    batch_size: int
    height: int
    width: int

    @property
    def batch_idx(self) -> Tensor:
        return torch.div(self.pix_idx, self.height * self.width, rounding_mode="floor")

    @property
    def counts(self) -> list[int]:
        """Covered pixels per batch element (pixels are sorted by batch)."""
        return torch.bincount(self.batch_idx, minlength=self.batch_size).tolist()

    @property
    def pix_to_face(self) -> Tensor:
        """(B, H, W) long, visible triangle per pixel, -1 where empty (pytorch3d's layout, K=1)."""
        out = torch.full((self.batch_size * self.height * self.width,), -1, dtype=torch.long,
                         device=self.pix_idx.device)
        out[self.pix_idx] = self.face_idx
        return out.view(self.batch_size, self.height, self.width)

    def mask(self) -> Tensor:
        """(B, 1, H, W) float coverage mask (DECA's ``alpha_images``)."""
        out = torch.zeros(self.batch_size * self.height * self.width, device=self.pix_idx.device)
        out[self.pix_idx] = 1.0
        return out.view(self.batch_size, 1, self.height, self.width)

    def to_image(self, values: Tensor, background: float | Tensor = 0.0) -> Tensor:
        """Scatter packed values (N, C) into images (B, C, H, W); differentiable in ``values``.

        ``background`` is a number or a (B, C, H, W) image for the uncovered pixels.
        """
        n_pix = self.batch_size * self.height * self.width
        channels = values.shape[1]
        if isinstance(background, Tensor):
            base = background.permute(0, 2, 3, 1).reshape(n_pix, channels).to(values.dtype)
        else:
            base = values.new_full((n_pix, channels), float(background))
        out = base.index_copy(0, self.pix_idx, values)  # (B*H*W, C)
        return out.view(self.batch_size, self.height, self.width, channels).permute(0, 3, 1, 2)


def ndc_to_pixel(screen_xy: Tensor, height: int, width: int) -> Tensor:
    """Screen x, y in [-1, 1] -> continuous pixel coordinates where pixel (i, j)'s centre is (j, i)."""
    px = (screen_xy[..., 0] + 1.0) * (width / 2.0) - 0.5
    py = (screen_xy[..., 1] + 1.0) * (height / 2.0) - 0.5
    return torch.stack([px, py], dim=-1)


def _float_to_ordered_int(x: Tensor) -> Tensor:
    """float32 -> int32 whose signed order is the float order (for packing depth into a key)."""
    bits = x.contiguous().view(torch.int32)
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)


def _face_planes(pix: Tensor, z: Tensor, faces: Tensor, cull_backfaces: bool):
    """Per-face plane coefficients so that bary_k = a_k * px + b_k * py + c_k, z = a * px + ...

    Returns coefs (B*F, 9): rows (a0, b0, c0, a1, b1, c1, az, bz, cz), and valid (B*F,) bool.
    """
    v = pix[:, faces]  # (B, F, 3, 2)
    zf = z[:, faces]  # (B, F, 3)
    x0, x1, x2 = v[..., 0].unbind(-1)
    y0, y1, y2 = v[..., 1].unbind(-1)
    area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)  # (B, F), twice the signed area
    # Front-facing (counter-clockwise in the model's +y-up frame) is clockwise once y points down.
    valid = area < 0 if cull_backfaces else area != 0
    inv = torch.where(valid, 1.0 / torch.where(valid, area, torch.ones_like(area)), torch.zeros_like(area))
    # w0 = edge(v1, v2, p) = (x2 - x1) * (py - y1) - (y2 - y1) * (px - x1), etc.
    a0, b0 = -(y2 - y1) * inv, (x2 - x1) * inv
    c0 = ((y2 - y1) * x1 - (x2 - x1) * y1) * inv
    a1, b1 = -(y0 - y2) * inv, (x0 - x2) * inv
    c1 = ((y0 - y2) * x2 - (x0 - x2) * y2) * inv
    a2, b2, c2 = -a0 - a1, -b0 - b1, 1.0 - c0 - c1
    z0, z1, z2 = zf.unbind(-1)
    az = a0 * z0 + a1 * z1 + a2 * z2
    bz = b0 * z0 + b1 * z1 + b2 * z2
    cz = c0 * z0 + c1 * z1 + c2 * z2
    coefs = torch.stack([a0, b0, c0, a1, b1, c1, az, bz, cz], dim=-1)  # (B, F, 9)
    return coefs.reshape(-1, 9), valid.reshape(-1)


# The z-buffer pass in C++ (CPU, float32): the same plane coefficients, inside test, depth and packed
# z-key as the PyTorch loop in rasterize_visibility, evaluated in the same float32 operation order
# without contraction into FMAs, so both give the same fragments (tests compare them). One thread
# per batch element: each writes only its own slice of the z-buffer, no atomics.
_ZBUFFER_SOURCE = r"""
#include <cstdint>
#include <cmath>
#include <cstring>

static inline int64_t zkey(float depth, int64_t face) {
  int32_t bits;
  std::memcpy(&bits, &depth, sizeof bits);
  int32_t ordered = bits ^ ((bits >> 31) & 0x7FFFFFFF);
  return (int64_t)((uint64_t)(int64_t)ordered << 32) | face;
}

extern "C" void zbuffer_f32(const float* pix, const float* zv, const int64_t* faces, int64_t* zbuf,
                            int64_t batch, int64_t n_verts, int64_t n_faces, int64_t height, int64_t width,
                            int cull, float neg_eps) {
#ifdef _OPENMP
#pragma omp parallel for schedule(static)
#endif
  for (int64_t b = 0; b < batch; ++b) {
    const float* P = pix + b * n_verts * 2;
    const float* Z = zv + b * n_verts;
    int64_t* buf = zbuf + b * height * width;
    for (int64_t f = 0; f < n_faces; ++f) {
      const int64_t i0 = faces[3 * f], i1 = faces[3 * f + 1], i2 = faces[3 * f + 2];
      const float x0 = P[2 * i0], y0 = P[2 * i0 + 1], x1 = P[2 * i1], y1 = P[2 * i1 + 1];
      const float x2 = P[2 * i2], y2 = P[2 * i2 + 1];
      const float area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0);
      if (cull ? !(area < 0.0f) : !(area != 0.0f)) continue;
      float lox = std::ceil(std::fmin(std::fmin(x0, x1), x2)), loy = std::ceil(std::fmin(std::fmin(y0, y1), y2));
      float hix = std::floor(std::fmax(std::fmax(x0, x1), x2)), hiy = std::floor(std::fmax(std::fmax(y0, y1), y2));
      lox = std::fmax(lox, 0.0f); loy = std::fmax(loy, 0.0f);
      hix = std::fmin(hix, (float)(width - 1)); hiy = std::fmin(hiy, (float)(height - 1));
      if (!(lox <= hix) || !(loy <= hiy)) continue;
      const float inv = 1.0f / area;
      const float a0 = -(y2 - y1) * inv, b0 = (x2 - x1) * inv, c0 = ((y2 - y1) * x1 - (x2 - x1) * y1) * inv;
      const float a1 = -(y0 - y2) * inv, b1 = (x0 - x2) * inv, c1 = ((y0 - y2) * x2 - (x0 - x2) * y2) * inv;
      const float a2 = -a0 - a1, b2 = -b0 - b1, c2 = 1.0f - c0 - c1;
      const float z0 = Z[i0], z1 = Z[i1], z2 = Z[i2];
      const float az = a0 * z0 + a1 * z1 + a2 * z2;
      const float bz = b0 * z0 + b1 * z1 + b2 * z2;
      const float cz = c0 * z0 + c1 * z1 + c2 * z2;
      const int64_t face_id = b * n_faces + f;
      for (int64_t py = (int64_t)loy; py <= (int64_t)hiy; ++py) {
        const float fy = (float)py;
        for (int64_t px = (int64_t)lox; px <= (int64_t)hix; ++px) {
          const float fx = (float)px;
          const float w0 = a0 * fx + b0 * fy + c0;
          const float w1 = a1 * fx + b1 * fy + c1;
          if (!(w0 >= neg_eps) || !(w1 >= neg_eps) || !(1.0f - w0 - w1 >= neg_eps)) continue;
          const int64_t key = zkey(az * fx + bz * fy + cz, face_id);
          int64_t* slot = buf + py * width + px;
          if (key < *slot) *slot = key;
        }
      }
    }
  }
}
"""


@functools.lru_cache(maxsize=1)
def _zbuffer_kernel() -> ctypes.CDLL | None:
    """The compiled z-buffer pass, or None (no compiler, ``TVFACE_NO_COMPILE=1``): then the PyTorch loop."""
    lib = compile_library("rasterize", _ZBUFFER_SOURCE, ("-ffp-contract=off",))
    if lib is not None:
        p, i64 = ctypes.c_void_p, ctypes.c_int64
        lib.zbuffer_f32.argtypes = [p, p, p, p, i64, i64, i64, i64, i64, ctypes.c_int, ctypes.c_float]
        lib.zbuffer_f32.restype = None
    return lib


def _zbuffer_compiled(lib: ctypes.CDLL, pix: Tensor, z: Tensor, faces: Tensor, height: int, width: int,
                      cull_backfaces: bool) -> Tensor:
    pix, z = pix.contiguous(), z.contiguous()
    faces = faces.to(torch.int64).contiguous()
    zbuf = torch.full((pix.shape[0] * height * width,), _INT64_MAX, dtype=torch.int64)
    lib.zbuffer_f32(pix.data_ptr(), z.data_ptr(), faces.data_ptr(), zbuf.data_ptr(), pix.shape[0], pix.shape[1],
                    faces.shape[0], height, width, int(cull_backfaces), -INSIDE_EPS)
    return zbuf


@torch.no_grad()
def rasterize_visibility(pix: Tensor, z: Tensor, faces: Tensor, height: int, width: int,
                         cull_backfaces: bool = True, max_candidates: int = MAX_CANDIDATES,
                         compiled: bool | None = None) -> tuple[Tensor, Tensor]:
    """Nearest triangle per pixel, without gradients.

    Args:
        pix: (B, V, 2) continuous pixel coordinates (:func:`ndc_to_pixel`).
        z: (B, V) depth, smaller = nearer.
        faces: (F, 3) long.
        cull_backfaces: drop triangles clockwise in the model frame (facing away).
        compiled: the C++ z-buffer pass (float32 on CPU; None: whenever it is available), else the
            PyTorch loop below (GPU, float64, no compiler). Both give the same fragments.
    Returns:
        pix_idx (N,) flat (B, H, W) indices of covered pixels, sorted; face_idx (N,) in 0..F-1.
    """
    batch, n_faces = pix.shape[0], faces.shape[0]
    if batch * n_faces >= 2**31:
        raise ValueError(f"batch x faces = {batch * n_faces} does not fit the 32-bit face id of the z-key")
    device = pix.device
    dtype = torch.float64 if pix.dtype == torch.float64 else torch.float32
    pix, z = pix.to(dtype), z.to(dtype)
    lib = _zbuffer_kernel() if compiled is not False and device.type == "cpu" and dtype == torch.float32 else None
    if compiled and lib is None:
        raise RuntimeError("the compiled z-buffer needs float32 CPU tensors and a C++ compiler "
                           "(TVFACE_NO_COMPILE unset)")
    if lib is not None:
        zbuf = _zbuffer_compiled(lib, pix, z, faces, height, width, cull_backfaces)
    else:
        zbuf = _zbuffer_torch(pix, z, faces, height, width, cull_backfaces, max_candidates)
    pix_idx = torch.nonzero(zbuf != _INT64_MAX).squeeze(1)
    face_idx = (zbuf[pix_idx] & ((1 << _FACE_BITS) - 1)) % n_faces
    return pix_idx, face_idx


def _zbuffer_torch(pix: Tensor, z: Tensor, faces: Tensor, height: int, width: int, cull_backfaces: bool,
                   max_candidates: int) -> Tensor:
    """The z-buffer pass in PyTorch: (B*H*W,) int64 packed keys, ``_INT64_MAX`` where nothing is seen."""
    batch, n_faces, device, dtype = pix.shape[0], faces.shape[0], pix.device, pix.dtype
    coefs, valid = _face_planes(pix, z, faces, cull_backfaces)

    v = pix[:, faces]  # (B, F, 3, 2)
    lo = torch.ceil(v.amin(dim=2)).clamp_(min=0)  # (B, F, 2) first pixel centre inside the bbox
    hi = torch.floor(v.amax(dim=2))
    hi[..., 0].clamp_(max=width - 1)
    hi[..., 1].clamp_(max=height - 1)
    lo, hi = lo.reshape(-1, 2).long(), hi.reshape(-1, 2).long()
    size = (hi - lo + 1).clamp_(min=0)  # (B*F, 2)
    counts = size[:, 0] * size[:, 1] * valid
    keep = torch.nonzero(counts).squeeze(1)  # faces that can cover a pixel centre
    counts, lo, bw, coefs = counts[keep], lo[keep], size[keep, 0], coefs[keep]
    batch_of = torch.div(keep, n_faces, rounding_mode="floor")

    n_pix = batch * height * width
    zbuf = torch.full((n_pix,), _INT64_MAX, dtype=torch.int64, device=device)
    # Chunks of faces whose candidates sum to at most max_candidates (one face may exceed it alone).
    ends = torch.cumsum(counts, 0)
    bounds = [0]
    if ends.numel() and int(ends[-1]) > max_candidates:
        total = int(ends[-1])
        cuts = torch.searchsorted(ends, torch.arange(max_candidates, total, max_candidates, device=device))
        bounds += sorted({int(c) + 1 for c in cuts.tolist()})
    bounds = [b for b in bounds if b < keep.numel()] + [keep.numel()]
    for start, stop in itertools.pairwise(bounds):
        cnt = counts[start:stop]
        local_face = torch.repeat_interleave(torch.arange(stop - start, device=device), cnt)
        offset = torch.cumsum(cnt, 0) - cnt
        local = torch.arange(local_face.numel(), device=device) - offset[local_face]
        w = bw[start:stop][local_face]
        px = lo[start:stop, 0][local_face] + local % w
        py = lo[start:stop, 1][local_face] + torch.div(local, w, rounding_mode="floor")
        c = coefs[start:stop][local_face]  # (M, 9)
        fx, fy = px.to(dtype), py.to(dtype)
        b0 = c[:, 0] * fx + c[:, 1] * fy + c[:, 2]
        b1 = c[:, 3] * fx + c[:, 4] * fy + c[:, 5]
        inside = (b0 >= -INSIDE_EPS) & (b1 >= -INSIDE_EPS) & (1.0 - b0 - b1 >= -INSIDE_EPS)
        sel = torch.nonzero(inside).squeeze(1)
        depth = (c[sel, 6] * fx[sel] + c[sel, 7] * fy[sel] + c[sel, 8]).float()
        global_face = keep[start:stop][local_face[sel]]
        target = (batch_of[start:stop][local_face[sel]] * height + py[sel]) * width + px[sel]
        key = (_float_to_ordered_int(depth).long() << _FACE_BITS) | global_face
        zbuf.scatter_reduce_(0, target, key, reduce="amin", include_self=True)

    return zbuf


def barycentrics(pix: Tensor, z: Tensor, faces: Tensor, pix_idx: Tensor, face_idx: Tensor,
                 height: int, width: int) -> tuple[Tensor, Tensor]:
    """Differentiable barycentrics and depth of covered pixel centres in their visible triangles.

    Args:
        pix: (B, V, 2) pixel coordinates; z: (B, V) depth.
        pix_idx, face_idx: (N,) from :func:`rasterize_visibility`.
    Returns:
        bary (N, 3), depth (N,).
    """
    n_verts = pix.shape[1]
    hw = height * width
    b = torch.div(pix_idx, hw, rounding_mode="floor")
    rem = pix_idx - b * hw
    py = torch.div(rem, width, rounding_mode="floor")
    px = rem - py * width
    vidx = (faces.index_select(0, face_idx) + (b * n_verts)[:, None]).reshape(-1)  # (3N,) flattened vertex rows
    v = pix.reshape(-1, 2).index_select(0, vidx).view(-1, 3, 2)  # (N, 3, 2); index_select: a fast gather
    p = torch.stack([px, py], dim=-1).to(v.dtype)[:, None]  # (N, 1, 2)
    d = v - p  # vertex positions relative to the pixel centre
    # w_k = edge(v_{k+1}, v_{k+2}, p) = cross(v_{k+1} - p, v_{k+2} - p)
    d1, d2 = d.roll(-1, dims=1), d.roll(-2, dims=1)
    w = d1[..., 0] * d2[..., 1] - d1[..., 1] * d2[..., 0]  # (N, 3)
    bary = w / w.sum(dim=1, keepdim=True)
    depth = (bary * z.reshape(-1).index_select(0, vidx).view(-1, 3)).sum(dim=1)
    return bary, depth


def rasterize(screen_verts: Tensor, faces: Tensor, height: int, width: int | None = None,
              cull_backfaces: bool = True, max_candidates: int = MAX_CANDIDATES,
              compiled: bool | None = None) -> Fragments:
    """Rasterise a batch of meshes sharing one topology with the ``torch`` backend.

    Args:
        screen_verts: (B, V, 3) in DECA's screen space (module docstring).
        faces: (F, 3) long.
        max_candidates, compiled: see :func:`rasterize_visibility`.
    Returns:
        :class:`Fragments`, barycentrics and depth in float32 (float64 for float64 input), computed
        outside autocast.
    """
    width = height if width is None else width
    if screen_verts.ndim != 3 or screen_verts.shape[-1] != 3:
        raise ValueError(f"screen_verts must be (B, V, 3), got {tuple(screen_verts.shape)}")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must be (F, 3), got {tuple(faces.shape)}")
    with torch.autocast(device_type=screen_verts.device.type, enabled=False):
        sv = screen_verts if screen_verts.dtype == torch.float64 else screen_verts.float()
        pix = ndc_to_pixel(sv[..., :2], height, width)
        z = sv[..., 2]
        pix_idx, face_idx = rasterize_visibility(pix, z, faces, height, width, cull_backfaces, max_candidates,
                                                 compiled)
        bary, depth = barycentrics(pix, z, faces, pix_idx, face_idx, height, width)
    return Fragments(pix_idx, face_idx, bary, depth, screen_verts.shape[0], height, width)


def interpolate(frags: Fragments, attrs: Tensor, faces: Tensor) -> Tensor:
    """Interpolate per-vertex attributes at covered pixels.

    Args:
        attrs: (B, V, C) per-vertex values, or (V, C) shared by the batch (e.g. UV coordinates with
            ``faces`` = ``uv_faces``).
        faces: (F, 3) triangles indexing ``attrs``' vertex dimension.
    Returns:
        (N, C) values, differentiable in ``attrs`` and in ``frags.bary``.
    """
    corner = faces.index_select(0, frags.face_idx)  # (N, 3)
    if attrs.ndim == 3:
        corner = corner + (frags.batch_idx * attrs.shape[1])[:, None]
        attrs = attrs.reshape(-1, attrs.shape[-1])
    vals = attrs.index_select(0, corner.reshape(-1)).view(*corner.shape, attrs.shape[-1])  # (N, 3, C)
    dtype = torch.promote_types(frags.bary.dtype, vals.dtype)  # float32 UVs with float64 bary stay float64
    return torch.einsum("nk,nkc->nc", frags.bary.to(dtype), vals.to(dtype))
