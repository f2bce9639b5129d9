"""Build the face model a profile asks for (``face_model.kind``)."""
from __future__ import annotations

from pathlib import Path

from tvface import assets
from tvface.config import FaceModelConfig, expand_path
from tvface.face_models.base import FaceModel


def load_face_model(cfg: FaceModelConfig, assets_root: Path | None = None) -> FaceModel:
    """``ict`` (default, offline) or ``flame`` (needs the user's generic_model.pkl + DECA's data files)."""
    if cfg.kind == "ict":
        from tvface.face_models.ict import load_ict_model

        path = expand_path(cfg.model_path) if cfg.model_path else assets.require("ict_model", assets_root)
        return load_ict_model(path, n_shape=cfg.n_shape, n_exp=cfg.n_exp)
    if cfg.kind == "flame":
        from tvface.face_models.flame import load_flame

        model_path = expand_path(cfg.model_path) if cfg.model_path else None
        return load_flame(assets_root, n_shape=cfg.n_shape, n_exp=cfg.n_exp, model_path=model_path)
    raise ValueError(f"face_model.kind must be 'ict' or 'flame', got {cfg.kind!r}")
