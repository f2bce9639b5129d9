"""Finite-difference gradient checks (float64, tiny meshes and images)."""
import torch

from tvface.rendering import MeshRenderer, interpolate, orth_to_screen, rasterize, sample_texture
from tvface.rendering.procedural import uv_sphere

SIZE = 12


def _scene():
    verts, faces, uv = uv_sphere(6, 10)
    renderer = MeshRenderer(faces, uv, faces, image_size=SIZE, uv_size=8)
    g = torch.Generator().manual_seed(0)
    verts = verts.double()[None] * 0.9
    albedo = torch.rand(1, 3, 8, 8, generator=g, dtype=torch.float64)
    light = torch.randn(1, 9, 3, generator=g, dtype=torch.float64) * 0.3
    cam = torch.tensor([[1.0, 0.02, -0.01]], dtype=torch.float64)
    return renderer, verts, albedo, light, cam


def test_gradcheck_light_albedo_camera():
    renderer, verts, albedo, light, cam = _scene()

    def f(light, cam):
        return renderer(verts, orth_to_screen(verts, cam), albedo, light).images

    # The camera moves silhouettes discretely; steps of 1e-6 never cross a pixel centre here.
    assert torch.autograd.gradcheck(f, (light.requires_grad_(), cam.requires_grad_()), eps=1e-6, atol=1e-6, fast_mode=True)

    def g(albedo):
        return renderer(verts, orth_to_screen(verts, cam), albedo, light).images

    # Linear in the albedo: fast mode (random projections of the Jacobian) is exact enough and 100x cheaper.
    assert torch.autograd.gradcheck(g, (albedo.requires_grad_(),), eps=1e-6, atol=1e-6, fast_mode=True)


def test_gradcheck_vertex_positions_on_interior_pixels():
    renderer, verts, albedo, light, cam = _scene()
    base = renderer(verts, orth_to_screen(verts, cam), albedo, light)
    # Interior pixels: the pixel and its 8 neighbours are covered by the mesh.
    alpha = base.alpha[0, 0]
    interior = torch.nn.functional.max_pool2d(1 - alpha[None, None], 3, 1, 1)[0, 0] == 0
    assert interior.sum() > 20
    frags = base.fragments

    def f(verts):
        screen = orth_to_screen(verts, cam)
        out = renderer(verts, screen, albedo, light)
        assert torch.equal(out.fragments.face_idx, frags.face_idx)  # visibility unchanged by the FD step
        return out.images[0][:, interior]

    assert torch.autograd.gradcheck(f, (verts.clone().requires_grad_(),), eps=1e-7, atol=1e-5, fast_mode=True)


def test_gradcheck_interpolation_and_texture_sampling():
    verts, faces, _ = uv_sphere(4, 6)
    screen = orth_to_screen(verts.double()[None], torch.tensor([[0.8, 0.0, 0.0]], dtype=torch.float64))
    frags = rasterize(screen, faces, 8)
    texture = torch.rand(1, 2, 5, 5, dtype=torch.float64)
    attrs = torch.randn(1, verts.shape[0], 2, dtype=torch.float64)

    def f(attrs, texture):
        uvs = interpolate(frags, attrs.sigmoid(), faces)
        return sample_texture(texture, uvs, frags.batch_idx)

    assert torch.autograd.gradcheck(f, (attrs.requires_grad_(), texture.requires_grad_()), eps=1e-6, atol=1e-6, fast_mode=True)
