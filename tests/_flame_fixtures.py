"""A generated FLAME-format model, written the way FLAME's ``generic_model.pkl`` is.

The real file was pickled by Python 2 (protocol 2) with chumpy installed: arrays are wrapped in
``chumpy.ch.Ch`` objects (``NEWOBJ`` of the class, then ``BUILD`` with the object's ``__dict__``
minus its weak-reference caches, the array under ``'x'``; see chumpy's ``Ch.__getstate__``),
``J_regressor`` is a ``scipy.sparse.csc.csc_matrix`` pickled the same way, NumPy arrays reduce to
``numpy.core.multiarray._reconstruct`` and byte buffers are Python 2 ``str`` (``BINSTRING``).

:class:`Py2Pickler` reproduces exactly those opcodes and global names from Python 3 (stand-in
classes carry the names ``chumpy.ch.Ch`` / ``scipy.sparse.csc.csc_matrix``; no module is
installed or put in ``sys.modules``), so the restricted loader is tested on the real layout.

Geometry: the real FLAME topology (``head_template.obj``: 5023 vertices, 9976 triangles) from the
shared assets when present, else a small synthetic head; random small shape/pose bases; a
5-joint skeleton (global, neck, jaw, left eye, right eye) regressed from vertex groups; skinning
weights putting the lower face on the jaw and the eyeballs on the eyes.
"""
from __future__ import annotations

import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

N_SHAPEDIRS = 400  # 300 identity + 100 expression
N_POSEDIRS = 36
ROOT_PARENT_U32 = 4294967295  # kintree_table[0, 0] in FLAME's pickle
TOPOLOGY_FILES = ("head_template.obj", "landmark_embedding.npy")


def shared_dir() -> Path | None:
    """``$TVFACE_SHARED``, else /work/shared, else ../shared next to the repository."""
    env = os.environ.get("TVFACE_SHARED")
    candidates = [Path(env)] if env else [Path("/work/shared"), Path(__file__).resolve().parents[2] / "shared"]
    for c in candidates:
        if c.is_dir():
            return c
    return None


def flame_topology_dir() -> Path | None:
    """Folder with DECA's FLAME-topology files, or None when they are not available."""
    root = shared_dir()
    d = root / "assets" / "flame-topology" if root else None
    return d if d is not None and all((d / f).is_file() for f in TOPOLOGY_FILES) else None


# --------------------------------------------------------------------------- py2-style pickling
class Ch:
    """Stand-in for ``chumpy.ch.Ch``: same pickled name and state layout."""

    def __init__(self, x: np.ndarray) -> None:
        # The attributes chumpy's Ch.__new__ sets, minus _parents/_cache (dropped by __getstate__).
        self._dirty_vars = set()
        self._itr = None
        self._make_dense = False
        self._make_sparse = False
        self._depends_on_deps = {}
        self.x = np.asarray(x, dtype=np.float64)

    def __reduce_ex__(self, protocol):
        # object.__reduce_ex__(2) for a plain class: NEWOBJ(cls) then BUILD(__dict__).
        return (_newobj, (type(self),), dict(self.__dict__))


class CscMatrix:
    """Stand-in for ``scipy.sparse.csc.csc_matrix`` as scipy 0.x pickled it (its ``__dict__``)."""

    def __init__(self, dense: np.ndarray) -> None:
        import scipy.sparse

        m = scipy.sparse.csc_matrix(dense)
        self.format = "csc"
        self._shape = tuple(int(s) for s in m.shape)
        self.maxprint = 50
        self.indices = m.indices.astype(np.int32)
        self.indptr = m.indptr.astype(np.int32)
        self.data = m.data.astype(np.float64)

    def __reduce_ex__(self, protocol):
        return (_newobj, (type(self),), dict(self.__dict__))


def _newobj(cls, *args):  # the name pickle recognises for NEWOBJ
    return cls.__new__(cls, *args)


_newobj.__name__ = "__newobj__"

