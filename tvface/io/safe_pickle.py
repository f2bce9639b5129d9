"""Load pickle-based assets without executing pickled code.

Several assets tvface cannot ship are pickles: FLAME's ``generic_model.pkl`` (Python 2, protocol 2,
with ``chumpy.ch.Ch`` objects and a ``scipy.sparse.csc_matrix``), DECA's ``landmark_embedding.npy``
(an object-dtype ``.npy``, i.e. a pickled dict holding numpy arrays and torch tensors) and the
VGGFace2 ``resnet50_ft_weight.pkl`` (a pickled dict of numpy arrays). ``pickle.load`` on such a file
runs whatever callables the file names; here every global the file names must be on an allow list
(a *profile*), else :class:`UnsafePickleError` names the file and the refused global.

How the non-numpy objects are rebuilt without their libraries:

* ``chumpy.ch.Ch`` pickles as ``NEWOBJ(Ch)`` + ``BUILD(state)`` where ``state`` is the object's
  ``__dict__`` minus its weak-reference caches (``Ch.__getstate__``); the value lives under ``'x'``.
  A stand-in class collects the state and is replaced by ``np.asarray(state['x'])`` after loading.
* ``scipy.sparse.csc_matrix`` pickles the same way (``__dict__`` with ``data``, ``indices``,
  ``indptr``, ``_shape``). A stand-in collects it; the matrix is then rebuilt with the public
  ``csc_matrix((data, indices, indptr), shape)`` constructor, which validates the arrays.
* ``torch.storage._load_from_bytes`` holds a nested ``torch.save`` blob; it is loaded with
  ``torch.load(..., weights_only=True)`` (torch's own restricted unpickler).

Usage::

    model = safe_load_pickle(path, allow="flame")          # dict of ndarray / csc_matrix / str
    emb = load_npy_object(path)                            # landmark_embedding.npy -> dict
    weights = safe_load_pickle(path, allow="numpy")        # VGGFace2 resnet50_ft_weight.pkl
"""
from __future__ import annotations

import codecs
import collections
import io
import os
import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

PathLike = str | os.PathLike

# Python 2 pickles and NumPy 1 files say ``numpy.core``; NumPy 2 renamed it ``numpy._core``.
_NUMPY_CORE = ("numpy.core", "numpy._core")
_TEXT_CODECS = frozenset({"latin1", "latin-1", "iso-8859-1", "iso8859-1", "l1", "ascii", "utf-8", "utf8"})


class PickleLoadError(ValueError):
    """A pickle-based asset that cannot be loaded (corrupt, truncated or refused)."""


class UnsafePickleError(PickleLoadError, pickle.UnpicklingError):
    """A pickle names a global that is not on the allow list (it could run code)."""


# --------------------------------------------------------------------------- stand-ins
class _ChStandIn:
    """Collects a ``chumpy.ch.Ch`` object's pickled state; replaced by ``state['x']`` after loading."""

    __slots__ = ("state",)

    def __new__(cls, *args, **kwargs):
        obj = super().__new__(cls)
        obj.state = {}
        return obj

    def __setstate__(self, state: Any) -> None:
        # Ch.__getstate__ returns a dict; protocol 2 may also send (dict, slotstate).
        if isinstance(state, tuple) and len(state) == 2:
            state = {**(state[0] or {}), **(state[1] or {})}
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"chumpy Ch state must be a dict, got {type(state).__name__}")
        self.state = state


class _CscStandIn(_ChStandIn):
    """Collects a ``scipy.sparse.csc_matrix``'s pickled ``__dict__``; rebuilt after loading."""

    __slots__ = ()


def _safe_codecs_encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as Python 3 writes ``bytes`` at protocol < 3, text codecs only."""
    if not isinstance(obj, str) or encoding.lower() not in _TEXT_CODECS:
        raise pickle.UnpicklingError(f"_codecs.encode is only allowed on text with a text codec, got {encoding!r}")
    return codecs.encode(obj, encoding, errors)


def _safe_load_from_bytes(blob: bytes):
    """``torch.storage._load_from_bytes`` through torch's weights-only unpickler."""
    import torch

    if not isinstance(blob, (bytes, bytearray)):
        raise pickle.UnpicklingError("torch.storage._load_from_bytes expects bytes")
    try:
        return torch.load(io.BytesIO(bytes(blob)), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as e:
        raise _NestedRefused(f"a nested torch.save blob was refused by torch's weights-only loader: {e}") from None


class _NestedRefused(pickle.UnpicklingError):
    """Raised inside a nested loader; re-raised as UnsafePickleError naming the outer file."""


def _rebuild_tensor_v2(*args, **kwargs):
    import torch._utils

    return torch._utils._rebuild_tensor_v2(*args, **kwargs)


def _numpy_core(attr: str) -> Any:
    """``numpy._core.<multiarray|numeric>.attr`` (NumPy 2) or ``numpy.core...`` (NumPy 1)."""
    import importlib

    core = "numpy._core" if int(np.__version__.split(".")[0]) >= 2 else "numpy.core"
    for sub in ("multiarray", "numeric"):
        module = importlib.import_module(f"{core}.{sub}")
        if hasattr(module, attr):
            return getattr(module, attr)
    raise AttributeError(f"{core} has no {attr}")


# --------------------------------------------------------------------------- profiles
def _numpy_globals() -> dict[tuple[str, str], Any]:
    out: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _safe_codecs_encode,
    }
    for core in _NUMPY_CORE:
        out[(f"{core}.multiarray", "_reconstruct")] = _numpy_core("_reconstruct")
        out[(f"{core}.multiarray", "scalar")] = _numpy_core("scalar")
        # Protocol-5 pickles of contiguous arrays (NumPy >= 1.16): frombuffer + reshape.
        out[(f"{core}.numeric", "_frombuffer")] = _numpy_core("_frombuffer")
    # Dtype classes NumPy 2 pickles for ``np.dtype`` objects (``numpy.dtypes.Float64DType`` ...).
    import numpy.dtypes

    for name in dir(numpy.dtypes):
        if name.endswith("DType") and name != "StringDType":
            out[("numpy.dtypes", name)] = getattr(numpy.dtypes, name)
    return out


