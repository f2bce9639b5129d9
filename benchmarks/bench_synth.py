"""Time the synthetic generator's parts on this machine: sample, render+composite, offline inputs.

    python benchmarks/bench_synth.py [--profile cpu-demo] [--n 5]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def main() -> None:
    from tvface.config import load_config
    from tvface.synthetic.sequences import render_sequence, sample_sequence
    from tvface.synthetic.writer import _offline_inputs, build_context

    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="cpu-demo")
    ap.add_argument("--n", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = load_config(args.profile)
    t = time.perf_counter()
    ctx = build_context(cfg)
    print(f"context: {time.perf_counter() - t:.2f} s")
    times = {"sample": [], "render": [], "offline_inputs": []}
    for i in range(args.n):
        t0 = time.perf_counter()
        spec = sample_sequence(np.random.default_rng(i), cfg.synth, ctx.model, ctx.albedo.n_tex, center=ctx.center)
        t1 = time.perf_counter()
        maps = ctx.albedo(torch.as_tensor(spec.tex, dtype=torch.float32)[None])
        out = render_sequence(ctx.model, ctx.renderer, maps, spec, cfg.synth.supersample)
        t2 = time.perf_counter()
        _offline_inputs(out.frames, cfg)
        t3 = time.perf_counter()
        for k, v in zip(times, (t1 - t0, t2 - t1, t3 - t2)):
            times[k].append(v)
    for k, v in times.items():
        print(f"{k}: {np.mean(v):.2f} s / sequence of {cfg.synth.n_frames} frames at {cfg.synth.image_size}^2")


if __name__ == "__main__":
    main()
