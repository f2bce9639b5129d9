"""ICT-FaceKit fixtures: the shared archive, a model built from it once per session, fake OBJ trees."""
from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from tvface.face_models.ict import ICT_N_POLYS, ICT_N_UVS, ICT_N_VERTS, build_ict_model, load_ict_model

ICT_ARCHIVE = "assets/ict-facekit/ICT-FaceKit-subset.tar.xz"


@pytest.fixture(scope="session")
def ict_archive(shared_dir: Path) -> Path:
    path = shared_dir / ICT_ARCHIVE
    if not path.is_file():
        pytest.skip(f"ICT-FaceKit archive not found at {path} (set TVFACE_SHARED to the shared/ folder)")
    return path


@pytest.fixture(scope="session")
def ict_build(ict_archive: Path, tmp_path_factory) -> dict:
    """Build the real model once: the summary dict plus ``path``."""
    out = tmp_path_factory.mktemp("ict") / "ict_facekit_model.npz"
    summary = build_ict_model(ict_archive.parent, out)
    return {**summary, "path": out}


@pytest.fixture(scope="session")
def ict_model_file(ict_build: dict) -> Path:
    return ict_build["path"]


@pytest.fixture(scope="session")
def ict_model(ict_model_file: Path):
    return load_ict_model(ict_model_file, n_shape=30)


def fake_obj(n_verts: int = ICT_N_VERTS, n_uvs: int = ICT_N_UVS, n_polys: int = ICT_N_POLYS) -> bytes:
    """An OBJ with ICT's record counts (zeros, one repeated quad): enough to pass the count checks."""
    lines = ["# fake"] + ["v 0 0 0"] * n_verts + ["vt 0 0"] * n_uvs + ["f 1/1 2/2 3/3 4/4"] * n_polys
    return ("\n".join(lines) + "\n").encode()


def write_tree(root: Path, files: dict[str, bytes], top: str = "ICT-FaceKit") -> Path:
    """Write ``files`` under ``root/top/FaceXModel``; returns ``root/top``."""
    model = root / top / "FaceXModel"
    model.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (model / name).write_bytes(data)
    (root / top / "README.md").write_text("fake ICT-FaceKit\n")
    return root / top


def zip_bytes(files: dict[str, bytes], top: str = "ICT-FaceKit-da5f95a6") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{top}/README.md", "fake\n")
        for name, data in files.items():
            zf.writestr(f"{top}/FaceXModel/{name}", data)
    return buf.getvalue()


def tar_bytes(files: dict[str, bytes], mode: str = "w:xz", top: str = "ICT-FaceKit") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(f"{top}/FaceXModel/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()
