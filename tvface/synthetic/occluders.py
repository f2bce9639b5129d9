"""Occluders: textured hand-like and object-like sprites that enter the crop, cover part of the face
and leave.

A sprite is an RGBA image (premultiplied colour + coverage) drawn once per sequence with
anti-aliased edges (4x supersampled polygons). Per frame it is placed by a similarity (position,
rotation) with :func:`place_sprite`; positions follow enter -> hold -> leave paths that start and
end outside the crop, so occlusions begin and end inside the sequence as in real footage.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from tvface.synthetic.backgrounds import fractal_noise, procedural_texture, random_palette
from tvface.synthetic.trajectories import smooth_step

OCCLUDER_KINDS = ("hand", "mug", "microphone", "phone", "bottle")
SUPERSAMPLE = 4
# Skin tones (linear-ish RGB in [0, 1]) from light to dark, for hands.
SKIN_TONES = np.array([[0.92, 0.76, 0.65], [0.85, 0.65, 0.52], [0.74, 0.54, 0.40],
                       [0.58, 0.40, 0.29], [0.42, 0.28, 0.20], [0.30, 0.20, 0.14]], np.float32)


@dataclass(frozen=True)
class Sprite:
    rgba: np.ndarray  # (h, w, 4) float32: premultiplied RGB, alpha
    kind: str


def _capsule(canvas: np.ndarray, p0, p1, radius: float) -> None:
    p0 = np.round(np.asarray(p0)).astype(int)
    p1 = np.round(np.asarray(p1)).astype(int)
    cv2.line(canvas, tuple(map(int, p0)), tuple(map(int, p1)), 1.0, thickness=max(int(2 * radius), 1),
             lineType=cv2.LINE_8)
    for p in (p0, p1):
        cv2.circle(canvas, tuple(map(int, p)), int(radius), 1.0, thickness=-1)


def _hand_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    """Coverage of a hand seen from the palm or back, fingers up, at ``size`` pixels."""
    m = np.zeros((size, size), np.float32)
    cx, cy = size * 0.5, size * 0.68
    pw, ph = size * rng.uniform(0.17, 0.22), size * rng.uniform(0.2, 0.25)
    cv2.ellipse(m, (int(cx), int(cy)), (int(pw), int(ph)), 0, 0, 360, 1.0, -1)
    # Forearm below the palm.
    cv2.rectangle(m, (int(cx - pw * 0.8), int(cy)), (int(cx + pw * 0.8), size - 1), 1.0, -1)
    spread = rng.uniform(0.0, 0.25)
    lengths = np.array([0.8, 0.95, 0.9, 0.7]) * size * rng.uniform(0.28, 0.34)
    r = size * 0.035
    for k, length in enumerate(lengths):
        base_x = cx + (k - 1.5) * pw * 0.55
        ang = (k - 1.5) * spread
        tip = (base_x + length * math.sin(ang), cy - ph * 0.7 - length * math.cos(ang))
        _capsule(m, (base_x, cy - ph * 0.5), tip, r)
    side = 1 if rng.random() < 0.5 else -1
    thumb_base = (cx + side * pw * 0.8, cy)
    thumb_tip = (cx + side * pw * 1.7, cy - ph * 0.9)
    _capsule(m, thumb_base, thumb_tip, r * 1.15)
    return m


def _object_mask(rng: np.random.Generator, size: int, kind: str) -> np.ndarray:
    m = np.zeros((size, size), np.float32)
    c = size // 2
    if kind == "mug":
        w, h = int(size * rng.uniform(0.2, 0.28)), int(size * rng.uniform(0.25, 0.35))
        cv2.rectangle(m, (c - w, c - h), (c + w, c + h), 1.0, -1)
        cv2.ellipse(m, (c + w, c), (int(w * 0.6), int(h * 0.5)), 0, -90, 90, 1.0, thickness=int(size * 0.05))
    elif kind == "microphone":
        r = int(size * rng.uniform(0.1, 0.14))
        cv2.circle(m, (c, c - size // 4), r, 1.0, -1)
        _capsule(m, (c, c - size // 4), (c, size - 1), size * 0.04)
    elif kind == "phone":
        w, h = int(size * rng.uniform(0.14, 0.18)), int(size * rng.uniform(0.3, 0.36))
        rr = int(size * 0.03)
        cv2.rectangle(m, (c - w + rr, c - h), (c + w - rr, c + h), 1.0, -1)
        cv2.rectangle(m, (c - w, c - h + rr), (c + w, c + h - rr), 1.0, -1)
        for sx in (-1, 1):
            for sy in (-1, 1):
                cv2.circle(m, (c + sx * (w - rr), c + sy * (h - rr)), rr, 1.0, -1)
    elif kind == "bottle":
        w = int(size * rng.uniform(0.1, 0.14))
        cv2.rectangle(m, (c - w, c - size // 8), (c + w, size - 1), 1.0, -1)
        cv2.ellipse(m, (c, c - size // 8), (w, w), 0, 180, 360, 1.0, -1)
        cv2.rectangle(m, (c - w // 2, c - size // 3), (c + w // 2, c - size // 8), 1.0, -1)
    else:
        raise ValueError(f"unknown occluder kind {kind!r}; known: {OCCLUDER_KINDS}")
    return m


def make_sprite(rng: np.random.Generator, kind: str, size: int) -> Sprite:
    """A textured sprite of side ``size`` px: skin + shading for hands, a procedural texture for objects."""
    big = size * SUPERSAMPLE
    mask = _hand_mask(rng, big) if kind == "hand" else _object_mask(rng, big, kind)
    alpha = cv2.resize(mask, (size, size), interpolation=cv2.INTER_AREA)
    if kind == "hand":
        tone = SKIN_TONES[int(rng.integers(len(SKIN_TONES)))] * rng.uniform(0.9, 1.1)
        blotch = fractal_noise(rng, size, 2.5)[..., None]
        color = tone * (0.85 + 0.3 * blotch)
    else:
        kinds = ("fractal", "stripes", "blocks", "gradient")
        color = procedural_texture(rng, size, kinds[int(rng.integers(len(kinds)))])
        color = 0.5 * color + 0.5 * random_palette(rng, 1)[0]
    # Soft shading across the sprite, as if lit from one side.
    xx = np.linspace(-1, 1, size, dtype=np.float32)[None, :, None]
    color = np.clip(color * (0.8 + 0.2 * rng.choice([-1, 1]) * xx), 0, 1)
    rgba = np.concatenate([color * alpha[..., None], alpha[..., None]], axis=-1).astype(np.float32)
    return Sprite(rgba=rgba, kind=kind)


@dataclass(frozen=True)
class OccluderTrack:
    """One occluder over a sequence: sprite + per-frame centre (pixels) and rotation (rad)."""

    sprite: Sprite
    center: np.ndarray  # (T, 2) pixel position of the sprite centre in the crop
    angle: np.ndarray  # (T,)

    def velocity(self) -> np.ndarray:
        """(T, 2) pixels per frame (backward differences; forward for frame 0)."""
        v = np.diff(self.center, axis=0)
        return np.concatenate([v[:1], v], axis=0) if len(v) else np.zeros_like(self.center)


def sample_occluder_track(rng: np.random.Generator, n_frames: int, image_size: int,
                          face_box: np.ndarray, kind: str | None = None) -> OccluderTrack:
    """An occluder entering from an edge, covering part of ``face_box`` (x0, y0, x1, y1 px) and leaving.

    Enter and leave times are drawn so that the occluder is over the face for 30-80 % of the frames
    and outside the crop at the start, the end or both.
    """
    kind = kind or OCCLUDER_KINDS[int(rng.integers(len(OCCLUDER_KINDS)))]
    size = int(image_size * rng.uniform(0.55, 0.8))
    sprite = make_sprite(rng, kind, size)
    fx0, fy0, fx1, fy1 = face_box
    target = np.array([rng.uniform(fx0, fx1), rng.uniform(fy0 + 0.3 * (fy1 - fy0), fy1 + 0.1 * (fy1 - fy0))])
    # Sprites sit with their lower part (arm, handle, stick) below the target point.
    target = target + np.array([0.0, 0.25 * size])

    def outside(edge: int) -> np.ndarray:
        off = 0.5 * size + 0.6 * image_size
        # bottom, left, right, bottom-left: hands and props come from below or the sides
        return target + np.array([[0, off], [-off, 0], [off, 0], [-0.7 * off, 0.7 * off]])[edge]

    edges = rng.choice(4, size=2, p=[0.4, 0.2, 0.2, 0.2])
    start, end = outside(int(edges[0])), outside(int(edges[1]))
    t = np.arange(n_frames, dtype=np.float64)
    dur = max(1.0, rng.uniform(0.15, 0.35) * n_frames)
    t_in = rng.uniform(-0.6 * dur, 0.25 * n_frames)
    t_out = rng.uniform(max(t_in + dur + 0.3 * n_frames, 0.55 * n_frames), 1.2 * n_frames)
    a_in = smooth_step(t, t_in, dur)[:, None]
    a_out = smooth_step(t, t_out - dur, dur)[:, None]
    center = start + (target - start) * a_in + (end - target) * a_out
    angle = np.deg2rad(rng.uniform(-25, 25)) + np.deg2rad(5) * np.sin(t / max(n_frames, 1) * np.pi)
    return OccluderTrack(sprite=sprite, center=center, angle=angle)


def place_sprite(sprite: Sprite, center: np.ndarray, angle: float, image_size: int) -> np.ndarray:
    """(S, S, 4) premultiplied RGBA of the sprite rotated by ``angle`` about its centre at ``center``."""
    h, w = sprite.rgba.shape[:2]
    a = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), math.degrees(angle), 1.0)
    a[:, 2] += np.asarray(center) - np.array([(w - 1) / 2, (h - 1) / 2])
    return cv2.warpAffine(sprite.rgba, a, (image_size, image_size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