# Python 3 object -> the global name a Python 2 pickle of the real object carries.
_PY2_NAMES = {
    Ch: ("chumpy.ch", "Ch"),
    CscMatrix: ("scipy.sparse.csc", "csc_matrix"),
    set: ("__builtin__", "set"),
}


class Py2Pickler(pickle._Pickler):
    """Protocol-2 pickler that writes Python 2 names: ``numpy.core``, ``__builtin__``, ``str`` buffers."""

    dispatch: ClassVar[dict] = dict(pickle._Pickler.dispatch)

    def __init__(self, file) -> None:
        super().__init__(file, protocol=2)

    def save_global(self, obj, name=None):
        module, qualname = _PY2_NAMES.get(obj, (getattr(obj, "__module__", None), name or obj.__qualname__))
        if module.startswith("numpy._core"):
            module = "numpy.core" + module[len("numpy._core"):]
        self.write(pickle.GLOBAL + f"{module}\n{qualname}\n".encode("ascii"))
        self.memoize(obj)

    def save_py2_str(self, obj: bytes):
        """Python 2 ``str``: SHORT_BINSTRING / BINSTRING (decoded with ``encoding='latin1'``)."""
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def dump_py2_pickle(obj, path: Path) -> None:
    with open(path, "wb") as f:
        Py2Pickler(f).dump(obj)


# --------------------------------------------------------------------------- geometry
@dataclass(frozen=True)
class Topology:
    verts: np.ndarray  # (V, 3)
    faces: np.ndarray  # (F, 3)
    uvs: np.ndarray  # (Vt, 2)
    uv_faces: np.ndarray  # (F, 3)
    eye_l: np.ndarray  # vertex ids
    eye_r: np.ndarray


def _read_template(path: Path) -> Topology:
    v, vt, f, ft = [], [], [], []
    for line in path.read_text().splitlines():
        if line.startswith("v "):
            v.append([float(x) for x in line.split()[1:4]])
        elif line.startswith("vt "):
            vt.append([float(x) for x in line.split()[1:3]])
        elif line.startswith("f "):
            corners = [c.split("/") for c in line.split()[1:]]
            f.append([int(c[0]) - 1 for c in corners])
            ft.append([int(c[1]) - 1 for c in corners])
    verts = np.array(v)
    # FLAME's generic model has the head near the origin; DECA's template OBJ is lifted by ~1.5 m.
    verts = verts - np.array([0.0, 1.5, 0.0])
    return Topology(verts, np.array(f), np.array(vt), np.array(ft), np.arange(3931, 4477), np.arange(4477, 5023))


