"""The dataset layout, as the report's code reads it (``TestSamples/TV_series/id1``)::

    <root>/<identity>/<sequence>/jpg/00001.jpg            224x224 RGB crops, 1-based 5-digit names
                                 kpt/00001_kpt2d.npy      (68, 2) float32 landmarks, crop pixels, x right, y down
                                 seg/masks/00001.npy      (224, 224) float64 face mask in {0, 1}
                                 serial.npy               (T,) <U9 frame order ('00001.jpg', ...)
                                 manifest.json            per frame: source, frame index, box, score,
                                                          crop transform, backends (tvface's addition)
                                 flow/00001_prev.npy      optional (112, 112, 2) float32 flow to frame i-1
                                 flow/00001_next.npy      ... and to frame i+1 (see tvface.data.flow)
    <root>/manifest.json                                  index of all sequences
    <root>/qc/report.json, report.md, contact_sheet.jpg   QC of the last collection run

A sequence folder appears only when complete (written as ``.<name>.partial`` and renamed).
"""
from __future__ import annotations

import json
from pathlib import Path

SEQUENCE_MANIFEST = "manifest.json"
ROOT_MANIFEST = "manifest.json"
FLOW_SIZE = 112


def frame_name(k: int) -> str:
    """Name stem of the k-th (0-based) frame of a sequence: '00001' for k = 0."""
    return f"{k + 1:05d}"


def image_path(seq_dir: Path, stem: str) -> Path:
    return seq_dir / "jpg" / f"{stem}.jpg"


def kpt_path(seq_dir: Path, stem: str) -> Path:
    return seq_dir / "kpt" / f"{stem}_kpt2d.npy"


def mask_path(seq_dir: Path, stem: str) -> Path:
    return seq_dir / "seg" / "masks" / f"{stem}.npy"


def flow_path(seq_dir: Path, stem: str, direction: str) -> Path:
    if direction not in ("prev", "next"):
        raise ValueError(f"flow direction must be 'prev' or 'next', got {direction!r}")
    return seq_dir / "flow" / f"{stem}_{direction}.npy"


def is_sequence_dir(path: Path) -> bool:
    return path.is_dir() and not path.name.startswith(".") and (path / SEQUENCE_MANIFEST).is_file()


def list_sequences(root: Path) -> list[Path]:
    """Complete sequence folders under ``root`` (``<identity>/<sequence>``), sorted."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for ident in root.iterdir() if ident.is_dir() and not ident.name.startswith(".")
                  and ident.name != "qc" for p in ident.iterdir() if is_sequence_dir(p))


def read_manifest(seq_dir: Path) -> dict:
    return json.loads((Path(seq_dir) / SEQUENCE_MANIFEST).read_text())


def frame_stems(seq_dir: Path) -> list[str]:
    """Frame order of a sequence from ``serial.npy`` (else the sorted jpg names)."""
    import numpy as np

    serial = Path(seq_dir) / "serial.npy"
    if serial.is_file():
        return [str(n)[:-4] for n in np.load(serial)]
    return sorted(p.stem for p in (Path(seq_dir) / "jpg").glob("*.jpg"))
