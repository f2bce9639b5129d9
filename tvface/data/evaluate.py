"""Landmark accuracy of the collection's landmark backend: NME against ground truth.

NME = mean point-to-point error / inter-ocular distance (outer eye corners, iBUG points 37 and 46,
1-based), in percent: the convention of the shared stills' README.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tvface.config import DataConfig
from tvface.data import layout
from tvface.data.collect.detect import detect_faces
from tvface.data.collect.landmarks import detect_landmarks, landmark_backend
from tvface.data.collect.sources import read_image

OUTER_EYE_CORNERS = (36, 45)  # 0-based indices of iBUG points 37 and 46


def read_pts(path: Path) -> np.ndarray:
    """(N, 2) landmarks from an iBUG .pts file, converted from 1-based to 0-based pixel centres."""
    lines = Path(path).read_text().splitlines()
    start = next(i for i, l in enumerate(lines) if l.strip() == "{") + 1
    end = next(i for i, l in enumerate(lines) if l.strip() == "}")
    return np.array([[float(v) for v in l.split()[:2]] for l in lines[start:end]]) - 1.0


def nme(pred: np.ndarray, gt: np.ndarray) -> float:
    """Normalised mean error in percent (inter-ocular, outer corners)."""
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if pred.shape != gt.shape or pred.shape[-2:] != (68, 2):
        raise ValueError(f"expected two (68, 2) landmark arrays, got {pred.shape} and {gt.shape}")
    iod = np.linalg.norm(gt[OUTER_EYE_CORNERS[0]] - gt[OUTER_EYE_CORNERS[1]])
    return float(np.linalg.norm(pred - gt, axis=-1).mean() / iod * 100)


def landmarks_for(image: np.ndarray, gt: np.ndarray, cfg: DataConfig, backend: str) -> np.ndarray | None:
    """Landmarks for the detected face that overlaps the ground truth's extent most (None: missed)."""
    dets = detect_faces([image], cfg)[0]
    if not dets:
        return None
    lo, hi = gt.min(0), gt.max(0)

    def overlap(d) -> float:
        x0, y0 = max(lo[0], d.box[0]), max(lo[1], d.box[1])
        x1, y1 = min(hi[0], d.box[2]), min(hi[1], d.box[3])
        return max(0.0, x1 - x0) * max(0.0, y1 - y0)

    det = max(dets, key=overlap)
    return detect_landmarks(image, [det.box], backend)[0]


def evaluate_still(image_path: Path, pts_path: Path, cfg: DataConfig) -> dict:
    """NME of the configured landmark backend (inside the configured detector's box) on one still."""
    backend = landmark_backend(cfg)
    image, err = read_image(Path(image_path))
    if image is None:
        raise ValueError(f"{image_path}: {err}")
    gt = read_pts(pts_path)
    pred = landmarks_for(image, gt, cfg, backend)
    return {"image": str(image_path), "backend": backend, "detector": cfg.detector,
            "nme": None if pred is None else nme(pred, gt)}


def evaluate_sequence(seq_dir: Path, cfg: DataConfig) -> dict:
    """NME per frame against a sequence folder's stored keypoints (e.g. the report's 2D-FAN points in
    ``tv-sample/id1``), detecting on the stored 224 crops."""
    seq_dir = Path(seq_dir)
    backend = landmark_backend(cfg)
    out = []
    for stem in layout.frame_stems(seq_dir):
        image, _ = read_image(layout.image_path(seq_dir, stem))
        gt = np.load(layout.kpt_path(seq_dir, stem))[:, :2]
        pred = landmarks_for(image, gt, cfg, backend)
        out.append(None if pred is None else nme(pred, gt))
    return {"sequence": str(seq_dir), "backend": backend, "detector": cfg.detector, "nme": out}


def evaluate_landmarks(media: Path, cfg: DataConfig) -> dict:
    """The accuracy numbers of the issue: ``stills/image_0010`` and ``tv-sample/id1`` under ``media``."""
    media = Path(media)
    still = media / "stills" / "image_0010"
    res = {"image_0010": evaluate_still(still / "image_0010.png", still / "image_0010.pts", cfg)}
    res["tv_sample_id1"] = evaluate_sequence(media / "tv-sample" / "id1", cfg)
    return res
