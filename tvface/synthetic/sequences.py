"""One synthetic TV sequence: sample everything from a seed, render, composite, degrade.

:func:`sample_sequence` draws a :class:`SequenceSpec` (identity, albedo, per-frame expression, pose,
light, camera, background, occluders, degradations) under one *condition* of
:data:`CONDITIONS`; :func:`render_sequence` turns it into frames plus per-frame ground truth
(:class:`RenderedSequence`). Both are pure functions of the spec / seed, so a sequence is the same
whichever process renders it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from tvface.config import SynthConfig
from tvface.face_models.base import FaceModel
from tvface.rendering.renderer import MeshRenderer
from tvface.synthetic import degrade as D
from tvface.synthetic.backgrounds import Background, sample_background
from tvface.synthetic.camera import (
    CameraTrajectory,
    project_to_screen,
    sample_camera_trajectory,
    screen_to_pixel_coords,
)
from tvface.synthetic.lighting import light_trajectory, sample_sh_light
from tvface.synthetic.occluders import OccluderTrack, place_sprite, sample_occluder_track
from tvface.synthetic.trajectories import (
    ExpressionEvents,
    sample_expressions,
    sample_pose_trajectory,
    sample_talking_jaw,
)

CONDITIONS = ("clean", "blur", "dark", "profile", "occlusion", "lowres")
VISIBILITY_DEPTH_TOL_M = 0.01  # a landmark up to 1 cm behind the visible surface still counts as visible
OCCLUDED_ALPHA = 0.5


@dataclass(frozen=True)
class SequenceSpec:
    """Everything that determines one sequence (T frames)."""

    condition: str
    shape: np.ndarray  # (n_shape,)
    tex: np.ndarray  # (n_tex,)
    exp: np.ndarray  # (T, n_exp)
    pose: np.ndarray  # (T, 6) global axis-angle + jaw axis-angle
    light: np.ndarray  # (T, 9, 3)
    camera: CameraTrajectory
    background: Background
    occluders: tuple[OccluderTrack, ...]
    degradations: tuple[D.Degradation, ...]  # per frame; blur is filled in by render_sequence
    shutter: float
    noise_seed: int
    events: ExpressionEvents
    image_size: int
    extras: dict = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return int(self.pose.shape[0])


def face_center(model: FaceModel) -> np.ndarray:
    """(3,) centre of the neutral face's landmark box: what a face tracker centres its crop on."""
    with torch.no_grad():
        z = model.zeros(1)
        lm = model(z["shape"], z["exp"], z["pose"]).lmks_3d[0].numpy()
    return 0.5 * (lm.min(0) + lm.max(0))


def sample_sequence(rng: np.random.Generator, cfg: SynthConfig, model: FaceModel, n_tex: int,
                    identity: tuple[np.ndarray, np.ndarray] | None = None, condition: str | None = None,
                    center: np.ndarray | None = None) -> SequenceSpec:
    """Draw a sequence. ``identity``: (shape, tex) shared by sequences of one person; None draws one."""
    n_frames, size = cfg.n_frames, cfg.image_size
    if condition is None:
        weights = np.asarray(cfg.condition_weights, np.float64)
        condition = CONDITIONS[int(rng.choice(len(CONDITIONS), p=weights / weights.sum()))]
    if condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}; known: {CONDITIONS}")
    if identity is None:
        identity = (rng.standard_normal(model.n_shape), rng.standard_normal(n_tex))
    shape, tex = identity
    center = face_center(model) if center is None else center
    # Pose: profiles turn 45-70 deg to either side; otherwise mostly near-frontal.
    if condition == "profile":
        base_yaw = rng.choice([-1, 1]) * rng.uniform(45.0, cfg.max_yaw)
    else:
        base_yaw = float(np.clip(rng.normal(0.0, 15.0), -40.0, 40.0))
    speed = rng.uniform(2.5, 4.0) if condition == "blur" else rng.uniform(0.5, 1.5)
    pose_traj = sample_pose_trajectory(rng, n_frames, base_yaw, speed, cfg.max_yaw)
    talking = bool(rng.random() < 0.7)
    jaw = sample_talking_jaw(rng, n_frames, talking)
    names = getattr(model, "expression_names", None)
    exp, events = sample_expressions(rng, n_frames, model.n_exp, names, talking)
    pose = np.zeros((n_frames, 6))
    pose[:, :3] = pose_traj.axis_angle()
    pose[:, 3] = jaw
    dark = condition == "dark"
    light = sample_sh_light(rng, dark=dark)
    lights = light_trajectory(rng, light.light, n_frames)
    camera = sample_camera_trajectory(rng, n_frames, center, speed=speed, perspective=cfg.perspective)
    background = sample_background(rng, size)
    occluders = []
    if condition == "occlusion" or rng.random() < cfg.occluder_prob:
        # The tracker centres the face, so the occluder aims at the crop's central 60 %.
        half = 0.3 * size
        c = (size - 1) / 2
        occluders.append(sample_occluder_track(rng, n_frames, size, np.array([c - half, c - half, c + half, c + half])))
    # Degradations (blur lengths come from the rendered motion in render_sequence).
    exposure = rng.uniform(0.35, 0.7) if dark else 1.0
    noise = rng.uniform(4.0, 10.0) if dark else rng.uniform(0.5, 2.5)
    factor = rng.uniform(2.0, 4.0) if condition == "lowres" else 1.0
    factor = size / max(1, int(round(size / factor)))  # as realised on the pixel grid
    if condition == "clean":
        quality = D.CLEAN_JPEG_QUALITY
    else:
        quality = int(rng.integers(40, 96)) if rng.random() < cfg.jpeg_prob else D.CLEAN_JPEG_QUALITY
    shutter = rng.uniform(0.5, 1.0) if condition == "blur" else 0.5
    deg = D.Degradation(exposure=float(exposure), noise_sigma=float(noise), downsample=float(factor),
                        jpeg_quality=int(quality))
    return SequenceSpec(condition=condition, shape=shape, tex=tex, exp=exp, pose=pose, light=lights, camera=camera,
                        background=background, occluders=tuple(occluders), degradations=(deg,) * n_frames,
                        shutter=float(shutter), noise_seed=int(rng.integers(2**31)), events=events,
                        image_size=size, extras={"base_yaw_deg": float(base_yaw), "speed": float(speed),
                                                 "light_brightness": light.brightness})


