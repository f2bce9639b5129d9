"""Rasterisation: against a brute-force reference, known images, shifts, culling, chunking, autocast;
the compiled z-buffer against the PyTorch loop."""
import importlib

import numpy as np
import pytest
import torch
from _render_fixtures import random_soup, reference_rasterize

from tvface.rendering import MeshRenderer, orth_to_screen, rasterize
from tvface.rendering.procedural import uv_sphere

rast = importlib.import_module("tvface.rendering.rasterize")  # the module (the package exports the function)


@pytest.mark.parametrize("seed,cull", [(0, False), (1, False), (2, True), (3, True)])
def test_matches_reference_rasteriser(seed, cull):
    height, width = 20, 24
    verts, faces = random_soup(30, seed)
    frags = rasterize(verts[None], faces, height, width, cull_backfaces=cull)
    ref_face, ref_bary, ambiguous = reference_rasterize(verts.double().numpy(), faces.numpy(), height, width, cull)
    face = frags.pix_to_face[0].numpy()
    assert (ref_face >= 0).sum() > 100  # enough coverage for the check to mean something
    assert ambiguous.sum() <= 3
    np.testing.assert_array_equal(face[~ambiguous], ref_face[~ambiguous])
    bary = np.zeros((height * width, 3))
    bary[frags.pix_idx.numpy()] = frags.bary.numpy()
    ok = (ref_face >= 0) & ~ambiguous
    np.testing.assert_allclose(bary.reshape(height, width, 3)[ok], ref_bary[ok], atol=1e-5)


def test_occlusion_and_backface_never_show():
    # Two parallel squares: the far one (z = +0.5) is front-facing, the near one (z = -0.5) back-facing.
    sq = torch.tensor([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]])
    verts = torch.cat([torch.cat([sq, torch.full((4, 1), 0.5)], 1), torch.cat([sq, torch.full((4, 1), -0.5)], 1)])
    front = torch.tensor([[0, 3, 1], [1, 3, 2]])  # clockwise once y points down: front-facing
    faces = torch.cat([front, front.flip(1) + 4])
    p2f = rasterize(verts[None], faces, 16).pix_to_face[0]
    assert set(p2f.unique().tolist()) == {-1, 0, 1}
    # Without culling the nearer (back-facing) square occludes the far one.
    p2f = rasterize(verts[None], faces, 16, cull_backfaces=False).pix_to_face[0]
    assert set(p2f.unique().tolist()) == {-1, 2, 3}
    # Moving the back face behind: the front square is nearest, culling or not.
    verts2 = verts.clone()
    verts2[4:, 2] = 1.0
    assert set(rasterize(verts2[None], faces, 16, cull_backfaces=False).pix_to_face[0].unique().tolist()) == {-1, 0, 1}


def test_closed_sphere_shows_only_front_hemisphere():
    verts, faces, _ = uv_sphere(16, 32)
    screen = orth_to_screen(verts[None], torch.tensor([[0.8, 0.0, 0.0]]))
    frags = rasterize(screen, faces, 32, cull_backfaces=False)
    centroid_z = verts[faces].mean(1)[:, 2]
    assert (centroid_z[frags.face_idx] > -0.05).all()


def test_flat_textured_quad_renders_texture_exactly():
    size = 16
    verts = torch.tensor([[-1.0, -1.0, 0.0], [1.0, -1.0, 0.0], [1.0, 1.0, 0.0], [-1.0, 1.0, 0.0]])
    uv = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])  # counter-clockwise, facing +z
    texture = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    renderer = MeshRenderer(faces, uv, faces, image_size=size, uv_size=size)
    screen = orth_to_screen(verts[None], torch.tensor([[1.0, 0.0, 0.0]]))
    out = renderer(verts[None], screen, albedo=texture)
    assert out.alpha.min() == 1
    torch.testing.assert_close(out.images, texture, atol=1e-5, rtol=0)


@pytest.mark.parametrize("dx,dy", [(3, 0), (-2, 5), (4, -3)])
def test_shift_moves_image_by_same_pixels(dx, dy):
    size = 48
    verts, faces, uv = uv_sphere(12, 24)
    renderer = MeshRenderer(faces, uv, faces, image_size=size, uv_size=32)
    texture = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    cam = torch.tensor([[0.5, 0.0, 0.0]])
    base = renderer(verts[None], orth_to_screen(verts[None], cam), texture).images
    # One pixel is 2 / size screen units; screen y points down, model y up.
    shifted_verts = verts + torch.tensor([dx * 2 / size / 0.5, -dy * 2 / size / 0.5, 0.0])
    moved = renderer(shifted_verts[None], orth_to_screen(shifted_verts[None], cam), texture).images
    expected = torch.roll(base, shifts=(dy, dx), dims=(2, 3))
    torch.testing.assert_close(moved, expected, atol=1e-4, rtol=0)


def test_chunked_enumeration_matches_single_pass():
    verts, faces = random_soup(40, 7)
    a = rasterize(verts[None].repeat(2, 1, 1), faces, 32, compiled=False)
    b = rasterize(verts[None].repeat(2, 1, 1), faces, 32, max_candidates=50, compiled=False)
    torch.testing.assert_close(a.pix_idx, b.pix_idx)
    torch.testing.assert_close(a.face_idx, b.face_idx)
    torch.testing.assert_close(a.bary, b.bary)


