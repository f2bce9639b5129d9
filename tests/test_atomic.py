import numpy as np
import pytest

from tvface.io.atomic import atomic_open, atomic_save_npy, atomic_write_text


def test_atomic_write_replaces_only_on_success(tmp_path):
    p = tmp_path / "sub" / "f.txt"
    atomic_write_text(p, "first")
    with pytest.raises(RuntimeError), atomic_open(p, "wb") as f:
        f.write(b"half")
        raise RuntimeError("killed")
    assert p.read_text() == "first"
    assert [q.name for q in p.parent.iterdir()] == ["f.txt"]  # no temporary left behind


def test_atomic_npy_round_trip(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    atomic_save_npy(tmp_path / "a.npy", a)
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), a)
    with pytest.raises(ValueError):
        atomic_save_npy(tmp_path / "b.npy", np.array([object()], dtype=object))


def test_atomic_files_get_the_umask_permissions(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "shared.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "shared.txt").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
