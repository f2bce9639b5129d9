"""Write synthetic sequences in the collected-data layout, ground truth kept in a separate root.

Training inputs (``<root>/<identity>/<sequence>/{jpg, kpt, seg/masks, serial.npy, manifest.json}``,
:mod:`tvface.data.layout`) come from the same offline detector, landmark detector and masker as
real video (:mod:`tvface.data.collect`), run on the rendered frames: nothing from the ground truth
reaches them unless ``synth.oracle`` is set (an ablation, recorded in the manifests).
Ground truth goes to ``<gt_root>/<identity>/<sequence>/gt.npz`` + ``gt.json``: every parameter,
the model id, 3D landmarks, projected 2D landmarks, visibility, masks and degradation strengths.

Sequence ``i`` is drawn from ``SeedSequence([seed, i])`` (its identity from ``[seed, identity]``),
so the files do not depend on the number of workers. Each sequence is written under a
``.partial`` name and renamed; finished sequences are skipped on a rerun.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tvface.config import ProfileConfig, config_to_dict, expand_path
from tvface.data import layout
from tvface.io.atomic import atomic_save_npy, atomic_save_npz, atomic_write_bytes, atomic_write_text
from tvface.synthetic import degrade as D

GT_FILE = "gt.npz"
GT_META = "gt.json"


def dataset_roots(cfg: ProfileConfig) -> tuple[Path, Path]:
    """(training root, ground-truth root) of a profile's synth section."""
    root = expand_path(cfg.synth.root or cfg.data.root)
    gt_root = expand_path(cfg.synth.gt_root) if cfg.synth.gt_root else root.parent / f"{root.name}-gt"
    return root, gt_root


def sequence_names(index: int, per_identity: int) -> tuple[str, str, int]:
    """(identity folder, sequence folder, identity number) of sequence ``index``."""
    ident = index // max(per_identity, 1)
    return f"synth{ident:05d}", f"seq{index % max(per_identity, 1):03d}", ident


@dataclass(frozen=True)
class Context:
    """What a worker builds once: model, albedo space, renderer."""

    model: object
    albedo: object
    renderer: object
    center: np.ndarray
    model_id: str


def albedo_space(model, cfg: ProfileConfig):
    """The albedo space the synthetic faces are drawn from (the model's own UV atlas)."""
    from tvface.face_models.factory import load_albedo_model

    return load_albedo_model(cfg.face_model, model, cfg.render.uv_size)


def build_context(cfg: ProfileConfig) -> Context:
    import torch

    from tvface.face_models.factory import load_face_model
    from tvface.rendering.renderer import MeshRenderer
    from tvface.synthetic.sequences import face_center

    model = load_face_model(cfg.face_model)
    albedo = albedo_space(model, cfg)
    size = cfg.synth.image_size * max(cfg.synth.supersample, 1)
    renderer = MeshRenderer(model.faces, model.uv_coords, model.uv_faces, size, cfg.render.uv_size, backend="torch")
    with torch.no_grad():  # the model id: its name and a digest of its neutral mesh and triangles
        z = model.zeros(1)
        neutral = model(z["shape"], z["exp"], z["pose"]).verts.numpy()
    digest = hashlib.sha256(neutral.tobytes() + model.faces.numpy().tobytes()).hexdigest()
    return Context(model, albedo, renderer, face_center(model), f"{model.name}:{digest[:16]}")


