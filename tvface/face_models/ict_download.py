"""ICT-FaceKit sources: read a folder, a zip or a tarball alike, or download the pinned commit.

The converter (:func:`tvface.face_models.ict.build_ict_model`) only needs the ``FaceXModel/`` files.
They are read straight out of an archive (``zipfile``/``tarfile`` streams), never unpacked next to
the source, which may be read-only (CI's ``shared/``).

Download: GitHub serves any commit as a zip (``archive/<commit>.zip``). GitHub generates these zips
on the fly and does not promise byte-stable output, and this project was written offline, so
:data:`ICT_ZIP_SHA256` is ``None`` ("unverified"): the archive's *content* is checked instead (the
required OBJs must be present and the builder checks every vertex/UV/polygon count). Pass
``sha256=`` to pin a digest you have seen; a mismatch is then an error.
"""
from __future__ import annotations

import hashlib
import io
import lzma
import os
import tarfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

from tvface.io.atomic import atomic_write_bytes

ICT_COMMIT = "da5f95a607f5e6b37755b38d3385d7f2853732e5"
ICT_ZIP_URL = f"https://github.com/ICT-VGL/ICT-FaceKit/archive/{ICT_COMMIT}.zip"
# None = unverified: GitHub's generated zips are not guaranteed byte-stable (see module docstring).
ICT_ZIP_SHA256: str | None = None
DOWNLOAD_TIMEOUT_S = 120.0

MODEL_DIR = "FaceXModel"
NEUTRAL_OBJ = "generic_neutral_mesh.obj"
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.xz", ".txz", ".tar.gz", ".tgz", ".tar.bz2")

Fetch = Callable[[str], bytes]


class IctSourceError(ValueError):
    """An ICT-FaceKit source is missing, truncated or lacks a file."""


class IctDownloadError(RuntimeError):
    """The ICT-FaceKit download failed (no network, bad checksum, wrong content)."""


def _is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def _is_model_member(name: str) -> bool:
    """True for ``.../FaceXModel/<file>`` (one level below a FaceXModel folder)."""
    parts = name.replace("\\", "/").strip("/").split("/")
    return len(parts) >= 2 and parts[-2] == MODEL_DIR and bool(parts[-1])


def _find_model_dir(folder: Path) -> Path | None:
    """The FaceXModel folder in or just below ``folder`` (a clone, its parent, or FaceXModel itself)."""
    if (folder / NEUTRAL_OBJ).is_file():
        return folder
    for cand in [folder / MODEL_DIR, *sorted(folder.glob(f"*/{MODEL_DIR}")), *sorted(folder.glob(f"*/*/{MODEL_DIR}"))]:
        if cand.is_dir():
            return cand
    return None


def locate_ict_source(source: str | os.PathLike) -> Path:
    """Resolve a user-given source to a FaceXModel folder or an archive file.

    Accepts an ICT-FaceKit clone, its FaceXModel folder, a .zip/.tar.* archive, or a folder that
    holds exactly one such archive (e.g. ``shared/assets/ict-facekit``).
    """
    path = Path(source).expanduser()
    if not path.exists():
        raise IctSourceError(
            f"ICT-FaceKit source {path} does not exist. Point TVFACE_ICT_SOURCE (or --source) at an "
            "ICT-FaceKit clone, its zip from GitHub, or a tarball of it.")
    if path.is_file():
        if not _is_archive(path):
            raise IctSourceError(f"ICT-FaceKit source {path} is a file but not a .zip or .tar.* archive")
        return path
    model_dir = _find_model_dir(path)
    if model_dir is not None:
        return model_dir
    archives = sorted(p for p in path.iterdir() if p.is_file() and _is_archive(p))
    if len(archives) == 1:
        return archives[0]
    what = "no" if not archives else f"{len(archives)} archives ({', '.join(a.name for a in archives)}) and no"
    raise IctSourceError(
        f"ICT-FaceKit source {path} has {what} {MODEL_DIR}/ folder; expected an ICT-FaceKit clone "
        f"(with {MODEL_DIR}/{NEUTRAL_OBJ}) or one .zip/.tar.* of it.")


