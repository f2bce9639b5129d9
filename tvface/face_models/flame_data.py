"""Loaders of FLAME's model file and DECA's FLAME-topology data files, with checked shapes.

Every loader returns numpy arrays (or a frozen dataclass of them) and raises one clear error naming
the file: missing, truncated, refused by the restricted unpickler, missing keys, wrong shapes.

Files (names as in :mod:`tvface.assets`):

* ``generic_model.pkl`` (FLAME 2020): :func:`load_flame_model` -> :class:`FlameModelData`.
* ``landmark_embedding.npy`` (DECA): :func:`load_landmark_embedding` -> :class:`LandmarkEmbedding`.
* ``head_template.obj`` (DECA): :func:`load_template_uvs` -> :class:`TemplateUV`.
* ``uv_face_mask.png`` / ``uv_face_eye_mask.png``: :func:`load_uv_mask`.
* ``fixed_displacement_256.npy``: :func:`load_fixed_displacement`.
* ``mean_texture.jpg``: :func:`load_mean_texture`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tvface.io.safe_pickle import load_npy_object, safe_load_pickle

PathLike = str | os.PathLike

FLAME_N_SHAPE_TOTAL = 300  # identity components in shapedirs[..., :300]
FLAME_N_EXP_TOTAL = 100  # expression components in shapedirs[..., 300:400]
FLAME_N_JOINTS = 5  # global, neck, jaw, left eye, right eye
FLAME_N_POSEDIRS = (FLAME_N_JOINTS - 1) * 9  # pose correctives: (R - I) of the 4 non-root joints
FLAME_N_VERTS = 5023  # FLAME 2020 topology
# FLAME's eyeballs are two separate closed meshes at the end of the vertex list (checked on
# head_template.obj: connected components 0-3930 head, 3931-4476 left eye, 4477-5022 right eye).
FLAME_EYEBALL_VERTS = (3931, 5023)  # [start, stop)
N_STATIC_LMKS = 51  # iBUG 17..67 (brows, nose, eyes, mouth)
N_CONTOUR_LMKS = 17  # iBUG 0..16 (jaw contour), chosen per yaw bin
N_YAW_BINS = 79  # DECA's table: yaw 0..39 deg, then -1..-39 deg

_FLAME_REQUIRED_KEYS = ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table")


class FlameFileError(ValueError):
    """A FLAME/DECA data file has missing keys or unexpected shapes."""


@dataclass(frozen=True)
class FlameModelData:
    """The arrays of ``generic_model.pkl`` that FLAME's forward pass needs (float64, int64)."""

    v_template: np.ndarray  # (V, 3) template vertices, metres
    faces: np.ndarray  # (F, 3) int64
    shapedirs: np.ndarray  # (V, 3, 400): 300 identity then 100 expression components
    posedirs: np.ndarray  # (V, 3, 36) pose correctives
    J_regressor: np.ndarray  # (5, V) dense
    lbs_weights: np.ndarray  # (V, 5)
    parents: np.ndarray  # (5,) int64, parents[0] = -1

    @property
    def n_verts(self) -> int:
        return int(self.v_template.shape[0])


@dataclass(frozen=True)
class LandmarkEmbedding:
    """DECA's ``landmark_embedding.npy``: landmarks as (triangle, barycentric) pairs."""

    static_faces_idx: np.ndarray  # (51,) int64, iBUG 17..67
    static_bary_coords: np.ndarray  # (51, 3)
    dynamic_faces_idx: np.ndarray  # (79, 17) int64, contour per yaw bin
    dynamic_bary_coords: np.ndarray  # (79, 17, 3)
    full_faces_idx: np.ndarray  # (68,) int64, fixed 68 landmarks (DECA's landmarks3d)
    full_bary_coords: np.ndarray  # (68, 3)


@dataclass(frozen=True)
class TemplateUV:
    """UV layout of ``head_template.obj``."""

    verts: np.ndarray  # (V, 3) the OBJ's vertices
    faces: np.ndarray  # (F, 3) int64 vertex triangles
    uv_coords: np.ndarray  # (Vt, 2) in [0, 1], origin bottom-left (OBJ convention)
    uv_faces: np.ndarray  # (F, 3) int64 UV triangles, same order as faces


