"""``tvface reconstruct`` on frames already collected: the pipeline's overhead over the bare encoder.

    python benchmarks/bench_reconstruct.py --checkpoint RUN_DIR --data COLLECTED_DATASET [--detail]
    python benchmarks/bench_reconstruct.py --size 224 --data COLLECTED_DATASET      # DECA's input size

Without ``--checkpoint`` the profile's model is built untrained at ``--size`` (timing does not depend
on the weights): the figure at DECA's 224^2 input, beside the demo checkpoint's 64^2.

Both figures in one run, interleaved, on the same tracks, per frame:

* encoder: ``Reconstructor.encode_sequence`` on every track's frames (what any use of the model pays);
* pipeline: :func:`tvface.reconstruct.reconstruct_track` on the same tracks: reading the crops and
  landmarks, encoding, decoding (geometry, render for the overlay, detail with ``--detail``), and
  writing params NPZ, one mesh per frame, the blendshape CSV, (displacement PNGs) and the overlay MP4;
* pipeline without overlay (``--no-overlay`` in the CLI), the cheaper setting.

Target (issue 15): pipeline <= 1.25x the encoder. The CPU is printed beside the figures.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from tvface.data import layout
from tvface.evaluation.benchmark import load_sequence
from tvface.reconstruct import ReconstructSettings, load_model, reconstruct_track
from tvface.training.precision import cpu_name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None, help="run folder or .pt (default: untrained model, --size)")
    ap.add_argument("--size", type=int, default=0, help="encoder input size without --checkpoint (0: profile's)")
    ap.add_argument("--encoder", choices=["resnet", "temporal"], default="resnet",
                    help="without --checkpoint: which encoder to build")
    ap.add_argument("--data", required=True, help="a collected dataset (tvface collect)")
    ap.add_argument("--profile", default="cpu-demo")
    ap.add_argument("--detail", action="store_true")
    ap.add_argument("--mesh", choices=["obj", "ply"], default="obj")
    ap.add_argument("--tracks", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ckpt = Path(args.checkpoint) if args.checkpoint else Path("untrained")
    settings = ReconstructSettings(checkpoint=ckpt, profile=args.profile, detail=args.detail,
                                   mesh_format=args.mesh)
    bare = ReconstructSettings(checkpoint=ckpt, profile=args.profile, detail=args.detail,
                               mesh_format=args.mesh, overlay=False)
    if args.checkpoint is not None:
        model, cfg, _ = load_model(settings)
    else:
        from tvface.config import load_config
        from tvface.models.reconstructor import build_reconstructor

        over = [f"model.encoder={args.encoder}"] + ([f"model.image_size={args.size}"] if args.size else [])
        cfg = load_config(args.profile, over)
        model = build_reconstructor(cfg).eval()
    tracks = layout.list_sequences(Path(args.data))[: args.tracks]
    n_frames = sum(len(layout.frame_stems(t)) for t in tracks)
    batches = [load_sequence(t, model.image_size) for t in tracks]
    out = Path(tempfile.mkdtemp())

    def encoder():
        with torch.no_grad():
            for b in batches:
                model.encode_sequence(b["image"][None], with_detail=args.detail)

    def pipeline(st):
        for t in tracks:
            reconstruct_track(model, t, out / t.name, st, "bench")

    fns = {"encoder": encoder, "pipeline": lambda: pipeline(settings), "no overlay": lambda: pipeline(bare)}
    for fn in fns.values():
        fn()
    times = {k: [] for k in fns}
    for _ in range(args.repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    shutil.rmtree(out, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"CPU: {cpu_name()}, {args.threads} threads, {type(model.encoder).__name__} at {model.image_size}^2, "
          f"{len(tracks)} tracks, {n_frames} frames, detail={args.detail}, meshes {args.mesh}")
    for k, v in med.items():
        print(f"  {k:10s} {1000 * v / n_frames:8.1f} ms/frame  {n_frames / v:6.1f} frames/s  "
              f"{v / med['encoder']:.2f}x encoder" + ("  (target <= 1.25x)" if k != "encoder" else ""))


if __name__ == "__main__":
    main()
