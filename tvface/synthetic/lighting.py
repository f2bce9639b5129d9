"""Spherical-harmonics lights for synthetic scenes: ambient + a key light + a fill, or a dark scene.

The coefficients are DECA's ``light`` (9, 3) (see :mod:`tvface.rendering.shading`): the radiance's
coefficients in the orthonormal real SH basis, shaded with DECA's factors, which apply the
Lambertian kernel to bands 1-2 but use 1 instead of pi for band 0. A directional light of intensity
``I`` towards ``d`` has radiance coefficients ``I * Y_k(d)``; we scale its band 0 by pi so that its
irradiance is the band-limited clamped cosine ``I * max(0, n . d)`` (Ramamoorthi & Hanrahan 2001),
and an ambient term ``a`` adds ``a * sqrt(4 pi)`` to band 0 so that it adds ``a`` everywhere.
Directions are in camera space (+z towards the camera), as the renderer's normals.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Orthonormal real SH in DECA's order [1, x, y, z, xy, xz, yz, x^2 - y^2, 3 z^2 - 1].
SH_NORM = np.array([1 / math.sqrt(4 * math.pi)] + [math.sqrt(3 / (4 * math.pi))] * 3
                   + [math.sqrt(15 / (4 * math.pi))] * 3 + [math.sqrt(15 / (16 * math.pi)),
                                                            math.sqrt(5 / (16 * math.pi))])
# DECA's SH_CONSTANT_FACTOR divided by SH_NORM: the kernel each band is multiplied by when shading.
DECA_KERNEL = np.array([1.0] + [2 * math.pi / 3] * 3 + [math.pi / 4] * 5)
LAMBERT_KERNEL = np.array([math.pi] + [2 * math.pi / 3] * 3 + [math.pi / 4] * 5)


def sh_basis_np(dirs: np.ndarray) -> np.ndarray:
    """(..., 3) unit directions -> (..., 9) orthonormal real SH values in DECA's order."""
    x, y, z = dirs[..., 0], dirs[..., 1], dirs[..., 2]
    b = np.stack([np.ones_like(x), x, y, z, x * y, x * z, y * z, x * x - y * y, 3 * z * z - 1], axis=-1)
    return b * SH_NORM


def directional_light_sh(direction: np.ndarray, color: np.ndarray) -> np.ndarray:
    """(9, 3) DECA light whose irradiance is ``color * max(0, n . direction)`` (band-limited)."""
    d = np.asarray(direction, np.float64)
    d = d / np.linalg.norm(d)
    coef = sh_basis_np(d) * LAMBERT_KERNEL / DECA_KERNEL  # band 0 carries the pi DECA omits
    return coef[:, None] * np.asarray(color, np.float64)[None]


def ambient_light_sh(color: np.ndarray) -> np.ndarray:
    """(9, 3) DECA light adding ``color`` to the irradiance of every normal."""
    out = np.zeros((9, 3))
    out[0] = np.asarray(color, np.float64) * math.sqrt(4 * math.pi)
    return out


def irradiance(light: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """DECA's shading in numpy: (9, 3) light, (..., 3) normals -> (..., 3) irradiance."""
    return (sh_basis_np(normals) * DECA_KERNEL) @ light


def random_direction(rng: np.random.Generator, max_angle_deg: float) -> np.ndarray:
    """A unit vector within ``max_angle_deg`` of +z (towards the camera), uniform in angle."""
    theta = math.radians(rng.uniform(0.0, max_angle_deg))
    phi = rng.uniform(0.0, 2 * math.pi)
    return np.array([math.sin(theta) * math.cos(phi), math.sin(theta) * math.sin(phi), math.cos(theta)])


@dataclass(frozen=True)
class LightSample:
    light: np.ndarray  # (9, 3) DECA SH coefficients
    key_direction: np.ndarray  # (3,)
    key_intensity: float
    ambient: float
    brightness: float  # mean irradiance over frontal normals (1 ~ a well-lit studio face)


def frontal_brightness(light: np.ndarray, n_samples: int = 256) -> float:
    """Mean grey irradiance over normals spread on the frontal hemisphere (a fixed quadrature)."""
    k = np.arange(n_samples) + 0.5
    z = 1 - k / n_samples  # uniform in z on the hemisphere
    phi = k * math.pi * (3 - math.sqrt(5))
    r = np.sqrt(1 - z * z)
    normals = np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=-1)
    return float(irradiance(light, normals).mean())


def sample_sh_light(rng: np.random.Generator, dark: bool = False) -> LightSample:
    """A TV-like light: warm/cool tinted key from up to 70 deg off-axis, a fill, an ambient term.

    ``dark``: night/low-key scenes, a weak key over a weak ambient (brightness 0.1-0.35 of normal).
    """
    tint = np.clip(1.0 + rng.normal(0.0, 0.08, 3), 0.8, 1.2)
    key_dir = random_direction(rng, 70.0)
    key_dir[1] = abs(key_dir[1])  # key lights come from above more often than below
    if dark:
        key, ambient, fill = rng.uniform(0.08, 0.3), rng.uniform(0.02, 0.1), rng.uniform(0.0, 0.05)
    else:
        key, ambient, fill = rng.uniform(0.35, 0.8), rng.uniform(0.3, 0.6), rng.uniform(0.0, 0.25)
    fill_dir = -key_dir * np.array([1.0, 0.3, -1.0])  # the other side, still facing the subject
    light = (directional_light_sh(key_dir, key * tint) + directional_light_sh(fill_dir, fill * tint[::-1])
             + ambient_light_sh(ambient * np.ones(3)))
    return LightSample(light=light, key_direction=key_dir, key_intensity=float(key), ambient=float(ambient),
                       brightness=frontal_brightness(light))


def light_trajectory(rng: np.random.Generator, light: np.ndarray, n_frames: int, flicker: float = 0.02
                     ) -> np.ndarray:
    """(T, 9, 3): the sequence's light with a small global flicker (TV lights and auto-exposure)."""
    from tvface.synthetic.trajectories import smooth_noise

    gain = 1.0 + flicker * smooth_noise(rng, n_frames, 1, 12.0)[:, 0]
    return light[None] * gain[:, None, None]