def _sphere(n_lat: int, n_lon: int, radius: float, center) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Closed UV sphere: verts (V, 3), faces (F, 3), per-vertex uv (V, 2)."""
    lat = np.linspace(0, np.pi, n_lat + 2)[1:-1]
    lon = np.linspace(0, 2 * np.pi, n_lon, endpoint=False)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    ring = np.stack([np.sin(la) * np.sin(lo), np.cos(la), np.sin(la) * np.cos(lo)], -1).reshape(-1, 3)
    verts = np.concatenate([[[0, 1, 0]], ring, [[0, -1, 0]]]) * radius + np.asarray(center)
    faces = []

    def idx(i, j):
        return 1 + i * n_lon + (j % n_lon)

    for j in range(n_lon):
        faces.append([0, idx(0, j), idx(0, j + 1)])
        faces.append([len(verts) - 1, idx(n_lat - 1, j + 1), idx(n_lat - 1, j)])
    for i in range(n_lat - 1):
        for j in range(n_lon):
            faces.append([idx(i, j), idx(i + 1, j), idx(i + 1, j + 1)])
            faces.append([idx(i, j), idx(i + 1, j + 1), idx(i, j + 1)])
    uv = np.stack([(np.arctan2(verts[:, 0] - center[0], verts[:, 2] - center[2]) / (2 * np.pi)) % 1.0,
                   (verts[:, 1] - center[1]) / (2 * radius) + 0.5], 1)
    return verts, np.array(faces), uv


def synthetic_topology() -> Topology:
    """A small head: a sphere (radius 0.1 m) plus two eyeball spheres, vertex UVs."""
    head_v, head_f, head_uv = _sphere(12, 16, 0.1, (0.0, 0.0, 0.0))
    parts_v, parts_f, parts_uv, ids = [head_v], [head_f], [head_uv], []
    offset = len(head_v)
    for x in (0.03, -0.03):  # +x is the subject's left
        ev, ef, euv = _sphere(4, 6, 0.012, (x, 0.03, 0.09))
        parts_v.append(ev)
        parts_f.append(ef + offset)
        parts_uv.append(euv)
        ids.append(np.arange(offset, offset + len(ev)))
        offset += len(ev)
    faces = np.concatenate(parts_f)
    return Topology(np.concatenate(parts_v), faces, np.concatenate(parts_uv), faces.copy(), ids[0], ids[1])


def load_topology(prefer_flame: bool = True) -> Topology:
    d = flame_topology_dir() if prefer_flame else None
    return _read_template(d / "head_template.obj") if d else synthetic_topology()


def _smoothstep(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def skeleton(topo: Topology) -> tuple[np.ndarray, np.ndarray]:
    """J_regressor (5, V) averaging vertex groups and skinning weights (V, 5).

    Joints: 0 global (base of the neck), 1 neck, 2 jaw (hinge below the ears), 3/4 eyeball centres.
    """
    v = topo.verts
    n = len(v)
    eyes = np.zeros(n, bool)
    eyes[topo.eye_l] = True
    eyes[topo.eye_r] = True
    head = ~eyes
    y = v[:, 1]
    y_lo, y_hi = np.quantile(y[head], [0.0, 1.0])
    height = y_hi - y_lo
    groups = [
        head & (y < y_lo + 0.08 * height),  # neck base
        head & (y >= y_lo + 0.08 * height) & (y < y_lo + 0.2 * height),  # neck
        head & (np.abs(y - (y_lo + 0.45 * height)) < 0.08 * height) & (v[:, 2] < np.median(v[head, 2])),  # jaw hinge
        np.isin(np.arange(n), topo.eye_l),
        np.isin(np.arange(n), topo.eye_r),
    ]
    J_regressor = np.zeros((5, n))
    for j, g in enumerate(groups):
        ids = np.flatnonzero(g)
        if ids.size == 0:  # tiny synthetic mesh: the vertices nearest to the band
            ids = np.argsort(np.abs(y - (y_lo + 0.1 * (j + 1) * height)))[:4]
        J_regressor[j, ids] = 1.0 / ids.size

    weights = np.zeros((n, 5))
    # root -> neck over the lower neck, jaw on the front lower face, eyes rigid.
    neck_to_head = _smoothstep(y, y_lo + 0.05 * height, y_lo + 0.15 * height)
    front = _smoothstep(v[:, 2], np.quantile(v[head, 2], 0.4), np.quantile(v[head, 2], 0.7))
    jaw = _smoothstep(-y, -(y_lo + 0.5 * height), -(y_lo + 0.35 * height)) * front * neck_to_head
    weights[:, 0] = 1.0 - neck_to_head
    weights[:, 1] = neck_to_head - jaw
    weights[:, 2] = jaw
    weights[eyes] = 0.0
    weights[topo.eye_l, 3] = 1.0
    weights[topo.eye_r, 4] = 1.0
    return J_regressor, weights


def make_flame_model(topo: Topology, seed: int = 0) -> dict:
    """The FLAME-format dict (plain numpy values), keys as in generic_model.pkl."""
    rng = np.random.default_rng(seed)
    n = len(topo.verts)
    J_regressor, weights = skeleton(topo)
    shapedirs = rng.normal(scale=1e-3, size=(n, 3, N_SHAPEDIRS)) / np.sqrt(1 + np.arange(N_SHAPEDIRS) % 300)
    posedirs = rng.normal(scale=1e-3, size=(n, 3, N_POSEDIRS))
    return {
        "v_template": topo.verts.astype(np.float64),
        "f": topo.faces.astype(np.uint32),
        "shapedirs": shapedirs,
        "posedirs": posedirs,
        "J_regressor": J_regressor,
        "weights": weights,
        "kintree_table": np.array([[ROOT_PARENT_U32, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64),
        "J": J_regressor @ topo.verts,
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }


def write_flame_pkl(path: Path, model: dict) -> Path:
    """Pickle ``model`` as FLAME's file: Ch-wrapped arrays, csc J_regressor, Python 2 protocol 2."""
    wrapped = dict(model)
    for key in ("v_template", "shapedirs", "posedirs", "J", "weights"):
        if key in model:
            wrapped[key] = Ch(model[key])
    if "J_regressor" in model:
        wrapped["J_regressor"] = CscMatrix(model["J_regressor"])
    dump_py2_pickle(wrapped, path)
    return path