@dataclass(frozen=True)
class RenderedSequence:
    """Frames (what the dataset stores) and per-frame ground truth (what it must not see)."""

    frames: np.ndarray  # (T, S, S, 3) uint8, before JPEG
    face_alpha: np.ndarray  # (T, S, S) float32 coverage of the rendered head (unblurred, unoccluded)
    occluder_alpha: np.ndarray  # (T, S, S) float32
    verts_screen: np.ndarray | None  # not stored (large); None unless asked for
    lmks_2d_px: np.ndarray  # (T, 68, 2) dynamic-contour landmarks in pixels (centres at integers)
    lmks_3d_px: np.ndarray  # (T, 68, 2) fixed-vertex landmarks in pixels
    lmks_3d: np.ndarray  # (T, 68, 3) posed model-space landmarks (metres)
    visibility: np.ndarray  # (T, 68) bool: in the image, not self-occluded, not behind an occluder
    degradations: tuple[D.Degradation, ...]


def render_face(model: FaceModel, renderer: MeshRenderer, albedo_maps: torch.Tensor, spec: SequenceSpec,
                supersample: int = 1, source_camera: bool = False):
    """Render the head for every frame. Returns (rgba (T, S, S, 4) premultiplied, depth (T, S, S),
    model output, screen landmarks 2d/3d (T, 68, 3)). ``source_camera``: without tracker jitter."""
    t = spec.n_frames
    with torch.no_grad():
        shape = torch.as_tensor(spec.shape, dtype=torch.float32)[None].expand(t, -1)
        out = model(shape, torch.as_tensor(spec.exp, dtype=torch.float32),
                    torch.as_tensor(spec.pose, dtype=torch.float32))
        cam = spec.camera
        scale = torch.as_tensor(cam.source_scale if source_camera else cam.scale, dtype=torch.float32)
        trans = torch.as_tensor(cam.source_trans if source_camera else cam.trans, dtype=torch.float32)
        screen = project_to_screen(out.verts, scale, trans, cam.distance)
        lm2 = project_to_screen(out.lmks_2d, scale, trans, cam.distance)
        lm3 = project_to_screen(out.lmks_3d, scale, trans, cam.distance)
        if renderer is None:
            return None, None, out, lm2, lm3
        r = renderer(out.verts, screen, albedo=albedo_maps.expand(t, -1, -1, -1),
                     light=torch.as_tensor(spec.light, dtype=torch.float32))
        img = r.images.clamp(0, 1).permute(0, 2, 3, 1).numpy()
        alpha = r.alpha[:, 0].numpy()
        depth = r.depth[:, 0].numpy()
    if supersample > 1:
        s = spec.image_size
        img = np.stack([cv2.resize(i, (s, s), interpolation=cv2.INTER_AREA) for i in img])
        alpha = np.stack([cv2.resize(a, (s, s), interpolation=cv2.INTER_AREA) for a in alpha])
        depth = np.stack([cv2.resize(d, (s, s), interpolation=cv2.INTER_NEAREST) for d in depth])
    # Renderer images are colour x coverage already (black off the mesh): premultiplied.
    rgba = np.concatenate([img * (alpha[..., None] > 0) if supersample == 1 else img, alpha[..., None]], -1)
    return rgba.astype(np.float32), depth, out, lm2, lm3


