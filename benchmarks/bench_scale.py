"""Training steps/s and inference frames/s: per-frame vs efficient vs paper temporal, fp32 vs bf16, one device.

    python benchmarks/bench_scale.py                                   # CUDA when present, else the CPU
    python benchmarks/bench_scale.py --profile gpu-full --size 224      # a GPU node with FLAME
    python benchmarks/bench_scale.py --device cpu --size 64 --repeats 2 # the CPU figures at a small size

Issue 16's table. Each configuration is built from the same profile and seed and differs only in
``model.encoder`` / ``temporal.variant``; all are timed in interleaved rounds of one run (shared
machines). Training step: one coarse-stage step of ``--sequences`` x T frames through the trainer's
own :meth:`Trainer.step` (encode, every coarse term on here, backward, Adam; flows cached per
sequence as the trainer does). Inference: :meth:`Reconstructor.predict` on one sequence of
``--length`` frames (temporal: sliding windows, flows estimated once per sequence), coarse codes,
decode included. bf16 is autocast; it runs on CUDA and on CPUs with AMX and is reported as
skipped elsewhere (emulated bf16 is many times slower, see tvface.training.precision). On CUDA the
encoders and frames are channels_last (``train.channels_last``). The device is printed with the table.
"""
from __future__ import annotations

import argparse

import torch
from bench_train import timed_together  # the script's folder is on sys.path

from tvface.config import config_to_dict, load_config
from tvface.models.reconstructor import build_reconstructor
from tvface.training.objective import Batch, Objective
from tvface.training.precision import cpu_has_native_bf16, cpu_name, resolve_precision
from tvface.training.trainer import Trainer

CONFIGS = {"per-frame": {"model.encoder": "resnet"},
           "temporal efficient": {"model.encoder": "temporal", "temporal.variant": "efficient"},
           "temporal paper": {"model.encoder": "temporal", "temporal.variant": "paper"}}


class _Stepper(Trainer):
    """The trainer's own step (:meth:`Trainer.step`, warm-up and all) on a model and a fixed batch,
    without a dataset or a run folder: a Trainer whose constructor sets only what ``step`` reads."""

    def __init__(self, cfg, model, objective, precision, device) -> None:  # not Trainer.__init__: no data
        from tvface.training.distributed import DistContext, StepModule

        self.cfg, self.model, self.objective, self.precision, self.device = cfg, model, objective, precision, device
        self.dist, self._ddp = DistContext(), None
        self._step_module = StepModule(model, objective)
        self.stage, self.stage_step, self.global_step = "coarse", 0, 0
        self.optimizer = torch.optim.Adam(model.coarse_parameters(), lr=cfg.train.lr)

    def __call__(self, batch: Batch) -> None:
        self.step(batch, "coarse")


def _sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu-demo")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--size", type=int, default=0, help="encoder input size (0: the profile's model.image_size)")
    ap.add_argument("--sequences", type=int, default=2)
    ap.add_argument("--length", type=int, default=20, help="frames of the inference sequence")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset of " + ", ".join(CONFIGS))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{cpu_name()}, {args.threads} threads"
    base = load_config(args.profile)
    size = args.size or base.model.image_size
    t = base.temporal.n_frames
    dtypes = ["float32"]
    if device.type == "cuda" or cpu_has_native_bf16():
        dtypes.append("bfloat16")
    torch.manual_seed(0)
    b = args.sequences
    frames = torch.rand(b, t, 3, size, size, device=device)
    seq = torch.rand(1, args.length, 3, size, size, device=device)
    mask = torch.ones(b, t, 1, size, size, device=device)
    cl = device.type == "cuda" and base.train.channels_last
    train_fns, infer_fns = {}, {}
    paper_layout = {f"temporal.{k}": v for k, v in config_to_dict(load_config("paper"))["temporal"].items()
                    if k not in ("flow", "n_frames")}  # Table 1's layout, whatever the profile's face model
    for label in args.configs.split(","):
        sets = {**(paper_layout if label == "temporal paper" else {}), **CONFIGS[label], "model.image_size": size,
                "data.n_frames": t, "temporal.flow": "dis" if device.type == "cpu" else base.temporal.flow}
        cfg = load_config(args.profile, sets)
        model = build_reconstructor(cfg, seed=0).to(device)
        if cl:
            model.encoder.to(memory_format=torch.channels_last)
        with torch.no_grad():
            lm = model.decode(model.encode(frames, with_detail=False), render=False).lmks_2d
            flows = model.encoder.net.flow_estimator(frames) if model.temporal else None
        landmark = torch.cat([lm + 0.02 * torch.randn_like(lm), torch.ones_like(lm[..., :1])], -1).unflatten(0, (b, t))
        batch = Batch(frames, landmark, mask, flows=flows)
        objective = Objective.build(cfg.loss, quiet=True, device=device)
        for dt in dtypes:
            prec = resolve_precision(dt, device)
            stepper = _Stepper(cfg, model, objective, prec, device)

            def train_step(s=stepper, m=model, batch=batch):
                m.train()
                s(batch)
                _sync(device)

            def infer(m=model, p=prec):
                m.eval()
                with torch.no_grad(), p.autocast():
                    m.predict(seq, with_detail=False)
                _sync(device)

            train_fns[(label, dt)] = train_step
            infer_fns[(label, dt)] = infer
    train = timed_together(train_fns, args.repeats)
    inference = timed_together(infer_fns, args.repeats)
    print(f"device: {name}; {base.face_model.kind}, encoder input {size}^2, T = {t}, training batch {b} x {t} "
          f"frames (coarse stage), inference on {args.length} frames; channels_last {cl}")
    if "bfloat16" not in dtypes:
        print("bf16: skipped (this CPU has no native bf16; autocast would be emulated and many times slower)")
    ref_train, ref_inf = train[("per-frame", "float32")], inference[("per-frame", "float32")]
    print("| configuration | dtype | train steps/s | train frames/s | vs per-frame fp32 | inference frames/s "
          "| vs per-frame fp32 |")
    print("|---|---|---|---|---|---|---|")
    for (label, dt), sec in train.items():
        inf = inference[(label, dt)]
        print(f"| {label} | {dt} | {1 / sec:.2f} | {b * t / sec:.1f} | {ref_train / sec:.2f}x | "
              f"{args.length / inf:.1f} | {ref_inf / inf:.2f}x |")


if __name__ == "__main__":
    main()
