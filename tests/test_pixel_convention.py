"""One pixel convention: synthetic ground truth, the renderer's projection, detectors' files and the
dataset loader agree (pixel centres at integers; see tvface.rendering.camera.screen_to_pixels)."""
from __future__ import annotations

import numpy as np
import torch

from tvface.data.dataset import denormalize_landmarks, normalize_landmarks
from tvface.rendering import MeshRenderer, orth_to_screen, pixels_to_screen, screen_to_pixels
from tvface.synthetic.camera import screen_to_pixel_coords


def _rendered_centroid(centre_screen: np.ndarray, size: int, radius: float = 0.35) -> np.ndarray:
    """Render a small regular 16-gon around a screen point; its coverage centroid in pixels."""
    n = 16
    ang = np.linspace(0, 2 * np.pi, n, endpoint=False)
    ring = np.stack([np.cos(ang), -np.sin(ang)], 1) * radius + centre_screen  # counter-clockwise on screen (y down)
    verts = np.concatenate([centre_screen[None], ring])
    faces = torch.tensor([[0, 1 + (k + 1) % n, 1 + k] for k in range(n)])
    sv = torch.tensor(np.concatenate([verts, np.full((n + 1, 1), 0.5)], 1), dtype=torch.float64)[None]
    uv = torch.zeros(n + 1, 2)
    r = MeshRenderer(faces, uv, faces, size, 8, cull_backfaces=False, uv_padding=0)
    alpha = r(sv.float(), sv.float()).alpha[0, 0].numpy()
    ys, xs = np.nonzero(alpha > 0.5)
    return np.array([xs.mean(), ys.mean()])


def test_rendered_vertex_lands_on_its_ground_truth_pixel():
    size = 64
    rng = np.random.default_rng(0)
    for _ in range(5):
        centre = rng.uniform(-0.5, 0.5, 2)
        gt_px = screen_to_pixel_coords(centre, size)  # what the synthetic ground truth stores
        np.testing.assert_allclose(_rendered_centroid(centre, size), gt_px, atol=0.1)


def test_model_landmark_projection_matches_ground_truth_pixels():
    pts = torch.tensor([[[0.01, -0.02, 0.0], [0.03, 0.04, 0.01]]])
    cam = torch.tensor([[7.5, 0.01, -0.02]])
    screen = orth_to_screen(pts, cam)[..., :2]
    px = screen_to_pixels(screen, 224)
    torch.testing.assert_close(px, torch.as_tensor(screen_to_pixel_coords(screen.numpy(), 224)).float())
    # the loader's DECA normalisation of those pixels gives back the renderer's screen points
    np.testing.assert_allclose(normalize_landmarks(px.numpy(), 224)[..., :2], screen.numpy(), atol=1e-6)


def test_loader_normalise_denormalise_round_trip():
    rng = np.random.default_rng(1)
    px = rng.uniform(-0.5, 223.5, (3, 68, 2))
    norm = normalize_landmarks(px, 224)
    assert norm.shape == (3, 68, 3) and (norm[..., 2] == 1).all()
    np.testing.assert_allclose(denormalize_landmarks(norm, 224), px, atol=1e-4)
    # the image's outer pixel edges are exactly -1 and 1; the centre of pixel 0 is -1 + 1/S
    np.testing.assert_allclose(normalize_landmarks(np.array([[-0.5, 223.5], [0.0, 0.0]]), 224)[:, :2],
                               [[-1, 1], [-1 + 1 / 224, -1 + 1 / 224]], atol=1e-6)
    t = torch.tensor(px)
    torch.testing.assert_close(screen_to_pixels(pixels_to_screen(t, 224), 224), t)
