"""How far can 68 landmarks take the shape? Oracle bounds on the synthetic benchmark's held-out frames.

    python benchmarks/landmark_ceiling.py --conditions clean,profile

The DECA baseline's target (issue 13) is a vertex error 25 % below the mean face's on clean frames.
This script measures, per condition, on the benchmark's held-out identities (same split, same face
region, same similarity-aligned vertex error as ``tvface evaluate``):

* the **landmark fit** (:func:`tvface.evaluation.fit.fit_landmarks`, the benchmark's non-learned
  baseline) to the **detected** landmarks the models see, and to the **ground-truth** 2D landmarks
  (a perfect 68-point detector): the best any method that learns shape from landmarks alone can do
  per frame;
* the same fits with one identity per sequence (the frames' shape codes averaged);
* the error decomposed with ground-truth parameters: the mean face (true head and jaw pose), the true
  identity with zero expression, the mean identity with the true expression.

With ``--photometric-iters N`` (slow: about 1 s per iteration and sequence at 224^2 on 2 cores) also
the **analysis-by-synthesis** bound of the report's coarse objective: every code of a sequence
(shape, expression, pose, camera, albedo, light) optimised directly, no encoder, under the same
terms a model is trained with (landmarks, eye and lip closure, photometric with the skin mask, shape
consistency, regularisers; the profile's weights), started from the landmark fit. If that optimum
is not below the target, no encoder trained with these terms reaches it on these frames.

No training; the CPU is printed.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
import torch

from tvface.config import load_config
from tvface.evaluation.benchmark import heldout_sequences, load_sequence
from tvface.evaluation.fit import DEFAULT_ITERS, fit_landmarks
from tvface.evaluation.metrics import face_region_vertices, vertex_error_mm
from tvface.face_models.factory import load_face_model
from tvface.rendering.camera import pixels_to_screen
from tvface.synthetic.writer import dataset_roots, load_ground_truth
from tvface.training.precision import cpu_name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu-demo")
    ap.add_argument("--conditions", default="clean", help="comma-separated, or 'all'")
    ap.add_argument("--iters", type=int, default=DEFAULT_ITERS)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--photometric-iters", type=int, default=0,
                    help="also optimise the report's coarse objective directly (0: off)")
    ap.add_argument("--lr", type=float, default=0.01, help="Adam step of the analysis-by-synthesis codes")
    ap.add_argument("--max-sequences", type=int, default=0, help="per condition (0: all)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="profile override, e.g. loss.landmark=0.1 (the objective's weights)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.profile, args.set)
    root, gt_root = dataset_roots(cfg)
    seqs = heldout_sequences(root, gt_root, cfg.data.val_fraction, cfg.data.split_seed)
    conds = None if args.conditions == "all" else set(args.conditions.split(","))
    face = load_face_model(cfg.face_model)
    region = face_region_vertices(face)
    synth = _AnalysisBySynthesis(cfg, face, args.photometric_iters, args.lr) if args.photometric_iters else None
    res: dict[str, dict[str, list[float]]] = {}
    n_seen: dict[str, int] = {}
    t0 = time.perf_counter()
    for s in seqs:
        if conds is not None and s.condition not in conds:
            continue
        if args.max_sequences and n_seen.get(s.condition, 0) >= args.max_sequences:
            continue
        n_seen[s.condition] = n_seen.get(s.condition, 0) + 1
        arr, meta = load_ground_truth(s.gt_dir)
        t = arr["pose"].shape[0]
        shape = torch.as_tensor(arr["shape"]).float()[None].expand(t, -1)
        exp, pose = torch.as_tensor(arr["exp"]).float(), torch.as_tensor(arr["pose"]).float()
        with torch.no_grad():
            gt = face(shape, exp, pose).verts
            rows = {"mean face (true pose)": face(shape * 0, exp * 0, pose).verts,
                    "true identity, zero expression": face(shape, exp * 0, pose).verts,
                    "mean identity, true expression": face(shape * 0, exp, pose).verts}
        xy = pixels_to_screen(torch.as_tensor(arr["lmks_2d_px"]).float(), meta["image_size"])
        detected = load_sequence(s.seq_dir, cfg.model.image_size)["landmark"].float()
        targets = {"landmark fit, ground-truth landmarks": torch.cat([xy, torch.ones_like(xy[..., :1])], -1),
                   "landmark fit, detected landmarks": detected}
        for name, target in targets.items():
            p = fit_landmarks(face, target, iters=args.iters)
            if synth is not None:
                rows[name.replace("landmark fit", "analysis by synthesis")] = synth.fit(s.seq_dir, target, p)
            with torch.no_grad():
                rows[name] = face(p["shape"], p["exp"], p["pose"]).verts
                # one identity per sequence: the frames' shapes averaged (expression and pose per frame)
                rows[name + ", shape averaged over the sequence"] = face(
                    p["shape"].mean(0, keepdim=True).expand(t, -1), p["exp"], p["pose"]).verts
        for name, verts in rows.items():
            res.setdefault(name, {}).setdefault(s.condition, []).extend(vertex_error_mm(verts, gt, region).tolist())
    if not res:
        raise SystemExit(f"no held-out sequence of the conditions {sorted(conds or [])}")
    names = sorted({c for d in res.values() for c in d})
    print(f"CPU: {cpu_name()}, {args.threads} threads; {args.profile} {args.set or ''} held-out frames; "
          f"vertex error (mm), face region, similarity-aligned; {time.perf_counter() - t0:.0f} s")
    print("| | " + " | ".join(f"{c} ({len(next(iter(res.values()))[c])})" for c in names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for name, d in res.items():
        print(f"| {name} | " + " | ".join(f"{np.mean(d[c]):.2f}" for c in names) + " |")


class _AnalysisBySynthesis:
    """The report's coarse objective minimised over one sequence's codes (no encoder)."""

    def __init__(self, cfg, face, iters: int, lr: float) -> None:
        from tvface.models.reconstructor import build_reconstructor
        from tvface.training.objective import Objective

        size = cfg.data.image_size
        at_size = replace(cfg, model=replace(cfg.model, image_size=size))  # the renderer at the frames' size
        self.model = build_reconstructor(at_size, face_model=face).eval()
        self.objective = Objective.build(cfg.loss, quiet=True)
        self.iters, self.lr, self.size = iters, lr, size

    def fit(self, seq_dir, target: torch.Tensor, init: dict) -> torch.Tensor:
        from tvface.data import layout
        from tvface.models.reconstructor import Codes
        from tvface.training.objective import Batch

        seq = load_sequence(seq_dir, self.size)
        masks = [np.load(layout.mask_path(seq_dir, stem)) > 0.5 for stem in layout.frame_stems(seq_dir)]
        mask = torch.from_numpy(np.stack(masks).astype(np.float32))[:, None]
        if mask.shape[-1] != self.size:
            mask = torch.nn.functional.interpolate(mask, size=(self.size, self.size), mode="nearest")
        batch = Batch(image=seq["image"][None], landmark=target[None], mask=mask[None])
        m, t = self.model, target.shape[0]
        start = {"shape": init["shape"], "exp": init["exp"], "pose": init["pose"],
                 "cam": init["cam"] - m.cam_prior, "tex": torch.zeros(t, m.sizes["tex"]),
                 "light": torch.zeros(t, m.sizes["light"])}
        codes = {k: v.detach().clone()[None].requires_grad_() for k, v in start.items()}
        opt = torch.optim.Adam(codes.values(), lr=self.lr)
        for _ in range(self.iters):
            opt.zero_grad(set_to_none=True)
            terms, _ = self.objective(m, Codes(codes), batch, "coarse")
            sum(terms.values()).backward()
            opt.step()
        with torch.no_grad():
            return m.face_model(codes["shape"][0], codes["exp"][0], codes["pose"][0]).verts


if __name__ == "__main__":
    main()