def iter_model_files(source: str | os.PathLike, wanted: Callable[[str], bool] | None = None
                     ) -> Iterator[tuple[str, bytes]]:
    """Yield ``(file name, bytes)`` for the files of the source's FaceXModel folder.

    Archives are streamed once in their stored order (a .tar.xz is not seekable cheaply), so
    callers must not assume an order. ``wanted(name)`` filters by file name before reading.
    """
    loc = locate_ict_source(source)
    wanted = wanted or (lambda name: True)
    if loc.is_dir():
        for p in sorted(loc.iterdir()):
            if p.is_file() and wanted(p.name):
                yield p.name, p.read_bytes()
        return
    try:
        if loc.name.lower().endswith(".zip"):
            with zipfile.ZipFile(loc) as zf:
                for info in zf.infolist():
                    if not info.is_dir() and _is_model_member(info.filename):
                        name = info.filename.rstrip("/").rsplit("/", 1)[-1]
                        if wanted(name):
                            yield name, zf.read(info)
        else:
            with tarfile.open(loc, mode="r|*") as tf:
                for member in tf:
                    if member.isfile() and _is_model_member(member.name):
                        name = member.name.rsplit("/", 1)[-1]
                        if wanted(name):
                            fobj = tf.extractfile(member)
                            data = fobj.read() if fobj is not None else b""
                            if len(data) != member.size:
                                raise EOFError(f"{member.name} is cut short")
                            yield name, data
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, lzma.LZMAError, zlib.error, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise IctSourceError(
            f"ICT-FaceKit archive {loc} is truncated or corrupt ({type(e).__name__}: {e}). "
            "Download it again or point TVFACE_ICT_SOURCE at a clone.") from None


def read_model_file(source: str | os.PathLike, name: str) -> bytes:
    """One FaceXModel file's bytes (e.g. ``identity005.obj``); streams archives until found."""
    for _found, data in iter_model_files(source, wanted=lambda n: n == name):
        return data
    raise IctSourceError(f"ICT-FaceKit source {source} has no {MODEL_DIR}/{name}")


def _urllib_fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp:
        return resp.read()


def download_ict_source(dest_dir: str | os.PathLike, url: str = ICT_ZIP_URL, sha256: str | None = ICT_ZIP_SHA256,
                        fetch: Fetch | None = None) -> Path:
    """Download ICT-FaceKit's zip into ``dest_dir`` (atomic) and check it; returns the zip's path.

    Args:
        dest_dir: folder for the zip (the assets folder by default in the CLI).
        url: the zip's URL (default: the pinned commit :data:`ICT_COMMIT`).
        sha256: expected digest, or None to check the content only (see module docstring).
        fetch: ``url -> bytes`` transport (tests inject one); default ``urllib``.
    """
    fetch = fetch or _urllib_fetch
    try:
        data = fetch(url)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        raise IctDownloadError(
            f"Could not download ICT-FaceKit from {url} ({e}). Without network access, clone "
            "https://github.com/ICT-VGL/ICT-FaceKit elsewhere and set TVFACE_ICT_SOURCE to that folder "
            "(or to its zip/tarball), then rerun `tvface assets build-ict`.") from None
    digest = hashlib.sha256(data).hexdigest()
    if sha256 is not None and digest != sha256.lower():
        raise IctDownloadError(f"ICT-FaceKit download from {url} has sha256 {digest}, expected {sha256}; "
                               "the file is corrupt or the pinned digest is stale. Nothing was written.")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = {n.rsplit("/", 1)[-1] for n in zf.namelist() if _is_model_member(n)}
    except zipfile.BadZipFile:
        raise IctDownloadError(f"ICT-FaceKit download from {url} is not a zip ({len(data)} bytes)") from None
    if NEUTRAL_OBJ not in names:
        raise IctDownloadError(f"ICT-FaceKit download from {url} has no {MODEL_DIR}/{NEUTRAL_OBJ}")
    out = Path(dest_dir) / f"ICT-FaceKit-{ICT_COMMIT[:12]}.zip"
    atomic_write_bytes(out, data)
    return out
