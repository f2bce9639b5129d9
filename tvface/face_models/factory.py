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


def load_albedo_model(cfg: FaceModelConfig, model: FaceModel, uv_size: int = 256,
                      assets_root: Path | None = None):
    """The albedo space on ``model``'s UV layout (``face_model.albedo``).

    ``builtin``: tvface's low-rank UV albedo space (ICT layout; at most its documented modes).
    ``flame``: FLAME's texture space: ``FLAME_albedo_from_BFM.npz`` (DECA's default ``tex_type: BFM``,
    what ``deca_model.tar`` was trained with), else ``FLAME_texture.npz``.
    ``auto``: FLAME's space for FLAME when present, else the built-in one.
    """
    from tvface.face_models.albedo import ICT_ALBEDO_MODES, build_ict_albedo, load_flame_albedo

    if cfg.albedo not in ("auto", "builtin", "flame"):
        raise ValueError(f"face_model.albedo must be auto, builtin or flame, got {cfg.albedo!r}")
    flame_file = assets.find("flame_albedo_bfm", assets_root) or assets.find("flame_texture", assets_root)
    if cfg.albedo == "flame" or (cfg.albedo == "auto" and model.name == "flame"):
        path = flame_file or assets.require("flame_albedo_bfm", assets_root)
        return load_flame_albedo(path, cfg.n_tex, uv_size)
    if model.name != "ict":
        raise ValueError(f"the built-in albedo space is defined on ICT's UV layout, not {model.name}'s; "
                         "put FLAME_texture.npz or FLAME_albedo_from_BFM.npz in the assets folder")
    return build_ict_albedo(model, uv_size, n_tex=min(cfg.n_tex, len(ICT_ALBEDO_MODES)))
