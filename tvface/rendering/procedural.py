"""Procedural meshes with UVs for tests, demos and benchmarks when no face model file is at hand."""
from __future__ import annotations

import math

import torch
from torch import Tensor


def uv_sphere(n_lat: int, n_lon: int, radii: tuple[float, float, float] = (1.0, 1.0, 1.0)
              ) -> tuple[Tensor, Tensor, Tensor]:
    """Latitude-longitude ellipsoid facing +z, counter-clockwise (outward) faces.

    Vertex (i, j) is at polar angle pi * i / n_lat from +y and azimuth 2 pi j / n_lon - pi from +z towards +x;
    the seam column (at the back, -z) is duplicated so one index serves positions and UVs
    (u = j / n_lon, v = 1 - i / n_lat).
    Returns verts (V, 3), faces (F, 3) long (2 n_lat n_lon, pole triangles degenerate), uv_coords (V, 2).
    """
    i = torch.arange(n_lat + 1, dtype=torch.float64)[:, None]
    j = torch.arange(n_lon + 1, dtype=torch.float64)[None, :]
    theta, phi = math.pi * i / n_lat, 2 * math.pi * j / n_lon - math.pi  # seam at the back
    x = torch.sin(theta) * torch.sin(phi) * radii[0]
    y = torch.cos(theta).expand_as(x) * radii[1]
    z = torch.sin(theta) * torch.cos(phi) * radii[2]
    verts = torch.stack([x, y, z], dim=-1).reshape(-1, 3).float()
    uv = torch.stack([(j / n_lon).expand_as(x), (1 - i / n_lat).expand_as(x)], dim=-1).reshape(-1, 2).float()
    ii, jj = torch.meshgrid(torch.arange(n_lat), torch.arange(n_lon), indexing="ij")
    a = (ii * (n_lon + 1) + jj).reshape(-1)
    b, c, d = a + 1, a + n_lon + 1, a + n_lon + 2
    faces = torch.cat([torch.stack([a, c, b], 1), torch.stack([b, c, d], 1)], 0)
    return verts, faces, uv


def head_like_mesh(n_lat: int = 75, n_lon: int = 150) -> tuple[Tensor, Tensor, Tensor]:
    """Head-sized ellipsoid (metres) with a nose bump: ~22k triangles at the defaults."""
    verts, faces, uv = uv_sphere(n_lat, n_lon, (0.075, 0.11, 0.09))
    front = torch.exp(-((verts[:, 0] / 0.02) ** 2 + (verts[:, 1] / 0.035) ** 2)) * (verts[:, 2] > 0)
    verts = verts + torch.stack([torch.zeros_like(front), torch.zeros_like(front), 0.025 * front], dim=1)
    return verts, faces, uv