def write_obj(path: Path, topo: Topology) -> Path:
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in topo.verts]
    lines += [f"vt {u:.6f} {v:.6f}" for u, v in topo.uvs]
    lines += [f"f {a + 1}/{ta + 1} {b + 1}/{tb + 1} {c + 1}/{tc + 1}"
              for (a, b, c), (ta, tb, tc) in zip(topo.faces, topo.uv_faces)]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_landmark_embedding(path: Path, n_faces: int, seed: int = 0) -> Path:
    """A DECA-format embedding (object .npy; dynamic tables as torch tensors) for a synthetic mesh."""
    import torch

    rng = np.random.default_rng(seed)

    def bary(*shape):
        b = rng.uniform(0.1, 1.0, size=(*shape, 3))
        return b / b.sum(-1, keepdims=True)

    emb = {
        "static_lmk_faces_idx": rng.integers(0, n_faces, 51).astype(np.int64),
        "static_lmk_bary_coords": bary(51),
        "dynamic_lmk_faces_idx": torch.from_numpy(rng.integers(0, n_faces, (79, 17)).astype(np.int64)),
        "dynamic_lmk_bary_coords": torch.from_numpy(bary(79, 17).astype(np.float32)),
        "full_lmk_faces_idx": rng.integers(0, n_faces, (1, 68)).astype(np.int64),
        "full_lmk_bary_coords": bary(1, 68).astype(np.float32),
    }
    np.save(path, emb, allow_pickle=True)
    return path


@dataclass(frozen=True)
class FlameFiles:
    model_path: Path
    embedding_path: Path
    template_obj_path: Path
    model: dict  # the arrays written (plain numpy)
    topology: Topology
    real_topology: bool


def write_flame_files(folder: Path, seed: int = 0, prefer_flame: bool = True) -> FlameFiles:
    """Write ``generic_model.pkl``, ``landmark_embedding.npy`` and ``head_template.obj`` into ``folder``.

    The file names are :mod:`tvface.assets`' so ``folder`` works as an assets root.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    topo_dir = flame_topology_dir() if prefer_flame else None
    topo = load_topology(prefer_flame)
    model = make_flame_model(topo, seed)
    model_path = write_flame_pkl(folder / "generic_model.pkl", model)
    obj_path = folder / "head_template.obj"
    emb_path = folder / "landmark_embedding.npy"
    if topo_dir:
        obj_path.write_bytes((topo_dir / "head_template.obj").read_bytes())
        emb_path.write_bytes((topo_dir / "landmark_embedding.npy").read_bytes())
    else:
        write_obj(obj_path, topo)
        write_landmark_embedding(emb_path, len(topo.faces), seed)
    return FlameFiles(model_path, emb_path, obj_path, model, topo, real_topology=topo_dir is not None)
