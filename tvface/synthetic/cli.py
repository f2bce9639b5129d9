"""``tvface synth``: generate synthetic TV sequences with ground truth.

    tvface synth generate --profile cpu-demo [--set synth.n_sequences=200] [--workers 2]
"""
from __future__ import annotations

import argparse
import json


def _cmd_generate(args: argparse.Namespace) -> int:
    from tvface.config import load_config
    from tvface.synthetic.writer import generate

    cfg = load_config(args.profile, args.set)
    summary = generate(cfg, workers=args.workers, progress=not args.quiet)
    print(json.dumps(summary, indent=1))
    return 0


def add_synth_parser(subparsers) -> None:
    p = subparsers.add_parser("synth", help="synthetic TV sequences with ground truth")
    sub = p.add_subparsers(dest="synth_command", required=True)
    g = sub.add_parser("generate", help="render sequences into synth.root (GT into synth.gt_root); resumable")
    g.add_argument("--profile", default="cpu-demo", help="profile name or YAML (e.g. data/configs/synth-demo.yaml)")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override, e.g. synth.n_sequences=10 (repeatable)")
    g.add_argument("--workers", type=int, default=None, help="processes (default synth.workers)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.set_defaults(func=_cmd_generate)
