"""Optional precomputed optical flow between neighbouring frames of a sequence (OpenCV DIS).

Convention (shared with the temporal encoder): for frame i, ``flow_prev`` is the flow from i to
i - 1 and ``flow_next`` from i to i + 1, at 112 x 112, channels (dx, dy) in pixels of that grid,
backward-warping semantics::

    warped_i(x) = frame_{i-1}(x + flow_prev_i(x))

i.e. ``flow_warp(frame_{i-1}, flow_prev_i)`` reproduces frame i. DIS computes exactly this with
``calc(I0=frame_i, I1=frame_{i-1})``. Stored as ``flow/<stem>_{prev,next}.npy`` (112, 112, 2) float32;
the first frame has no ``prev`` file and the last no ``next`` (zeros when loaded).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from tvface.data import layout
from tvface.io.atomic import atomic_save_npy


def _grey(image: np.ndarray, size: int) -> np.ndarray:
    g = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    return cv2.resize(g, (size, size), interpolation=cv2.INTER_AREA)


def dis_flow(frame: np.ndarray, other: np.ndarray, size: int = layout.FLOW_SIZE) -> np.ndarray:
    """(size, size, 2) float32 flow from ``frame`` to ``other`` (RGB uint8, any equal size), such that
    ``frame(x) ~ other(x + flow(x))`` on the size x size grid."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return dis.calc(_grey(frame, size), _grey(other, size), None).astype(np.float32)


def warp_backward(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Reference backward warp with cv2.remap: out(x) = image(x + flow(x)); border replicated."""
    h, w = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(image, gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


def write_sequence_flows(seq_dir: Path, size: int = layout.FLOW_SIZE) -> int:
    """Write the missing flow files of a sequence; returns how many were written (0 when complete)."""
    seq_dir = Path(seq_dir)
    stems = layout.frame_stems(seq_dir)
    needed = [(k, d) for k in range(len(stems)) for d in ("prev", "next")
              if (d == "prev" and k > 0) or (d == "next" and k < len(stems) - 1)]
    todo = [(k, d) for k, d in needed if not layout.flow_path(seq_dir, stems[k], d).is_file()]
    cache: dict[int, np.ndarray] = {}

    def img(k: int) -> np.ndarray:
        if k not in cache:
            cache[k] = cv2.cvtColor(cv2.imread(str(layout.image_path(seq_dir, stems[k]))), cv2.COLOR_BGR2RGB)
        return cache[k]

    for k, d in todo:
        other = k - 1 if d == "prev" else k + 1
        atomic_save_npy(layout.flow_path(seq_dir, stems[k], d), dis_flow(img(k), img(other), size))
    return len(todo)


def load_flow(seq_dir: Path, stem: str, direction: str, size: int = layout.FLOW_SIZE,
              is_end: bool = False) -> np.ndarray:
    """(size, size, 2) float32 stored flow. At a sequence end (``is_end``: ``prev`` of the first frame,
    ``next`` of the last) there is no neighbour and the flow is zeros (the report's footnote);
    anywhere else a missing file is an error, not a silent zero flow."""
    p = layout.flow_path(Path(seq_dir), stem, direction)
    if p.is_file():
        return np.load(p, allow_pickle=False)
    if is_end:
        return np.zeros((size, size, 2), np.float32)
    raise FileNotFoundError(f"{p}: optical flow missing; run `tvface collect flow` on {Path(seq_dir).parent.parent} "
                            "(or set data.flow: dis before collecting)")