def _flame_globals() -> dict[tuple[str, str], Any]:
    out = _numpy_globals()
    out[("chumpy.ch", "Ch")] = _ChStandIn
    for module in ("scipy.sparse.csc", "scipy.sparse._csc"):
        out[(module, "csc_matrix")] = _CscStandIn
    # Ch state holds ``_dirty_vars``: a set (Python 2 writes ``__builtin__.set``).
    for module in ("__builtin__", "builtins"):
        out[(module, "set")] = set
        out[(module, "frozenset")] = frozenset
    return out


def _landmark_embedding_globals() -> dict[tuple[str, str], Any]:
    out = _numpy_globals()
    out[("collections", "OrderedDict")] = collections.OrderedDict
    out[("torch._utils", "_rebuild_tensor_v2")] = _rebuild_tensor_v2
    out[("torch.storage", "_load_from_bytes")] = _safe_load_from_bytes
    return out


_PROFILE_BUILDERS: dict[str, Callable[[], dict[tuple[str, str], Any]]] = {
    "numpy": _numpy_globals,  # dicts/lists of numpy arrays (VGGFace2 resnet50_ft_weight.pkl)
    "flame": _flame_globals,  # FLAME generic_model.pkl
    "landmark_embedding": _landmark_embedding_globals,  # DECA landmark_embedding.npy
}
PROFILES = tuple(_PROFILE_BUILDERS)


def allowed_globals(allow: str | Mapping[tuple[str, str], Any]) -> dict[tuple[str, str], Any]:
    """The ``(module, name) -> object`` allow list of a profile name (or a mapping, returned as is)."""
    if isinstance(allow, str):
        if allow not in _PROFILE_BUILDERS:
            raise KeyError(f"unknown pickle allow profile {allow!r}; known: {list(PROFILES)}")
        return _PROFILE_BUILDERS[allow]()
    return dict(allow)


