"""The renderer module: rasterise, interpolate, texture, shade; UV maps and detail normals.

:class:`MeshRenderer` holds what does not change between frames for one mesh topology: faces,
UVs, the UV-space rasterisation (so ``world2uv`` is a gather) and the backend choice. Everything
else is batched over frames (B = batch x time).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tvface.rendering.mesh import face_normals, vertex_normals
from tvface.rendering.rasterize import Fragments, interpolate, ndc_to_pixel, rasterize, rasterize_visibility
from tvface.rendering.rasterize_pytorch3d import pytorch3d_available, rasterize_pytorch3d
from tvface.rendering.shading import (
    SHAPE_ALBEDO,
    SHAPE_FACING_THRESHOLD,
    add_sh_light,
    check_light,
    directional_shading,
    sh_shading_packed,
)
from tvface.rendering.texture import sample_texture, uv_to_grid
from tvface.rendering.uv import displacement2normal, rasterize_uv, uv_padding_index, world2uv

BACKENDS = ("auto", "torch", "pytorch3d")


@dataclass(frozen=True)
class RenderOutput:
    """Images of one render call, all (B, C, H, W) except ``uv_grid``; zeros off the mesh.

    Attributes:
        images: (B, 3, H, W) albedo x SH irradiance (eq. 4), composited over the background.
        alpha: (B, 1, H, W) coverage (DECA's ``alpha_images``), not differentiable.
        normal_images: (B, 3, H, W) interpolated model-space vertex normals (not renormalised, as DECA).
        depth: (B, 1, H, W) screen z (smaller = nearer), 0 off the mesh.
        albedo_images, shading_images: (B, 3, H, W) the two factors of ``images``.
        uv_grid: (B, H, W, 2) per-pixel UVs as a ``grid_sample`` grid (DECA's ``grid``).
        shape_images: (B, 3, H, W) grey shape under DECA's fixed lights, or None.
        uv_detail_normals: (B, 3, S, S) detail normals in UV, or None without ``uv_disp``.
        detail_normal_images: (B, 3, H, W) detail normals sampled per pixel, or None.
        detail_images: (B, 3, H, W) albedo x irradiance of the detail normals (DECA's
            ``predicted_detail_images``: shaded in UV, then sampled), or None.
        shape_detail_images: (B, 3, H, W) grey shape with detail normals, or None.
        fragments: the packed rasterisation (pixel -> triangle, barycentrics).
    """

    images: Tensor
    alpha: Tensor
    normal_images: Tensor
    depth: Tensor
    albedo_images: Tensor
    shading_images: Tensor
    uv_grid: Tensor
    fragments: Fragments
    shape_images: Tensor | None = None
    uv_detail_normals: Tensor | None = None
    detail_normal_images: Tensor | None = None
    detail_images: Tensor | None = None
    shape_detail_images: Tensor | None = None


def resolve_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"renderer backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "pytorch3d" if pytorch3d_available() else "torch"
    if backend == "pytorch3d" and not pytorch3d_available():
        raise ImportError("backend='pytorch3d' but pytorch3d is not importable; install it on a GPU node with "
                          "`conda install -c pytorch3d pytorch3d`, or use backend='torch'")
    return backend


class MeshRenderer(nn.Module):
    """Differentiable renderer for one mesh topology (DECA's ``SRenderY``).

    Args:
        faces: (F, 3) long; uv_coords: (Vt, 2) in [0, 1], bottom-left origin; uv_faces: (F, 3).
        image_size: rendered images are image_size x image_size.
        uv_size: side of UV maps (``world2uv``, displacement, detail normals).
        backend: "torch", "pytorch3d" or "auto" (pytorch3d if importable).
        cull_backfaces: triangles facing away never show (DECA's pytorch3d setting does not cull;
            it only differs through holes in the mesh, where it would show the inside).
        uv_padding: UV maps from :meth:`world2uv` extend this many texels beyond each island
            (:func:`tvface.rendering.uv.uv_padding_index`); 0 keeps DECA's zeros off the layout.
    """

    def __init__(self, faces: Tensor, uv_coords: Tensor, uv_faces: Tensor, image_size: int, uv_size: int = 256,
                 backend: str = "torch", cull_backfaces: bool = True, uv_padding: int = 2) -> None:
        super().__init__()
        if faces.shape != uv_faces.shape or faces.ndim != 2 or faces.shape[1] != 3:
            raise ValueError(f"faces and uv_faces must both be (F, 3), got {tuple(faces.shape)} and "
                             f"{tuple(uv_faces.shape)}")
        self.image_size = int(image_size)
        self.uv_size = int(uv_size)
        self.backend = resolve_backend(backend)
        self.cull_backfaces = cull_backfaces
        self.register_buffer("faces", faces.long().clone(), persistent=False)
        self.register_buffer("uv_faces", uv_faces.long().clone(), persistent=False)
        self.register_buffer("uv_coords", uv_coords.float().clone(), persistent=False)
        uv_frags = rasterize_uv(uv_coords, uv_faces.long(), self.uv_size)
        self.register_buffer("uv_pix_idx", uv_frags.pix_idx, persistent=False)
        self.register_buffer("uv_face_idx", uv_frags.face_idx, persistent=False)
        self.register_buffer("uv_bary", uv_frags.bary, persistent=False)
        self.register_buffer("uv_pad_index", uv_padding_index(uv_frags, uv_padding), persistent=False)

    @property
    def uv_fragments(self) -> Fragments:
        """UV-space rasterisation, computed once at construction."""
        return Fragments(self.uv_pix_idx, self.uv_face_idx, self.uv_bary, self.uv_bary[:, 0] * 0, 1,
                         self.uv_size, self.uv_size)

    def uv_coverage(self) -> Tensor:
        """(1, 1, S, S) texels covered by the UV layout."""
        return self.uv_fragments.mask().to(self.uv_bary.device)

    def rasterize(self, screen_verts: Tensor) -> Fragments:
        """(B, V, 3) screen vertices -> packed :class:`Fragments` with the chosen backend."""
        if self.backend == "pytorch3d":
            return rasterize_pytorch3d(screen_verts, self.faces, self.image_size, cull_backfaces=self.cull_backfaces)
        return rasterize(screen_verts, self.faces, self.image_size, cull_backfaces=self.cull_backfaces)

    def world2uv(self, attrs: Tensor) -> Tensor:
        """(B, V, C) per-vertex values -> (B, C, S, S) UV maps (M_uv, N_uv), padded beyond the islands
        by ``uv_padding`` texels, zeros further off the layout."""
        return world2uv(self.uv_fragments, attrs, self.faces, self.uv_pad_index)

    def vertex_normals(self, verts: Tensor) -> Tensor:
        return vertex_normals(verts, self.faces)

    def visible_faces(self, screen_verts: Tensor) -> tuple[Tensor, Tensor]:
        """(pix_idx, face_idx), both (N,): the covered pixels (flat into (B, H, W), sorted) and their
        nearest triangle, without barycentrics (``torch`` backend: the z-buffer pass alone)."""
        if self.backend == "pytorch3d":
            frags = self.rasterize(screen_verts)
            return frags.pix_idx, frags.face_idx
        sv = screen_verts.detach().float()
        size = self.image_size
        return rasterize_visibility(ndc_to_pixel(sv[..., :2], size, size), sv[..., 2], self.faces, size, size,
                                    self.cull_backfaces)

    def render_shape_flat(self, verts: Tensor, screen_verts: Tensor) -> tuple[Tensor, Tensor]:
        """The grey shape (:meth:`render_shape`) shaded per triangle: (pix_idx (N,), grey (N,) in [0, 1]).

        Every covered pixel takes its triangle's unit normal instead of the interpolated vertex normal
        (the same lights, albedo and facing test), so neither vertex normals nor barycentrics are
        computed; where a triangle covers a pixel or two (a face model at crop resolution) the picture
        is the same, at about a third of the cost. On a planar mesh it equals :meth:`render_shape`.
        """
        pix_idx, face_idx = self.visible_faces(screen_verts)
        n_faces = self.faces.shape[0]
        b = torch.div(pix_idx, self.image_size * self.image_size, rounding_mode="floor")
        fn = face_normals(verts.detach().float(), self.faces).reshape(-1, 3)  # (B * F, 3)
        n = torch.nn.functional.normalize(fn.index_select(0, b * n_faces + face_idx), dim=-1, eps=1e-6)
        facing = (n[:, 2:] > SHAPE_FACING_THRESHOLD).to(n.dtype)
        return pix_idx, (SHAPE_ALBEDO * directional_shading(n) * facing)[:, 0]

    def render_shape(self, verts: Tensor, screen_verts: Tensor) -> tuple[Tensor, Tensor]:
        """DECA's grey shape images (B, 3, H, W) and the coverage (B, 1, H, W) alone, the same numbers
        as :meth:`forward`'s ``shape_images`` and ``alpha`` without albedo, light, UV or the other
        images. :meth:`render_shape_flat` is the cheaper picture for overlays."""
        frags = self.rasterize(screen_verts)
        pix_normals = interpolate(frags, self.vertex_normals(verts), self.faces)
        facing = (pix_normals[:, 2:] > SHAPE_FACING_THRESHOLD).to(pix_normals.dtype)
        shape = frags.to_image(SHAPE_ALBEDO * directional_shading(pix_normals) * facing).expand(-1, 3, -1, -1)
        return shape, frags.mask().to(shape.dtype)

    def forward(self, verts: Tensor, screen_verts: Tensor, albedo: Tensor | None = None,
                light: Tensor | None = None, background: Tensor | None = None, uv_disp: Tensor | None = None,
                uv_mask: Tensor | None = None, fixed_disp: Tensor | None = None,
                with_shape: bool = False) -> RenderOutput:
        """Render a batch of meshes.

        Args:
            verts: (B, V, 3) model-space vertices (normals and shading are computed from them).
            screen_verts: (B, V, 3) the same vertices in screen space (``orth_to_screen``).
            albedo: (B, 3, S', S') UV albedo maps; None renders white (images = irradiance).
            light: (B, 9, 3) SH coefficients; None: no shading (images = albedo).
            background: (B, 3, H, W) behind the mesh; None: black.
            uv_disp: (B, 1, S, S) displacement map D (eq. 3) -> detail normals and images.
            uv_mask, fixed_disp: see :func:`tvface.rendering.uv.displacement2normal`.
            with_shape: also render DECA's grey shape images (coarse, and detail with ``uv_disp``).
        """
        if verts.shape != screen_verts.shape or verts.ndim != 3 or verts.shape[-1] != 3:
            raise ValueError(f"verts and screen_verts must both be (B, V, 3), got {tuple(verts.shape)} and "
                             f"{tuple(screen_verts.shape)}")
        if light is not None:
            check_light(light)
        frags = self.rasterize(screen_verts)
        batch_idx, counts = frags.batch_idx, frags.counts
        normals = self.vertex_normals(verts)  # (B, V, 3)
        uv = interpolate(frags, self.uv_coords, self.uv_faces)  # (N, 2)
        pix_normals = interpolate(frags, normals, self.faces)  # (N, 3)
        if albedo is None:
            pix_albedo = pix_normals.new_ones(pix_normals.shape[0], 3)
        else:
            pix_albedo = sample_texture(albedo, uv, batch_idx)  # (N, 3)
        pix_shading = pix_albedo.new_ones(()) if light is None else sh_shading_packed(pix_normals, light, counts)
        pix_images = pix_albedo * pix_shading
        to_image = frags.to_image
        images = to_image(pix_images, 0.0 if background is None else background)
        shading_images = to_image(pix_shading.expand_as(pix_albedo))
        out = {"images": images, "alpha": frags.mask().to(images.dtype), "normal_images": to_image(pix_normals),
                   "depth": to_image(frags.depth[:, None]), "albedo_images": to_image(pix_albedo),
                   "shading_images": shading_images, "uv_grid": to_image(uv_to_grid(uv)).permute(0, 2, 3, 1),
                   "fragments": frags}
        facing = (pix_normals.detach()[:, 2:] > SHAPE_FACING_THRESHOLD).to(pix_normals.dtype)  # DECA's pos_mask
        if with_shape:
            out["shape_images"] = to_image(SHAPE_ALBEDO * directional_shading(pix_normals.detach()) * facing
                                           ).expand(-1, 3, -1, -1)
        if uv_disp is not None:
            uv_verts = self.world2uv(verts.detach())
            uv_normals = self.world2uv(normals.detach())
            uv_detail_normals = displacement2normal(uv_disp, uv_verts, uv_normals, uv_mask, fixed_disp)
            uv_sample = uv.detach()  # DECA samples detail maps with ``grid.detach()``
            pix_detail_normals = sample_texture(uv_detail_normals, uv_sample, batch_idx)
            out["uv_detail_normals"] = uv_detail_normals
            out["detail_normal_images"] = to_image(pix_detail_normals)
            if light is not None or albedo is not None:
                uv_texture = albedo if albedo is not None else uv_detail_normals.new_ones(())
                if light is not None:
                    uv_texture = uv_texture * add_sh_light(uv_detail_normals, light)
                out["detail_images"] = to_image(sample_texture(uv_texture.expand_as(uv_detail_normals),
                                                               uv_sample, batch_idx))
            if with_shape:
                shade = SHAPE_ALBEDO * directional_shading(pix_detail_normals.detach()) * facing
                out["shape_detail_images"] = to_image(shade).expand(-1, 3, -1, -1)
        return RenderOutput(**out)
