"""Smooth per-frame trajectories: head pose, jaw and expression (talking, blinks, smiles, brows).

Everything is a pure function of a ``numpy.random.Generator`` and sizes, so a sequence is fully
determined by its seed. Times are in frames at :data:`FPS` (TV: 25 frames per second); speeds below
are per second so that a change of frame rate keeps the motion's physical meaning.

Expressions: models with ARKit-named blendshapes (ICT-FaceKit, ``model.expression_names``) get
named events (blinks on ``eyeBlink_*``, smiles on ``mouthSmile_*`` + ``cheekSquint_*``, brow raises
on ``browInnerUp_*`` / ``browOuterUp_*``) plus small smooth activity on the mouth shapes; weights
stay in [0, 1]. Models with a PCA expression space (FLAME) get smooth standard-normal-scaled
coefficients. Talking is the jaw's pitch in ``pose[3]`` for both (ICT maps it to ``jawOpen``).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.interpolate import CubicSpline

FPS = 25.0
MAX_YAW_DEG = 70.0
# Syllable rate of speech is 3-6 Hz (Greenberg 1999); the jaw opens about 5-15 deg when talking.
SYLLABLE_HZ = (3.0, 6.0)
JAW_OPEN_RAD = (0.05, 0.25)
BLINK_FRAMES = (3.0, 6.0)  # a blink lasts 100-250 ms
BLINKS_PER_SECOND = 0.4  # people blink 15-20 times a minute; a little more on camera

# ARKit names of the ICT-FaceKit blendshapes used by the named events.
BLINK = ("eyeBlink_L", "eyeBlink_R")
SMILE = ("mouthSmile_L", "mouthSmile_R", "cheekSquint_L", "cheekSquint_R")
BROW_RAISE = ("browInnerUp_L", "browInnerUp_R", "browOuterUp_L", "browOuterUp_R")
# Mouth shapes that move while talking, with their typical peak weight.
TALK_SHAPES = {"mouthFunnel": 0.3, "mouthPucker": 0.3, "mouthLowerDown_L": 0.4, "mouthLowerDown_R": 0.4,
               "mouthUpperUp_L": 0.3, "mouthUpperUp_R": 0.3, "mouthStretch_L": 0.3, "mouthStretch_R": 0.3,
               "mouthClose": 0.2, "mouthPress_L": 0.2, "mouthPress_R": 0.2}


def smooth_noise(rng: np.random.Generator, n_frames: int, n_channels: int, timescale: float) -> np.ndarray:
    """Smooth zero-mean, unit-std noise: a cubic spline through N(0, 1) knots every ``timescale`` frames.

    Returns (n_frames, n_channels) float64. The knot grid starts at a random phase so that
    sequences do not all have a knot on frame 0.
    """
    timescale = max(float(timescale), 1.0)
    n_knots = int(math.ceil((n_frames - 1) / timescale)) + 3
    t0 = -rng.uniform(0.0, timescale)
    knots_t = t0 + timescale * np.arange(n_knots)
    values = rng.standard_normal((n_knots, n_channels))
    return CubicSpline(knots_t, values, axis=0)(np.arange(n_frames, dtype=np.float64))


def bump(t: np.ndarray, center: float, width: float) -> np.ndarray:
    """Smooth 0 -> 1 -> 0 event (raised cosine) of total ``width`` frames centred at ``center``."""
    x = (t - center) / max(width, 1e-6)
    return np.where(np.abs(x) < 0.5, 0.5 + 0.5 * np.cos(2 * np.pi * x), 0.0)


def smooth_step(t: np.ndarray, start: float, width: float) -> np.ndarray:
    """0 before ``start``, 1 after ``start + width``, raised-cosine ramp in between."""
    x = np.clip((t - start) / max(width, 1e-6), 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * x)


def event_times(rng: np.random.Generator, n_frames: int, rate_per_frame: float, margin: float) -> np.ndarray:
    """Poisson event centres in [-margin, n_frames + margin) (events may straddle the sequence ends)."""
    span = n_frames + 2 * margin
    count = rng.poisson(rate_per_frame * span)
    return np.sort(rng.uniform(-margin, n_frames + margin, size=count))


@dataclass(frozen=True)
class PoseTrajectory:
    """Head pose per frame; angles in radians, applied as R = Rz(roll) Ry(yaw) Rx(pitch)."""

    yaw: np.ndarray  # (T,) + turns the face to the subject's left (image right)
    pitch: np.ndarray  # (T,) + looks down (FLAME: rotation about +x)
    roll: np.ndarray  # (T,)

    def axis_angle(self) -> np.ndarray:
        """(T, 3) axis-angle of each frame's rotation (the face model's global pose)."""
        return np.stack([matrix_to_axis_angle(euler_to_matrix(y, p, r))
                         for y, p, r in zip(self.yaw, self.pitch, self.roll)])


def euler_to_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Rz(roll) @ Ry(yaw) @ Rx(pitch), (3, 3)."""
    cy, sy, cp, sp, cr, sr = (math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch),
                              math.cos(roll), math.sin(roll))
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return rz @ ry @ rx


