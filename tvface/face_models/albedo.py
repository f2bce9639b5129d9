"""UV albedo spaces: ``tex (B, n_tex) -> (B, 3, H, W)`` linear albedo.

Two sources:

* FLAME's texture spaces as DECA's ``FLAMETex`` reads them: ``FLAME_texture.npz`` (``mean``
  (512, 512, 3) in 0..255, ``tex_dir`` (512, 512, 3, 200) in 0..255 per unit coefficient) or
  ``FLAME_albedo_from_BFM.npz`` (``MU`` (1, 512*512*3) in 0..1, ``PC`` (512*512*3, 199)). Both are
  stored BGR; like DECA we flip to RGB and resize to ``size`` (DECA: 256). Output is not clamped
  (DECA does not clamp; the texture prior keeps it in range).
* A built-in low-rank space for the ICT UV atlas (:func:`build_ict_albedo`), procedural and
  deterministic: a mean (skin, lips, brows, eyes, mouth, teeth) plus 4 modes

  ====  ===================  =======================================  ==========
  k     mode                 direction (x = per channel)              sigma (peak)
  ====  ===================  =======================================  ==========
  0     skin lightness       skin x mean x (1, 1, 1)                   0.07
  1     skin red / yellow    skin x mean x (0, -1, +0.3)               0.02
  2     lip redness          lips x mean x (+1, -0.6, -0.5)            0.04
  3     brow darkness        brows x mean x (-1, -1, -1)               0.03
  ====  ===================  =======================================  ==========

  The four raw modes are Gram-Schmidt orthogonalised (in that order, over all pixels and channels),
  then each is scaled so its largest absolute value is its sigma: coefficient 1.0 is one sigma
  and the coefficients are standard normal. Every combination within +-3 sigma stays inside
  [0, 1] (checked by the tests). Regions come from the model: skin = the skin triangles' UVs,
  lips = the outer-lip landmark polygon (48-59), brows = thick lines through landmarks 17-21 and
  22-26, all feathered with a Gaussian of ``FEATHER`` x size.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

FLAME_TEX_SIZE = 512
FEATHER = 0.01  # Gaussian sigma of region masks, as a fraction of the texture size
BROW_THICKNESS = 0.025  # brow line width, fraction of the texture size

# Linear-RGB base colours of the built-in mean.
SKIN_RGB = (0.50, 0.33, 0.25)
LIPS_RGB = (0.48, 0.21, 0.18)
BROWS_RGB = (0.22, 0.15, 0.11)
SCLERA_RGB = (0.70, 0.66, 0.62)
IRIS_RGB = (0.12, 0.07, 0.04)
MOUTH_RGB = (0.45, 0.13, 0.13)
TEETH_RGB = (0.75, 0.72, 0.62)
# (name, region, RGB direction, sigma) of the built-in modes, in Gram-Schmidt order.
ICT_ALBEDO_MODES = (
    ("skin_lightness", "skin", (1.0, 1.0, 1.0), 0.07),
    ("skin_red_yellow", "skin", (0.0, -1.0, 0.3), 0.02),
    ("lip_redness", "lips", (1.0, -0.6, -0.5), 0.04),
    ("brow_darkness", "brows", (-1.0, -1.0, -1.0), 0.03),
)
ICT_IRIS_POLYS = ((22296, 23093), (23894, 24691))  # README "Eyeball Details": iris polygons


class AlbedoModel(nn.Module):
    """Linear UV albedo space: ``mean + sum_k tex_k * basis_k``.

    Args:
        mean: (3, H, W) linear RGB.
        basis: (K, 3, H, W) per unit coefficient.
        names: one name per mode (for logs and the book).
        clamp: clamp the output to [0, 1] (off by default: clamping stops gradients).
    """

    def __init__(self, mean: Tensor, basis: Tensor, names: tuple[str, ...] | None = None,
                 clamp: bool = False) -> None:
        super().__init__()
        if mean.ndim != 3 or mean.shape[0] != 3 or basis.ndim != 4 or basis.shape[1:] != mean.shape:
            raise ValueError(f"AlbedoModel: mean must be (3, H, W) and basis (K, 3, H, W) with the same H, W; "
                             f"got {tuple(mean.shape)} and {tuple(basis.shape)}")
        self.register_buffer("mean", mean.float())
        self.register_buffer("basis", basis.float())
        self.names = tuple(names) if names is not None else tuple(f"mode{k}" for k in range(basis.shape[0]))
        self.clamp = clamp

    @property
    def n_tex(self) -> int:
        return int(self.basis.shape[0])

    def forward(self, tex: Tensor) -> Tensor:
        """(B, n_tex) coefficients -> (B, 3, H, W) albedo."""
        if tex.ndim != 2 or tex.shape[1] != self.n_tex:
            raise ValueError(f"AlbedoModel: tex must have shape (B, {self.n_tex}), got {tuple(tex.shape)}")
        k, c, h, w = self.basis.shape
        tex = tex.to(self.basis.dtype)
        out = self.mean[None] + (tex @ self.basis.reshape(k, -1)).view(-1, c, h, w)  # (B, 3, H, W)
        return out.clamp(0.0, 1.0) if self.clamp else out


# ----------------------------------------------------------------------------------------------------
# FLAME texture spaces (DECA's FLAMETex)
# ----------------------------------------------------------------------------------------------------

_FLAME_KINDS = {  # kind: (mean key, basis key, n_pc, divide by)
    "FLAME": ("mean", "tex_dir", 200, 255.0),
    "BFM": ("MU", "PC", 199, 1.0),
}


def load_flame_albedo(path: str | os.PathLike, n_tex: int, size: int = 256) -> AlbedoModel:
    """``FLAME_texture.npz`` or ``FLAME_albedo_from_BFM.npz`` as an :class:`AlbedoModel` (DECA's FLAMETex).

    Args:
        path: the npz (read with ``allow_pickle=False``).
        n_tex: leading modes to keep.
        size: output H = W (DECA resizes 512 -> 256).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FLAME texture space not found at {path}; see `tvface assets` for how to get "
                                "FLAME_texture.npz or FLAME_albedo_from_BFM.npz")
    with np.load(path, allow_pickle=False) as f:
        keys = set(f.files)
        kind = next((k for k, (mu, pc, _, _) in _FLAME_KINDS.items() if {mu, pc} <= keys), None)
        if kind is None:
            raise ValueError(f"{path}: expected keys ('mean', 'tex_dir') (FLAME_texture.npz) or ('MU', 'PC') "
                             f"(FLAME_albedo_from_BFM.npz), found {sorted(keys)}")
        mu_key, pc_key, n_pc, div = _FLAME_KINDS[kind]
        mean, pcs = f[mu_key], f[pc_key]
    n_pix = FLAME_TEX_SIZE * FLAME_TEX_SIZE * 3
    if mean.size != n_pix or pcs.size % n_pix or pcs.size // n_pix < 1:
        raise ValueError(f"{path}: {mu_key} must hold {FLAME_TEX_SIZE}x{FLAME_TEX_SIZE}x3 values and {pc_key} "
                         f"({FLAME_TEX_SIZE}x{FLAME_TEX_SIZE}x3, n) ones; got {mean.shape} and {pcs.shape}")
    n_avail = pcs.size // n_pix
    if not 0 < n_tex <= n_avail:
        raise ValueError(f"{path}: has {n_avail} texture modes (DECA expects {n_pc}), asked for n_tex={n_tex}")
    mean = torch.from_numpy(mean.reshape(FLAME_TEX_SIZE, FLAME_TEX_SIZE, 3).astype(np.float32) / div)
    basis = torch.from_numpy(pcs.reshape(n_pix, n_avail)[:, :n_tex].astype(np.float32) / div)
    mean = mean.permute(2, 0, 1)[[2, 1, 0]]  # (3, 512, 512), BGR -> RGB as DECA
    basis = basis.T.reshape(n_tex, FLAME_TEX_SIZE, FLAME_TEX_SIZE, 3).permute(0, 3, 1, 2)[:, [2, 1, 0]]
    if size != FLAME_TEX_SIZE:
        # DECA's FLAMETex resizes with F.interpolate's default, nearest.
        mean = F.interpolate(mean[None], size=(size, size), mode="nearest")[0]
        basis = F.interpolate(basis, size=(size, size), mode="nearest")
    return AlbedoModel(mean, basis, names=tuple(f"{kind.lower()}_{k}" for k in range(n_tex)))


