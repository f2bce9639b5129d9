"""Training step and inference per frame: the efficient temporal reconstructor vs the per-frame one.

    python benchmarks/bench_temporal_train.py                 # the cpu-demo encoder size (64^2), 2 threads
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
  configured window stride, at stride T (no overlap), at ``--overlap-stride`` (overlapping windows:
  a frame is propagated about T / stride times) and at that stride with the windows run one at a
  time instead of ``windows_per_batch`` together.

Ratios are medians of per-round ratios, with their range over the rounds.

Target (issue 14): temporal / per-frame <= 3x. The CPU is printed beside the figures.
"""
from __future__ import annotations

import argparse
import statistics

import torch
from bench_scale import _Stepper  # the trainer's own step on a fixed batch (the script's folder is on sys.path)
from bench_train import timed_rounds

from tvface.config import load_config
from tvface.models.reconstructor import build_reconstructor
from tvface.training.objective import Batch, Objective
from tvface.training.precision import cpu_name, resolve_precision


def _with(model, fn, **attrs):
    """``fn()`` with the model's attributes set to ``attrs`` (e.g. ``window_stride``; restored after)."""
    before = {k: getattr(model, k) for k in attrs}
    for k, v in attrs.items():
        setattr(model, k, v)
    try:
        return fn()
    finally:
        for k, v in before.items():
            setattr(model, k, v)


def _ratio(rounds: dict, num, den) -> str:
    """Median over rounds of the per-round ratio, with its range."""
    r = sorted(a / b for a, b in zip(rounds[num], rounds[den]))
    return f"{statistics.median(r):.2f}x (rounds {r[0]:.2f}-{r[-1]:.2f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu-demo")
    ap.add_argument("--size", type=int, default=0, help="encoder input size (0: the profile's model.image_size)")
    ap.add_argument("--sequences", type=int, default=2)
    ap.add_argument("--frames", type=int, default=0, help="training window T (0: the profile's temporal.n_frames)")
    ap.add_argument("--length", type=int, default=20, help="frames of the inference sequence")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--overlap-stride", type=int, default=3,
                    help="an overlapping window stride timed beside the configured one")
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
    train = timed_rounds({enc: (lambda e=enc: steppers[e](batches[e])) for enc in models}, args.repeats)
    seq = torch.rand(1, args.length, 3, size, size)
    for _, model in models.values():
        model.eval()
    stride = temporal.window_stride
    overlap = min(args.overlap_stride, t)
    strides = {stride: "the configured stride"}
    strides.setdefault(t, "no overlap: each frame propagated once")
    strides.setdefault(overlap, f"overlapping windows: each frame propagated ~{t / overlap:.1f} times")
    fns = {}
    for detail in (False, True):
        fns[("resnet", detail)] = lambda d=detail: models["resnet"][1].predict(seq, with_detail=d)
        for st in strides:
            fns[("temporal", detail, st)] = lambda d=detail, st=st: _with(
                temporal, lambda: temporal.predict(seq, d), window_stride=st)
        fns[("temporal", detail, "one by one")] = lambda d=detail: _with(
            temporal, lambda: temporal.predict(seq, d), windows_per_batch=1, window_stride=overlap)
    with torch.no_grad():
        infer = timed_rounds(fns, max(args.repeats, 3))
    ms = lambda rounds, frames: 1000 * statistics.median(rounds) / frames  # noqa: E731
    on = [k for k, v in objective.status.items() if v.on]
    print(f"CPU: {cpu_name()}, {args.threads} threads, fp32, {base.face_model.kind}, encoder input {size}^2, "
          f"temporal variant {cfg_t.temporal.variant} (flow {cfg_t.temporal.flow}), terms on: {on}")
    print(f"training step, {b}x{t} frames, coarse stage (flows cached), {args.repeats} interleaved rounds:")
    for enc in models:
        print(f"  {enc:9s} {ms(train[enc], n):8.1f} ms/frame")
    print(f"  temporal / per-frame = {_ratio(train, 'temporal', 'resnet')} (target <= 3x)")
    print(f"inference, one sequence of {args.length} frames (temporal: windows of {t}, up to "
          f"{temporal.windows_per_batch} per batch, flows estimated once per sequence), decode included, "
          f"{max(args.repeats, 3)} interleaved rounds:")
    for detail in (False, True):
        what = "coarse + detail codes" if detail else "coarse codes"
        ref = ("resnet", detail)
        print(f"  {what}: per-frame {ms(infer[ref], args.length):.1f} ms/frame")
        for st, note in [*strides.items(), ("one by one", f"stride {overlap}, windows one at a time")]:
            key = ("temporal", detail, st)
            label = f"stride {st}" if isinstance(st, int) else st
            print(f"    temporal, {label} ({note}): {ms(infer[key], args.length):.1f} ms/frame = "
                  f"{_ratio(infer, key, ref)} per-frame (target <= 3x)")


if __name__ == "__main__":
    main()
