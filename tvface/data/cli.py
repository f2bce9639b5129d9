"""``tvface collect ...``: the collection steps as sub-commands. The lead's ``tvface/cli.py`` calls
:func:`add_collect_parser` with its sub-parsers; each sub-command sets ``func(args) -> int``.

    tvface collect run INPUT... [--root R] [--work W]     all steps, then manifest + QC report
    tvface collect shots|detect|identity|select|export INPUT...   one step (earlier ones as needed)
    tvface collect report INPUT...                         rebuild manifest + QC report
    tvface collect flow [--root R]                         DIS flow beside every sequence
    tvface collect demo [--out D]                          the embedded synthetic episode, collected
    tvface collect evaluate MEDIA [--json F]              landmark NME per still/backend, flagged apart
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from tvface.config import expand_path, load_config


def _cfg(args):
    return load_config(args.profile, args.set).data


def _dirs(args, cfg) -> tuple[Path, Path]:
    root = Path(args.root) if args.root else expand_path(cfg.root)
    work = Path(args.work) if args.work else expand_path(cfg.work_dir)
    return root, work


def _run_step(args) -> int:
    from tvface.data.collect import pipeline
    from tvface.data.collect.qc import write_report
    from tvface.data.collect.sources import discover

    cfg = _cfg(args)
    root, work = _dirs(args, cfg)
    if args.step == "run":
        report = pipeline.collect(args.inputs, cfg, root, work)
        print(json.dumps(report["totals"]))
        print(f"QC report: {root / 'qc' / 'report.md'}")
        return 0
    import torch

    torch.set_num_threads(cfg.num_threads)
    sources = discover([Path(p) for p in args.inputs])
    for s in sources:
        if args.step == "shots":
            r = pipeline.scan_shots(s, cfg, work)
            print(s.name, f"{len(r['shots'])} shots", r["source_error"] or "")
        elif args.step == "detect":
            r = pipeline.detect_source(s, cfg, work)
            print(s.name, f"{len(r['frames'])} frames detected")
        elif args.step == "identity":
            print(s.name, f"{len(pipeline.describe_source(s, cfg, work))} descriptors")
        elif args.step == "select":
            r = pipeline.select_source(s, cfg, work)
            print(s.name, f"{len(r['sequences'])} sequences, {len(r['rejections'])} rejection ranges")
        elif args.step == "export":
            print(s.name, f"{len(pipeline.export_source(s, cfg, work, root))} sequence folders")
    if args.step in ("export", "report"):
        write_report(root, work, sources, cfg)
        print(f"QC report: {root / 'qc' / 'report.md'}")
    return 0


def _flow(args) -> int:
    from tvface.data import layout
    from tvface.data.flow import write_sequence_flows

    cfg = _cfg(args)
    root, _ = _dirs(args, cfg)
    n = sum(write_sequence_flows(s) for s in layout.list_sequences(root))
    print(f"{n} flow files written under {root}")
    return 0


def _demo(args) -> int:
    from tvface.data.collect.pipeline import collect
    from tvface.data.collect.synthetic_episode import make_episode

    cfg = _cfg(args)
    out = Path(args.out) if args.out else expand_path("${TVFACE_DATA}/collect-demo")
    video, _ = make_episode(out / "input", cfg.demo_frames_per_shot)
    report = collect([video], cfg, out / "dataset", out / "work")
    print(json.dumps(report["totals"]))
    print(f"QC report: {out / 'dataset' / 'qc' / 'report.md'}")
    return 0


def _evaluate(args) -> int:
    from tvface.data.evaluate import evaluate_landmarks, markdown_report
    from tvface.io.atomic import atomic_write_text

    backends = tuple(b.strip() for b in args.backends.split(",") if b.strip())
    res = evaluate_landmarks(Path(args.media), _cfg(args), backends)
    print(markdown_report(res))
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(res, indent=1))
        print(f"JSON: {args.json}")
    return 0


def add_collect_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``collect`` and its sub-commands on the top-level CLI's sub-parsers."""
    p = subparsers.add_parser("collect", help="TV video -> single-character face sequences (report 4.1-4.2)")
    sub = p.add_subparsers(dest="collect_command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--profile", default="cpu-demo", help="profile name or YAML path")
        sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override, e.g. data.min_face_size=60 (repeatable)")
        sp.add_argument("--root", default="", help="dataset root (default: data.root)")
        sp.add_argument("--work", default="", help="intermediate results (default: data.work_dir)")

    helps = {"run": "all steps on the inputs, then manifest + QC report",
             "shots": "step 1: decode and split into shots", "detect": "step 2: face detection",
             "identity": "step 3: identity descriptors", "select": "the one-character rule + clustering",
             "export": "steps 4-7: crops, landmarks, masks, sequence folders",
             "report": "rebuild the manifest and QC report"}
    for step, h in helps.items():
        sp = sub.add_parser(step, help=h)
        sp.add_argument("inputs", nargs="+", help="video files, frame folders, patch folders, or folders of these")
        common(sp)
        sp.set_defaults(func=_run_step, step=step)
    sp = sub.add_parser("flow", help="precompute DIS flow between neighbouring frames")
    common(sp)
    sp.set_defaults(func=_flow)
    sp = sub.add_parser("demo", help="collect the embedded synthetic episode (offline)")
    common(sp)
    sp.add_argument("--out", default="", help="folder for input, work and dataset")
    sp.set_defaults(func=_demo)
    sp = sub.add_parser("evaluate", help="landmark NME on shared stills and the report's sample")
    sp.add_argument("media", help="the shared media folder (holding stills/ and tv-sample/)")
    sp.add_argument("--backends", default="dlib,mediapipe,auto",
                    help="comma-separated: dlib, mediapipe, fan, auto (the configured data.landmarks rule)")
    sp.add_argument("--json", default="", help="also write every number here")
    common(sp)
    sp.set_defaults(func=_evaluate)
    return p
