"""``tvface train``: staged training of the reconstructor on a profile.

    tvface train --profile cpu-demo --stage all --out RUN_DIR [--resume] [--set train.coarse_steps=100]
    torchrun --nproc_per_node 4 -m tvface.cli train --profile gpu-full --out RUN_DIR   # DDP, one node
"""
from __future__ import annotations

import argparse
import json
import logging


def _cmd_train(args: argparse.Namespace) -> int:
    from tvface.config import load_config
    from tvface.training.trainer import train

    logging.basicConfig(level=logging.WARNING, format="tvface: %(message)s")
    cfg = load_config(args.profile, args.set)
    trainer = train(cfg, args.out, stage=args.stage, resume=args.resume, progress=not args.quiet)
    if not trainer.dist.is_main:  # under torchrun: one summary, from rank 0
        return 0
    print(json.dumps({"run": str(args.out), "global_step": trainer.global_step, "stages_done": trainer.done,
                      "precision": trainer.precision.to_dict(),
                      "losses_off": {k: v.reason for k, v in trainer.objective.status.items() if not v.on}},
                     indent=1))
    return 0


def add_train_parser(subparsers) -> None:
    p = subparsers.add_parser("train", help="train the reconstructor: pretrain -> coarse -> detail")
    p.add_argument("--profile", default="cpu-demo", help="profile name or YAML path")
    p.add_argument("--stage", default="all", choices=["pretrain", "coarse", "detail", "all"])
    p.add_argument("--out", required=True, help="run folder (checkpoints, manifest, metrics, TensorBoard)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override, e.g. train.coarse_steps=100 (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)
