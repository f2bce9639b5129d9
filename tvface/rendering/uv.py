"""UV space: per-vertex values to UV maps (DECA's ``world2uv``), displacement (eq. 3) and detail
normals (DECA's ``displacement2normal``).

The UV rasterisation depends only on the mesh's UV layout, so :class:`tvface.rendering.MeshRenderer`
does it once (:func:`rasterize_uv`) and ``world2uv`` is then a gather with fixed barycentrics.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from tvface.rendering.rasterize import Fragments, rasterize


def uv_screen_verts(uv_coords: Tensor) -> Tensor:
    """(Vt, 2) UVs in [0, 1] -> (1, Vt, 3) screen vertices of the UV image (row 0 at v = 1)."""
    xy = torch.stack([uv_coords[:, 0] * 2 - 1, 1 - uv_coords[:, 1] * 2], dim=-1)
    return torch.cat([xy, torch.zeros_like(xy[:, :1])], dim=-1)[None]


@torch.no_grad()
def rasterize_uv(uv_coords: Tensor, uv_faces: Tensor, uv_size: int) -> Fragments:
    """Which triangle covers each UV texel centre, with fixed barycentrics (batch of one)."""
    sv = uv_screen_verts(uv_coords.double())
    frags = rasterize(sv, uv_faces, uv_size, uv_size, cull_backfaces=False)
    return Fragments(frags.pix_idx, frags.face_idx, frags.bary.float(), frags.depth.float(), 1, uv_size, uv_size)


def uv_padding_index(uv_frags: Fragments, pad: int) -> Tensor:
    """(S*S,) long: the texel each texel takes its value from, so that UV maps extend ``pad`` texels
    beyond every island of the layout.

    Covered texels map to themselves; an uncovered texel within ``pad`` texels (Euclidean) of the
    layout maps to its nearest covered texel; the rest map to themselves and stay zero. Bilinear
    lookups near island borders then blend in the island's own values instead of zeros (the thin
    dark seams DECA's UV maps show). Computed once per layout.
    """
    from scipy.ndimage import distance_transform_edt

    h, w = uv_frags.height, uv_frags.width
    covered = np.zeros(h * w, dtype=bool)
    covered[uv_frags.pix_idx.cpu().numpy()] = True
    covered = covered.reshape(h, w)
    own = np.arange(h * w).reshape(h, w)
    if pad <= 0 or covered.all() or not covered.any():
        return torch.from_numpy(own.reshape(-1))
    dist, (iy, ix) = distance_transform_edt(~covered, return_indices=True)
    index = np.where(dist <= pad, iy * w + ix, own)
    return torch.from_numpy(index.reshape(-1).astype(np.int64))


def world2uv(uv_frags: Fragments, attrs: Tensor, faces: Tensor, pad_index: Tensor | None = None) -> Tensor:
    """DECA's ``world2uv``: (B, V, C) per-vertex values -> (B, C, S, S) UV maps, zeros off the layout.

    ``uv_frags`` from :func:`rasterize_uv`; ``faces`` index ``attrs`` (same order as ``uv_faces``).
    ``pad_index`` (from :func:`uv_padding_index`) extends the maps beyond the islands' borders.
    """
    batch, _, channels = attrs.shape
    corner = faces[uv_frags.face_idx]  # (N, 3)
    vals = torch.einsum("nk,bnkc->bnc", uv_frags.bary.to(attrs.dtype), attrs[:, corner])  # (B, N, C)
    size = uv_frags.height * uv_frags.width
    out = attrs.new_zeros(batch, size, channels).index_copy(1, uv_frags.pix_idx, vals)  # (B, S*S, C)
    if pad_index is not None:
        out = out.index_select(1, pad_index)
    return out.view(batch, uv_frags.height, uv_frags.width, channels).permute(0, 3, 1, 2)


def grid_vertex_normals(positions: Tensor, margin_x: int = 0, margin_y: int = 0, eps: float = 1e-6) -> Tensor:
    """Vertex normals of a position map treated as the dense grid mesh of DECA's
    ``generate_triangles``, without building that mesh (shifted tensor slices instead of a gather).

    Equals ``vertex_normals(positions as (B, H*W, 3), generate_triangles(H, W, margin_x, margin_y))``.

    Args:
        positions: (B, 3, H, W) UV position map.
    Returns:
        (B, 3, H, W) unit normals; zero where no triangle touches (the margins).
    """
    p = positions
    h, w = p.shape[-2:]
    ys, ye, xs, xe = margin_y, h - 1 - margin_y, margin_x, w - 1 - margin_x
    a = p[..., ys:ye, xs:xe]
    b = p[..., ys:ye, xs + 1:xe + 1]
    c = p[..., ys + 1:ye + 1, xs:xe]
    d = p[..., ys + 1:ye + 1, xs + 1:xe + 1]
    n0 = torch.linalg.cross(c - a, b - a, dim=1)  # triangle (a, c, b)
    n1 = torch.linalg.cross(c - b, d - b, dim=1)  # triangle (b, c, d)

    def place(t: Tensor, dy: int, dx: int) -> Tensor:  # quad (y, x)'s value at pixel (y + dy, x + dx)
        return F.pad(t, (xs + dx, w - xe - dx, ys + dy, h - ye - dy))

    # A grid vertex sums the (area-weighted) normals of the triangles it is a corner of.
    normals = place(n0, 0, 0) + place(n0 + n1, 1, 0) + place(n0 + n1, 0, 1) + place(n1, 1, 1)
    return F.normalize(normals, dim=1, eps=eps)


def displace_uv(uv_verts: Tensor, uv_normals: Tensor, uv_disp: Tensor) -> Tensor:
    """Eq. 3: M'_uv = M_uv + D * N_uv. (B, 3, S, S), (B, 3, S, S), (B, 1, S, S) -> (B, 3, S, S)."""
    if uv_disp.shape[-2:] != uv_verts.shape[-2:]:
        uv_disp = F.interpolate(uv_disp, size=uv_verts.shape[-2:], mode="bilinear", align_corners=False)
    return uv_verts + uv_disp * uv_normals