def matrix_to_axis_angle(rot: np.ndarray) -> np.ndarray:
    """(3, 3) rotation -> (3,) axis-angle (angles below pi, which head poses always are)."""
    cos = np.clip((np.trace(rot) - 1) / 2, -1.0, 1.0)
    angle = math.acos(cos)
    if angle < 1e-8:
        return np.zeros(3)
    axis = np.array([rot[2, 1] - rot[1, 2], rot[0, 2] - rot[2, 0], rot[1, 0] - rot[0, 1]]) / (2 * math.sin(angle))
    return axis * angle


def sample_pose_trajectory(rng: np.random.Generator, n_frames: int, base_yaw_deg: float,
                           speed: float = 1.0, max_yaw_deg: float = MAX_YAW_DEG) -> PoseTrajectory:
    """A head that holds a base pose and moves smoothly around it (nods, turns, tilts).

    Args:
        base_yaw_deg: the sequence's mean yaw (profiles: 45-70 deg).
        speed: multiplies the angular speeds (fast motion for the motion-blur condition).
    Returns:
        :class:`PoseTrajectory`, yaw clipped to +-``max_yaw_deg``.
    """
    timescale = FPS * 0.6 / max(speed, 1e-3)  # knots every 0.6 s at normal speed
    noise = smooth_noise(rng, n_frames, 3, timescale)
    # Amplitudes (deg) of the motion around the base pose; a talking head moves 5-15 deg.
    amp = np.array([12.0, 6.0, 4.0]) * min(speed, 3.0)
    base = np.array([base_yaw_deg, rng.normal(0.0, 8.0), rng.normal(0.0, 5.0)])
    angles = base + noise * amp  # (T, 3) yaw, pitch, roll in degrees
    angles[:, 0] = np.clip(angles[:, 0], -max_yaw_deg, max_yaw_deg)
    angles[:, 1] = np.clip(angles[:, 1], -30.0, 30.0)
    angles[:, 2] = np.clip(angles[:, 2], -25.0, 25.0)
    rad = np.deg2rad(angles)
    return PoseTrajectory(yaw=rad[:, 0], pitch=rad[:, 1], roll=rad[:, 2])


def sample_talking_jaw(rng: np.random.Generator, n_frames: int, talking: bool) -> np.ndarray:
    """(T,) jaw opening angle (rad, >= 0): a syllable-rate oscillation with varying depth, or rest."""
    t = np.arange(n_frames, dtype=np.float64)
    if not talking:
        return np.clip(0.02 * smooth_noise(rng, n_frames, 1, FPS)[:, 0] + 0.01, 0.0, None)
    hz = rng.uniform(*SYLLABLE_HZ)
    phase = rng.uniform(0, 2 * np.pi)
    depth = np.clip(0.6 + 0.4 * smooth_noise(rng, n_frames, 1, FPS * 0.5)[:, 0], 0.1, 1.0)
    wave = 0.5 - 0.5 * np.cos(2 * np.pi * hz * t / FPS + phase)
    return rng.uniform(*JAW_OPEN_RAD) * depth * wave


@dataclass(frozen=True)
class ExpressionEvents:
    """What happened in a sequence, for the ground truth and the notebook's distributions."""

    talking: bool
    n_blinks: int
    smile: float  # peak smile weight (0 = none)
    brow_raise: float  # peak brow-raise weight


