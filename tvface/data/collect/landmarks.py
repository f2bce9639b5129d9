"""Step 5: 68 landmarks (iBUG order) inside the detector's box.

2D-FAN through face-alignment when its weights are in the assets folder (the paper's detector; the
boxes are given, so no face detector is constructed or downloaded); dlib's 68-point predictor from
face-recognition-models otherwise. Landmarks are in source-frame pixels, x right, y down.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from tvface import assets
from tvface.config import DataConfig

# dlib's predictor was trained on its HOG detector's boxes, which are squares a little smaller than
# MTCNN's and lower. Measured on the two portraits shipped in scikit-image / matplotlib (astronaut,
# grace_hopper): HOG side = 0.92 x the mean MTCNN side, centre 0.03 x MTCNN height lower.
DLIB_BOX_SIDE = 0.92
DLIB_BOX_SHIFT_Y = 0.03


def dlib_box_from(box) -> tuple[int, int, int, int]:
    """A detector box (MTCNN or dlib) as the square dlib's predictor expects."""
    w, h = box[2] - box[0], box[3] - box[1]
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2 + DLIB_BOX_SHIFT_Y * h
    half = DLIB_BOX_SIDE * (w + h) / 4
    return round(cx - half), round(cy - half), round(cx + half), round(cy + half)


def landmarks_dlib(image: np.ndarray, boxes: list) -> np.ndarray:
    """(N, 68, 2) float32 landmarks from dlib's predictor, one set per box, for an RGB uint8 image."""
    from tvface.data.collect.models import dlib_shape_predictor, import_dlib

    dlib = import_dlib()
    predictor = dlib_shape_predictor("landmarks68")
    image = np.ascontiguousarray(image)
    out = np.zeros((len(boxes), 68, 2), np.float32)
    for i, box in enumerate(boxes):
        x0, y0, x1, y1 = dlib_box_from(box)
        shape = predictor(image, dlib.rectangle(x0, y0, x1, y1))
        out[i] = [(p.x, p.y) for p in shape.parts()]
    return out


@functools.lru_cache(maxsize=1)
def _fan():
    import os
    import tempfile

    import torch

    path = assets.require("fan")
    # face-alignment loads its weights through torch.hub's checkpoint folder (<hub>/checkpoints/<file>)
    # and downloads only when the file is missing there: link the asset in, construct, restore.
    hub = path.parent / "torch-hub"
    if not os.access(path.parent, os.W_OK):
        hub = Path(tempfile.mkdtemp(prefix="tvface-hub-"))
    (hub / "checkpoints").mkdir(parents=True, exist_ok=True)
    link = hub / "checkpoints" / path.name
    if link.is_symlink() and not link.exists():  # a dangling link from a moved assets folder
        link.unlink()
    if not link.exists():
        link.symlink_to(path.resolve())
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(hub))
    try:
        import face_alignment

        # The "folder" detector needs no weights (the default SFD downloads its own even when boxes
        # are given); boxes always come from tvface's detector. No torch.compile: one-off CPU runs.
        return face_alignment.FaceAlignment(face_alignment.LandmarksType.TWO_D, device="cpu",
                                            face_detector="folder", flip_input=False, compile=False)
    finally:
        torch.hub.set_dir(previous)


def landmarks_fan(image: np.ndarray, boxes: list) -> np.ndarray:
    """(N, 68, 2) float32 landmarks from 2D-FAN for the given boxes."""
    if not boxes:
        return np.zeros((0, 68, 2), np.float32)
    fa = _fan()
    preds = fa.get_landmarks_from_image(image, detected_faces=[list(b) + [1.0] for b in boxes])
    return np.asarray([np.asarray(p)[:, :2] for p in preds], np.float32).reshape(len(boxes), 68, 2)


def landmark_backend(cfg: DataConfig) -> str:
    """The backend ``cfg.landmarks`` resolves to here: "fan" or "dlib"."""
    return assets.resolve_backend("data.landmarks", cfg.landmarks, "fan", "fan", ("dlib",))


def detect_landmarks(image: np.ndarray, boxes: list, backend: str) -> np.ndarray:
    """(N, 68, 2) landmarks for ``boxes`` in an RGB uint8 image with ``backend`` ("fan" | "dlib")."""
    if backend == "fan":
        return landmarks_fan(image, boxes)
    if backend == "dlib":
        return landmarks_dlib(image, [tuple(map(float, b)) for b in boxes])
    raise ValueError(f"unknown landmark backend {backend!r}")