# ----------------------------------------------------------------------------------------------------
# Built-in ICT albedo space
# ----------------------------------------------------------------------------------------------------

def vertex_uvs(faces: np.ndarray, uv_faces: np.ndarray, uv_coords: np.ndarray, n_verts: int) -> np.ndarray:
    """(V, 2) one UV per vertex (the last corner that uses it; seams pick one side)."""
    out = np.full((n_verts, 2), np.nan, dtype=np.float64)
    out[faces.ravel()] = uv_coords[uv_faces.ravel()]
    return out


def _to_px(uv: np.ndarray, size: int) -> np.ndarray:
    return np.stack([uv[..., 0] * size, (1.0 - uv[..., 1]) * size], axis=-1) - 0.5


def _feather(mask: np.ndarray, size: int) -> np.ndarray:
    import cv2

    sigma = FEATHER * size
    return np.clip(cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigmaX=sigma, sigmaY=sigma), 0.0, 1.0)


def ict_albedo_regions(model, size: int) -> dict[str, np.ndarray]:
    """Soft (H, W) masks in the model's UV atlas: skin, lips, brows, eyeball, iris, mouth, teeth."""
    import cv2

    from tvface.face_models.ict import rasterize_uv_mask

    uv = model.uv_coords.cpu().numpy().astype(np.float64)
    uv_faces = model.uv_faces.cpu().numpy()
    part = model.face_part.cpu().numpy()
    poly = model.face_poly.cpu().numpy()
    names = list(model.part_names)

    def parts(*wanted: str) -> np.ndarray:
        return rasterize_uv_mask(uv, uv_faces[np.isin(part, [names.index(w) for w in wanted])], size)

    v_uv = vertex_uvs(model.faces.cpu().numpy(), uv_faces, uv, model.template.shape[0])
    lmk_px = _to_px(v_uv[model.lmk_idx.cpu().numpy()], size)  # (68, 2)
    lips = np.zeros((size, size), np.uint8)
    cv2.fillPoly(lips, [np.round(lmk_px[48:60]).astype(np.int32)], 1)
    brows = np.zeros((size, size), np.uint8)
    thick = max(1, round(BROW_THICKNESS * size))
    for lo, hi in ((17, 22), (22, 27)):
        cv2.polylines(brows, [np.round(lmk_px[lo:hi]).astype(np.int32)], False, 1, thickness=thick)
    iris = np.zeros(len(poly), dtype=bool)
    for lo, hi in ICT_IRIS_POLYS:
        iris |= (poly >= lo) & (poly <= hi)
    skin = parts("face", "head_neck")
    return {
        "skin": _feather(skin, size) * skin,
        "lips": _feather(lips, size) * skin,
        "brows": _feather(brows, size) * skin,
        "eyeball": parts("eyeball_left", "eyeball_right"),
        "iris": rasterize_uv_mask(uv, uv_faces[iris], size),
        "mouth": parts("mouth_socket", "gums_tongue", "eye_socket_left", "eye_socket_right"),
        "teeth": parts("teeth"),
    }


