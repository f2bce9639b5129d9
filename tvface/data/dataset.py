"""Loaders for collected sequences: T consecutive frames with landmarks and masks (what every training
issue reads), a deterministic split by identity, and a single-frame view for the per-frame baseline.

Landmarks come out as DECA's datasets give them (decalib/datasets, and the report's
``VGGFace2Dataset``): (68, 3) = (x, y, 1) with x, y in [-1, 1], x right, y down,
``(lmk + 0.5) / image_size * 2 - 1`` for pixel centres at integers (the one pixel convention,
:func:`tvface.rendering.camera.pixels_to_screen`: a landmark lands where the renderer draws its
vertex); the third column is the visibility/confidence DECA's landmark loss
weights by: 1 for every stored landmark, 0 for every point of a frame the collection **flagged**
(``landmarks.flagged`` in its manifest entry: the landmark, eye- and lip-closure terms skip it).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from tvface.data import layout
from tvface.data.flow import load_flow


def normalize_landmarks(lmks: np.ndarray, image_size: int) -> np.ndarray:
    """(..., 68, 2) crop pixels (centres at integers) -> (..., 68, 3) DECA landmarks (x, y in [-1, 1],
    visibility 1)."""
    from tvface.rendering.camera import pixels_to_screen

    xy = pixels_to_screen(np.asarray(lmks, np.float64)[..., :2], image_size).astype(np.float32)
    return np.concatenate([xy, np.ones(xy.shape[:-1] + (1,), np.float32)], -1)


def denormalize_landmarks(lmks: np.ndarray, image_size: int) -> np.ndarray:
    """Inverse of :func:`normalize_landmarks` (drops the visibility column)."""
    from tvface.rendering.camera import screen_to_pixels

    return screen_to_pixels(np.asarray(lmks, np.float64)[..., :2], image_size)


def flagged_frames(seq_dir: Path) -> set[str]:
    """Frame stems of a sequence whose landmarks the collection flagged (its manifest's ``landmarks``
    records; sequences written before flags existed have none)."""
    if not (Path(seq_dir) / layout.SEQUENCE_MANIFEST).is_file():
        return set()
    m = layout.read_manifest(seq_dir)
    return {f["name"] for f in m.get("frames", []) if (f.get("landmarks") or {}).get("flagged")}


def split_identities(identities: list[str], val_fraction: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """Deterministic train/val split by identity: an identity's side depends only on its name and the
    seed (stable when identities are added). At least one identity stays in train."""
    def u(name: str) -> float:
        return int(hashlib.sha1(f"{seed}:{name}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF

    ids = sorted(set(identities))
    val = [i for i in ids if u(i) < val_fraction]
    if len(val) == len(ids) and ids:
        val = val[:-1]
    return [i for i in ids if i not in val], val


class SequenceDataset(Dataset):
    """One item per sequence: ``n_frames`` consecutive frames from a random start (the report's code:
    ``init_k = randint(len - T)``; fixed start 0 with ``random_start=False``).

    Item: ``image`` (T, 3, S, S) float in [0, 1]; ``landmark`` (T, 68, 3) DECA-normalised;
    ``mask`` (T, S, S) float; ``identity`` int label (index in ``self.identities``); ``sequence`` name;
    with ``flow=True`` also ``flow_prev`` / ``flow_next`` (T, 2, 112, 112) pixel flows (see
    :mod:`tvface.data.flow`; zeros at sequence ends).
    """

    def __init__(self, root: Path, n_frames: int = 5, split: str = "all", val_fraction: float = 0.2,
                 seed: int = 0, random_start: bool = True, flow: bool = False):
        self.root = Path(root)
        seqs = layout.list_sequences(self.root)
        if not seqs:
            raise FileNotFoundError(f"no sequences under {self.root} (expected <identity>/<sequence>/"
                                    "manifest.json); run `tvface collect run` first")
        ids = sorted({s.parent.name for s in seqs})
        train, val = split_identities(ids, val_fraction, seed)
        keep = {"all": set(ids), "train": set(train), "val": set(val)}
        if split not in keep:
            raise ValueError(f"split must be 'all', 'train' or 'val', got {split!r}")
        self.identities = ids
        self.n_frames = n_frames
        self.random_start = random_start
        self.flow = flow
        self.sequences = []
        self.flagged: dict[Path, set[str]] = {}  # per sequence, the frame stems whose landmarks were flagged
        for s in seqs:
            stems = layout.frame_stems(s)
            if s.parent.name in keep[split] and len(stems) >= n_frames:
                self.sequences.append((s, stems))
                self.flagged[s] = flagged_frames(s)

    def __len__(self) -> int:
        return len(self.sequences)

    def _start(self, n: int) -> int:
        if not self.random_start or n == self.n_frames:
            return 0
        return int(np.random.randint(n - self.n_frames + 1))

    def load_frames(self, idx: int, start: int) -> dict:
        seq_dir, all_stems = self.sequences[idx]
        stems = all_stems[start:start + self.n_frames]
        images, lmks, masks = [], [], []
        for stem in stems:
            img = cv2.cvtColor(cv2.imread(str(layout.image_path(seq_dir, stem))), cv2.COLOR_BGR2RGB)
            images.append(img.transpose(2, 0, 1).astype(np.float32) / 255)
            lmks.append(np.load(layout.kpt_path(seq_dir, stem)))
            masks.append((np.load(layout.mask_path(seq_dir, stem)) > 0.5).astype(np.float32))
        size = images[0].shape[-1]
        landmark = normalize_landmarks(np.stack(lmks), size)
        landmark[[k for k, stem in enumerate(stems) if stem in self.flagged[seq_dir]], :, 2] = 0.0
        item = {"image": torch.from_numpy(np.stack(images)),  # (T, 3, S, S)
                "landmark": torch.from_numpy(landmark),  # (T, 68, 3); weight 0 on flagged frames
                "mask": torch.from_numpy(np.stack(masks)),  # (T, S, S)
                "identity": self.identities.index(seq_dir.parent.name), "sequence": seq_dir.name,
                "start": start}
        if self.flow:
            for d in ("prev", "next"):
                end = all_stems[0] if d == "prev" else all_stems[-1]  # no neighbour there: zeros
                f = np.stack([load_flow(seq_dir, s, d, is_end=s == end) for s in stems])  # (T, 112, 112, 2)
                item[f"flow_{d}"] = torch.from_numpy(f).permute(0, 3, 1, 2).contiguous()  # (T, 2, 112, 112)
        return item

    def __getitem__(self, idx: int) -> dict:
        return self.load_frames(idx, self._start(len(self.sequences[idx][1])))


class FrameDataset(Dataset):
    """Single-frame view of the same sequences (per-frame baseline): every frame once; items as
    :class:`SequenceDataset` with T = 1 squeezed away (image (3, S, S), landmark (68, 3), mask (S, S))."""

    def __init__(self, root: Path, split: str = "all", val_fraction: float = 0.2, seed: int = 0):
        self.seqs = SequenceDataset(root, 1, split, val_fraction, seed, random_start=False)
        self.index = [(i, k) for i, (_, stems) in enumerate(self.seqs.sequences) for k in range(len(stems))]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, idx: int) -> dict:
        i, k = self.index[idx]
        item = self.seqs.load_frames(i, k)
        return {key: (v[0] if isinstance(v, torch.Tensor) else v) for key, v in item.items()}