# --------------------------------------------------------------------------- unpickler
class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` only returns allow-listed objects."""

    def __init__(self, file, *, allowed: Mapping[tuple[str, str], Any], source: str,
                 encoding: str = "latin1") -> None:
        super().__init__(file, encoding=encoding, fix_imports=False)
        self._allowed = allowed
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            pass
        raise UnsafePickleError(
            f"{self._source}: refusing to load: the pickle names the global {module}.{name}, which is not on "
            f"the allow list (loading it could run arbitrary code). If this file is the genuine asset, "
            f"report the global so it can be reviewed and allow-listed.")

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self._source}: refusing to load: the pickle uses persistent ids ({pid!r}); "
                                f"it is not a plain pickle (a torch.save archive? use torch.load(weights_only=True))")


def _finalize(obj: Any, source: str, memo: dict[int, Any] | None = None) -> Any:
    """Replace chumpy/scipy stand-ins (anywhere in dicts, lists, tuples) by arrays / sparse matrices."""
    memo = {} if memo is None else memo
    key = id(obj)
    if key in memo:
        return memo[key]
    if isinstance(obj, _CscStandIn):
        out = _rebuild_csc(obj.state, source)
    elif isinstance(obj, _ChStandIn):
        if "x" not in obj.state:
            raise PickleLoadError(f"{source}: a chumpy Ch object has no 'x' entry in its state "
                                  f"(keys {sorted(map(str, obj.state))}); only plain Ch arrays are supported")
        out = np.asarray(_finalize(obj.state["x"], source, memo))
    elif isinstance(obj, dict):
        out = type(obj)((k, _finalize(v, source, memo)) for k, v in obj.items())
    elif isinstance(obj, list):
        out = [_finalize(v, source, memo) for v in obj]
    elif isinstance(obj, tuple):
        out = tuple(_finalize(v, source, memo) for v in obj)
    else:
        out = obj
    memo[key] = out
    return out


def _rebuild_csc(state: dict, source: str):
    import scipy.sparse

    try:
        data = np.asarray(state["data"])
        indices = np.asarray(state["indices"])
        indptr = np.asarray(state["indptr"])
        shape = tuple(int(s) for s in state.get("_shape", state.get("shape")))
    except (KeyError, TypeError, ValueError) as e:
        raise PickleLoadError(f"{source}: a scipy csc_matrix has an unexpected state "
                              f"(keys {sorted(map(str, state))}): {e}") from None
    fmt = state.get("format", "csc")
    if fmt != "csc" or len(shape) != 2:
        raise PickleLoadError(f"{source}: expected a 2-D csc sparse matrix, got format {fmt!r}, shape {shape}")
    try:
        return scipy.sparse.csc_matrix((data, indices, indptr), shape=shape)
    except (ValueError, TypeError) as e:
        raise PickleLoadError(f"{source}: inconsistent csc_matrix arrays: {e}") from None


# --------------------------------------------------------------------------- public loaders
def safe_loads_pickle(data: bytes, allow: str | Mapping[tuple[str, str], Any] = "numpy", *,
                      source: str = "<bytes>", encoding: str = "latin1") -> Any:
    """Unpickle bytes with only the globals of ``allow``; see :func:`safe_load_pickle`."""
    return _load_stream(io.BytesIO(data), allowed_globals(allow), source, encoding)


def safe_load_pickle(path: PathLike, allow: str | Mapping[tuple[str, str], Any] = "numpy", *,
                     encoding: str = "latin1") -> Any:
    """Load a pickle file refusing every global outside the ``allow`` profile.

    Args:
        path: the pickle file.
        allow: a profile name (``"numpy"``, ``"flame"``, ``"landmark_embedding"``) or a mapping
            ``(module, name) -> object`` to hand out for that global.
        encoding: how Python 2 ``str`` objects are decoded (``latin1`` keeps NumPy buffers intact).
    Returns:
        The unpickled object, with chumpy ``Ch`` objects replaced by numpy arrays and csc matrices
        rebuilt as ``scipy.sparse.csc_matrix``.
    Raises:
        FileNotFoundError: no such file.
        UnsafePickleError: the file names a global outside the allow list (nothing was executed).
        PickleLoadError: the file is truncated or is not a pickle.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pickle file not found: {path}")
    allowed = allowed_globals(allow)
    with open(path, "rb") as f:
        return _load_stream(f, allowed, str(path), encoding)


def _load_stream(f, allowed: Mapping[tuple[str, str], Any], source: str, encoding: str) -> Any:
    try:
        obj = RestrictedUnpickler(f, allowed=allowed, source=source, encoding=encoding).load()
    except PickleLoadError:
        raise
    except _NestedRefused as e:
        raise UnsafePickleError(f"{source}: refusing to load: {e}") from None
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, KeyError, IndexError, AttributeError,
            UnicodeDecodeError, RuntimeError, MemoryError, OverflowError) as e:
        kind = "truncated" if isinstance(e, EOFError) else "corrupt or not a pickle"
        raise PickleLoadError(f"{source}: cannot be unpickled ({kind}: {type(e).__name__}: {e}). "
                              f"Download the file again.") from e
    return _finalize(obj, source)


def load_npy_object(path: PathLike, allow: str | Mapping[tuple[str, str], Any] = "landmark_embedding") -> Any:
    """Load a ``.npy`` file; object arrays go through the restricted unpickler.

    ``np.save`` of a dict writes a 0-d object array whose payload is a pickle; the dict itself is
    returned (as ``np.load(path, allow_pickle=True)[()]`` would, but without running pickled code).
    Non-object ``.npy`` files are loaded with ``allow_pickle=False``.
    """
    from numpy.lib import format as npy_format

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f".npy file not found: {path}")
    with open(path, "rb") as f:
        try:
            version = npy_format.read_magic(f)
            if version == (1, 0):
                shape, _fortran, dtype = npy_format.read_array_header_1_0(f)
            elif version in ((2, 0), (3, 0)):
                shape, _fortran, dtype = npy_format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
        except (ValueError, EOFError, SyntaxError) as e:
            raise PickleLoadError(f"{path}: not a valid .npy file ({e}). Download the file again.") from e
        if not dtype.hasobject:
            f.seek(0)
            try:
                return np.load(f, allow_pickle=False)
            except (ValueError, EOFError, OSError) as e:
                raise PickleLoadError(f"{path}: truncated or corrupt .npy ({e}). Download the file again.") from e
        arr = _load_stream(f, allowed_globals(allow), str(path), "latin1")
    if isinstance(arr, np.ndarray) and arr.dtype.hasobject and arr.shape == () and shape == ():
        return arr[()]
    if not isinstance(arr, np.ndarray) or arr.shape != tuple(shape):
        raise PickleLoadError(f"{path}: header says an object array of shape {shape}, the payload is "
                              f"{type(arr).__name__} {getattr(arr, 'shape', '')}")
    return arr
