"""Step 3: identity. Face descriptors and per-episode clustering of sequences into characters.

Backends (``data.descriptor``):

* ``dlib``: 128-d descriptors from dlib's ResNet (face-recognition-models, offline). Two faces of one
  person are closer than ``data.identity_threshold`` (0.6, dlib's own operating point on LFW) in
  Euclidean distance.
* ``vggface2``: 2048-d L2-normalised average-pooled features of the VGGFace2 ResNet-50
  (:mod:`tvface.models.vggface2`, the user's ``resnet50_ft_weight.pkl``). One person is closer than
  ``data.identity_threshold_vggface2`` in cosine distance.
* ``auto`` (the default): ``vggface2`` when its weights are present, else ``dlib``.

Descriptors are compared in Euclidean distance everywhere (sequence links, clustering). For unit
vectors the cosine distance is ``c = |a - b|^2 / 2``, so the VGGFace2 threshold is applied as the
Euclidean distance ``sqrt(2 c)`` (:func:`euclidean_threshold`): the same decision, one code path.
"""
from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage

from tvface import assets
from tvface.config import DataConfig
from tvface.data.collect.landmarks import dlib_box_from

DESCRIPTOR_DIM = 128  # dlib
DESCRIPTOR_DIMS = {"dlib": 128, "vggface2": 2048}
# VGGFace2 crops: the detector box extended by 30% (VGGFace2 paper, Sec. 4: "extended by 30%"), square.
VGGFACE2_CROP_SCALE = 1.3


def descriptor_backend(cfg: DataConfig) -> str:
    """The backend ``cfg.descriptor`` resolves to here: "vggface2", "dlib" or "none"."""
    return assets.resolve_backend("data.descriptor", cfg.descriptor, "vggface2", "vggface2", ("dlib", "none"))


def euclidean_threshold(cfg: DataConfig, backend: str) -> float:
    """The identity threshold of ``backend`` as a Euclidean distance between its descriptors."""
    if backend == "vggface2":
        return math.sqrt(2.0 * cfg.identity_threshold_vggface2)  # unit vectors: |a-b| = sqrt(2 * cos dist)
    return cfg.identity_threshold


def threshold_setting(backend: str) -> str:
    """The config key holding ``backend``'s identity threshold (for messages)."""
    return "data.identity_threshold_vggface2" if backend == "vggface2" else "data.identity_threshold"


def threshold_value(cfg: DataConfig, backend: str) -> float:
    """``backend``'s identity threshold in its own unit (the value of :func:`threshold_setting`)."""
    return cfg.identity_threshold_vggface2 if backend == "vggface2" else cfg.identity_threshold


def descriptor_distance(a: np.ndarray, b: np.ndarray, backend: str) -> float:
    """Distance in the unit of ``backend``'s threshold: cosine for vggface2, Euclidean for dlib."""
    if backend == "vggface2":
        na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
        return 1.0 - float(np.dot(a, b)) / max(na * nb, 1e-12)
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)))


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


@functools.lru_cache(maxsize=1)
def _vggface2_model(path: Path, mtime_ns: int):
    from tvface.models.vggface2 import load_vggface2

    return load_vggface2(path)


def vggface2_descriptors(image: np.ndarray, boxes: list) -> np.ndarray:
    """(N, 2048) float32 unit descriptors of the faces in ``boxes`` (x0, y0, x1, y1) of an RGB uint8
    image, from square crops of side ``VGGFACE2_CROP_SCALE`` x box size resized to 224."""
    from tvface.data.collect.crop import crop_image, crop_transform
    from tvface.models.vggface2 import FEATURE_DIM, INPUT_SIZE

    if not len(boxes):
        return np.zeros((0, FEATURE_DIM), np.float32)
    path = assets.require("vggface2")
    model = _vggface2_model(path, path.stat().st_mtime_ns)
    crops = np.stack([crop_image(image, crop_transform(b, VGGFACE2_CROP_SCALE, INPUT_SIZE), INPUT_SIZE)
                      for b in boxes])  # (N, 224, 224, 3)
    return model.embed(crops)


def compute_descriptors(image: np.ndarray, boxes: list, backend: str) -> np.ndarray:
    """(N, D) descriptors of ``boxes`` in an RGB uint8 image with ``backend`` ("dlib" | "vggface2")."""
    if backend == "dlib":
        return dlib_descriptors(image, boxes)
    if backend == "vggface2":
        return vggface2_descriptors(image, boxes)
    raise ValueError(f"unknown descriptor backend {backend!r}")


def sequence_descriptor(descriptors: list[np.ndarray], backend: str) -> np.ndarray:
    """One descriptor for a sequence: the mean, re-normalised for unit-vector (cosine) backends."""
    mean = np.mean(descriptors, 0)
    if backend == "vggface2":
        mean = mean / max(float(np.linalg.norm(mean)), 1e-12)
    return mean


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
