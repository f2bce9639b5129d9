"""Can the encoder learn at all at this scale? A supervised probe on the synthetic training split.

    python benchmarks/probe_encoder.py --steps 600 --size 64            # DECA's ResNet50 from random weights
    python benchmarks/probe_encoder.py --steps 3000 --size 64 --lr 3e-4 --arch resnet18

The self-supervised baseline (issue 13) learns head pose and camera only through the landmark loss.
This probe removes everything between the images and the answer: the same encoder (DECA's
``ResnetEncoder``, code layer scaled by ``model.init_scale`` as in the reconstructor) regresses the
ground-truth global head pose (axis-angle, radians) of the training frames directly, with the
trainer's batches (``train.batch_size`` sequences x ``data.n_frames`` frames, the same order).
It prints the L1 loss every ``--every`` steps beside the loss of predicting zero (the mean pose) on
the same batches. If the encoder cannot beat that with the answer given, the landmark loss cannot
teach it pose at this scale either: a question of initial weights and steps, not of the losses.
The CPU is printed.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torchvision

from tvface.config import load_config
from tvface.models.resnet_encoder import ResnetEncoder
from tvface.synthetic.writer import GT_FILE
from tvface.training.precision import cpu_name
from tvface.training.trainer import TrainData


def _to_group_norm(net: torch.nn.Module) -> None:
    """Every BatchNorm2d -> GroupNorm(32 groups, same channels, affine): statistics per sample."""
    for name, child in net.named_children():
        if isinstance(child, torch.nn.BatchNorm2d):
            setattr(net, name, torch.nn.GroupNorm(32, child.num_features))
        else:
            _to_group_norm(child)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu-demo")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--arch", choices=["deca", "resnet18", "temporal"], default="deca",
                    help="temporal: the profile's temporal encoder (E_Tc, flows from its estimator)")
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--norm", choices=["batch", "group"], default="batch",
                    help="the trunk's normalisation: BatchNorm (DECA) or GroupNorm(32) (per-sample statistics)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="profile override, e.g. train.batch_size=10 --set data.n_frames=1 (batch composition)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.profile, [f"model.image_size={args.size}", *args.set])
    data = TrainData(cfg, "train")
    gt_root = data.root.parent / f"{data.root.name}-gt"
    poses = {}
    for i, (seq_dir, _) in enumerate(data.ds.sequences):
        gt = gt_root / seq_dir.parent.name / seq_dir.name / GT_FILE
        poses[i] = torch.as_tensor(np.load(gt)["pose"][:, :3], dtype=torch.float32)
    torch.manual_seed(args.seed)
    if args.arch == "deca":
        net = ResnetEncoder(3)
        last = net.head.fc[-1]
        with torch.no_grad():
            last.weight.mul_(cfg.model.init_scale)
            last.bias.zero_()
    elif args.arch == "temporal":
        from tvface.models.temporal import TemporalEncoder

        net = TemporalEncoder(cfg.temporal, 3)
        last = net.head.mlp.fc[-1]
        with torch.no_grad():
            last.weight.mul_(cfg.model.init_scale)
            last.bias.zero_()
    else:
        net = torchvision.models.resnet18(weights=None, num_classes=3)
    if args.norm == "group":
        _to_group_norm(net)
    temporal = args.arch == "temporal"
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    t = cfg.data.n_frames
    print(f"CPU: {cpu_name()}, {args.threads} threads; {args.arch} ({args.norm} norm) at {args.size}^2, "
          f"lr {args.lr}, batch "
          f"{cfg.train.batch_size} x {t}, {len(data)} training sequences")
    losses, zero = [], []
    t0 = time.perf_counter()
    for step in range(args.steps):
        idx = data.indices(step)
        x = torch.stack([data._sequence(i)[0][s:s + t] for i, s in idx]).float() / 255
        y = torch.stack([poses[i][s:s + t] for i, s in idx]).flatten(0, 1)
        pred = net(x).flatten(0, 1) if temporal else net(x.flatten(0, 1))
        loss = (pred - y).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        zero.append(y.abs().mean().item())
        if (step + 1) % args.every == 0:
            print(f"step {step + 1:6d}  L1 {np.mean(losses[-args.every:]):.4f}  predicting zero "
                  f"{np.mean(zero[-args.every:]):.4f}  ({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