def _offline_inputs(frames: np.ndarray, cfg: ProfileConfig) -> tuple[np.ndarray, np.ndarray, list[dict], dict]:
    """Detector boxes, landmarks and masks of rendered crops, exactly as for real video crops.

    A frame where the detector finds nothing keeps the neighbouring frame's box (a tracker's
    behaviour), or, with none at all, the crop's own box (side = image / crop_scale, centred).
    """
    from tvface.data.collect.detect import Detection, detect_faces
    from tvface.data.collect.landmarks import landmark_backend, landmark_thresholds, locate_landmarks
    from tvface.data.collect.masks import compute_masks, mask_backend

    size = frames.shape[1]
    backends = {"detector": cfg.data.detector, "landmarks": landmark_backend(cfg.data), "masks": mask_backend(cfg.data),
                "descriptor": "none",  # identities are known: no descriptors, as the manifest records
                "landmark_thresholds": landmark_thresholds(cfg.data)}
    dets = detect_faces(list(frames), cfg.data)
    c = (size - 1) / 2
    boxes: list = [None] * len(frames)
    info = []
    for k, ds in enumerate(dets):
        if ds:  # the face nearest the crop centre, as the tracker would follow it
            best = min(ds, key=lambda d: float(np.hypot(*(d.center - c))))
            boxes[k] = (tuple(float(v) for v in best.box), float(best.score), "detector", best.points)
    for k in range(len(frames)):
        if boxes[k] is None:
            near = [j for j in range(len(frames)) if boxes[j] is not None and boxes[j][2] == "detector"]
            if near:
                j = min(near, key=lambda j: abs(j - k))
                boxes[k] = (boxes[j][0], 0.0, "neighbour", None)
            else:
                half = size / cfg.data.crop_scale / 2
                boxes[k] = ((c - half, c - half, c + half, c + half), 0.0, "crop", None)
    # A borrowed box has no detector score of its own: its landmarks are judged on their own (score 1
    # in the confidence); the manifest keeps score 0 and where the box came from.
    found = [locate_landmarks(frames[k], Detection(b[0], b[1] if b[2] == "detector" else 1.0, b[3]), cfg.data,
                              backends["landmarks"]) for k, b in enumerate(boxes)]
    kpts = np.stack([f.points for f in found]).astype(np.float32)
    masks = compute_masks(frames, kpts, backends["masks"])
    for b, f in zip(boxes, found):
        info.append({"box": [round(v, 2) for v in b[0]], "score": round(b[1], 4), "box_source": b[2],
                     "landmarks": f.to_dict()})
    return kpts, masks, info, backends