def landmark_visibility(lm_screen: np.ndarray, depth: np.ndarray, alpha: np.ndarray, occ_alpha: np.ndarray,
                        depth_tol: float) -> np.ndarray:
    """(T, 68) visible: inside the image, no surface nearer than ``depth_tol`` in front of it in a 3x3
    pixel neighbourhood (the landmark may sit on the silhouette), and not under an occluder."""
    t_n, n = lm_screen.shape[:2]
    size = depth.shape[-1]
    px = screen_to_pixel_coords(lm_screen[..., :2], size)
    vis = np.zeros((t_n, n), bool)
    for t in range(t_n):
        for k in range(n):
            x, y = int(round(px[t, k, 0])), int(round(px[t, k, 1]))
            if not (0 <= x < size and 0 <= y < size):
                continue
            y0, y1, x0, x1 = max(y - 1, 0), min(y + 2, size), max(x - 1, 0), min(x + 2, size)
            cov = alpha[t, y0:y1, x0:x1] > 0.5
            if not cov.any():
                continue
            d = depth[t, y0:y1, x0:x1][cov]
            front_ok = (d >= lm_screen[t, k, 2] - depth_tol).any()
            vis[t, k] = front_ok and occ_alpha[t, y, x] < OCCLUDED_ALPHA
    return vis


def render_sequence(model: FaceModel, renderer: MeshRenderer, albedo_maps: torch.Tensor, spec: SequenceSpec,
                    supersample: int = 1) -> RenderedSequence:
    """Render, composite and degrade a sequence (JPEG is left to the writer)."""
    t_n, size = spec.n_frames, spec.image_size
    face, depth, out, lm2, lm3 = render_face(model, renderer, albedo_maps, spec, supersample)
    lm2, lm3 = lm2.numpy(), lm3.numpy()
    # Motion blur of the face: the subject's motion between frames (tracker jitter excluded), in crop px.
    _, _, _, lm_src, _ = render_face(model, None, albedo_maps, spec, source_camera=True)
    centre = screen_to_pixel_coords(lm_src.numpy()[..., :2], size).mean(axis=1)  # (T, 2)
    step = np.diff(centre, axis=0)
    step = np.concatenate([step[:1], step], axis=0) if t_n > 1 else np.zeros((1, 2))
    rng = np.random.default_rng(spec.noise_seed)
    frames, occ_alphas, degs = [], [], []
    for t in range(t_n):
        length, angle = D.motion_blur_vector(step[t], spec.shutter)
        bg = spec.background.window(spec.camera.crop_jitter_pixels(size)[t], size)
        layers = [D.blur_layer(face[t], length, angle)]
        occ_alpha = np.zeros((size, size), np.float32)
        for occ in spec.occluders:
            sprite = place_sprite(occ.sprite, occ.center[t], float(occ.angle[t]), size)
            o_len, o_ang = D.motion_blur_vector(occ.velocity()[t], spec.shutter)
            sprite = D.blur_layer(sprite, o_len, o_ang)
            occ_alpha = np.maximum(occ_alpha, sprite[..., 3])
            layers.append(sprite)
        deg = D.Degradation(**{**spec.degradations[t].to_dict(), "blur_length": length, "blur_angle": angle})
        img = D.degrade_frame(D.composite(bg, layers), deg, rng)
        frames.append(D.to_uint8(img))
        occ_alphas.append(occ_alpha)
        degs.append(deg)
    occ_alpha = np.stack(occ_alphas)
    tol = VISIBILITY_DEPTH_TOL_M * (spec.camera.scale.mean() if math.isinf(spec.camera.distance) else 1.0)
    vis = landmark_visibility(lm2, depth, face[..., 3], occ_alpha, tol)
    return RenderedSequence(frames=np.stack(frames), face_alpha=face[..., 3], occluder_alpha=occ_alpha,
                            verts_screen=None, lmks_2d_px=screen_to_pixel_coords(lm2[..., :2], size).astype(np.float32),
                            lmks_3d_px=screen_to_pixel_coords(lm3[..., :2], size).astype(np.float32),
                            lmks_3d=out.lmks_3d.numpy().astype(np.float32), visibility=vis, degradations=tuple(degs))
