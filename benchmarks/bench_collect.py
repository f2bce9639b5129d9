"""Measure the collection on the shared media: throughput of detect + landmarks + mask per landmark
backend (dlib alone, today's, beside the configured rule, same run), sequences and coverage on the TV
patches, per-clip outcomes on the real videos, landmark NME summaries.

    python benchmarks/bench_collect.py --media $TVFACE_SHARED/media [--threads 2] [--videos] [--out DIR]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import torch


def throughput(folder: Path, cfg, backends: tuple[str, ...], repeats: int = 2) -> dict:
    """Frames/s of detection, landmarks and mask (crop included) on every patch, per landmark backend,
    after one warm-up; the backends are interleaved frame by frame and the run repeated, so that they
    see the same machine load (ratios, not absolute figures, are what compare)."""
    from tvface.data.collect.crop import apply_transform, crop_image, crop_transform
    from tvface.data.collect.detect import detect_faces
    from tvface.data.collect.landmarks import locate_landmarks
    from tvface.data.collect.masks import compute_masks, mask_backend
    from tvface.data.collect.sources import discover, iter_frames

    images = [f.image for s in discover([folder]) for f in iter_frames(s) if f.image is not None]
    mb = mask_backend(cfg)
    dets0 = detect_faces(images[:1], cfg, patch=True)[0]
    for b in backends:  # warm-up: model loads
        if dets0:
            locate_landmarks(images[0], dets0[0], cfg, b)
    t = {b: {"detect": 0.0, "landmarks": 0.0, "mask": 0.0} for b in backends}
    flagged = {b: 0 for b in backends}
    used: dict[str, dict[str, int]] = {b: {} for b in backends}
    for _ in range(repeats):
        for img in images:
            for b in backends:
                t0 = time.perf_counter()
                dets = detect_faces([img], cfg, patch=True)[0]
                t1 = time.perf_counter()
                if not dets:
                    t[b]["detect"] += t1 - t0
                    continue
                det = max(dets, key=lambda d: d.size)
                found = locate_landmarks(img, det, cfg, b)
                t2 = time.perf_counter()
                A = crop_transform(det.box, cfg.crop_scale, cfg.image_size)
                crop = crop_image(img, A, cfg.image_size)
                compute_masks(crop[None], apply_transform(A, found.points)[None], mb)
                t3 = time.perf_counter()
                for k, v in zip(t[b], (t1 - t0, t2 - t1, t3 - t2)):
                    t[b][k] += v
                flagged[b] += found.flagged
                used[b][found.backend] = used[b].get(found.backend, 0) + 1
    n = len(images) * repeats
    out = {"frames": len(images), "repeats": repeats, "threads": torch.get_num_threads(), "masks": mb}
    for b in backends:
        total = sum(t[b].values())
        out[b] = {"fps_total": round(n / total, 1),
                  **{f"ms_{k}": round(1000 * v / n, 1) for k, v in t[b].items()},
                  "flagged_frames": flagged[b] // repeats,
                  "backend_used": {k: v // repeats for k, v in used[b].items()}}
    base = backends[0]
    for b in backends[1:]:
        out[b]["time_vs_" + base] = round(out[base]["fps_total"] / out[b]["fps_total"], 2)
    return out


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
    from tvface.data.collect.landmarks import landmark_backend
    from tvface.training.precision import cpu_name

    cpu = cpu_name()
    backends = tuple(dict.fromkeys(["dlib", landmark_backend(cfg)]))  # today's (issue 16) backend first
    res: dict = {"cpu": cpu, "throughput": throughput(args.media / "tv-patches", cfg, backends)}
    print(json.dumps(res, indent=1), flush=True)
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
    res["nme"] = evaluate_landmarks(args.media, cfg)["stills_summary"]
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