def write_sequence(index: int, cfg: ProfileConfig, ctx: Context, root: Path, gt_root: Path) -> dict:
    """Sample, render and write sequence ``index`` (training inputs + ground truth). Returns a summary."""
    import torch

    from tvface.synthetic.sequences import render_sequence, sample_sequence

    sc = cfg.synth
    ident_name, seq_name, ident = sequence_names(index, sc.sequences_per_identity)
    id_rng = np.random.default_rng(np.random.SeedSequence([sc.seed, 1, ident]))
    identity = (id_rng.standard_normal(ctx.model.n_shape), id_rng.standard_normal(ctx.albedo.n_tex))
    rng = np.random.default_rng(np.random.SeedSequence([sc.seed, 0, index]))
    spec = sample_sequence(rng, sc, ctx.model, ctx.albedo.n_tex, identity=identity, center=ctx.center)
    with torch.no_grad():
        maps = ctx.albedo(torch.as_tensor(spec.tex, dtype=torch.float32)[None])
    out = render_sequence(ctx.model, ctx.renderer, maps, spec, max(sc.supersample, 1))
    t_n = spec.n_frames
    quality = [d.jpeg_quality for d in out.degradations]
    jpegs = [D.encode_jpeg(f, q) for f, q in zip(out.frames, quality)]
    decoded = np.stack([D.decode_jpeg(b) for b in jpegs])  # what every loader will read
    if sc.oracle:
        kpts = out.lmks_2d_px.astype(np.float32)
        masks = (out.face_alpha > 0.5) & (out.occluder_alpha < 0.5)
        masks = masks.astype(np.float64)
        info = [{"box": None, "score": 1.0, "box_source": "oracle"}] * t_n
        backends = {"detector": "oracle", "landmarks": "oracle", "masks": "oracle", "descriptor": "none"}
    else:
        kpts, masks, info, backends = _offline_inputs(decoded, cfg)

    seq_dir = root / ident_name / seq_name
    partial = seq_dir.parent / f".{seq_name}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    entries = []
    for k in range(t_n):
        stem = layout.frame_name(k)
        atomic_write_bytes(layout.image_path(partial, stem), jpegs[k])
        atomic_save_npy(layout.kpt_path(partial, stem), kpts[k].astype(np.float32))
        atomic_save_npy(layout.mask_path(partial, stem), masks[k].astype(np.float64))
        entries.append({"name": stem, "source_frame": k, "source_file": None, **info[k],
                        "crop_transform": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], "detector": backends["detector"],
                        "landmarks_backend": info[k].get("landmarks", {}).get("backend", backends["landmarks"]),
                        "mask_backend": backends["masks"]})
    atomic_save_npy(partial / "serial.npy", np.array([f"{e['name']}.jpg" for e in entries], dtype="<U9"))
    # Nothing about the ground truth (condition, parameters, where it lives) in the training inputs;
    # it sits in <gt_root>/<identity>/<sequence>/ (dataset_roots), the condition in gt.json.
    source = {"path": f"synthetic:{cfg.name}:{index}", "kind": "synthetic", "seed": sc.seed, "index": index,
              "oracle": sc.oracle}
    manifest = {"identity": ident_name, "sequence": seq_name, "source": source, "image_size": sc.image_size,
                "crop_scale": cfg.data.crop_scale, "backends": backends, "n_frames": t_n, "frames": entries}
    atomic_write_text(partial / layout.SEQUENCE_MANIFEST, json.dumps(manifest, indent=1))

    gt_dir = gt_root / ident_name / seq_name
    cam = spec.camera
    atomic_save_npz(
        gt_dir / GT_FILE, shape=spec.shape.astype(np.float32), tex=spec.tex.astype(np.float32),
        exp=spec.exp.astype(np.float32), pose=spec.pose.astype(np.float32), light=spec.light.astype(np.float32),
        cam_scale=cam.scale, cam_trans=cam.trans, cam_source_scale=cam.source_scale,
        cam_source_trans=cam.source_trans, cam_distance=np.float64(cam.distance), deca_cam=cam.deca_cam(),
        lmks_3d=out.lmks_3d, lmks_2d_px=out.lmks_2d_px, lmks_3d_px=out.lmks_3d_px, visibility=out.visibility,
        face_mask=(out.face_alpha > 0.5), occluder_mask=(out.occluder_alpha > 0.5))
    meta = {"model_id": ctx.model_id, "face_model": asdict(cfg.face_model), "albedo_n_tex": int(ctx.albedo.n_tex),
            "condition": spec.condition, "image_size": sc.image_size, "n_frames": t_n, "shutter": spec.shutter,
            "background": spec.background.source, "occluders": [o.sprite.kind for o in spec.occluders],
            "events": asdict(spec.events), **spec.extras,
            "degradations": [d.to_dict() for d in out.degradations],
            "camera": "orthographic" if np.isinf(cam.distance) else "perspective",
            "pixel_convention": "pixel centres at integers, x right, y down (as kpt/*.npy)",
            "dataset_sequence": os.path.relpath(seq_dir, gt_dir)}
    atomic_write_text(gt_dir / GT_META, json.dumps(meta, indent=1))
    if seq_dir.exists():
        shutil.rmtree(seq_dir)
    partial.rename(seq_dir)
    return {"index": index, "path": str(seq_dir), "condition": spec.condition,
            "detected": sum(e["box_source"] == "detector" for e in entries)}


def is_done(index: int, cfg: ProfileConfig, root: Path, gt_root: Path) -> bool:
    """A finished sequence written with the same seed, oracle switch, size, length and landmark rule
    (else redo it)."""
    ident_name, seq_name, _ = sequence_names(index, cfg.synth.sequences_per_identity)
    seq_dir = root / ident_name / seq_name
    if not (layout.is_sequence_dir(seq_dir) and (gt_root / ident_name / seq_name / GT_META).is_file()):
        return False
    from tvface.data.collect.landmarks import landmark_backend, landmark_thresholds

    m = layout.read_manifest(seq_dir)
    sc = cfg.synth
    b = m.get("backends", {})
    same_landmarks = sc.oracle or (b.get("landmarks") == landmark_backend(cfg.data)
                                   and b.get("landmark_thresholds") == landmark_thresholds(cfg.data))
    return (m.get("source", {}).get("seed") == sc.seed and m.get("source", {}).get("oracle") == sc.oracle
            and m.get("image_size") == sc.image_size and m.get("n_frames") == sc.n_frames and same_landmarks)


