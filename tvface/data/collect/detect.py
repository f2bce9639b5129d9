"""Step 2: face detection. MTCNN (facenet-pytorch) by default, dlib's HOG detector as the alternative.

Frames are downscaled to ``detect_max_side`` before detection and boxes mapped back, which keeps
MTCNN near 20 ms a frame on two cores. facenet-pytorch is installed without its stale pins; on
numpy 2 it returns object arrays, converted here.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from tvface.config import DataConfig

MTCNN_MIN_FACE = 20  # px at detection resolution; MTCNN's smallest reliable face
DETECT_FACE_PX = 40  # the smallest searched face is shown to MTCNN at most this wide (speed)
SMALL_FACE_FRACTION = 0.5  # faces down to this fraction of data.min_face_size are searched
PATCH_FACE_FRACTION = 0.25  # in a face patch, faces below this fraction of the short side are ignored


@dataclass(frozen=True)
class Detection:
    """One face in one frame, in source-frame pixels (x right, y down, pixel centres at integers)."""

    box: tuple[float, float, float, float]  # x0, y0, x1, y1
    score: float
    points: tuple[tuple[float, float], ...] | None = None  # MTCNN's 5 points: eyes, nose, mouth corners

    @property
    def size(self) -> float:
        """Shorter side of the box (px)."""
        return float(min(self.box[2] - self.box[0], self.box[3] - self.box[1]))

    @property
    def center(self) -> np.ndarray:
        return np.array([(self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2])

    def to_dict(self) -> dict:
        return {"box": [round(float(v), 2) for v in self.box], "score": round(float(self.score), 4),
                "points": None if self.points is None else [[round(float(a), 2) for a in p] for p in self.points]}

    @staticmethod
    def from_dict(d: dict) -> Detection:
        pts = d.get("points")
        return Detection(tuple(d["box"]), float(d["score"]), None if pts is None else tuple(map(tuple, pts)))


def detection_scale(shape: tuple[int, ...], max_side: int) -> float:
    """Factor (<= 1) that brings the long side of a frame to ``max_side``."""
    return min(1.0, max_side / max(shape[0], shape[1]))


@functools.lru_cache(maxsize=2)
def _mtcnn():
    try:
        from facenet_pytorch import MTCNN
    except ImportError as exc:
        raise ImportError("facenet-pytorch provides the default MTCNN detector: "
                          "pip install --no-deps facenet-pytorch==2.6.0 (requirements/face-nodeps.txt), "
                          "or set data.detector=dlib.") from exc
    # Thresholds are facenet-pytorch's defaults; the score cut is applied by the sequence rule.
    return MTCNN(keep_all=True, device="cpu", min_face_size=MTCNN_MIN_FACE, post_process=False)


def _as_float(a, shape: tuple[int, ...]) -> np.ndarray:
    if a is None:
        return np.zeros((0, *shape), np.float64)
    return np.asarray([np.asarray(x, np.float64) for x in a], np.float64).reshape(-1, *shape)


def detect_mtcnn(images: list[np.ndarray], max_side: int, min_face: float = MTCNN_MIN_FACE) -> list[list[Detection]]:
    """Detect faces in RGB uint8 frames with MTCNN; one list of Detections per frame. ``min_face``
    (source px) is the smallest face searched: MTCNN's image pyramid starts there, so larger values
    are much faster."""
    if not images:
        return []
    # No need to look at more pixels than make the smallest searched face DETECT_FACE_PX wide.
    s = min(detection_scale(images[0].shape, max_side), DETECT_FACE_PX / max(min_face, 1.0))
    _mtcnn().min_face_size = max(MTCNN_MIN_FACE, int(min_face * s))
    small = [cv2.resize(im, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) if s < 1 else im for im in images]
    same = all(im.shape == small[0].shape for im in small)
    if same and len(small) > 1:
        boxes, probs, points = _mtcnn().detect(np.stack(small), landmarks=True)
    else:
        out = [_mtcnn().detect(im, landmarks=True) for im in small]
        boxes, probs, points = zip(*out) if out else ((), (), ())
    result = []
    for b, p, q in zip(boxes, probs, points):
        b, p, q = _as_float(b, (4,)), _as_float(p, ()), _as_float(q, (5, 2))
        dets = [Detection(tuple(bb / s), float(pp), tuple(map(tuple, qq / s))) for bb, pp, qq in zip(b, p, q)]
        result.append(sorted(dets, key=lambda d: -d.score))
    return result


@functools.lru_cache(maxsize=1)
def _dlib_hog():
    from tvface.data.collect.models import import_dlib

    return import_dlib().get_frontal_face_detector()


def detect_dlib(images: list[np.ndarray], max_side: int, min_face: float = 0) -> list[list[Detection]]:
    """dlib's HOG detector (frontal faces only: it misses many profiles). Score 1 for each hit."""
    out = []
    for im in images:
        s = detection_scale(im.shape, max_side)
        small = cv2.resize(im, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) if s < 1 else im
        rects = _dlib_hog()(np.ascontiguousarray(small), 1)
        out.append([Detection((r.left() / s, r.top() / s, r.right() / s, r.bottom() / s), 1.0) for r in rects])
    return out


def search_min_face(shape: tuple[int, ...], cfg: DataConfig, patch: bool) -> float:
    """Smallest face (source px) worth searching: half ``min_face_size``, so that faces a little too
    small are found and reported as such (and still count as a second person on screen). In a face
    patch the face fills the picture: a quarter of its short side."""
    m = SMALL_FACE_FRACTION * cfg.min_face_size
    return max(m, min(shape[:2]) * PATCH_FACE_FRACTION) if patch else m


def detect_faces(images: list[np.ndarray], cfg: DataConfig, patch: bool = False) -> list[list[Detection]]:
    """Step 2 for a batch of RGB frames of one size with the configured detector."""
    if not images:
        return []
    min_face = search_min_face(images[0].shape, cfg, patch)
    if cfg.detector == "mtcnn":
        return detect_mtcnn(images, cfg.detect_max_side, min_face)
    if cfg.detector == "dlib":
        return detect_dlib(images, cfg.detect_max_side, min_face)
    raise ValueError(f"data.detector must be 'mtcnn' or 'dlib', got {cfg.detector!r}")
