"""Step 6: face masks on the 224 crops.

BiSeNet face parsing when ``79999_iter.pth`` is in the assets folder (the paper's masks: skin, brows,
eyes, nose, mouth, lips). Otherwise a mask from the landmarks: the hull of the jaw line and of the
brows raised onto the forehead, where the forehead part is kept only where the colour matches the
skin sampled inside the face (hair, hats and background drop out).
"""
from __future__ import annotations

import cv2
import numpy as np

from tvface import assets
from tvface.config import DataConfig

JAW = slice(0, 17)
BROWS = slice(17, 27)
INNER_FACE = list(range(1, 16)) + [29]  # cheeks, chin and nose bridge: skin-colour sample region
FOREHEAD_LIFT = 0.35  # brow points raised by this fraction of the brow-to-chin height
SKIN_MAX_DIST = 3.0  # Mahalanobis distance (Cr, Cb) still counted as skin
BISENET_BATCH = 8  # crops per BiSeNet call (512 x 512 inputs: memory)


def _hulls(lmks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Polygons (int32) of the face below the brows and of the face including the raised forehead."""
    jaw, brows = lmks[JAW], lmks[BROWS]
    height = np.linalg.norm(lmks[8] - brows.mean(0))
    up = np.array([0.0, -FOREHEAD_LIFT * height])
    # Direction "up" follows the face's roll: from chin to the brow centre.
    axis = brows.mean(0) - lmks[8]
    if np.linalg.norm(axis) > 1e-6:
        up = axis / np.linalg.norm(axis) * FOREHEAD_LIFT * height
    low = np.concatenate([jaw, brows[::-1]])
    high = np.concatenate([jaw, brows[::-1] + up])
    return (cv2.convexHull(low.astype(np.float32)).astype(np.int32),
            cv2.convexHull(high.astype(np.float32)).astype(np.int32))


def mask_from_landmarks(image: np.ndarray, lmks: np.ndarray) -> np.ndarray:
    """(H, W) float64 {0, 1} face mask for an RGB uint8 crop and its (68, 2) landmarks."""
    h, w = image.shape[:2]
    low_poly, high_poly = _hulls(np.asarray(lmks, np.float64))
    low = np.zeros((h, w), np.uint8)
    high = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(low, low_poly, 1)
    cv2.fillConvexPoly(high, high_poly, 1)
    forehead = (high == 1) & (low == 0)
    if forehead.any():
        ycc = cv2.cvtColor(image, cv2.COLOR_RGB2YCrCb)[..., 1:].reshape(-1, 2).astype(np.float64)
        sample = np.zeros((h, w), np.uint8)
        cv2.fillConvexPoly(sample, cv2.convexHull(np.asarray(lmks, np.float32)[INNER_FACE]).astype(np.int32), 1)
        pix = ycc[sample.reshape(-1) == 1]
        if len(pix) >= 20:
            mean = pix.mean(0)
            cov = np.cov(pix.T) + np.eye(2) * 4.0  # floor: flat-lit skin has a tiny spread
            d = ycc - mean
            dist = np.sqrt(np.einsum("ni,ij,nj->n", d, np.linalg.inv(cov), d)).reshape(h, w)
            skin = (dist < SKIN_MAX_DIST).astype(np.uint8)
            skin = cv2.morphologyEx(skin, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
            forehead &= skin == 1
    return ((low == 1) | forehead).astype(np.float64)


def mask_backend(cfg: DataConfig) -> str:
    """The backend ``cfg.masks`` resolves to here: "bisenet" or "landmarks"."""
    return assets.resolve_backend("data.masks", cfg.masks, "bisenet", "bisenet", ("landmarks",))


def compute_masks(crops: np.ndarray, lmks: np.ndarray, backend: str) -> np.ndarray:
    """(N, S, S) float64 masks for (N, S, S, 3) RGB crops and their (N, 68, 2) crop landmarks."""
    if backend == "bisenet":
        from tvface.data.collect.bisenet import face_mask_from_parsing, load_bisenet, parse_faces

        net = load_bisenet(assets.require("bisenet"))
        return np.concatenate([face_mask_from_parsing(parse_faces(net, crops[i:i + BISENET_BATCH]))
                               for i in range(0, len(crops), BISENET_BATCH)] or [np.zeros((0,) + crops.shape[1:3])])
    if backend == "landmarks":
        return np.stack([mask_from_landmarks(c, l) for c, l in zip(crops, lmks)]) if len(crops) else \
            np.zeros((0,) + crops.shape[1:3])
    raise ValueError(f"unknown mask backend {backend!r}")
