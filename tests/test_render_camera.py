"""Cameras: DECA's weak perspective and screen conventions, the pinhole camera."""
import math

import torch

from tvface.rendering import batch_orth_proj, orth_to_screen, perspective_to_screen, screen_to_pixels


def test_batch_orth_proj_is_decas():
    x = torch.randn(2, 5, 3)
    cam = torch.tensor([[2.0, 0.1, -0.2], [0.5, 0.0, 0.3]])
    expected = torch.cat([x[:, :, :2] + cam[:, None, 1:], x[:, :, 2:]], 2) * cam[:, None, 0:1]
    torch.testing.assert_close(batch_orth_proj(x, cam), expected)


def test_screen_flips_y_and_z_and_maps_to_pixels():
    pts = torch.tensor([[[0.0, 0.5, 0.2], [1.0, -1.0, 0.0]]])
    screen = orth_to_screen(pts, torch.tensor([[1.0, 0.0, 0.0]]))
    torch.testing.assert_close(screen, torch.tensor([[[0.0, -0.5, -0.2], [1.0, 1.0, 0.0]]]))
    # pixel centres at integers: x * 112 + 112 - 0.5 (up in the model is up in the image)
    torch.testing.assert_close(screen_to_pixels(screen, 224), torch.tensor([[[111.5, 55.5], [223.5, 223.5]]]))


def test_perspective_centre_and_depth():
    pts = torch.tensor([[[0.1, 0.1, 0.0]]])
    rot = torch.eye(3)[None]
    transl = torch.tensor([[0.0, 0.0, -2.0]])  # camera 2 m in front of the face, looking down -z
    screen = perspective_to_screen(pts, torch.tensor([4.0]), rot, transl)
    torch.testing.assert_close(screen, torch.tensor([[[0.2, -0.2, 2.0]]]))
    # nearer points get smaller depth
    near = perspective_to_screen(torch.tensor([[[0.0, 0.0, 0.5]]]), torch.tensor([4.0]), rot, transl)
    assert near[0, 0, 2] < screen[0, 0, 2]
    assert math.isclose(float(near[0, 0, 2]), 1.5)
