"""ICT-FaceKit face model (MIT licence): converter to a compact ``.npz`` and the :class:`ICTModel`.

Source: ICT-VGL/ICT-FaceKit ``FaceXModel/`` (README tables of part ranges, 68 landmarks, jawlines).
``identityNNN.obj`` and every expression OBJ are *absolute* meshes: the mode is
``OBJ - generic_neutral_mesh`` (checked by ``tests/test_ict.py``: neutral + 1.0 x delta == OBJ).

Conversion to FLAME's conventions (see :mod:`tvface.face_models.base`):

* Units: ICT OBJs are centimetres (outer eye corners 8.9 apart, skin 24.8 wide with ears), so
  ``RAW_TO_METRES = 0.01``.
* Axes: ICT already uses FLAME's axes (+y up, +z out of the face, landmark 36 at -x), so no rotation.
* Origin: the jaw hinge. The build fits a rigid motion to the lower teeth of ``jawOpen`` (a 25 deg
  rotation about +x) and puts the origin at its axis, on the symmetry plane: about 0.5 cm below and
  1.8 cm in front of ICT's own origin, i.e. at the head's centre near the jaw joint, where FLAME's
  neck/jaw joints also sit. Global rotation turns about this origin (as FLAME's root joint).
* Dropped: lacrimal fluid, eye blend, eye occlusion and eyelash strips (transparent overlays, the
  last 2,128 vertices). Kept render-only: mouth socket, eye sockets, gums/tongue, teeth, eyeballs.
* UVs: ICT uses UDIM tiles (face u in [0,1], head/neck + sockets [1,2], gums [2,3], teeth [3,4],
  eyeballs overlapping the face tile in [0,1]). They are packed into one [0,1] atlas
  (:data:`UV_ATLAS`): face 0.75 x 0.75 top-left, head/gums/teeth 0.25 tiles down the right column,
  eyeballs 0.25 bottom-left. The raw UDIM UVs are kept as ``uv_coords_udim``.

Parameters:

* ``shape``: standard-normal identity coefficients. ICT's modes are already scaled to one standard
  deviation: ICT's own sampler draws weights from N(0, 1) (``FaceModel.randomize_identity``) and the
  modes' mean vertex displacement falls from 3.3 mm (mode 0) to 0.2 mm (mode 29) like PCA
  sigmas. So ``identity_std`` is 1.0 per mode and 1.0 means one sigma (about 3 mm mean shift for
  mode 0). The file stores raw deltas and ``identity_std`` separately.
* ``exp``: the 53 ARKit-named blendshape weights (0 = rest, 1 = full shape), ICT's order.
* ``pose``: global axis-angle (3) + jaw axis-angle (3). The jaw drives ICT's jaw blendshapes
  (:func:`jaw_pose_to_blendshapes`): pitch (x, positive opens as in FLAME) / ``jaw_open_angle``
  adds to ``jawOpen`` (linear both ways, so it is differentiable at rest; the build measures the
  angle from the mesh: 0.442 rad = 25.3 deg); yaw (y, positive moves the chin to +x, the subject's
  left) / ``jaw_yaw_angle`` adds to ``jawLeft`` (positive) or ``jawRight`` (negative), where
  ``jaw_yaw_angle`` is the chin's lateral shift in ``jawLeft`` seen from the hinge (about 0.1 rad).
  Jaw roll (z) has no ICT blendshape and is ignored.
"""
from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from tvface.face_models.base import FaceModel, FaceModelOutput, batch_rodrigues
from tvface.face_models.ict_download import NEUTRAL_OBJ, IctSourceError, iter_model_files, locate_ict_source
from tvface.face_models.obj import read_obj, triangulate_polygons
from tvface.io.atomic import atomic_save_npz

FORMAT_VERSION = 1
RAW_TO_METRES = 0.01  # ICT OBJs are in centimetres

ICT_N_VERTS = 26719
ICT_N_UVS = 28911
ICT_N_POLYS = 26384
ICT_N_IDENTITY_TOTAL = 100  # modes in a full clone; the CI subset has 30
N_KEEP_VERTS = 24591  # vertices 24591.. are the transparent overlays (lacrimal fluid .. eyelashes)
N_KEEP_POLYS = 24692

