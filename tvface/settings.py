"""Where tvface looks for user files and writes its work, from environment variables.

- ``TVFACE_ASSETS`` (default ``$XDG_CACHE_HOME/tvface/assets``): user-provided models and weights
  (``tvface assets``).
- ``TVFACE_DATA`` (default ``$XDG_CACHE_HOME/tvface/data``): generated datasets, runs, checkpoints.
- ``TVFACE_SHARED`` (default unset): a ``shared/`` media + assets folder (CI: ``../shared``).
- ``TVFACE_ICT_SOURCE`` (default ``$TVFACE_SHARED/assets/ict-facekit``): an ICT-FaceKit folder, zip or
  tarball to build the ICT model from.

Functions, not module constants, so tests and notebooks can change the environment.
"""
from __future__ import annotations

import os
from pathlib import Path


def _cache_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")


def assets_dir() -> Path:
    return Path(os.environ.get("TVFACE_ASSETS") or _cache_home() / "tvface" / "assets").expanduser()


def data_dir() -> Path:
    return Path(os.environ.get("TVFACE_DATA") or _cache_home() / "tvface" / "data").expanduser()


def shared_dir() -> Path | None:
    value = os.environ.get("TVFACE_SHARED")
    return Path(value).expanduser().resolve() if value else None


def ict_source() -> Path | None:
    """An ICT-FaceKit folder/zip/tarball to build from, if a setting names one."""
    value = os.environ.get("TVFACE_ICT_SOURCE")
    if value:
        return Path(value).expanduser()
    shared = shared_dir()
    if shared is not None and (shared / "assets" / "ict-facekit").exists():
        return shared / "assets" / "ict-facekit"
    return None


def env_defaults() -> dict[str, str]:
    """Values for ``${TVFACE_*}`` in config path settings."""
    out = {"TVFACE_ASSETS": str(assets_dir()), "TVFACE_DATA": str(data_dir())}
    if shared_dir() is not None:
        out["TVFACE_SHARED"] = str(shared_dir())
    return out
