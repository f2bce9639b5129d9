"""The collection pipeline over many sources, each step resumable and idempotent.

Per source, intermediate results live in ``<work>/<source>/``: ``shots.json`` (step 1),
``detections.json`` (step 2, checkpointed every ``CHUNK`` frames in ``detections.partial.json``),
``descriptors.npz`` (step 3), ``sequences.json`` (the rule + identities). A step whose output exists
with the same inputs signature is skipped. Steps 4-7 write finished sequence folders (see
:mod:`tvface.data.collect.export`); :func:`write_report` rebuilds the root manifest and QC report from
what is on disk. Errors in one input are recorded as rejections and never stop the run.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path

import numpy as np

from tvface.config import DataConfig
from tvface.data import layout
from tvface.data.collect import shots as shot_ops
from tvface.data.collect.detect import Detection, detect_faces
from tvface.data.collect.export import Hook, write_sequence
from tvface.data.collect.identity import (
    DESCRIPTOR_DIMS,
    cluster_descriptors,
    compute_descriptors,
    descriptor_backend,
    descriptor_distance,
    euclidean_threshold,
    sequence_descriptor,
    threshold_setting,
    threshold_value,
)
from tvface.data.collect.landmarks import landmark_backend, landmark_thresholds
from tvface.data.collect.masks import mask_backend
from tvface.data.collect.sequences import FrameStatus, classify_frame, select_sequences
from tvface.data.collect.sources import Source, SourceError, discover, is_blank, iter_frames, video_info
from tvface.io.atomic import atomic_save_npz, atomic_write_text

CHUNK = 64  # detection checkpoint interval (frames); batches never cross a chunk boundary
BATCH = 16  # frames per MTCNN call


def _signature(source: Source, cfg: DataConfig, keys: tuple[str, ...]) -> str:
    d = {"source": source.to_dict(), **{k: getattr(cfg, k) for k in keys}}
    return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


SHOT_KEYS = ("cut_threshold", "cut_adaptive_ratio", "cut_min", "max_frames_per_source")
DETECT_KEYS = SHOT_KEYS + ("detector", "detect_max_side", "min_face_size")
SELECT_KEYS = DETECT_KEYS + ("descriptor", "descriptor_stride", "det_score", "identity_threshold",
                             "identity_threshold_vggface2", "max_gap", "max_motion", "max_scale_change",
                             "min_sequence_length")
DESCRIBE_KEYS = DETECT_KEYS + ("descriptor", "det_score", "descriptor_stride")


def _resolved(cfg: DataConfig) -> DataConfig:
    """``cfg`` with ``descriptor`` resolved ("auto" -> the backend used), so signatures change when the
    VGGFace2 weights appear or go."""
    return dataclasses.replace(cfg, descriptor=descriptor_backend(cfg))


def _load_if_current(path: Path, sig: str) -> dict | None:
    if path.is_file():
        data = json.loads(path.read_text())
        if data.get("signature") == sig:
            return data
    return None


def _write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=1))


# --------------------------------------------------------------------------- step 1
def scan_shots(source: Source, cfg: DataConfig, work: Path) -> dict:
    """Step 1: decode once, record readable frames and split them into shots. -> ``shots.json``."""
    out = work / source.name / "shots.json"
    sig = _signature(source, cfg, SHOT_KEYS)
    if (done := _load_if_current(out, sig)) is not None:
        return done
    result: dict = {"signature": sig, "source": source.to_dict(), "indices": [], "files": {}, "errors": {},
                    "shots": [], "warnings": [], "source_error": None}
    try:
        if source.kind == "video":
            if not source.path.is_file():
                raise SourceError(f"{source.path}: video file not found")
            result["info"] = video_info(source.path)
        hists, dists = [], []
        for fr in iter_frames(source, cfg.max_frames_per_source):
            if fr.file:
                result["files"][str(fr.index)] = fr.file
            if fr.image is None:
                result["errors"][str(fr.index)] = fr.error
                continue
            h = shot_ops.hs_histogram(fr.image)
            dists.append(shot_ops.histogram_distance(hists[-1], h) if hists else 0.0)
            hists = [h]
            result["indices"].append(fr.index)
        if source.kind == "patches":
            # Patches are already one person; a run of consecutive numbers is a run of detections.
            all_idx = sorted(result["indices"] + [int(i) for i in result["errors"]])
            result["shots"] = shot_ops.runs_of_consecutive(all_idx)
        else:
            result["shots"] = shot_ops.split_shots(result["indices"], dists, cfg.cut_threshold,
                                                   cfg.cut_adaptive_ratio, cfg.cut_min)
        if source.kind == "video":
            n, declared = len(result["indices"]), result["info"]["declared_frames"]
            if n == 0:
                raise SourceError(f"{source.path}: opened but no frame could be decoded (truncated or corrupt)")
            capped = cfg.max_frames_per_source and n >= cfg.max_frames_per_source
            if declared and n < declared - 1 and not capped:
                result["warnings"].append(f"decoded {n} of {declared} declared frames: the file looks truncated; "
                                          "kept what decoded")
    except SourceError as exc:
        result["source_error"] = str(exc)
    _write_json(out, result)
    return result


# --------------------------------------------------------------------------- step 2
def detect_source(source: Source, cfg: DataConfig, work: Path, hook: Hook | None = None) -> dict:
    """Step 2: faces in every readable frame. -> ``detections.json`` ({index: {dets, blank}})."""
    shots = scan_shots(source, cfg, work)
    out = work / source.name / "detections.json"
    partial = work / source.name / "detections.partial.json"
    sig = _signature(source, cfg, DETECT_KEYS)
    if (done := _load_if_current(out, sig)) is not None:
        return done
    frames: dict[str, dict] = {}
    if (prev := _load_if_current(partial, sig)) is not None:
        frames = prev["frames"]
    todo = [i for i in shots["indices"] if str(i) not in frames]
    if todo and not shots["source_error"]:
        pending: list = []

        def flush() -> None:
            dets = detect_faces([f.image for f in pending], cfg, patch=source.kind == "patches")
            for f, d in zip(pending, dets):
                frames[str(f.index)] = {"dets": [x.to_dict() for x in d], "blank": is_blank(f.image),
                                        "shape": list(f.image.shape[:2])}
                if hook is not None:
                    hook("detect", source.name, f.index)
            pending.clear()

        position = {i: k for k, i in enumerate(shots["indices"])}
        for fr in iter_frames(source, cfg.max_frames_per_source, wanted=set(todo)):
            if fr.image is None:
                continue
            if pending and (pending[-1].image.shape != fr.image.shape or len(pending) >= BATCH
                            or position[pending[-1].index] // CHUNK != position[fr.index] // CHUNK):
                chunk_done = position[pending[-1].index] // CHUNK != position[fr.index] // CHUNK
                flush()
                if chunk_done:
                    _write_json(partial, {"signature": sig, "frames": frames})
            pending.append(fr)
        if pending:
            flush()
    result = {"signature": sig, "detector": cfg.detector, "frames": frames}
    _write_json(out, result)
    partial.unlink(missing_ok=True)
    return result


def frame_statuses(source: Source, cfg: DataConfig, shots: dict, dets: dict) -> list[FrameStatus]:
    statuses = [FrameStatus(int(i), False, "unreadable_frame", e) for i, e in shots["errors"].items()]
    patches = source.kind == "patches"
    previous: FrameStatus | None = None  # the track's last kept face (patches: the face a run follows)
    for i in sorted(shots["indices"]):
        rec = dets["frames"].get(str(i))
        if rec is None:
            continue
        if previous is not None and i - previous.index - 1 > cfg.max_gap:
            previous = None  # the track ended
        st = classify_frame(i, [Detection.from_dict(d) for d in rec["dets"]], cfg, blank=rec["blank"],
                            one_person=patches, previous=previous.det if previous else None,
                            frame_shape=tuple(rec["shape"]) if rec.get("shape") else None)
        statuses.append(st)
        if st.ok:
            previous = st
    return statuses


# --------------------------------------------------------------------------- step 3
def describe_source(source: Source, cfg: DataConfig, work: Path) -> dict[int, np.ndarray]:
    """Step 3: identity descriptors of every ``descriptor_stride``-th candidate frame.
    -> ``descriptors.npz``."""
    backend = descriptor_backend(cfg)
    if backend == "none":
        return {}
    shots, dets = scan_shots(source, cfg, work), detect_source(source, cfg, work)
    out = work / source.name / "descriptors.npz"
    sig = _signature(source, _resolved(cfg), DESCRIBE_KEYS)
    if out.is_file():
        data = np.load(out)
        if str(data["signature"]) == sig:
            return {int(i): d for i, d in zip(data["indices"], data["descriptors"])}
    ok = [s for s in frame_statuses(source, cfg, shots, dets) if s.ok]
    cand = {s.index: s.det for s in sorted(ok, key=lambda s: s.index)[::max(1, cfg.descriptor_stride)]}
    desc: dict[int, np.ndarray] = {}
    if cand and not shots["source_error"]:
        for fr in iter_frames(source, cfg.max_frames_per_source, wanted=set(cand)):
            if fr.image is not None:
                desc[fr.index] = compute_descriptors(fr.image, [cand[fr.index].box], backend)[0]
    idx = sorted(desc)
    atomic_save_npz(out, signature=np.array(sig), indices=np.array(idx, np.int64),
                    descriptors=np.array([desc[i] for i in idx], np.float32).reshape(-1, DESCRIPTOR_DIMS[backend]),
                    backend=np.array(backend))
    return desc


# --------------------------------------------------------------------------- step 3b
def select_source(source: Source, cfg: DataConfig, work: Path, hook: Hook | None = None) -> dict:
    """The rule + per-episode identity clustering. -> ``sequences.json``."""
    out = work / source.name / "sequences.json"
    sig = _signature(source, _resolved(cfg), SELECT_KEYS)
    if (done := _load_if_current(out, sig)) is not None:
        return done
    backend = descriptor_backend(cfg)
    dim = DESCRIPTOR_DIMS.get(backend, DESCRIPTOR_DIMS["dlib"])
    threshold = euclidean_threshold(cfg, backend)
    shots = scan_shots(source, cfg, work)
    result: dict = {"signature": sig, "source": source.to_dict(), "sequences": [], "rejections": [],
                    "warnings": list(shots["warnings"]), "n_frames": len(shots["indices"]) + len(shots["errors"]),
                    "n_shots": len(shots["shots"])}
    if shots["source_error"]:
        result["rejections"].append({"frames": None, "n": 0, "reason": "source_unreadable",
                                     "detail": shots["source_error"]})
        _write_json(out, result)
        return result
    dets = detect_source(source, cfg, work, hook)
    desc = describe_source(source, cfg, work)
    # Sequence links compare descriptors in Euclidean distance against data.identity_threshold; give
    # them the backend's threshold in that unit (identical to cfg for dlib).
    link_cfg = dataclasses.replace(cfg, identity_threshold=threshold)
    sel = select_sequences(frame_statuses(source, cfg, shots, dets), [tuple(s) for s in shots["shots"]], link_cfg,
                           desc)
    # Undescribed sequences get far-apart stand-ins so each stays its own identity.
    means = [sequence_descriptor(d, backend) if (d := [desc[s.index] for s in seq if s.index in desc])
             else np.full(dim, 1e3 * k) for k, seq in enumerate(sel.sequences)]
    ids = cluster_descriptors(np.array(means).reshape(-1, dim), threshold)
    labels = [f"{source.name}_person{k}" for k in ids]
    if source.kind == "patches" and len(ids):
        # A patch folder is one identity: its largest cluster keeps the folder's name; a sequence
        # of someone else is relabelled and reported rather than silently mislabelled.
        major = np.bincount(ids).argmax()
        for k, (seq, c) in enumerate(zip(sel.sequences, ids)):
            if c != major:
                rest = sequence_descriptor([m for m, i in zip(means, ids) if i == major], backend)
                d = descriptor_distance(means[k], rest, backend)
                result["warnings"].append(
                    f"identity check: sequence from frame {seq[0].index} looks like another person than the "
                    f"rest of {source.name} (descriptor distance {d:.2f} > {threshold_setting(backend)} "
                    f"{threshold_value(cfg, backend)}); labelled {source.name}_person{c}")
        labels = [source.name if c == major else f"{source.name}_person{c}" for c in ids]
    for seq, label in zip(sel.sequences, labels):
        result["sequences"].append({
            "name": f"{source.name}_{seq[0].index:06d}", "identity": label,
            "frames": [{"index": s.index, "det": s.det.to_dict(), "file": shots["files"].get(str(s.index))}
                       for s in seq]})
    covered = {i for a, b in shots["shots"] for i in range(a, b + 1)}
    outside = [{"frames": [int(i), int(i)], "n": 1, "reason": "unreadable_frame", "detail": e}
               for i, e in shots["errors"].items() if int(i) not in covered]
    result["rejections"] = sorted(sel.rejections + outside, key=lambda r: r["frames"][0])
    _write_json(out, result)
    return result


# --------------------------------------------------------------------------- steps 4-7
def export_source(source: Source, cfg: DataConfig, work: Path, root: Path, hook: Hook | None = None) -> list[Path]:
    """Crop, landmarks, masks and the sequence folders of one source (finished folders are kept)."""
    sel = select_source(source, cfg, work, hook)
    backends = {"detector": cfg.detector, "landmarks": landmark_backend(cfg), "masks": mask_backend(cfg),
                "descriptor": descriptor_backend(cfg), "landmark_thresholds": landmark_thresholds(cfg)}
    written = []
    for seq in sel["sequences"]:
        seq_dir = Path(root) / seq["identity"] / seq["name"]
        written.append(seq_dir)
        if layout.is_sequence_dir(seq_dir):
            m = layout.read_manifest(seq_dir)
            if (m.get("backends") == backends and len(m["frames"]) == len(seq["frames"])
                    and m.get("image_size") == cfg.image_size and m.get("crop_scale") == cfg.crop_scale):
                continue  # written with the same settings: idempotent rerun
        wanted = {f["index"] for f in seq["frames"]}
        images = {fr.index: fr.image for fr in iter_frames(source, cfg.max_frames_per_source, wanted=wanted)
                  if fr.image is not None}
        write_sequence(seq_dir, seq["frames"], images, source.to_dict(), seq["identity"], cfg.image_size,
                       cfg.crop_scale, backends, cfg, hook)
    return written


def collect(paths: list[Path], cfg: DataConfig, root: Path, work: Path, hook: Hook | None = None,
            flow: bool | None = None) -> dict:
    """Run every step on every source under ``paths``; returns the QC report (also written to
    ``<root>/qc``)."""
    import torch

    torch.set_num_threads(cfg.num_threads)
    root, work = Path(root), Path(work)
    sources = discover([Path(p) for p in paths])
    timings = {}
    for source in sources:
        t0 = time.perf_counter()
        export_source(source, cfg, work, root, hook)
        timings[source.name] = round(time.perf_counter() - t0, 2)
    if flow if flow is not None else cfg.flow == "dis":
        from tvface.data.flow import write_sequence_flows

        for seq_dir in layout.list_sequences(root):
            write_sequence_flows(seq_dir)
    from tvface.data.collect.qc import write_report

    return write_report(root, work, sources, cfg, timings)
