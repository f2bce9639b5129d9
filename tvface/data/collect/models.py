"""Where the offline preprocessing models are: dlib's files from ``face-recognition-models``.

``face_recognition_models/__init__.py`` imports ``pkg_resources`` (gone from setuptools >= 81), so
the package is located with :func:`importlib.util.find_spec` and never imported.
"""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

DLIB_FILES = {
    "landmarks68": "shape_predictor_68_face_landmarks.dat",
    "landmarks5": "shape_predictor_5_face_landmarks.dat",
    "recognition": "dlib_face_recognition_resnet_model_v1.dat",
}


def dlib_model_path(key: str) -> Path:
    """Path of one of dlib's model files shipped in the ``face-recognition-models`` wheel."""
    if key not in DLIB_FILES:
        raise KeyError(f"unknown dlib model {key!r}; known: {sorted(DLIB_FILES)}")
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "face-recognition-models is not installed; it ships dlib's landmark and descriptor "
            "models. Install it: pip install face-recognition-models==0.3.0 (or `pip install tvface[face]`).")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / DLIB_FILES[key]
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the face-recognition-models install; reinstall it.")
    return path


def import_dlib():
    try:
        import dlib
    except ImportError as exc:
        raise ImportError("dlib is needed for landmarks/descriptors/the dlib detector: "
                          "pip install dlib-bin (or `pip install tvface[face]`).") from exc
    return dlib


@functools.cache
def dlib_shape_predictor(key: str = "landmarks68"):
    return import_dlib().shape_predictor(str(dlib_model_path(key)))


@functools.cache
def dlib_face_recognizer():
    return import_dlib().face_recognition_model_v1(str(dlib_model_path("recognition")))
