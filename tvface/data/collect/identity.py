"""Step 3: identity. 128-d face descriptors from dlib's ResNet (face-recognition-models, offline) and
per-episode clustering of sequences into characters.

Two faces of one person are closer than ``identity_threshold`` (0.6, dlib's own operating point on
LFW) in descriptor space.
"""
from __future__ import annotations

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage

from tvface.data.collect.landmarks import dlib_box_from

DESCRIPTOR_DIM = 128


def dlib_descriptors(image: np.ndarray, boxes: list) -> np.ndarray:
    """(N, 128) float32 descriptors of the faces in ``boxes`` (detector boxes) of an RGB uint8 image."""
    from tvface.data.collect.models import dlib_face_recognizer, dlib_shape_predictor, import_dlib

    dlib = import_dlib()
    image = np.ascontiguousarray(image)
    out = np.zeros((len(boxes), DESCRIPTOR_DIM), np.float32)
    for i, box in enumerate(boxes):
        shape = dlib_shape_predictor("landmarks5")(image, dlib.rectangle(*dlib_box_from(box)))
        out[i] = np.asarray(dlib_face_recognizer().compute_face_descriptor(image, shape))
    return out


def cluster_descriptors(descriptors: np.ndarray, threshold: float) -> np.ndarray:
    """(N,) int labels 0.. of an average-linkage clustering cut at ``threshold`` (Euclidean),
    numbered in order of first appearance."""
    n = len(descriptors)
    if n == 0:
        return np.zeros(0, int)
    if n == 1:
        return np.zeros(1, int)
    raw = fcluster(linkage(np.asarray(descriptors, np.float64), "average"), threshold, "distance")
    order = {c: k for k, c in enumerate(dict.fromkeys(raw))}
    return np.array([order[c] for c in raw])