# ICT README "Face Model Topology": (name, first polygon, last polygon, first vertex, last vertex).
PARTS: tuple[tuple[str, int, int, int, int], ...] = (
    ("face", 0, 9229, 0, 9408),
    ("head_neck", 9230, 11143, 9409, 11247),
    ("mouth_socket", 11144, 13225, 11248, 13293),
    ("eye_socket_left", 13226, 13629, 13294, 13677),
    ("eye_socket_right", 13630, 14033, 13678, 14061),
    ("gums_tongue", 14034, 17005, 14062, 17038),
    ("teeth", 17006, 21495, 17039, 21450),
    ("eyeball_left", 21496, 23093, 21451, 23020),
    ("eyeball_right", 23094, 24691, 23021, 24590),
)
PART_NAMES = tuple(p[0] for p in PARTS)
SKIN_PARTS = ("face", "head_neck")
EYEBALL_PARTS = ("eyeball_left", "eyeball_right")
MOUTH_PARTS = ("mouth_socket", "gums_tongue", "teeth")
N_NARROW_FACE_POLYS = 6560  # README "Narrow face area": polygons [0:6559], the DECA-like face mask
LOWER_TEETH_VERTS = (19247, 21450)  # README teeth #16-#31

# ICT README "Facial Landmarks" (0-indexed, Multi-PIE 68 order).
LANDMARKS = (1225, 1888, 1052, 367, 1719, 1722, 2199, 1447, 966, 3661, 4390, 3927, 3924, 2608, 3272, 4088,
             3443, 268, 493, 1914, 2044, 1401, 3615, 4240, 4114, 2734, 2509, 978, 4527, 4942, 4857, 1140,
             2075, 1147, 4269, 3360, 1507, 1542, 1537, 1528, 1518, 1511, 3742, 3751, 3756, 3721, 3725,
             3732, 5708, 5695, 2081, 0, 4275, 6200, 6213, 6346, 6461, 5518, 5957, 5841, 5702, 5711, 5533,
             6216, 6207, 6470, 5517, 5966)
RIGHT_JAWLINE = (1278, 1272, 12, 1834, 243, 781, 2199, 1447)  # substitutes landmarks 0-7
LEFT_JAWLINE = (3661, 4390, 3022, 2484, 4036, 2253, 3490, 3496)  # substitutes landmarks 9-16
RIGHT_JAWLINE_EXT = (1280, 1278, 1275, 1272, 1248, 12, 820, 1834, 1902, 243, 844, 781, 1673, 2199, 801,
                     1447, 800)
LEFT_JAWLINE_EXT = (3041, 3661, 3042, 4390, 3880, 3022, 3085, 2484, 4102, 4036, 3061, 2253, 3466, 3490,
                    3493, 3496, 3498)

# ICT's 53 expressions in vertex_indices.json order.
EXPRESSIONS = (
    "browDown_L", "browDown_R", "browInnerUp_L", "browInnerUp_R", "browOuterUp_L", "browOuterUp_R",
    "cheekPuff_L", "cheekPuff_R", "cheekSquint_L", "cheekSquint_R", "eyeBlink_L", "eyeBlink_R",
    "eyeLookDown_L", "eyeLookDown_R", "eyeLookIn_L", "eyeLookIn_R", "eyeLookOut_L", "eyeLookOut_R",
    "eyeLookUp_L", "eyeLookUp_R", "eyeSquint_L", "eyeSquint_R", "eyeWide_L", "eyeWide_R", "jawForward",
    "jawLeft", "jawOpen", "jawRight", "mouthClose", "mouthDimple_L", "mouthDimple_R", "mouthFrown_L",
    "mouthFrown_R", "mouthFunnel", "mouthLeft", "mouthLowerDown_L", "mouthLowerDown_R", "mouthPress_L",
    "mouthPress_R", "mouthPucker", "mouthRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower",
    "mouthShrugUpper", "mouthSmile_L", "mouthSmile_R", "mouthStretch_L", "mouthStretch_R", "mouthUpperUp_L",
    "mouthUpperUp_R", "noseSneer_L", "noseSneer_R")
N_EXPRESSIONS = len(EXPRESSIONS)

