"""Training checkpoints: atomic, complete, and refused when they belong to another model or config.

A checkpoint is one ``torch.save`` dict of plain types and tensors (read back with
``torch.load(weights_only=True)``, so opening one never runs code)::

    format, model (state dict), optimizer, scheduler (or None), rng (torch / numpy / python states
    as tensors and ints), stage, stage_step, global_step, config (the resolved profile as a dict),
    describe (face model, code sizes, encoder: what must match to load), history (per-stage summary)

Writes go to ``<name>.partial`` and are renamed over the target; the checkpoint being replaced is
first renamed to ``previous.pt``, so a crash at any point leaves a complete file behind.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

FORMAT = "tvface-checkpoint-1"
LAST = "last.pt"
PREVIOUS = "previous.pt"
DESCRIBE_DEFAULTS = {"norm": "batch"}  # what checkpoints written before a key existed were


class CheckpointError(ValueError):
    """A checkpoint that cannot be used here; the message names the file and what to do."""


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "numpy_pos": int(np_state[2]), "python": [int(v) for v in random.getstate()[1]],
            "python_version": int(random.getstate()[0])}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    random.setstate((state["python_version"], tuple(state["python"]), None))


def save_checkpoint(path: Path, payload: dict) -> Path:
    """Write ``payload`` atomically to ``path``; an existing ``path`` is kept as ``previous.pt`` beside it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    torch.save({"format": FORMAT, **payload}, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    if path.exists():
        os.replace(path, path.with_name(PREVIOUS))
    os.replace(tmp, path)
    return path


def load_checkpoint(path: Path) -> dict:
    """Read a checkpoint (``weights_only=True``) or raise one :class:`CheckpointError` naming the file."""
    path = Path(path)
    if path.is_dir():
        path = path / LAST
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}. Train with `tvface train --out RUN_DIR` "
                              f"(it writes RUN_DIR/{LAST}) or pass the .pt file.")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, not a torch file, forbidden pickle global
        prev = path.with_name(PREVIOUS)
        hint = f" The previous checkpoint {prev} is intact: pass it instead." if prev.is_file() and prev != path else ""
        raise CheckpointError(f"{path}: not a readable tvface checkpoint ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:200]}).{hint}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a tvface training checkpoint (no format {FORMAT!r}); for DECA's "
                              "released weights use model.checkpoint=deca_model.tar with the FLAME profile")
    return ckpt


def check_compatible(ckpt: dict, describe: dict, path: Path) -> None:
    """Refuse a checkpoint made for another face model, code layout or encoder (one message, every difference)."""
    theirs = {**DESCRIBE_DEFAULTS, **ckpt.get("describe", {})}
    diffs = [f"{k}: checkpoint {theirs.get(k)!r}, this config {v!r}" for k, v in describe.items()
             if theirs.get(k) != v]
    if diffs:
        raise CheckpointError(f"{path} was trained for another model or config: " + "; ".join(diffs)
                              + ". Use the profile/--set values it was trained with (its config is stored "
                              "inside it), or start a new run directory.")