def sample_named_expressions(rng: np.random.Generator, n_frames: int, names: Sequence[str],
                             talking: bool, smile_prob: float = 0.4, brow_prob: float = 0.3
                             ) -> tuple[np.ndarray, ExpressionEvents]:
    """Blendshape weights (T, len(names)) in [0, 1] for ARKit-named models (ICT-FaceKit)."""
    index = {n: i for i, n in enumerate(names)}
    t = np.arange(n_frames, dtype=np.float64)
    exp = np.zeros((n_frames, len(names)))

    def add(shape_names, curve) -> None:
        for n in shape_names:
            if n in index:
                exp[:, index[n]] += curve

    # Blinks: both eyes together, 100-250 ms.
    blinks = event_times(rng, n_frames, BLINKS_PER_SECOND / FPS, margin=3)
    for c in blinks:
        add(BLINK, bump(t, c, rng.uniform(*BLINK_FRAMES)))
    # A smile that builds up (or fades) over 0.2-0.8 s, slightly asymmetric.
    smile = 0.0
    if rng.random() < smile_prob:
        smile = rng.uniform(0.3, 1.0)
        ramp = smooth_step(t, rng.uniform(-n_frames, n_frames), rng.uniform(0.2, 0.8) * FPS)
        if rng.random() < 0.5:
            ramp = 1 - ramp
        asym = rng.uniform(0.8, 1.2)
        add(SMILE[0::2], smile * ramp * asym)
        add(SMILE[1::2], smile * ramp / asym)
    # Brow raise: a bump of 0.3-1 s.
    brow = 0.0
    if rng.random() < brow_prob:
        brow = rng.uniform(0.3, 1.0)
        add(BROW_RAISE, brow * bump(t, rng.uniform(0, n_frames), rng.uniform(0.3, 1.0) * FPS))
    if talking:
        act = np.abs(smooth_noise(rng, n_frames, len(TALK_SHAPES), FPS / SYLLABLE_HZ[1]))
        for k, (n, peak) in enumerate(TALK_SHAPES.items()):
            add((n,), 0.5 * peak * act[:, k])
    # Everything else: a little smooth activity, as real faces are never exactly at rest.
    exp += 0.05 * np.abs(smooth_noise(rng, n_frames, len(names), FPS))
    events = ExpressionEvents(talking=talking, n_blinks=int(((blinks > -2) & (blinks < n_frames + 2)).sum()),
                              smile=float(smile), brow_raise=float(brow))
    return np.clip(exp, 0.0, 1.0), events


def sample_pca_expressions(rng: np.random.Generator, n_frames: int, n_exp: int, talking: bool
                           ) -> tuple[np.ndarray, ExpressionEvents]:
    """(T, n_exp) smooth coefficients for a PCA expression space (FLAME): leading modes move most."""
    scale = 1.0 / np.sqrt(1.0 + np.arange(n_exp))  # a decaying spectrum, like PCA sigmas
    level = 1.5 if talking else 0.7
    exp = level * scale * smooth_noise(rng, n_frames, n_exp, FPS * 0.5)
    return exp, ExpressionEvents(talking=talking, n_blinks=0, smile=0.0, brow_raise=0.0)


def sample_expressions(rng: np.random.Generator, n_frames: int, n_exp: int,
                       names: Sequence[str] | None, talking: bool) -> tuple[np.ndarray, ExpressionEvents]:
    """Named events when the model has ARKit names for its expressions, PCA noise otherwise."""
    if names and any(n in names for n in BLINK):
        return sample_named_expressions(rng, n_frames, list(names)[:n_exp], talking)
    return sample_pca_expressions(rng, n_frames, n_exp, talking)


def yaw_from_axis_angle(rotvecs: np.ndarray) -> np.ndarray:
    """(T,) yaw in degrees of (T, 3) axis-angle head poses (the inverse of :class:`PoseTrajectory`'s
    Rz Ry Rx order: yaw = asin(-R[2, 0]))."""
    out = []
    for r in rotvecs:
        angle = float(np.linalg.norm(r))
        if angle < 1e-12:
            out.append(0.0)
            continue
        k = r / angle
        kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
        rot = np.eye(3) + math.sin(angle) * kx + (1 - math.cos(angle)) * kx @ kx
        out.append(math.degrees(math.asin(np.clip(-rot[2, 0], -1.0, 1.0))))
    return np.array(out)
