"""The DECA baseline at a chosen scale, trained and evaluated in one go (the book's run, longer).

    python benchmarks/baseline_scale.py --out runs/scale4 --scale 4            # cpu-demo steps x 4
    python benchmarks/baseline_scale.py --out runs/oracle --oracle             # ground-truth landmarks/masks
    python benchmarks/baseline_scale.py --out runs/x --set train.lr=3e-4 --set model.image_size=224

The book trains the baseline on the ``cpu-demo`` schedule (about 15 min on 2 cores); this script is
the "what scale does it take" companion: it multiplies every stage's steps by ``--scale``, optionally
trains and evaluates on the oracle variant of the synthetic set (``synth.oracle``: the ground-truth 2D
landmarks and masks as the inputs, for every method alike, i.e. a perfect landmark detector), then
prints the benchmark table (mean face, landmark fit, trained) and the wall time of each part. Runs
resume: calling it again with the same ``--out`` continues training where it stopped.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tvface.config import load_config
from tvface.evaluation.benchmark import to_markdown, write_results
from tvface.evaluation.run import run_benchmark
from tvface.synthetic.writer import dataset_roots, generate
from tvface.training import Trainer
from tvface.training.precision import cpu_name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu-demo")
    ap.add_argument("--out", type=Path, required=True, help="run folder (resumed when it holds last.pt)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every stage's steps by this")
    ap.add_argument("--oracle", action="store_true", help="ground-truth landmarks and masks as inputs")
    ap.add_argument("--stages", default="pretrain,coarse,detail")
    ap.add_argument("--fit-iters", type=int, default=100)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()

    base = load_config(args.profile, args.set)
    over = {f"train.{s}_steps": max(1, round(getattr(base.train, f"{s}_steps") * args.scale))
            for s in ("pretrain", "coarse", "detail")}
    if args.oracle:
        root, gt_root = dataset_roots(base)
        over.update({"synth.oracle": True, "synth.root": f"{root}-oracle", "synth.gt_root": f"{gt_root}-oracle",
                     "data.root": f"{root}-oracle"})
    cfg = load_config(args.profile, [*args.set, *(f"{k}={json.dumps(v)}" for k, v in over.items())])
    print(f"profile {cfg.name} on {cpu_name()}: steps {over}, data {cfg.data.root}")

    t0 = time.perf_counter()
    summary = generate(cfg, progress=False)
    t_data = time.perf_counter() - t0
    trainer = Trainer(cfg, args.out, progress=True)
    if (args.out / "last.pt").exists():
        trainer.resume()
    t0 = time.perf_counter()
    trainer.run(args.stages.split(","))
    t_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = run_benchmark(cfg, args.out / "last.pt", fit_iters=args.fit_iters)
    t_eval = time.perf_counter() - t0
    result["meta"].update({"scale": args.scale, "oracle": args.oracle, "steps": over, "cpu": cpu_name(),
                           "seconds": {"data": t_data, "train_this_session": t_train, "evaluate": t_eval}})
    write_results(result, args.out / "evaluation.json", args.out / "evaluation.md")
    print(to_markdown(result))
    print(f"data {t_data:.0f} s ({summary['written']} sequences written), training {t_train:.0f} s this session, "
          f"evaluation {t_eval:.0f} s; {args.out / 'evaluation.json'}")


if __name__ == "__main__":
    main()
