"""Shared fixtures. Capability-specific fixtures live in tests/_<capability>_fixtures.py."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent

torch.set_num_threads(min(2, os.cpu_count() or 1))


def find_shared() -> Path | None:
    """$TVFACE_SHARED, else ../shared beside the checkout; None when neither exists."""
    value = os.environ.get("TVFACE_SHARED")
    for cand in ([Path(value)] if value else []) + [REPO.parent / "shared"]:
        if (cand / "assets").is_dir():
            return cand.resolve()
    return None


@pytest.fixture(autouse=True)
def _seed_random_generators():
    """Every test draws the same random inputs on every run: a failure is reproducible, never a fluke."""
    import random

    import numpy as np

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    path = find_shared()
    if path is None:
        pytest.skip("shared media not found: set TVFACE_SHARED to the shared/ folder")
    return path


# Capability fixtures shared across test files (session-scoped: the ICT model is built once).
from _ict_fixtures import ict_archive, ict_build, ict_model, ict_model_file  # noqa: E402,F401
from _training_fixtures import tiny_synth  # noqa: E402,F401
