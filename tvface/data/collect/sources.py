"""Step 1a: inputs. Video files (anything OpenCV's FFmpeg backend decodes), folders of frames (TVQA
style, one folder per clip) and folders of face patches (``patch_<N>.jpg``, already cropped to one
person; a run of consecutive N is a run of consecutive detections).

Reading never raises for one bad frame: each frame comes with an error string instead of pixels.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".wmv", ".flv"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
BLANK_STD = 2.0  # grey levels: a frame flatter than this carries no picture


class SourceError(RuntimeError):
    """A whole input cannot be read (missing, not a video, no frames)."""


@dataclass(frozen=True)
class Source:
    """One input episode/clip. ``kind``: "video" | "frames" | "patches"."""

    path: Path
    kind: str
    name: str  # id used for work files and sequence names

    def to_dict(self) -> dict:
        return {"path": str(self.path), "kind": self.kind, "name": self.name}


@dataclass(frozen=True)
class Frame:
    index: int  # 0-based decode order (video) or the number in the file name (folders)
    image: np.ndarray | None  # (H, W, 3) RGB uint8, None when unreadable
    error: str | None = None
    file: str | None = None  # file name inside a folder source


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "source"


def _images(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]


def _number(p: Path) -> int | None:
    found = re.findall(r"\d+", p.stem)
    return int(found[-1]) if found else None


def classify(path: Path) -> Source:
    """A Source for a video file, a frame folder or a patch folder (``patch_<N>.*`` files)."""
    path = Path(path)
    if path.is_file():
        return Source(path, "video", _safe(path.stem))
    if path.is_dir():
        imgs = _images(path)
        if imgs and all(p.stem.startswith("patch_") for p in imgs):
            return Source(path, "patches", _safe(path.name))
        return Source(path, "frames", _safe(path.name))
    raise SourceError(f"{path}: no such file or folder")


def discover(paths: list[Path]) -> list[Source]:
    """Sources under the given paths: files are videos; folders holding images are one source; other
    folders are searched one level down (e.g. ``tv-patches/`` -> one source per ``id_*``)."""
    out: list[Source] = []
    for p in map(Path, paths):
        if p.is_dir() and not _images(p):
            for child in sorted(p.iterdir()):
                if child.is_dir() and _images(child) or child.is_file() and child.suffix.lower() in VIDEO_SUFFIXES:
                    out.append(classify(child))
        elif p.exists():
            out.append(classify(p))
        else:
            out.append(Source(p, "video" if p.suffix else "frames", _safe(p.stem)))
    names = [s.name for s in out]
    dup = {n for n in names if names.count(n) > 1}
    return [Source(s.path, s.kind, f"{_safe(s.path.parent.name)}_{s.name}") if s.name in dup else s for s in out]


def folder_files(source: Source) -> list[tuple[int, Path]]:
    """(frame index, file) for a folder source, in frame order."""
    imgs = _images(source.path)
    nums = [_number(p) for p in imgs]
    if all(n is not None for n in nums) and len(set(nums)) == len(nums):
        return sorted(zip(nums, imgs))
    return list(enumerate(sorted(imgs)))


def read_image(path: Path) -> tuple[np.ndarray | None, str | None]:
    """RGB uint8 pixels of an image file, or (None, why not)."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        return None, f"cannot read file: {exc.strerror}"
    if size == 0:
        return None, "zero-byte file"
    data = np.fromfile(path, np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if img is None:
        return None, "not a decodable image (corrupt or unknown format)"
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB), None


def video_info(path: Path) -> dict:
    """fps, declared frame count and size of a video, or SourceError naming the file."""
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise SourceError(f"{path}: cannot open as a video (unreadable, truncated header or unknown "
                              "format); check it with ffprobe")
        return {"fps": float(cap.get(cv2.CAP_PROP_FPS) or 0.0),
                "declared_frames": int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0),
                "width": int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), "height": int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))}
    finally:
        cap.release()


def iter_frames(source: Source, max_frames: int = 0, wanted: set[int] | None = None) -> Iterator[Frame]:
    """Frames of a source in order. ``wanted``: only decode pixels for these indices (others are
    skipped without decoding where the format allows). ``max_frames`` > 0 stops early."""
    if source.kind == "video":
        if not source.path.is_file():
            raise SourceError(f"{source.path}: video file not found")
        video_info(source.path)
        cap = cv2.VideoCapture(str(source.path))
        try:
            i = 0
            last = max(wanted) if wanted else None
            while not max_frames or i < max_frames:
                if last is not None and i > last:
                    break
                if wanted is not None and i not in wanted:
                    if not cap.grab():
                        break
                    i += 1
                    continue
                ok, bgr = cap.read()
                if not ok:
                    break
                yield Frame(i, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                i += 1
        finally:
            cap.release()
        return
    if not source.path.is_dir():
        raise SourceError(f"{source.path}: folder not found")
    files = folder_files(source)
    if not files:
        raise SourceError(f"{source.path}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    for n, (idx, path) in enumerate(files):
        if max_frames and n >= max_frames:
            break
        if wanted is not None and idx not in wanted:
            continue
        img, err = read_image(path)
        yield Frame(idx, img, err, path.name)


def is_blank(image: np.ndarray) -> bool:
    """A uniform (e.g. grey or black) frame."""
    small = cv2.resize(image, (64, 64), interpolation=cv2.INTER_AREA)
    return float(small.std()) < BLANK_STD
