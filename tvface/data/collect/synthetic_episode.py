"""The embedded default input: a short synthetic "episode" from real portraits shipped inside
installed packages (scikit-image's astronaut, matplotlib's Grace Hopper), so a fresh machine can run
the collection offline.

Shots, separated by hard cuts: (1) astronaut, slow pan + zoom-in + a lighting ramp; (2) Grace Hopper,
drift + zoom-out, darker; (3) both faces side by side (rejected: several faces); (4) a short astronaut
shot (rejected: too short); (5) a grey card (rejected: blank frames). ``expected`` gives the answer.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from tvface.io.atomic import atomic_open

FRAME_SIZE = (384, 288)  # width, height
FPS = 12.0


def _portraits() -> tuple[np.ndarray, np.ndarray]:
    import matplotlib.cbook
    import skimage.data

    astronaut = skimage.data.astronaut()  # (512, 512, 3) RGB
    hopper = cv2.imread(str(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    return astronaut, cv2.cvtColor(hopper, cv2.COLOR_BGR2RGB)


def _view(image: np.ndarray, center: tuple[float, float], zoom: float, gain: float) -> np.ndarray:
    """The frame a camera sees looking at ``center`` of ``image`` with magnification ``zoom``."""
    w, h = FRAME_SIZE
    A = np.array([[zoom, 0, w / 2 - zoom * center[0]], [0, zoom, h / 2 - zoom * center[1]]])
    frame = cv2.warpAffine(image, A, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return np.clip(frame.astype(np.float32) * gain, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class EpisodeShot:
    kind: str  # "astronaut" | "hopper" | "two_faces" | "short" | "blank"
    first: int
    last: int
    expect: str  # "sequence" or the rejection reason


def episode_frames(frames_per_shot: int = 14) -> tuple[list[np.ndarray], list[EpisodeShot]]:
    """RGB uint8 frames of the episode and its shots (inclusive frame ranges, expected outcome)."""
    if frames_per_shot < 10:
        raise ValueError(f"frames_per_shot must be >= 10 (the sequence rule), got {frames_per_shot}")
    astronaut, hopper = _portraits()
    n = frames_per_shot
    frames: list[np.ndarray] = []
    shots: list[EpisodeShot] = []

    def add(kind: str, expect: str, views: list[np.ndarray]) -> None:
        shots.append(EpisodeShot(kind, len(frames), len(frames) + len(views) - 1, expect))
        frames.extend(views)

    t = np.linspace(0, 1, n)
    add("astronaut", "sequence",
        [_view(astronaut, (224 + 12 * a, 125 + 4 * a), 1.3 + 0.3 * a, 0.8 + 0.35 * a) for a in t])
    add("hopper", "sequence",
        [_view(hopper, (265 - 10 * a, 235 + 6 * a), 0.9 - 0.15 * a, 0.75) for a in t])
    both = np.full((300, 520, 3), (40, 90, 160), np.uint8)
    both[:, :260] = cv2.resize(astronaut[40:240, 130:320], (260, 300))
    both[:, 260:] = cv2.resize(hopper[90:380, 150:390], (260, 300))
    add("two_faces", "several_faces", [_view(both, (260 + 3 * a, 150), 0.72, 1.0) for a in t[:10]])
    add("short", "too_short", [_view(astronaut, (230, 120), 1.5, 1.0 - 0.02 * k) for k in range(5)])
    add("blank", "blank_frame", [np.full((FRAME_SIZE[1], FRAME_SIZE[0], 3), 128, np.uint8)] * 3)
    return frames, shots


def write_video(frames: list[np.ndarray], path: Path, fps: float = FPS) -> Path:
    """Write RGB frames as an MPEG-4 Part 2 (mp4v) file, atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write mp4v video to {tmp}; write a frame folder instead")
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    tmp.replace(path)
    return path


def write_frame_folder(frames: list[np.ndarray], folder: Path) -> Path:
    """Write RGB frames as ``frame_00000.png`` ... (lossless, TVQA-style folder)."""
    folder = Path(folder)
    for k, f in enumerate(frames):
        _, buf = cv2.imencode(".png", cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
        with atomic_open(folder / f"frame_{k:05d}.png") as fh:
            fh.write(buf.tobytes())
    return folder


def make_episode(out_dir: Path, frames_per_shot: int = 14, as_video: bool = True) -> tuple[Path, list[EpisodeShot]]:
    """Write the episode under ``out_dir`` (``episode.mp4`` or ``episode/``) and return it with its shots."""
    frames, shots = episode_frames(frames_per_shot)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if as_video:
        return write_video(frames, out_dir / "episode.mp4"), shots
    return write_frame_folder(frames, out_dir / "episode"), shots