def displacement2normal(uv_disp: Tensor, uv_verts: Tensor, uv_normals: Tensor, uv_mask: Tensor | None = None,
                        fixed_disp: Tensor | None = None) -> Tensor:
    """DECA's ``displacement2normal``: detail normals of the displaced UV position map.

    Args:
        uv_disp: (B, 1, S, S) displacement D along the coarse normal (model units).
        uv_verts, uv_normals: (B, 3, S, S) coarse positions and unit normals in UV (``world2uv``);
            DECA detaches both so detail gradients only reach D.
        uv_mask: (1 or B, 1, S, S) region where detail applies (DECA's ``uv_face_eye_mask``); outside
            it the coarse normals are kept. None: everywhere.
        fixed_disp: (S, S) constant displacement added to D (DECA's ``fixed_uv_dis``), optional.
    Returns:
        (B, 3, S, S) unit detail normals.
    """
    size = uv_verts.shape[-2:]
    if uv_disp.shape[-2:] != size:  # D may come at another resolution (DECA's decoder: 256^2)
        uv_disp = F.interpolate(uv_disp, size=size, mode="bilinear", align_corners=False)
    if uv_mask is not None:
        if uv_mask.shape[-2:] != size:
            uv_mask = F.interpolate(uv_mask.to(uv_disp.dtype), size=size, mode="nearest")
        uv_disp = uv_disp * uv_mask
    if fixed_disp is not None:
        if fixed_disp.shape[-2:] != size:
            fixed_disp = F.interpolate(fixed_disp[None, None].to(uv_disp.dtype), size=size, mode="nearest")[0, 0]
        uv_disp = uv_disp + fixed_disp[None, None]
    detail = grid_vertex_normals(displace_uv(uv_verts, uv_normals, uv_disp))
    if uv_mask is None:
        return detail
    return detail * uv_mask + uv_normals * (1 - uv_mask)
