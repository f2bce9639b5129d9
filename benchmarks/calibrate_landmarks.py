"""Re-measure the landmark confidence's calibration on the synthetic benchmark (ground truth known).

For detected faces of the synthetic set (every ``--stride``-th sequence, frames 0 and 5): the face mesh's
true error (% of the frontal eye distance) against its mirror disagreement (the ratio is
``tvface.data.collect.landmarks.MIRROR_ERROR_SCALE``), dlib's true error against its disagreement with
the mesh, how well the face flag separates good from bad faces, and NME by condition and backend.

    python benchmarks/calibrate_landmarks.py [--profile cpu-demo] [--stride 1] [--json OUT]

Needs the synthetic set of the profile (``tvface synth generate --profile cpu-demo``).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np


def main() -> None:
    from tvface.config import load_config
    from tvface.data import layout
    from tvface.data.collect.detect import detect_faces
    from tvface.data.collect.headpose import fit_head_pose
    from tvface.data.collect.landmarks import (
        MIRROR_ERROR_SCALE,
        _run,
        eye_distance_px,
        locate_landmarks,
        mean_error,
    )
    from tvface.data.evaluate import nme
    from tvface.synthetic.writer import dataset_roots
    from tvface.training.precision import cpu_name

    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="cpu-demo")
    ap.add_argument("--stride", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    cfg = load_config(args.profile)
    root, gt_root = dataset_roots(cfg)
    seqs = layout.list_sequences(root)[::args.stride]
    if not seqs:
        raise SystemExit(f"no synthetic sequences under {root}: run `tvface synth generate --profile {args.profile}`")
    rows = []
    for s in seqs:
        rel = s.relative_to(root)
        gt = np.load(gt_root / rel / "gt.npz")
        cond = json.loads((gt_root / rel / "gt.json").read_text())["condition"]
        stems = layout.frame_stems(s)
        for k in (0, 5):
            if k >= len(stems):
                continue
            im = cv2.cvtColor(cv2.imread(str(layout.image_path(s, stems[k]))), cv2.COLOR_BGR2RGB)
            dets = detect_faces([im], cfg.data)[0]
            if not dets:
                continue
            c = (im.shape[0] - 1) / 2
            det = min(dets, key=lambda d: float(np.hypot(*(d.center - c))))
            g = gt["lmks_2d_px"][k]
            a, _, b = _run("mediapipe", im, det, True)
            mesh = (a + b) / 2
            pose = fit_head_pose(mesh)
            dl = _run("dlib", im, det)[0]
            auto = locate_landmarks(im, det, cfg.data, "dlib+mediapipe")
            iod = eye_distance_px(pose)
            rows.append({"condition": cond, "mirror": mean_error(a, b, pose), "mesh_true": mean_error(mesh, g, pose),
                         "dlib_agree": mean_error(dl, mesh, pose), "dlib_true": mean_error(dl, g, pose),
                         "auto_true": float(np.linalg.norm(auto.points - g, axis=1).mean() / iod * 100),
                         "auto_flagged": auto.flagged, "auto_backend": auto.backend,
                         "nme": {"dlib": nme(dl, g), "mediapipe": nme(mesh, g), "auto": nme(auto.points, g)}})
    mirror, true = np.array([r["mirror"] for r in rows]), np.array([r["mesh_true"] for r in rows])
    agree, dtrue = np.array([r["dlib_agree"] for r in rows]), np.array([r["dlib_true"] for r in rows])
    flagged = np.array([r["auto_flagged"] for r in rows])
    auto_true = np.array([r["auto_true"] for r in rows])
    ratio = true / np.maximum(mirror, 1e-6)
    res = {"cpu": cpu_name(), "profile": args.profile, "faces": len(rows),
           "mesh_true_over_mirror": {"median": float(np.median(ratio)), "q25": float(np.percentile(ratio, 25)),
                                     "q75": float(np.percentile(ratio, 75)), "in_use": MIRROR_ERROR_SCALE},
           "dlib_true_over_agreement_median": float(np.median(dtrue / np.maximum(agree, 1e-6))),
           "auto_flag": {"flagged": int(flagged.sum()),
                         "true_error_kept_mean": float(auto_true[~flagged].mean()) if (~flagged).any() else None,
                         "true_error_flagged_mean": float(auto_true[flagged].mean()) if flagged.any() else None},
           "nme_by_condition": {}}
    for cond in sorted({r["condition"] for r in rows}) + ["all"]:
        rr = [r for r in rows if cond in ("all", r["condition"])]
        res["nme_by_condition"][cond] = {
            "n": len(rr), "flagged": sum(r["auto_flagged"] for r in rr),
            **{b: float(np.median([r["nme"][b] for r in rr])) for b in ("dlib", "mediapipe", "auto")},
            "auto_unflagged": float(np.median([r["nme"]["auto"] for r in rr if not r["auto_flagged"]] or [np.nan]))}
    print(json.dumps(res, indent=1))
    if args.json:
        args.json.write_text(json.dumps({"summary": res, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
