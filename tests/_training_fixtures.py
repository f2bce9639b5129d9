"""A tiny synthetic training set (ICT model, 64^2, ground truth beside it), made once per session."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory) -> dict:
    """6 sequences x 8 frames at 64^2 (3 identities; the split keeps at least one for training)."""
    return make_tiny_synth(tmp_path_factory.mktemp("synth") / "tiny")


def make_tiny_synth(root: Path, n_frames: int = 8, **overrides) -> dict:
    """6 sequences x ``n_frames`` frames at 64^2 under ``root`` (ground truth beside it); ``overrides``
    are extra config keys (e.g. ``{"synth.oracle": True}``: ground-truth landmarks as the inputs)."""
    from tvface import assets
    from tvface.config import load_config
    from tvface.synthetic.writer import generate

    if assets.find("ict_model") is None:
        pytest.skip("ICT model not built (tvface assets build-ict)")
    cfg = load_config("smoke", {"synth.root": str(root), "synth.gt_root": f"{root}-gt", "synth.n_sequences": 6,
                                "synth.n_frames": n_frames, "synth.image_size": 64, "synth.workers": 1,
                                "data.root": str(root), "data.image_size": 64, **overrides})
    generate(cfg, workers=1, progress=False)
    return {"root": Path(root), "gt_root": Path(str(root) + "-gt"), "cfg": cfg}


def training_cfg(tiny: dict, **overrides):
    """The smoke profile on the tiny set: 32^2 encoder input, a few steps, no TensorBoard images."""
    from tvface.config import load_config

    base = {"data.root": str(tiny["root"]), "data.image_size": 64, "data.n_frames": 3, "data.val_fraction": 0.3,
            "model.image_size": 32, "render.uv_size": 32, "train.batch_size": 2, "train.image_every": 0,
            "train.log_every": 1, "train.checkpoint_every": 1000, "train.pretrain_steps": 4,
            "train.coarse_steps": 4, "train.detail_steps": 4}
    base.update(overrides)
    return load_config("smoke", base)