def build_ict_albedo(model, size: int = 256, n_tex: int = len(ICT_ALBEDO_MODES)) -> AlbedoModel:
    """The built-in ICT UV albedo space (see the module docstring); deterministic.

    Args:
        model: an :class:`~tvface.face_models.ict.ICTModel` (its UV atlas, parts and landmarks).
        size: H = W of the UV maps.
        n_tex: leading modes to keep (at most 4).
    """
    if not 0 <= n_tex <= len(ICT_ALBEDO_MODES):
        raise ValueError(f"the built-in ICT albedo has {len(ICT_ALBEDO_MODES)} modes, asked for n_tex={n_tex}")
    reg = ict_albedo_regions(model, size)

    def rgb(c) -> np.ndarray:
        return np.asarray(c, dtype=np.float64)[:, None, None]

    mean = rgb(SKIN_RGB) * np.ones((1, size, size))
    for key, col in (("mouth", MOUTH_RGB), ("teeth", TEETH_RGB), ("eyeball", SCLERA_RGB), ("iris", IRIS_RGB),
                     ("lips", LIPS_RGB), ("brows", BROWS_RGB)):
        mean = mean + reg[key][None] * (rgb(col) - mean)
    # Each mode scales the mean colour per channel inside its region, so dark pixels (brows) move less.
    raw = np.stack([(reg[region][None] * rgb(col) * mean).ravel() for _, region, col, _ in ICT_ALBEDO_MODES], axis=1)
    q, r = np.linalg.qr(raw)  # Gram-Schmidt in mode order
    q = q * np.sign(np.diag(r))[None]  # keep each mode's sign
    sigmas = np.array([m[3] for m in ICT_ALBEDO_MODES])
    basis = (q / np.abs(q).max(axis=0, keepdims=True) * sigmas[None]).T.reshape(-1, 3, size, size)
    return AlbedoModel(torch.from_numpy(mean.astype(np.float32)), torch.from_numpy(basis[:n_tex].astype(np.float32)),
                       names=tuple(m[0] for m in ICT_ALBEDO_MODES[:n_tex]))
