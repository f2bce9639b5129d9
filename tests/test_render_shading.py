"""SH shading: DECA's constants, and a sphere under a known light against the analytic irradiance."""
import math

import numpy as np
import torch

from tvface.rendering import (
    SH_CONSTANT_FACTOR,
    MeshRenderer,
    add_sh_light,
    directional_shading,
    orth_to_screen,
)
from tvface.rendering.procedural import uv_sphere


def _real_sh(d: np.ndarray) -> np.ndarray:
    """Real SH Y_lm (l <= 2) in DECA's order [00, x, y, z, xy, xz, yz, x2-y2, 3z2-1], textbook constants."""
    x, y, z = d.T
    c1, c2 = math.sqrt(3 / (4 * math.pi)), 0.5 * math.sqrt(15 / math.pi)
    return np.stack([np.full_like(x, 0.5 / math.sqrt(math.pi)), c1 * x, c1 * y, c1 * z, c2 * x * y, c2 * x * z,
                     c2 * y * z, 0.5 * c2 * (x * x - y * y), 0.25 * math.sqrt(5 / math.pi) * (3 * z * z - 1)], 1)


def _irradiance(normals: np.ndarray, coeffs: np.ndarray, n_dirs: int = 40000) -> np.ndarray:
    """E(n) = integral of L(w) max(n.w, 0) dw by quadrature over a Fibonacci sphere; (P, 3) -> (P, C)."""
    k = np.arange(n_dirs) + 0.5
    zz = 1 - 2 * k / n_dirs
    phi = math.pi * (1 + 5 ** 0.5) * k
    r = np.sqrt(1 - zz * zz)
    dirs = np.stack([r * np.cos(phi), r * np.sin(phi), zz], 1)
    radiance = _real_sh(dirs) @ coeffs  # (D, C)
    return np.clip(normals @ dirs.T, 0, None) @ radiance * (4 * math.pi / n_dirs)


def test_constant_factor_is_decas():
    pi = math.pi
    deca = [1 / np.sqrt(4 * pi), ((2 * pi) / 3) * (np.sqrt(3 / (4 * pi))), ((2 * pi) / 3) * (np.sqrt(3 / (4 * pi))),
            ((2 * pi) / 3) * (np.sqrt(3 / (4 * pi))), (pi / 4) * (3) * (np.sqrt(5 / (12 * pi))),
            (pi / 4) * (3) * (np.sqrt(5 / (12 * pi))), (pi / 4) * (3) * (np.sqrt(5 / (12 * pi))),
            (pi / 4) * (3 / 2) * (np.sqrt(5 / (12 * pi))), (pi / 4) * (1 / 2) * (np.sqrt(5 / (4 * pi)))]
    np.testing.assert_allclose(SH_CONSTANT_FACTOR, deca, rtol=1e-12)


