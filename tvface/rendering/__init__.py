"""Differentiable renderer (DECA's conventions, so DECA checkpoints and loss weights carry over).

Spaces and conventions:

* Model space: FLAME's, metres, +x subject's left (image right), +y up, +z towards the camera.
* Camera (training): DECA's weak perspective ``cam = (scale, tx, ty)``:
  ``proj = scale * (x + tx, y + ty, z)`` (``batch_orth_proj``), then ``screen = (proj_x, -proj_y,
  -proj_z)`` (DECA's ``trans_verts[:, :, 1:] = -trans_verts[:, :, 1:]``). Landmarks use the same
  map; their x, y are DECA's ``landmarks2d`` in [-1, 1] and :func:`screen_to_pixels` gives pixels
  (centres at integers: ``(x + 1) * W/2 - 0.5``, the one convention of landmarks and ground truth).
  :func:`perspective_to_screen` is a pinhole alternative for the synthetic data generator.
* Screen space: x right, y down, [-1, 1] across the image, pixel j's centre at -1 + (2j + 1)/W
  (pytorch3d's NDC with x, y negated, as DECA's rasterisers; ``grid_sample(align_corners=False)``);
  z smaller = nearer. Front faces are counter-clockwise in model space; back faces are culled.
* UV: ``uv_coords`` in [0, 1], origin bottom-left; UV maps (albedo, displacement, ``world2uv``
  output) are images with row 0 at v = 1, sampled with DECA's ``grid = uv * 2 - 1, y negated``.
* Shading: eq. 4, albedo x SH irradiance, light (B, 9, 3) with DECA's ``constant_factor``
  (:mod:`tvface.rendering.shading`), normals in model space, interpolated, not renormalised.
  Shape images: DECA's ``render_shape`` (grey 180/255, five directional lights of 1.7).
* Detail: eq. 3, ``M'_uv = M_uv + D * N_uv``, detail normals from the displaced UV position map
  on DECA's dense grid triangulation (``displacement2normal``), coarse normals outside ``uv_mask``.
* Precision: visibility, barycentrics and depth run in float32 outside autocast (float64 if given).

Backends: ``torch`` (pure PyTorch, CPU/GPU, the default) and ``pytorch3d`` (optional, see
:mod:`tvface.rendering.rasterize_pytorch3d`).
"""
from tvface.rendering.camera import (
    batch_orth_proj,
    orth_to_screen,
    perspective_to_screen,
    pixels_to_screen,
    screen_to_pixels,
)
from tvface.rendering.mesh import face_vertices, generate_triangles, vertex_normals
from tvface.rendering.rasterize import Fragments, interpolate, rasterize
from tvface.rendering.rasterize_pytorch3d import pytorch3d_available, rasterize_pytorch3d
from tvface.rendering.renderer import MeshRenderer, RenderOutput
from tvface.rendering.shading import SH_CONSTANT_FACTOR, add_sh_light, directional_shading, sh_basis
from tvface.rendering.texture import sample_texture, uv_to_grid
from tvface.rendering.uv import displacement2normal, grid_vertex_normals, world2uv

__all__ = [
    "SH_CONSTANT_FACTOR",
    "Fragments",
    "MeshRenderer",
    "RenderOutput",
    "add_sh_light",
    "batch_orth_proj",
    "directional_shading",
    "displacement2normal",
    "face_vertices",
    "generate_triangles",
    "grid_vertex_normals",
    "interpolate",
    "orth_to_screen",
    "perspective_to_screen",
    "pixels_to_screen",
    "pytorch3d_available",
    "rasterize",
    "rasterize_pytorch3d",
    "sample_texture",
    "screen_to_pixels",
    "sh_basis",
    "uv_to_grid",
    "vertex_normals",
    "world2uv",
]