def _as_array(value, name: str, path: Path) -> np.ndarray:
    if hasattr(value, "toarray"):  # scipy sparse
        value = value.toarray()
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as e:
        raise FlameFileError(f"{path}: key {name!r} is not an array ({type(value).__name__}): {e}") from None


def _check_shape(arr: np.ndarray, expected: tuple, name: str, path: Path, hint: str = "") -> None:
    """``expected`` entries: int, or None for any size."""
    ok = arr.ndim == len(expected) and all(e is None or e == s for e, s in zip(expected, arr.shape))
    if not ok:
        shown = "(" + ", ".join("*" if e is None else str(e) for e in expected) + ")"
        raise FlameFileError(f"{path}: {name} must have shape {shown}, got {tuple(arr.shape)}{hint}")


def load_flame_model(path: PathLike) -> FlameModelData:
    """Read FLAME's ``generic_model.pkl`` through the restricted unpickler (no chumpy needed).

    Raises:
        FileNotFoundError, tvface.io.safe_pickle.PickleLoadError: unreadable or refused file.
        FlameFileError: missing keys or unexpected shapes (FLAME 2020 layout expected).
    """
    path = Path(path)
    model = safe_load_pickle(path, allow="flame")
    if not isinstance(model, dict):
        raise FlameFileError(f"{path}: expected a FLAME model (a pickled dict), got {type(model).__name__}")
    missing = [k for k in _FLAME_REQUIRED_KEYS if k not in model]
    if missing:
        raise FlameFileError(f"{path}: not a FLAME model: missing keys {missing} (found {sorted(map(str, model))}). "
                             f"Use FLAME 2020's generic_model.pkl.")
    arrays = {k: _as_array(model[k], k, path) for k in _FLAME_REQUIRED_KEYS}
    v_template = arrays["v_template"].astype(np.float64)
    _check_shape(v_template, (None, 3), "v_template", path)
    n_verts = v_template.shape[0]
    hint = " (FLAME 2020 layout: 300 shape + 100 expression components)"
    _check_shape(arrays["shapedirs"], (n_verts, 3, FLAME_N_SHAPE_TOTAL + FLAME_N_EXP_TOTAL), "shapedirs", path, hint)
    _check_shape(arrays["posedirs"], (n_verts, 3, FLAME_N_POSEDIRS), "posedirs", path)
    _check_shape(arrays["J_regressor"], (FLAME_N_JOINTS, n_verts), "J_regressor", path)
    _check_shape(arrays["weights"], (n_verts, FLAME_N_JOINTS), "weights", path)
    _check_shape(arrays["kintree_table"], (2, FLAME_N_JOINTS), "kintree_table", path)
    _check_shape(arrays["f"], (None, 3), "f", path)
    faces = arrays["f"].astype(np.int64)
    if faces.size and (faces.min() < 0 or faces.max() >= n_verts):
        raise FlameFileError(f"{path}: f refers to vertex {int(faces.max())} but v_template has {n_verts} vertices")
    parents = arrays["kintree_table"][0].astype(np.int64)
    parents[0] = -1  # the root's entry is uint32 max in the pickle
    if any(not 0 <= parents[j] < j for j in range(1, FLAME_N_JOINTS)):
        raise FlameFileError(f"{path}: kintree_table parents {parents.tolist()} are not a tree with parents first")
    return FlameModelData(
        v_template=v_template,
        faces=faces,
        shapedirs=arrays["shapedirs"].astype(np.float64),
        posedirs=arrays["posedirs"].astype(np.float64),
        J_regressor=arrays["J_regressor"].astype(np.float64),
        lbs_weights=arrays["weights"].astype(np.float64),
        parents=parents,
    )


