"""``tvface`` command line: argparse -> config -> a library call.

    tvface assets                      # what is present, what it enables, how to get the rest
    tvface assets --profile gpu-full   # + the files that profile uses and what it does without each
    tvface assets build-ict [--source DIR|ZIP|TAR] [--out FILE]
    tvface config show --profile cpu-demo --set render.image_size=112
    tvface book run --profile smoke notebooks/01_face_models.py
    tvface book build
    tvface book batch --grid grid.yaml --out DIR [--cell I | --list | --dry-run | --collect | --slurm-only]
    tvface collect ...                 # data collection (see `tvface collect -h`)
    tvface train --profile cpu-demo --stage all --out RUN_DIR [--resume]
    tvface evaluate --profile cpu-demo --checkpoint RUN_DIR --split val --json OUT.json
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import yaml

from tvface import assets, settings
from tvface.config import ConfigError, config_to_dict, load_config


def _cmd_assets(args: argparse.Namespace) -> int:
    root = Path(args.assets_dir) if args.assets_dir else None
    print(f"assets folder: {root or settings.assets_dir()}  (set TVFACE_ASSETS to change)")
    print(assets.format_table(root, markdown=args.markdown))
    if args.profile:
        needs = assets.profile_needs(load_config(args.profile, []), root)
        print("\n" + assets.format_needs(needs, args.profile))
        if any(n.fatal and not n.present for n in needs):
            return 1
    if args.check:
        from tvface.asset_checks import check_assets

        rows = check_assets(root)
        print("\nchecks (each present file opened with its safe loader):")
        for name, state, detail in rows:
            if state != "missing":
                print(f"  {state:5s}  {name}: {detail}")
        return 1 if any(state == "error" for _, state, _ in rows) else 0
    return 0


def _cmd_build_ict(args: argparse.Namespace) -> int:
    from tvface.face_models import ict

    root = Path(args.assets_dir) if args.assets_dir else None
    out = Path(args.out) if args.out else assets.get("ict_model").path(root)
    source = Path(args.source) if args.source else settings.ict_source()
    path = ict.prepare_ict_model(out, source=source, n_identity=args.n_identity, force=args.force)
    print(f"ICT model: {path}")
    return 0


def _cmd_config_show(args: argparse.Namespace) -> int:
    cfg = load_config(args.profile, args.set)
    print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), end="")
    return 0


def _cmd_book_run(args: argparse.Namespace) -> int:
    from tvface import book

    sources = [Path(p) for p in args.notebooks] or book.notebook_sources()
    for src in sources:
        run = book.execute_notebook(src, Path(args.out), args.profile)
        print(f"{src} -> {run.output}  ({run.seconds:.1f} s, profile {args.profile})")
    return 0


def _cmd_book_build(args: argparse.Namespace) -> int:
    from tvface import book

    missing = book.missing_from_toc()
    if missing:
        raise SystemExit(f"_toc.yml does not list these notebooks: {missing}")
    html = book.build_book()
    print(f"site: {html / 'index.html'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tvface", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p_assets = sub.add_parser("assets", help="list user assets; build the ICT model")
    p_assets.add_argument("--assets-dir", default="", help="folder to inspect (default $TVFACE_ASSETS)")
    p_assets.add_argument("--markdown", action="store_true", help="print a Markdown table")
    p_assets.add_argument("--profile", default="", help="also list the files this profile uses, each found or "
                          "missing with what the run does without it (exit 1: one it cannot run without is missing)")
    p_assets.add_argument("--check", action="store_true",
                          help="open every present file with its loader and report errors")
    p_assets.set_defaults(func=_cmd_assets)
    asub = p_assets.add_subparsers(dest="assets_command")
    p_ict = asub.add_parser("build-ict", help="build the compact ICT-FaceKit model file")
    p_ict.add_argument("--source", default="", help="ICT-FaceKit folder, zip or tarball "
                       "(default $TVFACE_ICT_SOURCE, then $TVFACE_SHARED/assets/ict-facekit, then download)")
    p_ict.add_argument("--out", default="", help="output .npz (default $TVFACE_ASSETS/ict_facekit_model.npz)")
    p_ict.add_argument("--n-identity", type=int, default=None, help="identity modes to keep (default: all)")
    p_ict.add_argument("--force", action="store_true", help="rebuild even if the file is up to date")
    p_ict.set_defaults(func=_cmd_build_ict)

    p_cfg = sub.add_parser("config", help="show a resolved profile")
    csub = p_cfg.add_subparsers(dest="config_command", required=True)
    p_show = csub.add_parser("show")
    p_show.add_argument("--profile", default="cpu-demo")
    p_show.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override, e.g. render.image_size=112 (repeatable)")
    p_show.set_defaults(func=_cmd_config_show)

    p_book = sub.add_parser("book", help="execute notebooks with papermill; build the Jupyter Book")
    bsub = p_book.add_subparsers(dest="book_command", required=True)
    p_run = bsub.add_parser("run")
    p_run.add_argument("notebooks", nargs="*", help="percent .py notebooks (default: all)")
    p_run.add_argument("--profile", default="cpu-demo")
    p_run.add_argument("--out", default="book/generated")
    p_run.set_defaults(func=_cmd_book_run)
    p_build = bsub.add_parser("build", help="build the site from book/generated (executed notebooks)")
    p_build.set_defaults(func=_cmd_book_build)
    from tvface.book_batch import add_batch_parser

    add_batch_parser(bsub)

    try:
        from tvface.data.cli import add_collect_parser
    except ImportError:
        add_collect_parser = None
    if add_collect_parser is not None:
        add_collect_parser(sub)
    try:
        from tvface.synthetic.cli import add_synth_parser
    except ImportError:
        add_synth_parser = None
    if add_synth_parser is not None:
        add_synth_parser(sub)
    from tvface.training.cli import add_train_parser

    add_train_parser(sub)
    from tvface.evaluation.run import add_evaluate_parser

    add_evaluate_parser(sub)
    from tvface.evaluation.study import add_study_parser

    add_study_parser(sub)
    from tvface.reconstruct import add_reconstruct_parser

    add_reconstruct_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "assets" and getattr(args, "assets_command", None) is None:
        return _cmd_assets(args)
    try:
        return int(args.func(args) or 0)
    except (ConfigError, OSError, ValueError, RuntimeError) as exc:  # user-facing errors: one line
        # (TrainingError is a RuntimeError, CheckpointError a ValueError)
        print(f"tvface: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
