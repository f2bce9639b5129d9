"""Step 4: square crops around a detection, resized to 224, with the transform kept.

A crop is the similarity ``A`` (2x3) taking source-frame pixels to crop pixels, pixel centres at
integers (OpenCV's convention): ``crop = cv2.warpAffine(frame, A, (S, S))`` and
``lmks_crop = lmks @ A[:, :2].T + A[:, 2]``. Like DECA's ``crop`` (decalib/datasets), the square's
corners map to 0 and S - 1.
"""
from __future__ import annotations

import cv2
import numpy as np


def box_size(box) -> float:
    """Side used for crops: the mean of the box's width and height."""
    return float((box[2] - box[0]) + (box[3] - box[1])) / 2


def crop_transform(box, scale: float, image_size: int) -> np.ndarray:
    """(2, 3) similarity from the source frame to a ``image_size`` square of side ``scale * box_size``."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    side = scale * box_size(box)
    k = (image_size - 1) / side
    return np.array([[k, 0.0, -(cx - side / 2) * k], [0.0, k, -(cy - side / 2) * k]], np.float64)


def invert_transform(A: np.ndarray) -> np.ndarray:
    """Inverse of a (2, 3) affine transform."""
    return cv2.invertAffineTransform(np.asarray(A, np.float64))


def apply_transform(A: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Map (N, 2) points with a (2, 3) affine transform."""
    pts = np.asarray(pts, np.float64)
    return pts @ np.asarray(A)[:, :2].T + np.asarray(A)[:, 2]


def crop_image(frame: np.ndarray, A: np.ndarray, image_size: int) -> np.ndarray:
    """Warp ``frame`` (H, W, C) into the (S, S, C) crop; outside the frame is black, as in DECA's
    ``skimage.transform.warp`` crops (cval 0)."""
    return cv2.warpAffine(frame, np.asarray(A, np.float64), (image_size, image_size),
                          flags=cv2.INTER_AREA if A[0, 0] < 1 else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
