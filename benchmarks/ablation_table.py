"""The temporal encoder's ablations beside the full model and the per-frame baseline, by condition.

    tvface study --profile cpu-demo --encoders temporal --seeds 0 --out STUDIES/first-order \\
        --set temporal.second_order=false                                   # one study per ablation
    python benchmarks/ablation_table.py --reference STUDIES/cpu-demo --seed 0 \\
        --ablation "first-order only=STUDIES/first-order" --ablation "no flow guidance=STUDIES/no-flow"

After the seedless references (mean face; training mean, the best constant face), every column is
one training run of the same seed (the same initialisation of the shared parts, the
same batches, the same number of frames seen), evaluated by ``tvface study`` on the same test part of
the held-out identities: the per-frame model and the full temporal model of the reference study, then
each ablation's temporal run. The last column is the full temporal model's standard deviation over the
reference study's seeds: an ablation's difference smaller than that is not a finding.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from tvface.evaluation.study import METHOD_NAMES

METRICS = {"vertex_mm_mean": ("Vertex error (mm)", 2), "nme_mean": ("Landmark NME (%)", 1),
           "accel_mm_mean": ("Acceleration error (mm/frame²)", 3)}


def _run_rows(study: Path, encoder: str, seed: int) -> dict[str, dict]:
    """condition -> row of ``runs/<encoder>-s<seed>/eval.json`` (written by ``tvface study``)."""
    path = study / "runs" / f"{encoder}-s{seed}" / "eval.json"
    if not path.is_file():
        raise SystemExit(f"{path}: no evaluation; run `tvface study --encoders {encoder} --seeds {seed} "
                         f"--out {study}` first")
    rows = json.loads(path.read_text())["results"]
    return {r["condition"]: r for r in rows if r["method"] == METHOD_NAMES[encoder]}


def _seed_spread(study: Path) -> dict[tuple[str, str], float]:
    """(metric, condition) -> the temporal model's std over the reference study's seeds."""
    path = study / "study.json"
    if not path.is_file():
        return {}
    rows = json.loads(path.read_text())["rows"]
    return {(m, r["condition"]): r.get(f"{m}_std", float("nan"))
            for r in rows if r["method"] == "temporal" for m in METRICS}


def _baseline_rows(study: Path) -> list[tuple[str, dict[str, dict]]]:
    """(method, condition -> row) of the reference study's seedless baselines (``baselines.json``)."""
    path = study / "baselines.json"
    rows = json.loads(path.read_text()) if path.is_file() else []
    return [(m, {r["condition"]: r for r in rows if r["method"] == m})
            for m in ("mean face", "training mean") if any(r["method"] == m for r in rows)]


def table(reference: Path, ablations: list[tuple[str, Path]], seed: int) -> str:
    columns = _baseline_rows(reference)
    columns += [("per-frame", _run_rows(reference, "resnet", seed)),
               ("temporal (full)", _run_rows(reference, "temporal", seed))]
    columns += [(name, _run_rows(path, "temporal", seed)) for name, path in ablations]
    spread = _seed_spread(reference)
    conditions = [c for c in columns[0][1] if c != "all"] + ["all"]
    out = [f"Seed {seed}; reference study {reference}."]
    for metric, (title, digits) in METRICS.items():
        head = [name for name, _ in columns] + (["temporal seed std"] if spread else [])
        out += ["", f"**{title}**", "", "| condition | " + " | ".join(head) + " |",
                "|---" * (len(head) + 1) + "|"]
        for cond in conditions:
            cells = [f"{rows[cond][metric]:.{digits}f}" for _, rows in columns]  # evaluate() writes "all" too
            if spread:
                cells.append(f"{spread.get((metric, cond), float('nan')):.{digits}f}")
            label = f"**{cond}**" if cond == "all" else cond
            out.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", type=Path, required=True, help="study folder with resnet and temporal runs")
    ap.add_argument("--ablation", action="append", default=[], metavar="NAME=STUDY_DIR")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="also write the Markdown here")
    args = ap.parse_args()
    ablations = []
    for item in args.ablation:
        name, sep, path = item.rpartition("=")  # a name may hold "=" (T=3), a path rarely does
        if not sep:
            raise SystemExit(f"--ablation {item!r}: expected NAME=STUDY_DIR")
        ablations.append((name, Path(path).expanduser()))
    text = table(args.reference.expanduser(), ablations, args.seed)
    print(text)
    if args.out:
        from tvface.io.atomic import atomic_write_text

        atomic_write_text(args.out, text)


if __name__ == "__main__":
    main()