def test_batch_elements_are_independent():
    v0, faces = random_soup(20, 3)
    v1, _ = random_soup(20, 4)
    both = rasterize(torch.stack([v0, v1]), faces, 24).pix_to_face
    torch.testing.assert_close(both[0], rasterize(v0[None], faces, 24).pix_to_face[0])
    torch.testing.assert_close(both[1], rasterize(v1[None], faces, 24).pix_to_face[0])


def test_bf16_autocast_keeps_visibility_in_float32():
    verts, faces, uv = uv_sphere(10, 20)
    renderer = MeshRenderer(faces, uv, faces, image_size=32, uv_size=32)
    screen = orth_to_screen(verts[None], torch.tensor([[0.7, 0.0, 0.0]]))
    ref = renderer(verts[None], screen, light=torch.ones(1, 9, 3) * 0.3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = renderer(verts[None], screen.bfloat16(), light=torch.ones(1, 9, 3) * 0.3)
    assert out.fragments.bary.dtype == torch.float32 and out.fragments.depth.dtype == torch.float32
    # bf16 screen vertices move edges by up to ~1/256 of a unit: compare coverage, not exact ids
    assert (out.alpha != ref.alpha).float().mean() < 0.05


def test_bad_shapes_raise_with_shapes_in_message():
    with pytest.raises(ValueError, match=r"\(B, V, 3\)"):
        rasterize(torch.zeros(3, 3), torch.zeros(1, 3, dtype=torch.long), 8)


needs_zbuffer_kernel = pytest.mark.skipif(rast._zbuffer_kernel() is None,
                                          reason="no C++ compiler: compiled z-buffer unavailable")


def _both(screen, faces, size, cull):
    pix = rast.ndc_to_pixel(screen[..., :2], size, size)
    ref = rast.rasterize_visibility(pix, screen[..., 2], faces, size, size, cull, compiled=False)
    fast = rast.rasterize_visibility(pix, screen[..., 2], faces, size, size, cull, compiled=True)
    return ref, fast


@needs_zbuffer_kernel
@pytest.mark.parametrize("cull", [False, True])
def test_compiled_zbuffer_equals_pytorch_loop_on_soups(cull):
    soups = [random_soup(60, seed)[0] for seed in range(3)]
    faces = random_soup(60, 0)[1]
    screen = torch.stack(soups)
    # vertices exactly on pixel centres: shared edges through pixel centres exercise the tie-break
    snapped = torch.round((screen[..., :2] + 1) * 16 - 0.5)
    screen_on_grid = torch.cat([(snapped + 0.5) / 16 - 1, screen[..., 2:]], -1)
    for s, size in ((screen, 37), (screen_on_grid, 32)):
        (p_ref, f_ref), (p_fast, f_fast) = _both(s, faces, size, cull)
        assert p_ref.numel() > 500
        torch.testing.assert_close(p_fast, p_ref, rtol=0, atol=0)
        torch.testing.assert_close(f_fast, f_ref, rtol=0, atol=0)


@needs_zbuffer_kernel
def test_compiled_zbuffer_equals_pytorch_loop_on_a_head():
    # A closed head-like mesh seen from random rotations: self-occlusion and back faces as in training.
    from tvface.face_models.base import batch_rodrigues

    verts, faces, _ = uv_sphere(24, 32, radii=(0.8, 1.0, 0.9))
    g = torch.Generator().manual_seed(5)
    rot = batch_rodrigues(torch.randn(4, 3, generator=g) * 0.6)
    posed = verts[None] @ rot.transpose(1, 2)
    screen = orth_to_screen(posed, torch.tensor([[0.9, 0.01, -0.02]]).expand(4, 3))
    (p_ref, f_ref), (p_fast, f_fast) = _both(screen, faces, 64, True)
    assert p_ref.numel() > 4 * 1500
    torch.testing.assert_close(p_fast, p_ref, rtol=0, atol=0)
    torch.testing.assert_close(f_fast, f_ref, rtol=0, atol=0)


def test_without_compiler_the_pytorch_loop_runs(monkeypatch):
    verts, faces = random_soup(20, 3)
    default = rasterize(verts[None], faces, 24)  # the compiled pass where a compiler exists
    monkeypatch.setenv("TVFACE_NO_COMPILE", "1")
    rast._zbuffer_kernel.cache_clear()
    try:
        assert rast._zbuffer_kernel() is None
        frags = rasterize(verts[None], faces, 24)  # now the PyTorch loop: the same fragments
        assert frags.pix_idx.numel() > 100
        torch.testing.assert_close(frags.pix_idx, default.pix_idx, rtol=0, atol=0)
        torch.testing.assert_close(frags.face_idx, default.face_idx, rtol=0, atol=0)
        with pytest.raises(RuntimeError, match="compiled z-buffer"):
            rasterize(verts[None], faces, 24, compiled=True)
    finally:
        rast._zbuffer_kernel.cache_clear()
