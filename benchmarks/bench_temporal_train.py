"""Training step and inference per frame: the efficient temporal reconstructor vs the per-frame one.

    python benchmarks/bench_temporal_train.py                 # the cpu-demo encoder size (128^2), 2 threads
    python benchmarks/bench_temporal_train.py --size 224 --repeats 3

Both reconstructors are built from the same profile and seed (shared parts start equal), differ only
in ``model.encoder``, and are timed in interleaved rounds of one run (this machine is shared):

* training step: one coarse-stage optimiser step of B sequences x T frames through the trainer's
  own ``Trainer.step`` (encode, every coarse term that is on here, backward, Adam), with the flows
  precomputed as the trainer caches them per sequence (so the step excludes flow estimation);
* inference: ``Reconstructor.predict`` on a whole sequence of ``--length`` frames: the per-frame
  model frame by frame, the temporal one in sliding windows (flows estimated with DIS on
  the CPU, once per sequence, each window takes its slice), decode included; per frame of the
  sequence; coarse codes only and with the detail codes (E_d / E_Td), the temporal model at the
  configured window stride (overlapping windows: a frame is encoded about T / stride times) and
  at stride T (no overlap).

Target (issue 14): temporal / per-frame <= 3x. The CPU is printed beside the figures.
"""
from __future__ import annotations

import argparse

import torch
from bench_scale import _Stepper  # the trainer's own step on a fixed batch (the script's folder is on sys.path)
from bench_train import timed_together

from tvface.config import load_config
from tvface.models.reconstructor import build_reconstructor
from tvface.training.objective import Batch, Objective
from tvface.training.precision import cpu_name, resolve_precision


def _at_stride(model, stride: int, fn):
    """``fn()`` with the model's sliding-window stride set to ``stride`` (restored after)."""
    before = model.window_stride
    model.window_stride = stride
    try:
        return fn()
    finally:
        model.window_stride = before


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu-demo")
    ap.add_argument("--size", type=int, default=0, help="encoder input size (0: the profile's model.image_size)")
    ap.add_argument("--sequences", type=int, default=2)
    ap.add_argument("--frames", type=int, default=0, help="training window T (0: the profile's temporal.n_frames)")
    ap.add_argument("--length", type=int, default=20, help="frames of the inference sequence")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    base = load_config(args.profile)
    size = args.size or base.model.image_size
    t = args.frames or base.temporal.n_frames
    sets = {"model.image_size": size, "temporal.n_frames": t, "data.n_frames": t}
    models = {}
    for enc in ("resnet", "temporal"):
        cfg = load_config(args.profile, {**sets, "model.encoder": enc})
        models[enc] = (cfg, build_reconstructor(cfg, seed=0))
    cfg_t, temporal = models["temporal"]
    torch.manual_seed(0)
    b = args.sequences
    frames = torch.rand(b, t, 3, size, size)
    with torch.no_grad():
        lm = models["resnet"][1].decode(models["resnet"][1].encode(frames, with_detail=False), render=False).lmks_2d
        flows = temporal.encoder.net.flow_estimator(frames)
    landmark = torch.cat([lm + 0.02 * torch.randn_like(lm), torch.ones_like(lm[..., :1])], -1).unflatten(0, (b, t))
    mask = torch.ones(b, t, 1, size, size)
    batches = {"resnet": Batch(frames, landmark, mask), "temporal": Batch(frames, landmark, mask, flows=flows)}
    objective = Objective.build(cfg_t.loss, quiet=True)
    steppers = {}
    for enc, (cfg, model) in models.items():
        model.train()
        steppers[enc] = _Stepper(cfg, model, objective, resolve_precision("float32", "cpu"), torch.device("cpu"))
    n = b * t
    train = timed_together({enc: (lambda e=enc: steppers[e](batches[e])) for enc in models}, args.repeats)
    seq = torch.rand(1, args.length, 3, size, size)
    for _, model in models.values():
        model.eval()
    stride = temporal.window_stride
    fns = {}
    for detail in (False, True):
        for enc, (_, model) in models.items():
            fns[(enc, detail, stride)] = lambda m=model, d=detail: m.predict(seq, with_detail=d)
        fns[("temporal", detail, t)] = lambda d=detail: _at_stride(temporal, t, lambda: temporal.predict(seq, d))
    with torch.no_grad():
        infer = timed_together(fns, max(args.repeats, 3))
    on = [k for k, v in objective.status.items() if v.on]
    print(f"CPU: {cpu_name()}, {args.threads} threads, fp32, {base.face_model.kind}, encoder input {size}^2, "
          f"temporal variant {cfg_t.temporal.variant} (flow {cfg_t.temporal.flow}), terms on: {on}")
    print(f"training step, {b}x{t} frames, coarse stage (flows cached):")
    for enc in models:
        print(f"  {enc:9s} {1000 * train[enc] / n:8.1f} ms/frame")
    print(f"  temporal / per-frame = {train['temporal'] / train['resnet']:.2f}x (target <= 3x)")
    print(f"inference, one sequence of {args.length} frames (temporal: windows of {t}, flows estimated once per "
          "sequence), decode included:")
    for detail in (False, True):
        what = "coarse + detail codes" if detail else "coarse codes"
        ref = infer[("resnet", detail, stride)]
        print(f"  {what}: per-frame {1000 * ref / args.length:.1f} ms/frame")
        for st in (stride, t):
            tt = infer[("temporal", detail, st)]
            note = " (the configured stride)" if st == stride else " (no overlap: each frame encoded once)"
            print(f"    temporal, stride {st}{note}: {1000 * tt / args.length:.1f} ms/frame = {tt / ref:.2f}x "
                  "per-frame (target <= 3x)")


if __name__ == "__main__":
    main()