_WORKER: dict = {}


def _init_worker(cfg: ProfileConfig) -> None:
    import torch

    torch.set_num_threads(1)
    cv2_threads(1)
    _WORKER["cfg"] = cfg
    _WORKER["ctx"] = build_context(cfg)


def cv2_threads(n: int) -> None:
    import cv2

    cv2.setNumThreads(n)


def _work(args: tuple[int, str, str]) -> dict:
    index, root, gt_root = args
    return write_sequence(index, _WORKER["cfg"], _WORKER["ctx"], Path(root), Path(gt_root))


def generate(cfg: ProfileConfig, workers: int | None = None, progress: bool = True,
             indices: list[int] | None = None) -> dict:
    """Generate ``synth.n_sequences`` sequences (resumable), then the root manifest. Returns a summary
    with counts and the wall time."""
    from tqdm.auto import tqdm

    from tvface.data.collect.qc import build_manifest, contact_sheet

    root, gt_root = dataset_roots(cfg)
    root.mkdir(parents=True, exist_ok=True)
    gt_root.mkdir(parents=True, exist_ok=True)
    wanted = list(range(cfg.synth.n_sequences)) if indices is None else list(indices)
    todo = [i for i in wanted if not is_done(i, cfg, root, gt_root)]
    workers = max(1, cfg.synth.workers if workers is None else workers)
    t0 = time.time()
    results = []
    bar = tqdm(total=len(todo), desc="synth", unit="seq", disable=not progress)
    args = [(i, str(root), str(gt_root)) for i in todo]
    import cv2
    import torch

    prev_threads = (torch.get_num_threads(), cv2.getNumThreads())
    try:
        if workers == 1 or len(todo) <= 1:
            if todo:
                _init_worker(cfg)  # one thread each, as in the pool: results do not depend on workers
            for a in args:
                results.append(_work(a))
                bar.update(1)
        else:
            import multiprocessing as mp

            with mp.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(cfg,)) as pool:
                for r in pool.imap_unordered(_work, args):
                    results.append(r)
                    bar.update(1)
    finally:
        torch.set_num_threads(prev_threads[0])
        cv2_threads(prev_threads[1])
    bar.close()
    seconds = time.time() - t0
    manifest = build_manifest(root)
    manifest["synthetic"] = {"gt_root": str(gt_root), "config": config_to_dict(cfg.synth)}
    atomic_write_text(root / layout.ROOT_MANIFEST, json.dumps(manifest, indent=1))
    contact_sheet(root, root / "qc" / "contact_sheet.jpg")
    summary = {"root": str(root), "gt_root": str(gt_root), "requested": len(wanted), "skipped": len(wanted) - len(todo),
               "written": len(results), "seconds": round(seconds, 2), "workers": workers,
               "frames_detected": sum(r["detected"] for r in results),
               "frames_written": len(results) * cfg.synth.n_frames,
               "n_sequences": manifest["n_sequences"], "n_frames": manifest["n_frames"]}
    atomic_write_text(root / "qc" / "synth_report.json", json.dumps(summary, indent=1))
    return summary


def load_ground_truth(gt_dir: Path) -> tuple[dict[str, np.ndarray], dict]:
    """(arrays, meta) of one sequence's ground truth."""
    gt_dir = Path(gt_dir)
    with np.load(gt_dir / GT_FILE) as z:
        arrays = {k: z[k] for k in z.files}
    return arrays, json.loads((gt_dir / GT_META).read_text())


def ground_truth_mesh(model, arrays: dict[str, np.ndarray]):
    """Recover the ground-truth meshes (T, V, 3) from stored parameters with the face model."""
    import torch

    t_n = arrays["pose"].shape[0]
    with torch.no_grad():
        out = model(torch.as_tensor(arrays["shape"])[None].expand(t_n, -1), torch.as_tensor(arrays["exp"]),
                    torch.as_tensor(arrays["pose"]))
    return out.verts
