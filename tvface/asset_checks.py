"""Open each present user asset with the loader tvface uses for it (``tvface assets --check``).

A check loads the file the safe way (restricted unpickler, ``torch.load(weights_only=True)``,
``np.load(allow_pickle=False)``) and returns a one-line summary, or raises the loader's error, which
names the file and what is wrong.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from tvface import assets


def _torch_state(path: Path) -> str:
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch's own message is long; keep the cause
        raise ValueError(f"{path}: not a loadable torch checkpoint with weights_only=True "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    if isinstance(obj, dict):
        n = sum(1 for v in obj.values() if hasattr(v, "shape"))
        return f"{len(obj)} entries ({n} tensors)"
    return type(obj).__name__


def _ict(path: Path) -> str:
    from tvface.face_models.ict import load_ict_model

    m = load_ict_model(path, n_shape=1)
    return f"{m.n_verts} vertices, {m.faces.shape[0]} triangles"


def _flame(path: Path) -> str:
    from tvface.face_models.flame_data import load_flame_model

    d = load_flame_model(path)
    return f"{d.v_template.shape[0]} vertices"


def _embedding(path: Path) -> str:
    from tvface.face_models.flame_data import load_landmark_embedding

    e = load_landmark_embedding(path)
    return f"{len(e.static_faces_idx)} static + {e.dynamic_faces_idx.shape[1]} contour landmarks"


def _template(path: Path) -> str:
    from tvface.face_models.flame_data import load_template_uvs

    t = load_template_uvs(path)
    return f"{len(t.uv_coords)} UVs"


def _uv_mask(path: Path) -> str:
    from tvface.face_models.flame_data import load_uv_mask

    return f"{load_uv_mask(path).shape} mask"


def _fixed_disp(path: Path) -> str:
    from tvface.face_models.flame_data import load_fixed_displacement

    return f"{load_fixed_displacement(path).shape} displacement"


def _mean_texture(path: Path) -> str:
    from tvface.face_models.flame_data import load_mean_texture

    return f"{load_mean_texture(path).shape} texture"


def _flame_albedo(path: Path) -> str:
    from tvface.face_models.albedo import load_flame_albedo

    m = load_flame_albedo(path, n_tex=1)
    return f"albedo space {tuple(m.mean.shape)}"


def _vggface2(path: Path) -> str:
    from tvface.models.vggface2 import FEATURE_DIM, expected_shapes, load_vggface2

    load_vggface2(path)
    return f"VGGFace2 ResNet-50, {len(expected_shapes())} arrays, {FEATURE_DIM}-d features"


CHECKS: dict[str, Callable[[Path], str]] = {
    "ict_model": _ict,
    "flame_model": _flame,
    "flame_landmarks": _embedding,
    "flame_template": _template,
    "flame_uv_face_mask": _uv_mask,
    "flame_uv_face_eye_mask": _uv_mask,
    "flame_fixed_displacement": _fixed_disp,
    "flame_mean_texture": _mean_texture,
    "flame_texture": _flame_albedo,
    "flame_albedo_bfm": _flame_albedo,
    "deca_model": _torch_state,
    "vggface2": _vggface2,
    "fan": _torch_state,
    "bisenet": _torch_state,
    "spynet": _torch_state,
}


def check_assets(root: Path | None = None) -> list[tuple[str, str, str]]:
    """``(file, "ok"|"error"|"missing", detail)`` for every asset."""
    rows = []
    for a in assets.ASSETS:
        path = a.path(root)
        if not a.present(root):
            rows.append((a.filename, "missing", ""))
            continue
        check = CHECKS.get(a.key)
        if check is None:
            rows.append((a.filename, "ok", "present"))
            continue
        try:
            rows.append((a.filename, "ok", check(path)))
        except Exception as exc:  # report every bad file, keep going
            rows.append((a.filename, "error", str(exc)))
    return rows
