"""Shared helpers for the renderer tests: a slow, readable reference rasteriser and small meshes."""
from __future__ import annotations

import numpy as np
import torch


def reference_rasterize(screen_verts: np.ndarray, faces: np.ndarray, height: int, width: int,
                        cull_backfaces: bool = True, eps: float = 1e-4):
    """Loop over pixels and triangles (float64): nearest covering triangle, its barycentrics, and a flag
    for pixels whose answer is within ``eps`` of changing (a centre on an edge, or two depths tied).

    Returns face (H, W) int (-1 empty), bary (H, W, 3), ambiguous (H, W) bool.
    """
    px = (screen_verts[:, 0] + 1) * width / 2 - 0.5
    py = (screen_verts[:, 1] + 1) * height / 2 - 0.5
    z = screen_verts[:, 2]
    face = -np.ones((height, width), dtype=np.int64)
    bary = np.zeros((height, width, 3))
    ambiguous = np.zeros((height, width), dtype=bool)
    for i in range(height):
        for j in range(width):
            best, best_z, second_z, near_edge = -1, np.inf, np.inf, False
            for f, (a, b, c) in enumerate(faces):
                xs, ys = px[[a, b, c]], py[[a, b, c]]
                area = (xs[1] - xs[0]) * (ys[2] - ys[0]) - (xs[2] - xs[0]) * (ys[1] - ys[0])
                if area == 0 or (cull_backfaces and area > 0):
                    continue
                w = np.array([
                    (xs[2] - xs[1]) * (i - ys[1]) - (ys[2] - ys[1]) * (j - xs[1]),
                    (xs[0] - xs[2]) * (i - ys[2]) - (ys[0] - ys[2]) * (j - xs[2]),
                    (xs[1] - xs[0]) * (i - ys[0]) - (ys[1] - ys[0]) * (j - xs[0]),
                ]) / area
                if np.all(w >= -eps) and np.any(w < eps):
                    near_edge = True
                if np.all(w >= 0):
                    depth = w @ z[[a, b, c]]
                    if depth < best_z:
                        best, best_z, second_z = f, depth, best_z
                        bary[i, j] = w
                    elif depth < second_z:
                        second_z = depth
            face[i, j] = best
            ambiguous[i, j] = near_edge or (second_z - best_z < eps)
    return face, bary, ambiguous


def random_soup(n_faces: int, seed: int, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Random overlapping triangles in screen space (occlusion), (3F, 3) verts and (F, 3) faces."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(n_faces, 1, 3, generator=g, dtype=torch.float64) * 1.6 - 0.8
    verts = (centres + (torch.rand(n_faces, 3, 3, generator=g, dtype=torch.float64) - 0.5) * 1.2).reshape(-1, 3)
    faces = torch.arange(3 * n_faces).reshape(n_faces, 3)
    return verts.to(dtype), faces
