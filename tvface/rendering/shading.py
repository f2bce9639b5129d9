"""Shading: DECA's 9-band spherical-harmonics irradiance and the directional lights of its shape images.

Eq. 4 of DECA: image = albedo * irradiance(normal, light). ``light`` is (B, 9, 3): 9 SH
coefficients per colour channel, DECA's ``codedict['light']``. The basis is DECA's
``add_SHlight``: [1, x, y, z, xy, xz, yz, x^2 - y^2, 3 z^2 - 1] times :data:`SH_CONSTANT_FACTOR`,
which folds in the Lambertian kernel of Ramamoorthi & Hanrahan (2001) for bands 1 and 2 (2 pi / 3,
pi / 4) but *not* band 0 (DECA uses 1/sqrt(4 pi), not pi/sqrt(4 pi)). We keep DECA's numbers so
that its checkpoints and light priors mean the same here: a constant environment of radiance L
gives irradiance pi L physically, and L / 1 here, up to that band-0 factor.
Normals are in model space (+z towards the camera).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

PI = math.pi
SH_CONSTANT_FACTOR = (
    1 / math.sqrt(4 * PI),
    (2 * PI / 3) * math.sqrt(3 / (4 * PI)),
    (2 * PI / 3) * math.sqrt(3 / (4 * PI)),
    (2 * PI / 3) * math.sqrt(3 / (4 * PI)),
    (PI / 4) * 3 * math.sqrt(5 / (12 * PI)),
    (PI / 4) * 3 * math.sqrt(5 / (12 * PI)),
    (PI / 4) * 3 * math.sqrt(5 / (12 * PI)),
    (PI / 4) * (3 / 2) * math.sqrt(5 / (12 * PI)),
    (PI / 4) * (1 / 2) * math.sqrt(5 / (4 * PI)),
)
N_SH = 9

# DECA's ``render_shape`` lights: five directional lights of intensity 1.7, grey albedo 180/255.
SHAPE_LIGHT_DIRECTIONS = ((-1, 1, 1), (1, 1, 1), (-1, -1, 1), (1, -1, 1), (0, 0, 1))
SHAPE_LIGHT_INTENSITY = 1.7
SHAPE_ALBEDO = 180.0 / 255.0
# DECA's ``pos_mask`` threshold on the camera-space normal: pixels facing the camera by more than this.
SHAPE_FACING_THRESHOLD = -0.15


def sh_basis(normals: Tensor) -> Tensor:
    """(..., 3) normals -> (..., 9) DECA's SH basis including :data:`SH_CONSTANT_FACTOR`."""
    x, y, z = normals.unbind(-1)
    basis = torch.stack([torch.ones_like(x), x, y, z, x * y, x * z, y * z, x * x - y * y, 3 * z * z - 1], dim=-1)
    return basis * basis.new_tensor(SH_CONSTANT_FACTOR)


def check_light(light: Tensor) -> None:
    if light.ndim != 3 or light.shape[1:] != (N_SH, 3):
        raise ValueError(f"SH light must be (B, 9, 3), got {tuple(light.shape)}")


def add_sh_light(normal_images: Tensor, light: Tensor) -> Tensor:
    """DECA's ``add_SHlight``: (B, 3, H, W) normals, (B, 9, 3) light -> (B, 3, H, W) irradiance."""
    check_light(light)
    basis = sh_basis(normal_images.permute(0, 2, 3, 1))  # (B, H, W, 9)
    return torch.einsum("bhwk,bkc->bchw", basis, light.to(basis.dtype))


def sh_shading_packed(normals: Tensor, light: Tensor, counts: list[int]) -> Tensor:
    """SH irradiance of packed pixels.

    Args:
        normals: (N, 3), sorted by batch element with ``counts[b]`` pixels in element b.
        light: (B, 9, 3).
    Returns:
        (N, 3).
    """
    check_light(light)
    basis = sh_basis(normals)  # (N, 9)
    light = light.to(basis.dtype)
    return torch.cat([blk @ light[b] for b, blk in enumerate(basis.split(counts))], dim=0)


def directional_shading(normals: Tensor, directions=SHAPE_LIGHT_DIRECTIONS,
                        intensity: float = SHAPE_LIGHT_INTENSITY) -> Tensor:
    """DECA's ``add_directionlight`` with equal white lights: mean_l clamp(n . d_l, 0, 1) * intensity.

    Args:
        normals: (..., 3). Returns (..., 1).
    """
    d = torch.nn.functional.normalize(normals.new_tensor(directions), dim=-1)  # (L, 3)
    return (normals @ d.T).clamp(0.0, 1.0).mean(dim=-1, keepdim=True) * intensity
