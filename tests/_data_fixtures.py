"""Shared helpers for the tests/test_data_*.py files: small inputs built from the portraits shipped
in scikit-image and matplotlib (no downloads)."""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import cv2
import numpy as np

from tvface.config import DataConfig

SHARED_MEDIA = Path("/work/shared/media")


def shared_media() -> Path | None:
    import os

    base = os.environ.get("TVFACE_SHARED")
    for p in ([Path(base) / "media"] if base else []) + [SHARED_MEDIA]:
        if p.is_dir():
            return p
    return None


def data_cfg(**overrides) -> DataConfig:
    """DataConfig for tests: defaults, one torch thread (tests run beside other work), no descriptors
    unless asked."""
    base = {"num_threads": 1, "descriptor": "none"}
    base.update(overrides)
    return dataclasses.replace(DataConfig(), **base)


def hopper() -> np.ndarray:
    import matplotlib.cbook

    img = cv2.imread(str(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def astronaut() -> np.ndarray:
    import skimage.data

    return skimage.data.astronaut()


def write_rgb(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return path


def hopper_patches(folder: Path, n: int = 12, start: int = 100) -> Path:
    """``patch_<N>.jpg`` face patches (one person, slowly moving), like the TV patches."""
    img = hopper()
    for k in range(n):
        x, y = 150 + 2 * k, 100 + k
        write_rgb(folder / f"patch_{start + k}.jpg", cv2.resize(img[y:y + 300, x:x + 240], (160, 200)))
    return folder


def tree_digest(root: Path, exclude: tuple[str, ...] = ("qc/timings.json",)) -> dict[str, str]:
    """{relative path: sha1} of every file under ``root``."""
    out = {}
    for p in sorted(Path(root).rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and rel not in exclude:
            out[rel] = hashlib.sha1(p.read_bytes()).hexdigest()
    return out


def astronaut_patches(folder: Path, n: int = 10, start: int = 900) -> Path:
    """``patch_<N>.jpg`` of the astronaut (another person than :func:`hopper_patches`)."""
    img = astronaut()
    for k in range(n):
        x, y = 120 + k, 20 + k
        write_rgb(folder / f"patch_{start + k}.jpg", cv2.resize(img[y:y + 250, x:x + 200], (160, 200)))
    return folder
