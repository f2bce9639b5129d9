"""Per-mesh geometry helpers: triangle corners and area-weighted vertex normals (DECA's ``util``)."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def face_vertices(verts: Tensor, faces: Tensor) -> Tensor:
    """(B, V, C) per-vertex values -> (B, F, 3, C) per-triangle corners."""
    return verts[:, faces]


def face_normals(verts: Tensor, faces: Tensor) -> Tensor:
    """(B, F, 3) unnormalised face normals, |n| = twice the area, outward for counter-clockwise faces."""
    v0, v1, v2 = verts.index_select(1, faces.reshape(-1)).unflatten(1, faces.shape).unbind(2)
    return torch.linalg.cross(v1 - v0, v2 - v0, dim=-1)


def vertex_normals(verts: Tensor, faces: Tensor, eps: float = 1e-6) -> Tensor:
    """Area-weighted unit vertex normals, as DECA's ``util.vertex_normals``.

    Args:
        verts: (B, V, 3); faces: (F, 3) long.
    Returns:
        (B, V, 3); vertices in no triangle get zero.
    """
    fn = face_normals(verts, faces)  # (B, F, 3)
    batch, n_verts = verts.shape[:2]
    # Each corner of a triangle gets the same (area-weighted) face normal. The sum runs over rows of
    # a vertex-major (V, B * 3) layout: index_add along dim 0 adds contiguous rows (about 2x faster
    # on CPU than along the vertex dimension of (B, V, 3)).
    rows = fn.permute(1, 0, 2).reshape(-1, 1, batch * 3).expand(-1, 3, -1).reshape(-1, batch * 3)  # (3F, B*3)
    normals = verts.new_zeros(n_verts, batch * 3).index_add_(0, faces.reshape(-1), rows)
    return torch.nn.functional.normalize(normals.view(n_verts, batch, 3).permute(1, 0, 2), dim=-1, eps=eps)


def generate_triangles(height: int, width: int, margin_x: int = 0, margin_y: int = 0) -> np.ndarray:
    """Triangles of a (height, width) pixel grid, DECA's ``util.generate_triangles`` (its margins 2, 5).

    Vertex ``y * width + x`` is pixel (y, x); each quad gives (a, c, b) and (b, c, d) with
    a=(y, x), b=(y, x+1), c=(y+1, x), d=(y+1, x+1). Returns (F, 3) int64.
    """
    ys, xs = np.meshgrid(np.arange(margin_y, height - 1 - margin_y), np.arange(margin_x, width - 1 - margin_x),
                         indexing="ij")
    a = (ys * width + xs).reshape(-1)
    b, c, d = a + 1, a + width, a + width + 1
    tri0 = np.stack([a, c, b], axis=1)
    tri1 = np.stack([b, c, d], axis=1)
    # DECA's loop order: x outer, y inner, both triangles of a quad in turn.
    order = np.stack([tri0, tri1], axis=1).reshape(ys.shape + (2, 3)).transpose(1, 0, 2, 3)
    return order.reshape(-1, 3).astype(np.int64)