def load_landmark_embedding(path: PathLike, n_faces: int | None = None) -> LandmarkEmbedding:
    """Read DECA's ``landmark_embedding.npy`` (a pickled dict) without running pickled code.

    Args:
        path: the ``.npy`` file.
        n_faces: when given, every face index must be below it (the model's triangle count).
    """
    path = Path(path)
    emb = load_npy_object(path, allow="landmark_embedding")
    if not isinstance(emb, dict):
        raise FlameFileError(f"{path}: expected a pickled dict of landmark arrays, got {type(emb).__name__}")
    keys = ("static_lmk_faces_idx", "static_lmk_bary_coords", "dynamic_lmk_faces_idx", "dynamic_lmk_bary_coords",
            "full_lmk_faces_idx", "full_lmk_bary_coords")
    missing = [k for k in keys if k not in emb]
    if missing:
        raise FlameFileError(f"{path}: not DECA's landmark embedding: missing keys {missing} "
                             f"(found {sorted(map(str, emb))})")
    arr = {k: np.asarray(emb[k].numpy() if hasattr(emb[k], "numpy") else emb[k]) for k in keys}
    out = LandmarkEmbedding(
        static_faces_idx=arr["static_lmk_faces_idx"].reshape(-1).astype(np.int64),
        static_bary_coords=arr["static_lmk_bary_coords"].reshape(-1, 3).astype(np.float64),
        dynamic_faces_idx=arr["dynamic_lmk_faces_idx"].astype(np.int64),
        dynamic_bary_coords=arr["dynamic_lmk_bary_coords"].astype(np.float64),
        # stored as (1, 68) and (1, 68, 3)
        full_faces_idx=arr["full_lmk_faces_idx"].reshape(-1).astype(np.int64),
        full_bary_coords=arr["full_lmk_bary_coords"].reshape(-1, 3).astype(np.float64),
    )
    _check_shape(out.static_faces_idx, (N_STATIC_LMKS,), "static_lmk_faces_idx", path)
    _check_shape(out.static_bary_coords, (N_STATIC_LMKS, 3), "static_lmk_bary_coords", path)
    _check_shape(out.dynamic_faces_idx, (N_YAW_BINS, N_CONTOUR_LMKS), "dynamic_lmk_faces_idx", path)
    _check_shape(out.dynamic_bary_coords, (N_YAW_BINS, N_CONTOUR_LMKS, 3), "dynamic_lmk_bary_coords", path)
    _check_shape(out.full_faces_idx, (N_STATIC_LMKS + N_CONTOUR_LMKS,), "full_lmk_faces_idx", path)
    _check_shape(out.full_bary_coords, (N_STATIC_LMKS + N_CONTOUR_LMKS, 3), "full_lmk_bary_coords", path)
    if n_faces is not None:
        for name in ("static_faces_idx", "dynamic_faces_idx", "full_faces_idx"):
            idx = getattr(out, name)
            if idx.min() < 0 or idx.max() >= n_faces:
                raise FlameFileError(f"{path}: {name} refers to triangle {int(idx.max())} but the model has "
                                     f"{n_faces} triangles (embedding for another topology?)")
    return out


def load_template_uvs(path: PathLike) -> TemplateUV:
    """UV coordinates and UV triangles of ``head_template.obj`` (``f v/vt`` corners)."""
    from tvface.face_models.obj import ObjError, read_obj

    path = Path(path)
    try:
        mesh = read_obj(path)
    except ObjError as e:
        raise FlameFileError(f"{path}: cannot read the FLAME template OBJ: {e}") from None
    if mesh.n_polys == 0 or mesh.uvs.shape[0] == 0:
        raise FlameFileError(f"{path}: the FLAME template OBJ has no faces or no UVs (vt records); "
                             f"use DECA's data/head_template.obj")
    if np.any(mesh.poly_sizes != 3):
        raise FlameFileError(f"{path}: expected a triangle mesh, found polygons with "
                             f"{sorted(set(mesh.poly_sizes.tolist()))} corners")
    faces = mesh.poly_verts.reshape(-1, 3)
    uv_faces = mesh.poly_uvs.reshape(-1, 3)
    if uv_faces.min() < 0:
        raise FlameFileError(f"{path}: some faces have no UV index (need `f v/vt` corners)")
    return TemplateUV(verts=mesh.verts, faces=faces, uv_coords=mesh.uvs.astype(np.float64), uv_faces=uv_faces)


