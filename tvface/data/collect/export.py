"""Steps 4-7 for one sequence: crop, landmarks, masks, and the sequence folder in the report's layout.

The folder is written under ``.<name>.partial`` and renamed when complete, so a killed run leaves no
half-written sequence; a rerun removes the partial folder and writes it again.
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from tvface.data import layout
from tvface.data.collect import crop as crop_ops
from tvface.data.collect.detect import Detection
from tvface.data.collect.landmarks import FaceLandmarks, locate_landmarks
from tvface.data.collect.masks import compute_masks
from tvface.io.atomic import atomic_save_npy, atomic_write_bytes, atomic_write_text

JPEG_QUALITY = 95

Hook = Callable[[str, str, int], None]


def process_frame(image: np.ndarray, det: Detection, image_size: int, crop_scale: float, landmark_backend: str,
                  cfg) -> tuple[np.ndarray, np.ndarray, np.ndarray, FaceLandmarks]:
    """Crop (S, S, 3) uint8, crop landmarks (68, 2) float32, the (2, 3) crop transform and the landmark
    record (backend used, head pose, confidence, flag) of one face."""
    A = crop_ops.crop_transform(det.box, crop_scale, image_size)
    found = locate_landmarks(image, det, cfg, landmark_backend)  # (68, 2) source pixels
    crop = crop_ops.crop_image(image, A, image_size)
    return crop, crop_ops.apply_transform(A, found.points).astype(np.float32), A, found


def write_sequence(seq_dir: Path, frames: list[dict], images: dict[int, np.ndarray], source: dict,
                   identity: str, image_size: int, crop_scale: float, backends: dict[str, str],
                   cfg, hook: Hook | None = None) -> None:
    """Write one sequence folder. ``frames``: [{"index", "det", "file"}] in order; ``images``: RGB
    source frames by index; ``cfg``: the :class:`~tvface.config.DataConfig` (landmark thresholds).
    Each frame's manifest entry holds its landmark record (``landmarks``: backend, yaw/pitch/roll,
    confidence, flagged and why)."""
    seq_dir = Path(seq_dir)
    partial = seq_dir.parent / f".{seq_dir.name}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    crops, kpts, entries = [], [], []
    for k, fr in enumerate(frames):
        det = Detection.from_dict(fr["det"])
        crop, lmks, A, found = process_frame(images[fr["index"]], det, image_size, crop_scale, backends["landmarks"],
                                             cfg)
        crops.append(crop)
        kpts.append(lmks)
        entries.append({"name": layout.frame_name(k), "source_frame": fr["index"], "source_file": fr.get("file"),
                        "box": det.to_dict()["box"], "score": det.to_dict()["score"],
                        "crop_transform": np.round(A, 6).tolist(), "detector": backends["detector"],
                        "landmarks_backend": found.backend, "landmarks": found.to_dict(),
                        "mask_backend": backends["masks"]})
    masks = compute_masks(np.stack(crops), np.stack(kpts), backends["masks"])
    for k, (crop, lmks, mask) in enumerate(zip(crops, kpts, masks)):
        stem = layout.frame_name(k)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise RuntimeError(f"JPEG encoding failed for {seq_dir}/{stem}")
        atomic_write_bytes(layout.image_path(partial, stem), buf.tobytes())
        atomic_save_npy(layout.kpt_path(partial, stem), lmks.astype(np.float32))
        atomic_save_npy(layout.mask_path(partial, stem), mask.astype(np.float64))
        if hook is not None:
            hook("export", seq_dir.name, frames[k]["index"])
    atomic_save_npy(partial / "serial.npy", np.array([f"{e['name']}.jpg" for e in entries], dtype="<U9"))
    manifest = {"identity": identity, "sequence": seq_dir.name, "source": source, "image_size": image_size,
                "crop_scale": crop_scale, "backends": backends, "n_frames": len(entries),
                "n_flagged": sum(e["landmarks"]["flagged"] for e in entries), "frames": entries}
    atomic_write_text(partial / layout.SEQUENCE_MANIFEST, json.dumps(manifest, indent=1))
    if seq_dir.exists():
        shutil.rmtree(seq_dir)
    partial.rename(seq_dir)
