"""The restricted unpickler: real asset layouts load, anything that could run code is refused."""
from __future__ import annotations

import builtins
import collections
import io
import os
import pickle
import subprocess

import numpy as np
import pytest
import torch
from _flame_fixtures import Ch, CscMatrix, dump_py2_pickle, flame_topology_dir

from tvface.io.safe_pickle import (
    PROFILES,
    PickleLoadError,
    UnsafePickleError,
    load_npy_object,
    safe_load_pickle,
    safe_loads_pickle,
)

TOPOLOGY = flame_topology_dir()
needs_topology = pytest.mark.skipif(TOPOLOGY is None, reason="shared FLAME-topology files not available")


class _Reduce:
    """Pickles as ``func(*args)``: what a malicious file does."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _attacks(marker):
    return {
        "os.system": _Reduce(os.system, (f"touch {marker}",)),
        "builtins.eval": _Reduce(builtins.eval, (f"open({str(marker)!r}, 'w').close()",)),
        "subprocess.Popen": _Reduce(subprocess.Popen, (["touch", str(marker)],)),
    }


# --------------------------------------------------------------------------- real layouts
@needs_topology
def test_landmark_embedding_loads_with_deca_keys_and_shapes():
    path = TOPOLOGY / "landmark_embedding.npy"
    emb = load_npy_object(path)
    shapes = {k: tuple(v.shape) for k, v in emb.items()}
    assert shapes == {
        "static_lmk_faces_idx": (51,), "static_lmk_bary_coords": (51, 3),
        "dynamic_lmk_faces_idx": (79, 17), "dynamic_lmk_bary_coords": (79, 17, 3),
        "full_lmk_faces_idx": (1, 68), "full_lmk_bary_coords": (1, 68, 3),
    }
    # The nested torch.save blobs came back as tensors, as with DECA's np.load(allow_pickle=True).
    assert isinstance(emb["dynamic_lmk_faces_idx"], torch.Tensor)
    trusted = np.load(path, allow_pickle=True, encoding="latin1")[()]
    for k, v in emb.items():
        np.testing.assert_array_equal(np.asarray(v), np.asarray(trusted[k]))


def test_flame_style_py2_pickle_rebuilds_ch_and_csc(tmp_path):
    dense = np.array([[0.0, 0.5, 0.5], [1.0, 0.0, 0.0]])
    x = np.arange(6.0).reshape(2, 3)
    path = tmp_path / "model.pkl"
    dump_py2_pickle({"shapedirs": Ch(x), "J_regressor": CscMatrix(dense), "f": np.arange(3, dtype=np.uint32),
                     "bs_style": "lbs"}, path)
    assert b"chumpy.ch\nCh\n" in path.read_bytes() and b"scipy.sparse.csc\ncsc_matrix\n" in path.read_bytes()
    out = safe_load_pickle(path, allow="flame")
    np.testing.assert_array_equal(out["shapedirs"], x)
    assert isinstance(out["shapedirs"], np.ndarray)
    np.testing.assert_array_equal(out["J_regressor"].toarray(), dense)
    np.testing.assert_array_equal(out["f"], np.arange(3))
    assert out["bs_style"] == "lbs"


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_vggface2_style_dict_of_arrays_loads(tmp_path, protocol):
    rng = np.random.default_rng(0)
    weights = {"conv1.weight": rng.normal(size=(64, 3, 7, 7)).astype(np.float32),
               "bn1.running_mean": rng.normal(size=64), "fc.bias": np.arange(10, dtype=np.int64)}
    path = tmp_path / "resnet50_ft_weight.pkl"
    path.write_bytes(pickle.dumps(weights, protocol=protocol))
    out = safe_load_pickle(path, allow="numpy")
    assert out.keys() == weights.keys()
    for k, w in weights.items():
        assert out[k].dtype == w.dtype
        np.testing.assert_array_equal(out[k], w)


def test_object_npy_with_torch_tensors_loads(tmp_path):
    path = tmp_path / "emb.npy"
    np.save(path, {"a": torch.arange(5), "b": np.eye(2)}, allow_pickle=True)
    out = load_npy_object(path)
    assert torch.equal(out["a"], torch.arange(5))
    np.testing.assert_array_equal(out["b"], np.eye(2))


def test_plain_npy_loads_without_pickle(tmp_path):
    path = tmp_path / "disp.npy"
    np.save(path, np.arange(12.0).reshape(3, 4))
    np.testing.assert_array_equal(load_npy_object(path), np.arange(12.0).reshape(3, 4))


# --------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("attack", ["os.system", "builtins.eval", "subprocess.Popen"])
@pytest.mark.parametrize("profile", PROFILES)
def test_code_execution_is_refused_and_nothing_runs(tmp_path, attack, profile):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    data = pickle.dumps({"x": np.zeros(2), "y": _attacks(marker)[attack]}, protocol=2, fix_imports=False)
    path.write_bytes(data)
    with pytest.raises(UnsafePickleError) as err:
        safe_load_pickle(path, allow=profile)
    assert not marker.exists()
    msg = str(err.value)
    assert str(path) in msg
    refused = {"os.system": "posix.system", "builtins.eval": "builtins.eval", "subprocess.Popen": "subprocess.Popen"}
    assert f"global {refused[attack]}" in msg


def test_code_in_object_npy_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "landmark_embedding.npy"
    np.save(path, {"static_lmk_faces_idx": _attacks(marker)["os.system"]}, allow_pickle=True)
    with pytest.raises(UnsafePickleError, match="landmark_embedding.npy"):
        load_npy_object(path)
    assert not marker.exists()


def test_code_in_nested_torch_blob_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    blob = pickle.dumps(_attacks(marker)["os.system"], protocol=2)
    evil = _Reduce(torch.storage._load_from_bytes, (blob,))
    path = tmp_path / "landmark_embedding.npy"
    np.save(path, {"dynamic_lmk_faces_idx": evil}, allow_pickle=True)
    with pytest.raises(UnsafePickleError, match="landmark_embedding.npy"):
        load_npy_object(path)
    assert not marker.exists()


def test_unlisted_global_is_refused_with_its_name(tmp_path):
    path = tmp_path / "resnet50_ft_weight.pkl"
    path.write_bytes(pickle.dumps(collections.OrderedDict(a=np.zeros(1)), protocol=2))
    with pytest.raises(UnsafePickleError, match=r"collections\.OrderedDict"):
        safe_load_pickle(path, allow="numpy")
    # ... but the landmark profile lists it.
    assert list(safe_load_pickle(path, allow="landmark_embedding")) == ["a"]


def test_torch_tensor_is_not_allowed_in_flame_profile(tmp_path):
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(pickle.dumps({"v_template": torch.zeros(3)}, protocol=2))
    with pytest.raises(UnsafePickleError, match=r"generic_model\.pkl.*torch"):
        safe_load_pickle(path, allow="flame")


# --------------------------------------------------------------------------- corrupt files
def test_truncated_pickle_names_the_file(tmp_path):
    path = tmp_path / "resnet50_ft_weight.pkl"
    data = pickle.dumps({"w": np.arange(1000.0)}, protocol=2)
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(PickleLoadError, match=r"resnet50_ft_weight\.pkl.*truncated"):
        safe_load_pickle(path)


def test_garbage_and_missing_files(tmp_path):
    path = tmp_path / "junk.pkl"
    path.write_bytes(b"this is not a pickle at all")
    with pytest.raises(PickleLoadError, match=r"junk\.pkl"):
        safe_load_pickle(path)
    with pytest.raises(FileNotFoundError, match="nothere.pkl"):
        safe_load_pickle(tmp_path / "nothere.pkl")
    npy = tmp_path / "bad.npy"
    npy.write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(PickleLoadError, match=r"bad\.npy"):
        load_npy_object(npy)


def test_truncated_object_npy_names_the_file(tmp_path):
    path = tmp_path / "landmark_embedding.npy"
    np.save(path, {"a": np.arange(100)}, allow_pickle=True)
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(PickleLoadError, match=r"landmark_embedding\.npy"):
        load_npy_object(path)


def test_ch_without_array_and_bad_csc_are_errors(tmp_path):
    ch = Ch(np.zeros(2))
    del ch.x
    path = tmp_path / "noch.pkl"
    dump_py2_pickle({"v": ch}, path)
    with pytest.raises(PickleLoadError, match=r"noch\.pkl.*'x'"):
        safe_load_pickle(path, allow="flame")

    csc = CscMatrix(np.eye(3))
    csc.indptr = csc.indptr[:-1]  # inconsistent with the shape
    path = tmp_path / "badcsc.pkl"
    dump_py2_pickle({"J_regressor": csc}, path)
    with pytest.raises(PickleLoadError, match=r"badcsc\.pkl"):
        safe_load_pickle(path, allow="flame")


def test_unknown_profile_and_bytes_api():
    with pytest.raises(KeyError, match="unknown pickle allow profile"):
        safe_loads_pickle(pickle.dumps(1), allow="everything")
    buf = io.BytesIO()
    np.save(buf, np.ones(2))
    assert safe_loads_pickle(pickle.dumps([np.ones(2)], protocol=2), allow="numpy")[0].sum() == 2
