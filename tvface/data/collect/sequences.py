"""Step 3b: the report's selection rule (section 4.1): keep runs in which exactly one character is
visible and moves continuously within one shot, at least ``min_sequence_length`` frames long.

Frames need not be strictly consecutive: up to ``max_gap`` frames may be missing inside a run (they
are left out). Every frame that is not kept gets a reason.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tvface.config import DataConfig
from tvface.data.collect.detect import Detection
from tvface.data.collect.identity import threshold_setting, threshold_value

# Reasons, as written in the QC report.
REASONS = {
    "unreadable_frame": "frame could not be decoded",
    "blank_frame": "uniform frame (no picture)",
    "no_face": "no face detected",
    "several_faces": "more than one face visible (the rule keeps one character on screen)",
    "face_too_small": "face smaller than data.min_face_size",
    "too_short": "run shorter than data.min_sequence_length",
    "source_unreadable": "the input cannot be read",
}


@dataclass
class FrameStatus:
    index: int
    ok: bool
    reason: str | None = None
    detail: str = ""
    det: Detection | None = None


@dataclass
class Selection:
    sequences: list[list[FrameStatus]] = field(default_factory=list)
    rejections: list[dict] = field(default_factory=list)  # {"frames": [a, b], "n", "reason", "detail"}


def track_face(faces: list[Detection], previous: Detection | None, frame_shape: tuple[float, float] | None,
               max_motion: float) -> Detection:
    """The face a track follows among several: the one nearest the track's face in the previous frame
    (centre distance / its size, within ``max_motion``); at the start of a track, or when the track was
    lost, the one nearest the picture's centre (``frame_shape`` (H, W): a face patch is cut around its
    character), else the largest. Never simply the biggest box: a passer-by in front does not take the
    track over."""
    if previous is not None:
        dist = [float(np.linalg.norm(f.center - previous.center)) / max(previous.size, 1.0) for f in faces]
        k = int(np.argmin(dist))
        if dist[k] <= max_motion:
            return faces[k]
    if frame_shape is not None:
        c = np.array([(frame_shape[1] - 1) / 2, (frame_shape[0] - 1) / 2])
        return min(faces, key=lambda f: (float(np.linalg.norm(f.center - c)) / max(f.size, 1.0), -f.size))
    return max(faces, key=lambda d: d.size)


def classify_frame(index: int, dets: list[Detection], cfg: DataConfig, error: str | None = None,
                   blank: bool = False, one_person: bool = False, previous: Detection | None = None,
                   frame_shape: tuple[float, float] | None = None) -> FrameStatus:
    """Whether a frame can be in a sequence. ``one_person``: the source shows one person by
    construction (face patches); other faces are ignored and the track's face is kept
    (:func:`track_face` with the track's ``previous`` face and the patch's ``frame_shape``)."""
    if error:
        return FrameStatus(index, False, "unreadable_frame", error)
    if blank:
        return FrameStatus(index, False, "blank_frame", "uniform grey/black frame")
    faces = [d for d in dets if d.score >= cfg.det_score]
    if not faces:
        best = max((d.score for d in dets), default=None)
        detail = "no detection" if best is None else f"best score {best:.2f} < data.det_score {cfg.det_score}"
        return FrameStatus(index, False, "no_face", detail)
    face = track_face(faces, previous, frame_shape, cfg.max_motion) if one_person else max(faces, key=lambda d: d.size)
    # Faces too small to be kept themselves are background, not a second character.
    others = [d for d in faces if d is not face and d.size >= cfg.min_face_size]
    if others and not one_person:
        return FrameStatus(index, False, "several_faces", f"{len(others) + 1} faces")
    if face.size < cfg.min_face_size:
        return FrameStatus(index, False, "face_too_small",
                           f"{face.size:.0f} px < data.min_face_size {cfg.min_face_size} px")
    return FrameStatus(index, True, det=face)


def _link_break(prev: FrameStatus, cur: FrameStatus, cfg: DataConfig,
                descriptors: dict[int, np.ndarray], last_described: int | None) -> str | None:
    """Why ``cur`` cannot continue the run ending at ``prev`` (None: it can)."""
    gap = cur.index - prev.index - 1
    if gap > cfg.max_gap:
        return f"{gap} frames missing > data.max_gap {cfg.max_gap}"
    a, b = prev.det, cur.det
    step = float(np.linalg.norm(b.center - a.center)) / max(a.size, 1.0) / (gap + 1)
    if step > cfg.max_motion:
        return f"jump of {step:.2f} box sizes per frame > data.max_motion {cfg.max_motion}"
    ratio = max(a.size, b.size) / max(min(a.size, b.size), 1.0)
    if ratio > cfg.max_scale_change:
        return f"size change x{ratio:.2f} > data.max_scale_change {cfg.max_scale_change}"
    if last_described is not None and cur.index in descriptors:
        # Descriptors may be sparse (data.descriptor_stride): compare with the run's latest one.
        d = float(np.linalg.norm(descriptors[last_described] - descriptors[cur.index]))
        if d > cfg.identity_threshold:  # Euclidean; the pipeline converts each backend's threshold
            shown = d * d / 2.0 if cfg.descriptor == "vggface2" else d  # vggface2: cosine distance
            return (f"identity change (descriptor distance {shown:.2f} > {threshold_setting(cfg.descriptor)} "
                    f"{threshold_value(cfg, cfg.descriptor)})")
    return None


def _add_rejection(rejections: list[dict], index: int, reason: str, detail: str) -> None:
    last = rejections[-1] if rejections else None
    if last and last["reason"] == reason and last["detail"] == detail and last["frames"][1] == index - 1:
        last["frames"][1] = index
        last["n"] += 1
    else:
        rejections.append({"frames": [index, index], "n": 1, "reason": reason, "detail": detail})


def select_sequences(statuses: list[FrameStatus], shots: list[tuple[int, int]], cfg: DataConfig,
                     descriptors: dict[int, np.ndarray] | None = None) -> Selection:
    """Apply the rule to per-frame statuses (any order) split by inclusive (first, last) shots."""
    descriptors = descriptors or {}
    by_index = sorted(statuses, key=lambda s: s.index)
    sel = Selection()
    for first, last in shots:
        in_shot = [s for s in by_index if first <= s.index <= last]
        runs: list[tuple[list[FrameStatus], str]] = []
        run: list[FrameStatus] = []
        for s in in_shot:
            if not s.ok:
                continue
            described = [r.index for r in run if r.index in descriptors]
            why = _link_break(run[-1], s, cfg, descriptors, described[-1] if described else None) if run else None
            if why:
                runs.append((run, why))
                run = []
            run.append(s)
        if run:
            runs.append((run, "end of shot"))
        rejected = {s.index: s for s in in_shot if not s.ok}
        for run, why in runs:
            if len(run) >= cfg.min_sequence_length:
                sel.sequences.append(run)
            else:
                for s in run:
                    rejected[s.index] = FrameStatus(
                        s.index, False, "too_short",
                        f"run of {len(run)} < data.min_sequence_length {cfg.min_sequence_length} "
                        f"(shot {first}-{last}; run ended by: {why})")
        for idx in sorted(rejected):
            _add_rejection(sel.rejections, idx, rejected[idx].reason, rejected[idx].detail)
    return sel
