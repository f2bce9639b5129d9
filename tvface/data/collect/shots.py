"""Step 1b: split a frame stream into shots at scene cuts.

A cut is where the Bhattacharyya distance between consecutive frames' hue-saturation histograms
exceeds ``cut_threshold``, or stands out ``cut_adaptive_ratio`` times above its neighbours' (above
``cut_min``; the adaptive rule of PySceneDetect's AdaptiveDetector). Hue and saturation, not value,
so lighting changes and fades within a shot do not split it.
"""
from __future__ import annotations

import cv2
import numpy as np

HIST_BINS = (30, 32)  # hue, saturation
HIST_SIDE = 160  # frames are shrunk to this width before the histogram (speed; cuts are global)


def hs_histogram(image: np.ndarray) -> np.ndarray:
    """Normalised (30, 32) float32 H-S histogram of an RGB uint8 frame."""
    h, w = image.shape[:2]
    small = cv2.resize(image, (HIST_SIDE, max(1, round(h * HIST_SIDE / w))), interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1], None, list(HIST_BINS), [0, 180, 0, 256])
    return cv2.normalize(hist, None, 1.0, 0.0, cv2.NORM_L1)


def histogram_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(cv2.compareHist(a, b, cv2.HISTCMP_BHATTACHARYYA))


ADAPTIVE_WINDOW = 2  # frames each side (PySceneDetect's AdaptiveDetector window_width)


def split_shots(indices: list[int], distances: list[float], threshold: float,
                adaptive_ratio: float = float("inf"), minimum: float = 0.0) -> list[tuple[int, int]]:
    """Shots as inclusive (first, last) frame indices. ``distances[k]`` compares frame k with k - 1
    (``distances[0]`` is ignored). A new shot starts where the distance exceeds ``threshold``, or
    exceeds ``minimum`` and ``adaptive_ratio`` times the mean distance of the ADAPTIVE_WINDOW frames
    on each side (a cut between two similar-coloured shots still stands out from its neighbours)."""
    if not indices:
        return []
    d = np.asarray(distances, np.float64)
    shots, start = [], indices[0]
    for k in range(1, len(indices)):
        nb = np.r_[d[max(1, k - ADAPTIVE_WINDOW):k], d[k + 1:k + 1 + ADAPTIVE_WINDOW]]
        adaptive = d[k] > minimum and len(nb) and d[k] > adaptive_ratio * (nb.mean() + 1e-6)
        if d[k] > threshold or adaptive:
            shots.append((start, indices[k - 1]))
            start = indices[k]
    shots.append((start, indices[-1]))
    return shots


def runs_of_consecutive(indices: list[int]) -> list[tuple[int, int]]:
    """Inclusive (first, last) runs of consecutive integers: the shots of a patch folder."""
    runs: list[tuple[int, int]] = []
    for i in sorted(indices):
        if runs and i == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    return runs