def align_uv_faces(model_faces: np.ndarray, template: TemplateUV, source: str) -> np.ndarray:
    """UV triangles in the order (and corner order) of ``model_faces``.

    DECA assumes the pickle's ``f`` and the OBJ's faces are the same list; this checks it, and
    accepts triangles whose corners are cyclically rotated.
    """
    if model_faces.shape != template.faces.shape:
        raise FlameFileError(f"{source}: the template OBJ has {len(template.faces)} triangles, the FLAME model "
                             f"has {len(model_faces)}; use the head_template.obj of the model's topology")
    if np.array_equal(model_faces, template.faces):
        return template.uv_faces
    uv_faces = template.uv_faces.copy()
    done = np.zeros(len(model_faces), dtype=bool)
    for shift in range(3):
        rolled = np.roll(template.faces, -shift, axis=1)
        match = ~done & np.all(rolled == model_faces, axis=1)
        uv_faces[match] = np.roll(template.uv_faces, -shift, axis=1)[match]
        done |= match
    if not done.all():
        raise FlameFileError(f"{source}: {int((~done).sum())} triangles of the template OBJ differ from the FLAME "
                             f"model's (first: triangle {int(np.argmin(done))}); the UV layout would not match")
    return uv_faces


def eyeball_vertex_mask(n_verts: int) -> np.ndarray:
    """(V,) bool, True on FLAME's eyeball vertices (only for the 5023-vertex FLAME topology)."""
    mask = np.zeros(n_verts, dtype=bool)
    if n_verts == FLAME_N_VERTS:
        mask[slice(*FLAME_EYEBALL_VERTS)] = True
    return mask


def load_uv_mask(path: PathLike, size: int | None = None) -> np.ndarray:
    """DECA's UV mask: first channel / 255, optionally resized (nearest, as DECA's ``F.interpolate``).

    Returns:
        (H, W) float32 in [0, 1].
    """
    img = _read_image(path)
    mask = img[..., 0] if img.ndim == 3 else img  # (H, W)
    mask = mask.astype(np.float32) / 255.0
    return _resize_nearest(mask[..., None], size)[..., 0] if size else mask


def load_mean_texture(path: PathLike, size: int | None = None) -> np.ndarray:
    """DECA's mean UV texture, RGB.

    Returns:
        (H, W, 3) float32 in [0, 1]; resized (nearest) to ``size`` when given.
    """
    path = Path(path)
    img = _read_image(path)
    if img.ndim != 3 or img.shape[2] < 3:
        raise FlameFileError(f"{path}: expected an RGB texture image, got shape {img.shape}")
    tex = img[..., :3].astype(np.float32) / 255.0
    return _resize_nearest(tex, size) if size else tex


def load_fixed_displacement(path: PathLike) -> np.ndarray:
    """DECA's ``fixed_displacement_256.npy``: (H, W) UV displacement (no pickle allowed)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"fixed displacement not found: {path}")
    try:
        disp = np.load(path, allow_pickle=False)
    except (ValueError, EOFError, OSError) as e:
        raise FlameFileError(f"{path}: cannot read the fixed displacement map ({e})") from None
    if disp.ndim != 2 or disp.shape[0] != disp.shape[1]:
        raise FlameFileError(f"{path}: fixed displacement must be a square (H, W) map, got {disp.shape}")
    return disp


def _read_image(path: PathLike) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            return np.asarray(im)
    except (UnidentifiedImageError, OSError) as e:
        raise FlameFileError(f"{path}: cannot read the image ({e})") from None


def _resize_nearest(img: np.ndarray, size: int) -> np.ndarray:
    """(H, W, C) -> (size, size, C), nearest, as ``torch.nn.functional.interpolate``'s default."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None]  # (1, C, H, W)
    return F.interpolate(t, size=[size, size]).numpy()[0].transpose(1, 2, 0)
