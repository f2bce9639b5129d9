"""``tvface evaluate``: the trained reconstructor beside the mean face and the landmark fit on the
synthetic benchmark's held-out identities (:mod:`tvface.evaluation.benchmark`).

    tvface evaluate --profile cpu-demo --checkpoint RUN_DIR --split val --json OUT.json [--md OUT.md]
    tvface evaluate now --images PRED_DIR --scans SCAN_DIR [--json OUT.json]   # NoW scan-to-mesh error

``evaluate now`` is a subcommand of its own (:mod:`tvface.evaluation.now`), as ``assets build-ict`` is
of ``assets``: without it, ``tvface evaluate`` runs the benchmark.
"""
from __future__ import annotations

from pathlib import Path

from torch import Tensor

from tvface.config import ProfileConfig
from tvface.evaluation.benchmark import (
    CallableMethod,
    LandmarkFitMethod,
    MeanFaceMethod,
    TrainingMeanMethod,
    evaluate,
    heldout_sequences,
    to_markdown,
    training_mean_codes,
    write_results,
)
from tvface.models.reconstructor import Reconstructor
from tvface.rendering.camera import screen_to_pixels


def reconstructor_method(model: Reconstructor, name: str = "trained") -> CallableMethod:
    """The reconstructor as a benchmark method: whole sequences in, per-frame vertices and pixels out.
    A per-frame encoder sees every frame on its own (B=1, T=frames)."""
    model.eval()

    def predict(batch: dict) -> dict[str, Tensor]:
        out = model.predict(batch["image"][None])
        return {"verts": out["verts"], "lmks_px": screen_to_pixels(out["lmks_2d"], batch["image_size"])}

    return CallableMethod(name, predict)


def load_trained(cfg: ProfileConfig, checkpoint: Path, assets_root=None) -> Reconstructor:
    """A reconstructor with a training checkpoint's weights (refused if made for another model/config)."""
    from tvface.models.reconstructor import build_reconstructor
    from tvface.training.checkpoint import check_compatible, load_checkpoint
    from tvface.training.trainer import load_trainable_state

    model = build_reconstructor(cfg, assets_root)
    ckpt = load_checkpoint(checkpoint)
    check_compatible(ckpt, model.describe(), Path(checkpoint))
    load_trainable_state(model, ckpt["model"], Path(checkpoint))
    return model.eval()


def run_benchmark(cfg: ProfileConfig, checkpoint: Path | None, split: str = "val", fit_iters: int = 100,
                  max_sequences: int = 0, baselines: bool = True, name: str = "trained") -> dict:
    """Evaluate (held-out identities of the profile's synthetic set); returns the result dict."""
    from tvface.face_models.factory import load_face_model
    from tvface.synthetic.writer import dataset_roots

    if split != "val":
        raise ValueError(f"--split {split!r}: the benchmark evaluates held-out identities only (val)")
    root, gt_root = dataset_roots(cfg)
    seqs = heldout_sequences(root, gt_root, cfg.data.val_fraction, cfg.data.split_seed)
    if max_sequences > 0:
        seqs = sorted(seqs, key=lambda s: str(s.seq_dir))[:max_sequences]
    face = load_face_model(cfg.face_model)
    methods = []
    if baselines:
        mean = training_mean_codes(root, gt_root, cfg.data.val_fraction, cfg.data.split_seed)
        methods += [MeanFaceMethod(face, iters=fit_iters), TrainingMeanMethod(face, mean, iters=fit_iters),
                    LandmarkFitMethod(face, iters=fit_iters)]
    if checkpoint is not None:
        methods.append(reconstructor_method(load_trained(cfg, checkpoint), name))
    result = evaluate(methods, seqs, face)  # the fits need autograd; predict() runs without it
    result["meta"].update({"profile": cfg.name, "checkpoint": str(checkpoint) if checkpoint else None,
                           "root": str(root), "gt_root": str(gt_root), "n_sequences": len(seqs)})
    return result


def _cmd_evaluate(args) -> int:
    import json

    from tvface.config import load_config

    cfg = load_config(args.profile, args.set)
    ckpt = Path(args.checkpoint) if args.checkpoint else None
    result = run_benchmark(cfg, ckpt, args.split, args.fit_iters, args.max_sequences)
    md = to_markdown(result)
    if args.json:
        write_results(result, Path(args.json), Path(args.md) if args.md else Path(args.json).with_suffix(".md"))
    print(md)
    if not args.json:
        print(json.dumps(result["results"], indent=1))
    return 0


def add_evaluate_parser(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="vertex error / NME on the synthetic benchmark's held-out identities")
    p.add_argument("--profile", default="cpu-demo")
    p.add_argument("--checkpoint", default="", help="run folder or .pt (omit: mean face and landmark fit only)")
    p.add_argument("--split", default="val", choices=["val"])
    p.add_argument("--json", default="", help="write the results here (and a Markdown table beside it)")
    p.add_argument("--md", default="", help="Markdown table path (default: --json with .md)")
    p.add_argument("--fit-iters", type=int, default=100, help="iterations of the landmark-fit baselines")
    p.add_argument("--max-sequences", type=int, default=0, help="evaluate only the first N sequences (0: all)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override (repeatable)")
    p.set_defaults(func=_cmd_evaluate)
    from tvface.evaluation.now import add_now_parser

    add_now_parser(p.add_subparsers(dest="evaluate_mode", title="other evaluations",
                                    description="omit for the synthetic benchmark above"))