def test_sh_matches_analytic_irradiance_of_bands_1_and_2():
    # Bands 1-2 of DECA's basis are exactly the Lambertian-convolved SH (Ramamoorthi & Hanrahan).
    rng = np.random.default_rng(0)
    coeffs = rng.normal(size=(9, 3))
    coeffs[0] = 0.0
    normals = rng.normal(size=(50, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    ours = add_sh_light(torch.from_numpy(normals).T.reshape(1, 3, 50, 1), torch.from_numpy(coeffs)[None])
    np.testing.assert_allclose(ours[0, :, :, 0].T.numpy(), _irradiance(normals, coeffs), atol=2e-3)


def test_band0_is_decas_unscaled_constant():
    light = torch.zeros(1, 9, 3)
    light[0, 0] = torch.tensor([1.0, 2.0, 3.0])
    out = add_sh_light(torch.randn(1, 3, 4, 4), light)
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor([1.0, 2.0, 3.0]) / math.sqrt(4 * math.pi))


def test_rendered_sphere_matches_analytic_irradiance():
    size = 64
    verts, faces, uv = uv_sphere(48, 96)
    renderer = MeshRenderer(faces, uv, faces, image_size=size, uv_size=32)
    rng = np.random.default_rng(1)
    coeffs = rng.normal(size=(9, 3)) * 0.5
    coeffs[0] = 0.0
    screen = orth_to_screen(verts[None], torch.tensor([[0.9, 0.0, 0.0]]))
    out = renderer(verts[None], screen, light=torch.from_numpy(coeffs).float()[None])
    # Exact sphere normal at each pixel centre (x right, y up in the model frame).
    c = (np.arange(size) + 0.5) / size * 2 - 1
    x, y = np.meshgrid(c / 0.9, -c / 0.9)
    r2 = x * x + y * y
    inner = r2 < 0.8 ** 2  # away from the silhouette, where the tessellation's normals are accurate
    normals = np.stack([x, y, np.sqrt(np.clip(1 - r2, 0, None))], -1)[inner]
    expected = _irradiance(normals, coeffs)
    got = out.images[0].permute(1, 2, 0).numpy()[inner]
    assert out.alpha[0, 0].numpy()[inner].all()
    np.testing.assert_allclose(got, expected, atol=0.006 * np.abs(expected).max())


def test_directional_shape_light_front_normal():
    # DECA's five lights: front normal sees four at 1/sqrt(3) and one at 1.
    n = torch.tensor([[0.0, 0.0, 1.0]])
    expected = (4 / math.sqrt(3) + 1) / 5 * 1.7
    torch.testing.assert_close(directional_shading(n), torch.tensor([[expected]]))


def test_render_shape_alone_equals_the_full_render():
    """render_shape (what overlays use) gives forward's shape_images and alpha, to the bit."""
    verts, faces, uv = uv_sphere(12, 24)
    renderer = MeshRenderer(faces, uv, faces, image_size=40, uv_size=16)
    verts = torch.stack([verts, verts * torch.tensor([1.1, 0.9, 1.0])])
    screen = orth_to_screen(verts, torch.tensor([[0.9, 0.05, 0.0], [0.7, -0.1, 0.1]]))
    full = renderer(verts, screen, light=torch.rand(2, 9, 3), with_shape=True)
    shape, alpha = renderer.render_shape(verts, screen)
    assert shape.shape == (2, 3, 40, 40) and alpha.sum() > 100
    torch.testing.assert_close(shape, full.shape_images, rtol=0, atol=0)
    torch.testing.assert_close(alpha, full.alpha, rtol=0, atol=0)


def _flat_image(renderer, verts, screen):
    pix_idx, grey = renderer.render_shape_flat(verts, screen)
    size = renderer.image_size
    out = torch.zeros(verts.shape[0] * size * size)
    cover = torch.zeros_like(out)
    out[pix_idx], cover[pix_idx] = grey, 1.0
    return out.view(-1, 1, size, size), cover.view(-1, 1, size, size)


def test_render_shape_flat_equals_smooth_on_a_plane():
    """All face normals of a plane equal its vertex normals: per-triangle shading = DECA's shape image."""
    from tvface.rendering.mesh import generate_triangles

    n = 9
    ys, xs = torch.meshgrid(torch.linspace(-0.6, 0.6, n), torch.linspace(-0.6, 0.6, n), indexing="ij")
    faces = torch.from_numpy(generate_triangles(n, n)).long()
    renderer = MeshRenderer(faces, torch.zeros(n * n, 2), faces, image_size=32, uv_size=8, cull_backfaces=False)
    verts = torch.stack([xs, ys, 0.3 * xs - 0.2 * ys], -1).reshape(1, -1, 3)  # a tilted plane
    verts = torch.cat([verts, verts * torch.tensor([1.0, 1.0, -1.0])])  # and its mirror: another normal
    screen = orth_to_screen(verts, torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.1, -0.05]]))
    shape, alpha = renderer.render_shape(verts, screen)
    flat, cover = _flat_image(renderer, verts, screen)
    assert alpha.sum() > 300
    torch.testing.assert_close(cover, alpha, rtol=0, atol=0)
    torch.testing.assert_close(flat, shape[:, :1], rtol=0, atol=1e-6)


def test_render_shape_flat_on_a_sphere_covers_the_same_pixels_and_shades_close():
    """On a curved mesh the covered pixels are the same z-buffer's; the grey differs from the smooth
    shading by the angle between a triangle's normal and its corners' normals (a few percent here)."""
    verts, faces, uv = uv_sphere(32, 64)
    renderer = MeshRenderer(faces, uv, faces, image_size=48, uv_size=16)
    verts = verts[None]
    screen = orth_to_screen(verts, torch.tensor([[0.9, 0.0, 0.0]]))
    shape, alpha = renderer.render_shape(verts, screen)
    flat, cover = _flat_image(renderer, verts, screen)
    torch.testing.assert_close(cover, alpha, rtol=0, atol=0)
    diff = (flat - shape[:, :1]).abs()[alpha > 0]
    assert diff.mean() < 0.02 and diff.max() < 0.06  # measured 0.008 / 0.030
    assert (flat[alpha > 0] > 0).float().mean() > 0.9  # lit, not a black disc