# UV atlas: UDIM tile -> (scale, u offset, v offset) in the packed [0, 1] square.
UV_ATLAS = {
    "face": (0.75, 0.0, 0.25),
    "head": (0.25, 0.75, 0.75),
    "gums": (0.25, 0.75, 0.5),
    "teeth": (0.25, 0.75, 0.25),
    "eyeball": (0.25, 0.0, 0.0),
}
_UDIM_TILES = ("face", "head", "gums", "teeth")

# Dynamic jaw contour (lmks_2d): candidates per contour landmark along a scan line on the cheek.
CONTOUR_DYNAMIC = (0, 1, 2, 3, 4, 5, 11, 12, 13, 14, 15, 16)
CONTOUR_BAND_CM = 0.4  # half-height of the scan line band
CONTOUR_FORWARD_CM = 3.0  # how far in front of the landmark vertex candidates may lie
CONTOUR_MIN_ABS_X_CM = 2.0  # keep candidates off the nose/chin midline
N_CONTOUR_CANDIDATES = 24

_IDENTITY_RE = re.compile(r"^identity(\d{3})\.obj$")


# ----------------------------------------------------------------------------------------------------
# Converter
# ----------------------------------------------------------------------------------------------------

def _rigid_fit(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares rotation R and translation t with ``a @ R.T + t ~ b`` (Kabsch)."""
    ca, cb = a.mean(0), b.mean(0)
    u, _, vt = np.linalg.svd((a - ca).T @ (b - cb))
    d = np.sign(np.linalg.det(vt.T @ u.T))
    rot = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    return rot, cb - rot @ ca


def measure_jaw(neutral: np.ndarray, jaw_open: np.ndarray, jaw_left: np.ndarray) -> dict[str, np.ndarray]:
    """Jaw hinge and blendshape angles from the meshes (raw units).

    Returns ``pivot`` (3,) on the hinge axis in the symmetry plane, ``open_angle`` (rad, rotation of
    the lower teeth about +x in ``jawOpen``) and ``yaw_angle`` (rad, the chin's lateral shift in
    ``jawLeft`` over its depth in front of the hinge).
    """
    lo, hi = LOWER_TEETH_VERTS
    rot, t = _rigid_fit(neutral[lo:hi + 1], jaw_open[lo:hi + 1])
    open_angle = float(np.arctan2(rot[2, 1] - rot[1, 2], rot[1, 1] + rot[2, 2]))  # about +x
    # Fixed point of the (y, z) motion = the hinge axis.
    yz = np.linalg.solve((rot - np.eye(3))[1:, 1:], -t[1:])
    pivot = np.array([0.0, yz[0], yz[1]])
    chin = LANDMARKS[8]
    yaw_angle = float(np.arctan2(jaw_left[chin, 0] - neutral[chin, 0], neutral[chin, 2] - pivot[2]))
    return {"pivot": pivot, "open_angle": np.float64(open_angle), "yaw_angle": np.float64(yaw_angle)}


def contour_candidates(verts: np.ndarray, n_candidates: int = N_CONTOUR_CANDIDATES) -> tuple[np.ndarray, np.ndarray]:
    """Candidate vertices for each of the 17 jaw-contour landmarks (raw units, neutral mesh).

    Each dynamic landmark k gets the face vertices on a band around the scan line from its jawline
    vertex (back, README "jawline") through its landmark vertex and on forward by
    ``CONTOUR_FORWARD_CM``; at run time the one furthest out along x on its side is picked (the
    silhouette under yaw). The chin points 6-10 are fixed (jawline and landmark agree there).

    Returns:
        cand: (17, K) vertex indices (rows padded by repeating the jawline vertex).
        side: (17,) -1 (subject's right, -x), +1 (left) or 0 (fixed).
    """
    face_hi = PARTS[0][4]
    face = verts[:face_hi + 1]
    cand = np.zeros((17, n_candidates), dtype=np.int64)
    side = np.zeros(17, dtype=np.int64)
    for k in range(17):
        lmk = LANDMARKS[k]
        if k not in CONTOUR_DYNAMIC:
            cand[k] = lmk
            continue
        sgn = -1 if k < 8 else 1
        jaw = RIGHT_JAWLINE[k] if k < 8 else LEFT_JAWLINE[k - 9]
        (yj, zj), (yl, zl) = verts[jaw, 1:], verts[lmk, 1:]
        frac = np.clip((face[:, 2] - zj) / max(zl - zj, 1e-6), 0.0, 1.0)
        y_line = yj + frac * (yl - yj)
        ok = ((np.abs(face[:, 1] - y_line) < CONTOUR_BAND_CM) & (face[:, 2] >= zj)
              & (face[:, 2] <= zl + CONTOUR_FORWARD_CM) & (sgn * face[:, 0] > CONTOUR_MIN_ABS_X_CM))
        idx = np.nonzero(ok)[0]
        idx = idx[np.argsort(face[idx, 2], kind="stable")]
        if idx.size > n_candidates - 2:
            idx = idx[np.round(np.linspace(0, idx.size - 1, n_candidates - 2)).astype(np.int64)]
        row = np.concatenate([[jaw, lmk], idx])
        cand[k] = np.pad(row, (0, n_candidates - row.size), mode="edge")
        side[k] = sgn
    return cand, side


def _pack_uvs(uvs: np.ndarray, uv_faces: np.ndarray, tri_part: np.ndarray) -> np.ndarray:
    """UDIM UVs -> one [0, 1] atlas (:data:`UV_ATLAS`)."""
    tile = np.clip(np.floor(uvs[:, 0]), 0, len(_UDIM_TILES) - 1).astype(np.int64)
    eyeball_ids = [PART_NAMES.index(p) for p in EYEBALL_PARTS]
    is_eye = np.zeros(len(uvs), dtype=bool)
    is_eye[uv_faces[np.isin(tri_part, eyeball_ids)].ravel()] = True
    out = np.zeros_like(uvs)
    for t, key in enumerate(_UDIM_TILES + ("eyeball",)):
        sel = is_eye if key == "eyeball" else (tile == t) & ~is_eye
        scale, du, dv = UV_ATLAS[key]
        local = uvs[sel] - np.stack([np.floor(uvs[sel, 0]), np.zeros(int(sel.sum()))], axis=1)  # tile-local
        out[sel] = local * scale + np.array([du, dv])
    return out


def _content_digest(digests: dict[str, str]) -> str:
    h = hashlib.sha256()
    for name in sorted(digests):
        h.update(f"{name} {digests[name]}\n".encode())
    return h.hexdigest()


def build_ict_model(source: str | os.PathLike, out_path: str | os.PathLike,
                    n_identity: int | None = None) -> dict[str, object]:
    """Convert ICT-FaceKit's FaceXModel OBJs into the compact ``.npz`` :func:`load_ict_model` reads.

    Args:
        source: an ICT-FaceKit clone, its FaceXModel folder, its .zip, a .tar.* of it, or a folder
            holding one such archive. Archives are streamed, never unpacked to disk.
        out_path: the ``.npz`` to write (atomically).
        n_identity: identity modes to keep (the first ones); None = all present.
    Returns:
        a summary: ``n_identity``, ``n_verts``, ``n_faces``, ``seconds``, ``bytes``, ``source_sha256``.
    """
    t0 = time.perf_counter()
    loc = locate_ict_source(source)
    wanted_exp = {f"{e}.obj" for e in EXPRESSIONS}

    def wanted(name: str) -> bool:
        return name == NEUTRAL_OBJ or name in wanted_exp or bool(_IDENTITY_RE.match(name))

    neutral_mesh = None
    raw: dict[str, np.ndarray] = {}
    digests: dict[str, str] = {}
    for name, data in iter_model_files(loc, wanted):
        where = f"{loc}: FaceXModel/{name}"
        digests[name] = hashlib.sha256(data).hexdigest()
        n_polys = data.count(b"\nf ") + data.startswith(b"f ")
        if n_polys != ICT_N_POLYS:
            raise IctSourceError(f"{where} has {n_polys} polygons, expected {ICT_N_POLYS} "
                                 "(truncated or not an ICT-FaceKit OBJ)")
        if name == NEUTRAL_OBJ:
            neutral_mesh = read_obj(data, name=where)
            got = (len(neutral_mesh.verts), len(neutral_mesh.uvs))
            if got != (ICT_N_VERTS, ICT_N_UVS):
                raise IctSourceError(f"{where} has {got[0]} vertices and {got[1]} UVs, expected "
                                     f"{ICT_N_VERTS} and {ICT_N_UVS}")
            raw[name] = neutral_mesh.verts
        else:
            verts = read_obj(data, vertices_only=True, name=where).verts
            if len(verts) != ICT_N_VERTS:
                raise IctSourceError(f"{where} has {len(verts)} vertices, expected {ICT_N_VERTS}")
            raw[name] = verts

    id_found = sorted(int(_IDENTITY_RE.match(n).group(1)) for n in raw if _IDENTITY_RE.match(n))
    n_avail = next((i for i in range(len(id_found) + 1) if i not in id_found), len(id_found))
    missing = [n for n in [NEUTRAL_OBJ, *sorted(wanted_exp)] if n not in raw]
    if n_identity is None:
        n_identity = n_avail
    elif n_identity > n_avail:
        missing.append(f"identity{n_avail:03d}.obj (asked for {n_identity} identity modes)")
    if n_identity < 1:
        missing.append("identity000.obj")
    if missing:
        raise IctSourceError(f"ICT-FaceKit source {loc} lacks FaceXModel/{', '.join(missing)}")
    assert neutral_mesh is not None

    neutral = raw[NEUTRAL_OBJ]
    jaw = measure_jaw(neutral, raw["jawOpen.obj"], raw["jawLeft.obj"])
    origin = jaw["pivot"]
    keep = slice(0, N_KEEP_VERTS)
    id_deltas = np.stack([raw[f"identity{i:03d}.obj"][keep] - neutral[keep] for i in range(n_identity)])
    exp_deltas = np.stack([raw[f"{e}.obj"][keep] - neutral[keep] for e in EXPRESSIONS])

    mesh = neutral_mesh
    n_corners = int(mesh.poly_sizes[:N_KEEP_POLYS].sum())
    faces, uv_faces, tri_poly = triangulate_polygons(mesh.poly_sizes[:N_KEEP_POLYS], mesh.poly_verts[:n_corners],
                                                     mesh.poly_uvs[:n_corners])
    poly_starts = np.array([p[1] for p in PARTS])
    tri_part = np.searchsorted(poly_starts, tri_poly, side="right") - 1  # (F,)
    vert_part = np.searchsorted(np.array([p[3] for p in PARTS]), np.arange(N_KEEP_VERTS), side="right") - 1
    used_uv, uv_faces = np.unique(uv_faces, return_inverse=True)
    uv_faces = uv_faces.reshape(-1, 3)
    uv_udim = mesh.uvs[used_uv]
    uv_atlas = _pack_uvs(uv_udim, uv_faces, tri_part)
    cand, side = contour_candidates(neutral)

    arrays = {
        "format_version": np.int64(FORMAT_VERSION),
        "source_sha256": np.str_(_content_digest(digests)),
        "source": np.str_(str(loc)),
        "raw_to_metres": np.float64(RAW_TO_METRES),
        "raw_origin": origin.astype(np.float64),
        "template": ((neutral[keep] - origin) * RAW_TO_METRES).astype(np.float32),
        "identity_deltas": (id_deltas * RAW_TO_METRES).astype(np.float32),
        "identity_std": np.ones(n_identity, dtype=np.float32),
        "expression_deltas": (exp_deltas * RAW_TO_METRES).astype(np.float32),
        "expression_names": np.array(EXPRESSIONS),
        "faces": faces.astype(np.int32),
        "face_poly": tri_poly.astype(np.int32),
        "face_part": tri_part.astype(np.int8),
        "vert_part": vert_part.astype(np.int8),
        "part_names": np.array(PART_NAMES),
        "uv_coords": uv_atlas.astype(np.float32),
        "uv_coords_udim": uv_udim.astype(np.float32),
        "uv_faces": uv_faces.astype(np.int32),
        "landmarks": np.array(LANDMARKS, dtype=np.int32),
        "contour_candidates": cand.astype(np.int32),
        "contour_side": side.astype(np.int8),
        "jawline_right_ext": np.array(RIGHT_JAWLINE_EXT, dtype=np.int32),
        "jawline_left_ext": np.array(LEFT_JAWLINE_EXT, dtype=np.int32),
        "jaw_open_angle": np.float64(jaw["open_angle"]),
        "jaw_yaw_angle": np.float64(jaw["yaw_angle"]),
    }
    atomic_save_npz(out_path, **arrays)
    return {"n_identity": n_identity, "n_verts": N_KEEP_VERTS, "n_faces": int(faces.shape[0]),
            "seconds": time.perf_counter() - t0, "bytes": Path(out_path).stat().st_size,
            "source_sha256": str(arrays["source_sha256"])}


def to_raw_units(verts: np.ndarray, model_file: dict | np.lib.npyio.NpzFile) -> np.ndarray:
    """Model-space vertices (metres, hinge origin) -> ICT's raw OBJ coordinates (cm)."""
    return np.asarray(verts, dtype=np.float64) / float(model_file["raw_to_metres"]) + model_file["raw_origin"]


# ----------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------

def jaw_pose_to_blendshapes(jaw_pose: Tensor, open_angle: float, yaw_angle: float) -> Tensor:
    """Jaw axis-angle -> weights added to ``jawOpen``, ``jawLeft``, ``jawRight``.

    Args:
        jaw_pose: (B, 3) axis-angle; x = pitch (positive opens), y = yaw (positive: chin to +x).
        open_angle: radians of pitch at which ``jawOpen`` reaches 1.
        yaw_angle: radians of yaw at which ``jawLeft``/``jawRight`` reach 1.
    Returns:
        (B, 3) weights (jawOpen, jawLeft, jawRight). Pitch maps linearly both ways; yaw splits by
        sign with ``torch.where`` so the gradient at 0 is non-zero (it flows to ``jawLeft``).
    """
    pitch, yaw = jaw_pose[:, 0], jaw_pose[:, 1]
    w_open = pitch / open_angle
    w_left = torch.where(yaw >= 0, yaw, torch.zeros_like(yaw)) / yaw_angle
    w_right = torch.where(yaw < 0, -yaw, torch.zeros_like(yaw)) / yaw_angle
    return torch.stack([w_open, w_left, w_right], dim=1)


def select_contour(verts: Tensor, cand: Tensor, side: Tensor) -> Tensor:
    """Pick each contour landmark's silhouette vertex: the candidate furthest out along x on its side.

    Args:
        verts: (B, V, 3) posed vertices (camera-aligned x).
        cand: (17, K) candidate vertex indices.
        side: (17,) -1, +1, or 0 (fixed rows, all candidates equal).
    Returns:
        (B, 17, 3) contour points; the choice is discrete, the positions are differentiable.
    """
    batch = verts.shape[0]
    with torch.no_grad():
        x = verts[:, cand.reshape(-1), 0].view(batch, *cand.shape)  # (B, 17, K)
        pick = (x * side[None, :, None].to(x.dtype)).argmax(dim=-1)  # (B, 17)
        idx = cand[torch.arange(cand.shape[0], device=cand.device)[None], pick]  # (B, 17)
    return torch.gather(verts, 1, idx[..., None].expand(-1, -1, 3))  # (B, 17, 3)


class ICTModel(FaceModel):
    """ICT-FaceKit as a :class:`FaceModel` (see the module docstring for units and parameters).

    Extra buffers for the renderer: ``face_part`` (F,) part id into :data:`PART_NAMES`,
    ``eyeball_faces`` and ``mouth_faces`` (F,) bool (mouth socket, gums/tongue, teeth).
    """

    name = "ict"

    def __init__(self, arrays: dict[str, np.ndarray], n_shape: int, n_exp: int = N_EXPRESSIONS) -> None:
        super().__init__(n_shape, n_exp)
        version = int(arrays["format_version"])
        if version != FORMAT_VERSION:
            raise ValueError(f"ICT model file has format version {version}, this tvface reads {FORMAT_VERSION}; "
                             "rebuild it with `tvface assets build-ict`")
        n_avail = int(arrays["identity_deltas"].shape[0])
        if not 0 <= n_shape <= n_avail:
            raise ValueError(f"ICT model file has {n_avail} identity modes, asked for n_shape={n_shape}; rebuild "
                             f"from a full ICT-FaceKit clone (TVFACE_ICT_SOURCE) for up to {ICT_N_IDENTITY_TOTAL}")
        if n_exp != N_EXPRESSIONS:
            raise ValueError(f"ICTModel drives ICT's {N_EXPRESSIONS} blendshapes; got n_exp={n_exp}")
        self.expression_names = tuple(str(s) for s in arrays["expression_names"])
        self.part_names = tuple(str(s) for s in arrays["part_names"])
        self.jaw_open_angle = float(arrays["jaw_open_angle"])
        self.jaw_yaw_angle = float(arrays["jaw_yaw_angle"])
        self._jaw_exp_idx = [self.expression_names.index(n) for n in ("jawOpen", "jawLeft", "jawRight")]
        std = torch.as_tensor(arrays["identity_std"][:n_shape], dtype=torch.float32)
        id_basis = torch.as_tensor(arrays["identity_deltas"][:n_shape], dtype=torch.float32) * std[:, None, None]
        face_part = torch.as_tensor(arrays["face_part"], dtype=torch.long)
        part_ids = {n: i for i, n in enumerate(self.part_names)}

        def parts_mask(names) -> Tensor:
            return torch.isin(face_part, torch.tensor([part_ids[n] for n in names]))

        self.register_buffer("template", torch.as_tensor(arrays["template"], dtype=torch.float32))
        self.register_buffer("identity_basis", id_basis)  # (n_shape, V, 3), one sigma per unit
        self.register_buffer("expression_basis", torch.as_tensor(arrays["expression_deltas"], dtype=torch.float32))
        self.register_buffer("faces", torch.as_tensor(arrays["faces"], dtype=torch.long))
        self.register_buffer("uv_coords", torch.as_tensor(arrays["uv_coords"], dtype=torch.float32))
        self.register_buffer("uv_faces", torch.as_tensor(arrays["uv_faces"], dtype=torch.long))
        self.register_buffer("face_part", face_part)
        self.register_buffer("face_poly", torch.as_tensor(arrays["face_poly"], dtype=torch.long))
        self.register_buffer("skin_faces", parts_mask(SKIN_PARTS))
        self.register_buffer("eyeball_faces", parts_mask(EYEBALL_PARTS))
        self.register_buffer("mouth_faces", parts_mask(MOUTH_PARTS))
        self.register_buffer("lmk_idx", torch.as_tensor(arrays["landmarks"], dtype=torch.long))
        self.register_buffer("contour_cand", torch.as_tensor(arrays["contour_candidates"], dtype=torch.long))
        self.register_buffer("contour_side", torch.as_tensor(arrays["contour_side"], dtype=torch.long))

    def expression_weights(self, exp: Tensor, pose: Tensor) -> Tensor:
        """(B, 53) blendshape weights with the jaw pose's contribution added."""
        jaw = jaw_pose_to_blendshapes(pose[:, 3:6], self.jaw_open_angle, self.jaw_yaw_angle)  # (B, 3)
        add = torch.zeros_like(exp)
        add[:, self._jaw_exp_idx] = jaw.to(exp.dtype)
        return exp + add

    def forward(self, shape: Tensor, exp: Tensor, pose: Tensor) -> FaceModelOutput:
        batch = self.check_params(shape, exp, pose)
        n_v = self.template.shape[0]
        weights = self.expression_weights(exp, pose)  # (B, 53)
        offsets = shape @ self.identity_basis.reshape(self.n_shape, n_v * 3) \
            + weights @ self.expression_basis.reshape(self.n_exp, n_v * 3)  # (B, V*3)
        verts = self.template[None] + offsets.view(batch, n_v, 3)  # (B, V, 3)
        rot = batch_rodrigues(pose[:, :3])  # (B, 3, 3), about the origin (jaw hinge)
        verts = verts @ rot.transpose(1, 2)
        lmks_3d = verts[:, self.lmk_idx]  # (B, 68, 3)
        contour = select_contour(verts, self.contour_cand, self.contour_side)  # (B, 17, 3)
        lmks_2d = torch.cat([contour, lmks_3d[:, 17:]], dim=1)  # (B, 68, 3)
        return FaceModelOutput(verts=verts, lmks_2d=lmks_2d, lmks_3d=lmks_3d)

    def uv_face_mask(self, size: int | tuple[int, int]) -> np.ndarray:
        """(H, W) float32 mask of the narrow face area in UV space (DECA's ``uv_face_mask``)."""
        sel = (self.face_poly < N_NARROW_FACE_POLYS).cpu().numpy()
        return rasterize_uv_mask(self.uv_coords.cpu().numpy(), self.uv_faces.cpu().numpy()[sel], size)

    def uv_face_eye_mask(self, size: int | tuple[int, int]) -> np.ndarray:
        """(H, W) float32 mask of the narrow face area plus the eyeballs (DECA's ``uv_face_eye_mask``)."""
        sel = ((self.face_poly < N_NARROW_FACE_POLYS) | self.eyeball_faces).cpu().numpy()
        return rasterize_uv_mask(self.uv_coords.cpu().numpy(), self.uv_faces.cpu().numpy()[sel], size)


def rasterize_uv_mask(uv_coords: np.ndarray, uv_faces: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Fill UV triangles into an (H, W) float32 {0, 1} mask; row 0 is v = 1 (image convention).

    Args:
        uv_coords: (Vt, 2) in [0, 1], origin bottom-left.
        uv_faces: (F, 3) triangles to fill.
        size: H = W, or (H, W).
    """
    import cv2

    h, w = (size, size) if isinstance(size, int) else size
    shift = 4  # sub-pixel precision bits for cv2.fillPoly
    px = np.stack([uv_coords[:, 0] * w, (1.0 - uv_coords[:, 1]) * h], axis=1) - 0.5
    pts = np.round(px[uv_faces] * (1 << shift)).astype(np.int32)  # (F, 3, 2)
    mask = np.zeros((h, w), dtype=np.uint8)
    cv2.fillPoly(mask, list(pts), 1, lineType=cv2.LINE_8, shift=shift)
    return mask.astype(np.float32)


def load_ict_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All arrays of a built ICT ``.npz`` (no pickles)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ICT model file not found at {path}. Build it with `tvface assets build-ict` "
                                "(from $TVFACE_ICT_SOURCE or the pinned download).")
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def load_ict_model(path: str | os.PathLike | None = None, n_shape: int = 30, n_exp: int = N_EXPRESSIONS) -> ICTModel:
    """Load a built ICT ``.npz`` (default: the ``ict_model`` asset) as an :class:`ICTModel`."""
    if path is None:
        from tvface import assets

        path = assets.require("ict_model")
    return ICTModel(load_ict_arrays(path), n_shape=n_shape, n_exp=n_exp)



def prepare_ict_model(out_path: str | os.PathLike, source: str | os.PathLike | None = None,
                      n_identity: int | None = None, force: bool = False) -> Path:
    """Make sure the built ICT model exists at ``out_path`` (what ``make`` and ``tvface assets build-ict`` call).

    Idempotent: an existing, readable file of the current format with at least ``n_identity`` modes is
    kept unless ``force``. The source is ``source`` (folder, zip or tarball), else a zip downloaded once
    into the assets folder at the pinned commit (:func:`download_ict_source`; offline this fails with a
    message saying to set ``TVFACE_ICT_SOURCE``).
    """
    from tvface import settings
    from tvface.face_models.ict_download import ICT_COMMIT, download_ict_source

    out_path = Path(out_path)
    if out_path.is_file() and not force:
        try:
            with np.load(out_path, allow_pickle=False) as f:
                current = int(f["format_version"]) == FORMAT_VERSION
                enough = n_identity is None or f["identity_deltas"].shape[0] >= n_identity
        except Exception:  # unreadable or half-written: rebuild below
            current = enough = False
        if current and enough:
            return out_path
    if source is None:
        cached = settings.assets_dir() / f"ICT-FaceKit-{ICT_COMMIT[:12]}.zip"
        source = cached if cached.is_file() else download_ict_source(settings.assets_dir())
    build_ict_model(source, out_path, n_identity=n_identity)
    return out_path
