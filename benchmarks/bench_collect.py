"""Measure the collection on the shared media: throughput of detect + landmarks + mask, sequences and
coverage on the TV patches, per-clip outcomes on the real videos, landmark NME.

    python benchmarks/bench_collect.py --media $TVFACE_SHARED/media [--threads 2] [--videos] [--out DIR]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def throughput(folder: Path, cfg) -> dict:
    """Frames/s of detection, landmarks and mask (crop included) on every patch, after one warm-up."""
    from tvface.data.collect.crop import apply_transform, crop_image, crop_transform
    from tvface.data.collect.detect import detect_faces
    from tvface.data.collect.landmarks import detect_landmarks, landmark_backend
    from tvface.data.collect.masks import compute_masks, mask_backend
    from tvface.data.collect.sources import discover, iter_frames

    images = [f.image for s in discover([folder]) for f in iter_frames(s) if f.image is not None]
    lb, mb = landmark_backend(cfg), mask_backend(cfg)
    detect_faces(images[:1], cfg, patch=True)
    t = {"detect": 0.0, "landmarks": 0.0, "mask": 0.0}
    for img in images:
        t0 = time.perf_counter()
        dets = detect_faces([img], cfg, patch=True)[0]
        t1 = time.perf_counter()
        if not dets:
            t["detect"] += t1 - t0
            continue
        det = max(dets, key=lambda d: d.size)
        lm = detect_landmarks(img, [det.box], lb)[0]
        t2 = time.perf_counter()
        A = crop_transform(det.box, cfg.crop_scale, cfg.image_size)
        crop = crop_image(img, A, cfg.image_size)
        compute_masks(crop[None], apply_transform(A, lm)[None], mb)
        t3 = time.perf_counter()
        for k, v in zip(t, (t1 - t0, t2 - t1, t3 - t2)):
            t[k] += v
    n = len(images)
    total = sum(t.values())
    return {"frames": n, "threads": torch.get_num_threads(), "fps_total": round(n / total, 1),
            **{f"ms_{k}": round(1000 * v / n, 1) for k, v in t.items()}, "backends": [lb, mb]}


def patches_outcome(report: dict) -> dict:
    out = {}
    for s in report["sources"]:
        in_runs = sum(1 for r in s["rejections"] if r["reason"] != "too_short" for _ in range(r["n"]))
        out[s["name"]] = {"frames": s["n_frames"], "sequences": [q["n_frames"] for q in s["sequences"]],
                          "frames_with_lmk_mask": s["frames_kept"], "rejected": s["rejected_frames_by_reason"],
                          "non_short_rejections": in_runs}
    return out


def main() -> None:
    from tvface.config import load_config
    from tvface.data.collect.pipeline import collect
    from tvface.data.collect.shots import runs_of_consecutive
    from tvface.data.collect.sources import discover, folder_files
    from tvface.data.evaluate import evaluate_landmarks

    ap = argparse.ArgumentParser()
    ap.add_argument("--media", required=True, type=Path)
    ap.add_argument("--profile", default="cpu-demo")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--videos", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    cfg = dataclasses.replace(load_config(args.profile).data, num_threads=args.threads)
    torch.set_num_threads(args.threads)
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-collect-"))
    res: dict = {"throughput": throughput(args.media / "tv-patches", cfg)}
    t = time.perf_counter()
    rep = collect([args.media / "tv-patches"], cfg, out / "patches", out / "patches-work")
    res["patches_wall_s"] = round(time.perf_counter() - t, 1)
    res["patches"] = patches_outcome(rep)
    # Coverage: frames of the >= 10 runs of consecutive patch numbers that got landmarks + masks.
    in_long_runs = 0
    for s in discover([args.media / "tv-patches"]):
        runs = runs_of_consecutive([i for i, _ in folder_files(s)])
        in_long_runs += sum(b - a + 1 for a, b in runs if b - a + 1 >= cfg.min_sequence_length)
    kept = sum(s["frames_kept"] for s in rep["sources"])
    res["patches_coverage"] = {"frames_in_runs_ge_10": in_long_runs, "with_landmarks_and_mask": kept,
                               "percent": round(100 * kept / max(in_long_runs, 1), 1)}
    res["contact_sheet"] = rep["contact_sheet"]
    if args.videos:
        t = time.perf_counter()
        vrep = collect([args.media / "videos"], cfg, out / "videos", out / "videos-work")
        res["videos_wall_s"] = round(time.perf_counter() - t, 1)
        res["videos"] = {s["name"]: {"frames": s["n_frames"], "shots": s["n_shots"], "kept": s["frames_kept"],
                                     "sequences": [q["source_frames"] for q in s["sequences"]],
                                     "rejected": s["rejected_frames_by_reason"]} for s in vrep["sources"]}
    res["nme"] = evaluate_landmarks(args.media, cfg)
    res["nme"]["tv_sample_id1"]["mean"] = float(np.mean(res["nme"]["tv_sample_id1"]["nme"]))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
