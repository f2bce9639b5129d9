"""The fair comparison: per-frame DECA encoders vs temporal encoders, several seeds, by condition.

``tvface study --profile cpu-demo --seeds 0 1 2 --out STUDY_DIR`` (or :func:`run_study`):

1. **Train** one run per (encoder, seed) with the profile's schedule (stages ``pretrain`` and
   ``coarse`` by default: every metric below is on the coarse geometry, which the detail stage leaves
   as it is), ``model.encoder`` set to ``resnet`` (DECA's E_c/E_d) or ``temporal`` (E_Tc/E_Td) and
   ``train.seed`` to the seed (the initialisation follows it). So both encoders of one seed
   start from the same weights in every part they share
   (:func:`tvface.models.reconstructor.share_initialisation`), see the same batches of the same
   training split (the batch of step ``s`` is a function of ``train.seed`` and ``s``), the same
   number of frames (steps x batch x T) and the same losses. Runs resume where they stopped; a
   finished run is not trained again.
2. **Split the held-out identities** (the benchmark's, never seen in training) by identity into a
   *tuning* part (``tune_fraction``) and a *test* part. Smoothing parameters are chosen on the
   tuning part only; every number in the table is on the test part.
3. **Evaluate** on the test part (:func:`tvface.evaluation.benchmark.evaluate`: vertex error, NME,
   acceleration error, jitter): the mean face, the training mean (the training identities' average
   face: the best constant answer) and the landmark fit (once: they have no seed), and
   per seed the per-frame model, the per-frame model + One-Euro filter and + centred moving average
   on its codes (:mod:`tvface.evaluation.smoothing`), and the temporal model, which runs in sliding
   windows over whole sequences (every frame gets a code) at the profile's ``temporal.window_stride``
   and, with ``window_strides`` (``--window-strides``), at other strides too (inference only: the
   same trained run, cached in ``eval-stride<k>.json``).
4. **Aggregate** mean and standard deviation over seeds per method and condition, and write
   ``study.json`` and ``study.md`` (atomic). Each run's evaluation is cached beside it
   (``eval.json``), so a rerun only does what is missing.

The One-Euro filter is causal and lags; the temporal model and the moving average are centred (zero
lag, a latency of half their window). The One-Euro parameters are tuned under a lag budget of the
temporal window's half width (``(T - 1) / 2`` frames), the latency the temporal model itself has, so
the comparison is at equal delay.

Layout::

    STUDY_DIR/runs/<encoder>-s<seed>/      training run (tvface train layout) + eval.json
    STUDY_DIR/baselines.json               mean face, training mean, landmark fit on the test part
    STUDY_DIR/study.json, study.md         the table

With ``real_roots`` (collected datasets of real video, ``tvface collect``), every seeded method is
also run on them without ground truth: jitter and NME to the detected landmarks.
"""
from __future__ import annotations

import itertools
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from tvface.config import ProfileConfig, load_config
from tvface.data.dataset import split_identities
from tvface.evaluation.benchmark import (
    ALL,
    BenchmarkSequence,
    CallableMethod,
    LandmarkFitMethod,
    MeanFaceMethod,
    TrainingMeanMethod,
    evaluate,
    heldout_sequences,
    load_sequence,
    training_mean_codes,
)
from tvface.evaluation.metrics import face_region_vertices, vertex_error_mm
from tvface.evaluation.smoothing import smooth_codes
from tvface.io.atomic import atomic_write_text
from tvface.models.temporal import window_latency
from tvface.rendering.camera import screen_to_pixels
from tvface.synthetic.writer import dataset_roots, ground_truth_mesh, load_ground_truth

log = logging.getLogger(__name__)
ENCODERS = ("resnet", "temporal")
METHOD_NAMES = {"resnet": "per-frame", "temporal": "temporal"}
ONE_EURO = "per-frame + One-Euro"
MOVING_AVERAGE = "per-frame + moving average"
METRICS = ("vertex_mm_mean", "nme_mean", "accel_mm_mean", "jitter_mm_mean", "ms_per_frame")
# Grids searched on the tuning part (codes in their own units; time in frames, rate 1).
ONE_EURO_GRID = {"min_cutoff": (0.02, 0.05, 0.1, 0.2, 0.4), "beta": (0.0, 0.5, 2.0, 8.0)}
MOVING_AVERAGE_GRID = {"width": (3, 5, 7, 9)}
FORMAT_VERSION = 1
# Every metric of the table is on the coarse geometry, which the detail stage does not change (E_c /
# E_Tc are fixed there), so a study trains pretrain + coarse unless told otherwise.
STUDY_STAGES = ("pretrain", "coarse")


@dataclass(frozen=True)
class StudySettings:
    """What a study runs. ``overrides`` go to every run's profile (``k=v`` strings)."""

    seeds: tuple[int, ...] = (0, 1, 2)
    encoders: tuple[str, ...] = ENCODERS
    tune_fraction: float = 1 / 3
    tune_seed: int = 0
    fit_iters: int = 100
    overrides: tuple[str, ...] = ()
    stages: tuple[str, ...] = STUDY_STAGES
    # Sliding-window strides at which the temporal runs are evaluated besides the profile's own
    # (inference only: the same trained runs), each a method "temporal, stride k"; checked against
    # the profile by run_study before any run trains.
    window_strides: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        from tvface.training.objective import STAGES

        if not self.stages or any(s not in STAGES for s in self.stages):
            raise ValueError(f"stages must be among {STAGES}, got {list(self.stages)}")
        if not self.seeds:
            raise ValueError("a study needs at least one seed")
        bad = [e for e in self.encoders if e not in ENCODERS]
        if bad or not self.encoders:
            raise ValueError(f"encoders must be among {ENCODERS}, got {list(self.encoders)}")
        if not 0 < self.tune_fraction < 1:
            raise ValueError(f"tune_fraction must be in (0, 1), got {self.tune_fraction}")


def run_config(profile: str, encoder: str, seed: int, overrides: Sequence[str] = ()) -> ProfileConfig:
    """The profile of one run: ``model.encoder`` and ``train.seed`` set (the initialisation follows
    ``train.seed`` while ``model.init_seed`` is -1, so a plain ``tvface train`` run of that seed is
    the same run)."""
    return load_config(profile, [*overrides, f"model.encoder={encoder}", f"train.seed={seed}"])


def split_tuning(sequences: Sequence[BenchmarkSequence], tune_fraction: float, seed: int = 0
                 ) -> tuple[list[BenchmarkSequence], list[BenchmarkSequence]]:
    """(tuning, test) parts of the held-out sequences, split by identity (deterministic)."""
    ids = sorted({s.seq_dir.parent.name for s in sequences})
    test_ids, tune_ids = split_identities(ids, tune_fraction, seed=1000 + seed)
    if not tune_ids:  # too few identities for the fraction: give the tuning part one
        tune_ids, test_ids = test_ids[:1], test_ids[1:]
    if not test_ids:
        raise ValueError(f"{len(ids)} held-out identities cannot be split into tuning and test parts; "
                         "generate more identities (synth.n_sequences) or raise data.val_fraction")
    tune = [s for s in sequences if s.seq_dir.parent.name in tune_ids]
    test = [s for s in sequences if s.seq_dir.parent.name in test_ids]
    return tune, test


# --------------------------------------------------------------------------- methods
def _model_codes(model, batch: dict) -> dict[str, Tensor]:
    """Flat per-frame codes (T, n) of one sequence (sliding windows for a temporal encoder)."""
    with torch.no_grad():
        return model.encode_sequence(batch["image"][None], with_detail=False).flat()


def _decode(model, codes: dict[str, Tensor], image_size: int) -> dict[str, Tensor]:
    with torch.no_grad():
        dec = model.decode(codes, render=False)
    return {"verts": dec.verts, "lmks_px": screen_to_pixels(dec.lmks_2d, image_size)}


class SmoothedMethod(CallableMethod):
    """A model's per-frame codes smoothed over time (``method``/``params`` of :func:`smooth_codes`)
    before decoding; ``lags`` collects each sequence's lag in frames."""

    def __init__(self, name: str, model, method: str, params: dict) -> None:
        self.model, self.method, self.params, self.lags = model, method, dict(params), []
        super().__init__(name, self._predict)

    def _predict(self, batch: dict) -> dict[str, Tensor]:
        codes, lag = smooth_codes(_model_codes(self.model, batch), self.method, self.params)
        self.lags.append(lag)
        return _decode(self.model, codes, batch["image_size"])


def tune_smoothing(model, face, sequences: Sequence[BenchmarkSequence], method: str, grid: dict,
                   max_lag: float | None = None) -> dict:
    """Parameters of ``method`` with the lowest mean vertex error on ``sequences`` (lag <= ``max_lag``).

    The model runs once per sequence; every grid point only re-smooths and re-decodes its codes.
    Returns ``{"params", "vertex_mm", "lag", "grid": [{params, vertex_mm, lag}, ...]}``.
    """
    region = face_region_vertices(face).cpu()
    cache = []
    for seq in sequences:
        batch = load_sequence(seq.seq_dir, model.image_size)
        gt = ground_truth_mesh(face, load_ground_truth(seq.gt_dir)[0]).cpu().double()
        cache.append((batch, _model_codes(model, batch), gt))
    tried = []
    for values in itertools.product(*grid.values()):
        params = dict(zip(grid, values))
        errs, lags = [], []
        for batch, codes, gt in cache:
            smoothed, lag = smooth_codes(codes, method, params)
            verts = _decode(model, smoothed, batch["image_size"])["verts"].double()
            errs.append(vertex_error_mm(verts, gt, region).numpy())
            lags.append(lag)
        tried.append({"params": params, "vertex_mm": float(np.concatenate(errs).mean()),
                      "lag": float(np.mean(lags))})
    ok = [t for t in tried if max_lag is None or t["lag"] <= max_lag + 1e-9]
    if not ok:
        raise ValueError(f"no {method} setting in {grid} has a lag <= {max_lag} frames")
    best = min(ok, key=lambda t: t["vertex_mm"])
    return {**best, "max_lag": max_lag, "grid": tried}


def evaluate_real(methods: Sequence, seq_dirs: Sequence[Path], face, image_size: int | None = None) -> list[dict]:
    """Real video without ground truth: per method, jitter (:func:`tvface.evaluation.metrics.jitter_mm`)
    and NME to the *detected* landmarks (frames whose detection is flagged, weight 0, left out).

    Args:
        methods: benchmark methods (``predict(batch) -> {"verts", "lmks_px"}``).
        seq_dirs: collected sequences (``tvface collect`` layout: jpg/, kpt/).
    Returns:
        rows ``{method, n_sequences, n_frames, jitter_mm_mean, nme_to_detected_mean}``.
    """
    from tvface.evaluation.metrics import jitter_mm, landmark_nme

    region = face_region_vertices(face).cpu()
    acc = {m.name: {"jitter": [], "nme": [], "frames": 0} for m in methods}
    for seq_dir in seq_dirs:
        batch = load_sequence(seq_dir, image_size)
        det = batch["landmark"]
        det_px = screen_to_pixels(det[..., :2].double(), batch["image_size"])
        kept = det[..., 2].sum(-1) > 0
        for m in methods:
            pred = m.predict(batch)
            a = acc[m.name]
            a["frames"] += int(pred["verts"].shape[0])
            a["jitter"].append(jitter_mm(pred["verts"].detach().cpu().double(), region).numpy())
            if kept.any():
                lm = pred["lmks_px"].detach().cpu().double()  # the crop's pixels, like det_px
                a["nme"].append(landmark_nme(lm[kept], det_px[kept]).numpy())
    rows = []
    for m in methods:
        a = acc[m.name]
        j = np.concatenate(a["jitter"]) if a["jitter"] else np.zeros(0)
        e = np.concatenate(a["nme"]) if a["nme"] else np.zeros(0)
        rows.append({"method": m.name, "n_sequences": len(seq_dirs), "n_frames": a["frames"],
                     "jitter_mm_mean": float(j.mean()) if j.size else None,
                     "nme_to_detected_mean": float(e.mean()) if e.size else None})
    return rows


# --------------------------------------------------------------------------- runs
def run_dir(out: Path, encoder: str, seed: int) -> Path:
    return Path(out) / "runs" / f"{encoder}-s{seed}"


def train_run(cfg: ProfileConfig, out_dir: Path, stages: Sequence[str] = STUDY_STAGES, progress: bool = False):
    """Train (or finish, or skip) the ``stages`` of one run; returns the trainer. A run that already
    went further (e.g. a ``tvface train --stage all`` run of the same profile and seed) is used as it is."""
    from tvface.training.trainer import open_run

    trainer = open_run(cfg, out_dir, progress=progress)  # a run made for another config is moved aside
    done = {d["stage"] for d in trainer.done}
    if not set(stages) <= done:
        trainer.run([s for s in stages if s not in done])
    return trainer


def stride_method(stride: int) -> str:
    """The study's name of the temporal model evaluated at a window stride other than the profile's."""
    return f"{METHOD_NAMES['temporal']}, stride {stride}"


def evaluate_run(cfg: ProfileConfig, out_dir: Path, encoder: str, face, tune, test,
                 real: Sequence[Path] = (), force: bool = False, name: str | None = None,
                 cache: str = "eval.json") -> dict:
    """Evaluate one trained run on the test part (smoothing tuned on the tuning part) and, without
    ground truth, on the ``real`` collected sequences; cached in ``cache`` beside the run (redone when
    the real sequences or, for a temporal run, the window stride differ).

    ``name``: the method's name in the table (default :data:`METHOD_NAMES` of ``encoder``); a temporal
    run runs at ``cfg.temporal.window_stride``, which is inference only, so one run can be evaluated at
    several strides (one ``cache`` file each)."""
    from tvface.evaluation.run import load_trained, reconstructor_method

    path = Path(out_dir) / cache
    real = [str(p) for p in real]
    stride = cfg.temporal.window_stride if encoder == "temporal" else None
    if path.is_file() and not force:
        cached = json.loads(path.read_text())
        if cached.get("real_sequences", []) == real and cached.get("window_stride") == stride:
            return cached
    model = load_trained(cfg, Path(out_dir))
    methods: list = [reconstructor_method(model, name or METHOD_NAMES[encoder])]  # whole sequences (sliding windows)
    tuning = {}
    if encoder == "resnet":
        half_window = (cfg.temporal.n_frames - 1) / 2
        tuning["one_euro"] = tune_smoothing(model, face, tune, "one_euro", ONE_EURO_GRID, max_lag=half_window)
        tuning["moving_average"] = tune_smoothing(model, face, tune, "moving_average", MOVING_AVERAGE_GRID)
        methods += [SmoothedMethod(ONE_EURO, model, "one_euro", tuning["one_euro"]["params"]),
                    SmoothedMethod(MOVING_AVERAGE, model, "moving_average", tuning["moving_average"]["params"])]
    else:  # the tuning part's errors at this stride: where a stride is chosen without the test part
        on_tune = next(r for r in evaluate(methods, tune, face)["results"] if r["condition"] == ALL)
        tuning["window"] = {"stride": stride, "vertex_mm": on_tune["vertex_mm_mean"],
                            "accel_mm": on_tune["accel_mm_mean"]}
    result = evaluate(methods, test, face)
    lags = {m.name: float(np.mean(m.lags)) for m in methods if isinstance(m, SmoothedMethod)}
    real_rows = evaluate_real(methods, [Path(p) for p in real], face, model.image_size) if real else []
    latency = {}  # centred methods: frames until a frame's output can be known, on average
    if encoder == "temporal":  # until the end of the window a frame's code comes from
        latency[methods[0].name] = window_latency(cfg.temporal.n_frames, stride)
    if "moving_average" in tuning:
        latency[MOVING_AVERAGE] = (tuning["moving_average"]["params"]["width"] - 1) / 2
    out = {"results": result["results"], "tuning": tuning, "lag_frames": lags, "latency_frames": latency,
           "n_sequences": len(test), "real": real_rows, "real_sequences": real, "window_stride": stride}
    atomic_write_text(path, json.dumps(out, indent=1) + "\n")
    return out


def aggregate(per_seed: dict[int, list[dict]]) -> list[dict]:
    """Rows ``{method, condition, n_seeds, n_frames, <metric>_mean, <metric>_std}`` over seeds
    (std: population std over the seeds; 0 for one seed)."""
    cells: dict[tuple[str, str], list[dict]] = {}
    order: list[tuple[str, str]] = []
    for rows in per_seed.values():
        for r in rows:
            key = (r["method"], r["condition"])
            if key not in cells:
                cells[key] = []
                order.append(key)
            cells[key].append(r)
    out = []
    for key in order:
        rs = cells[key]
        row = {"method": key[0], "condition": key[1], "n_seeds": len(rs), "n_frames": rs[0]["n_frames"]}
        for m in METRICS:
            vals = [r[m] for r in rs if r.get(m) is not None]
            row[f"{m}_mean"] = float(np.mean(vals)) if vals else None
            row[f"{m}_std"] = float(np.std(vals)) if vals else None
        out.append(row)
    return out


def _aggregate_real(per_seed: dict[int, list[dict]]) -> list[dict]:
    """Mean/std over seeds of the real-video rows (:func:`evaluate_real`)."""
    cells: dict[str, list[dict]] = {}
    for rows in per_seed.values():
        for r in rows:
            cells.setdefault(r["method"], []).append(r)
    out = []
    for method, rs in cells.items():
        row = {"method": method, "n_seeds": len(rs), "n_sequences": rs[0]["n_sequences"], "n_frames": rs[0]["n_frames"]}
        for m in ("jitter_mm_mean", "nme_to_detected_mean"):
            vals = [r[m] for r in rs if r.get(m) is not None]
            row[f"{m}_mean"] = float(np.mean(vals)) if vals else None
            row[f"{m}_std"] = float(np.std(vals)) if vals else None
        out.append(row)
    return out


def _fmt(mean, std, digits=2) -> str:
    """``mean ± std`` at ``digits`` decimals; the spread is left out where it rounds to nothing (a
    method without a seed: the same number every seed)."""
    if mean is None:
        return "-"
    if std is None or round(std, digits) == 0:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _tuning_by_stride(study: dict) -> dict[int, dict[str, float]]:
    """Window stride -> the temporal model's vertex and acceleration error on the tuning part, mean over
    the seeds (from each evaluation's ``tuning["window"]``)."""
    cells: dict[int, list[dict]] = {}
    for run in study["runs"]:
        for w in run.get("tuning_windows", []):
            cells.setdefault(w["stride"], []).append(w)
    return {k: {m: float(np.mean([w[m] for w in ws])) for m in ("vertex_mm", "accel_mm")} for k, ws in cells.items()}


def to_markdown(study: dict) -> str:
    """One table per metric: conditions as rows, methods as columns, mean ± std over seeds."""
    rows = study["rows"]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    conds = list(dict.fromkeys(r["condition"] for r in rows))
    cell = {(r["method"], r["condition"]): r for r in rows}
    meta = study["meta"]
    lines = [f"Study on the test part of the held-out identities ({meta['n_test_sequences']} sequences; smoothing "
             f"tuned on {meta['n_tune_sequences']} other held-out sequences), seeds {meta['seeds']}; mean ± std "
             f"over seeds (mean face, training mean and landmark fit have no seed).", ""]
    titles = {"vertex_mm_mean": "Vertex error (mm)", "nme_mean": "Landmark NME (%)",
              "accel_mm_mean": "Acceleration error (mm/frame²)", "jitter_mm_mean": "Jitter (mm/frame²)"}
    for metric, title in titles.items():
        digits = 3 if metric in ("accel_mm_mean", "jitter_mm_mean") else 2
        lines += [f"**{title}**", "", "| condition | frames | " + " | ".join(methods) + " |",
                  "|" + "---|" * (len(methods) + 2)]
        for c in conds:
            first = cell.get((methods[0], c), {"n_frames": 0})
            vals = [_fmt(cell[(m, c)][f"{metric}_mean"], cell[(m, c)][f"{metric}_std"], digits)
                    if (m, c) in cell else "-" for m in methods]
            label = f"**{c}**" if c == ALL else c
            lines.append(f"| {label} | {first['n_frames']} | " + " | ".join(vals) + " |")
        lines.append("")
    if study.get("real_rows"):
        n_seq = study["real_rows"][0]["n_sequences"]
        lines += [f"**Real video** ({n_seq} collected sequences, no ground truth)", "",
                  "| method | frames | jitter (mm/frame²) | NME to detected landmarks (%) |", "|---|---|---|---|"]
        for r in study["real_rows"]:
            lines.append(f"| {r['method']} | {r['n_frames']} | "
                         f"{_fmt(r['jitter_mm_mean_mean'], r['jitter_mm_mean_std'], 3)} | "
                         f"{_fmt(r['nme_to_detected_mean_mean'], r['nme_to_detected_mean_std'])} |")
        lines.append("")
    lines += ["| method | lag (frames) | latency (frames) | ms/frame |", "|---|---|---|---|"]
    for m in methods:
        lag = meta["lag_frames"].get(m)
        lat = meta["latency_frames"].get(m)
        ms = cell[(m, ALL)]["ms_per_frame_mean"] if (m, ALL) in cell else None
        lines.append(f"| {m} | {'-' if lag is None else f'{lag:.2f}'} | {'-' if lat is None else f'{lat:g}'} | "
                     f"{'-' if ms is None else f'{ms:.1f}'} |")
    by_stride = _tuning_by_stride(study)
    if len(by_stride) > 1:
        lines += ["", "Temporal model on the tuning part (where a stride is chosen), mean over seeds: " + "; ".join(
            f"stride {k}: vertex {v['vertex_mm']:.2f} mm, acceleration {v['accel_mm']:.3f}"
            for k, v in sorted(by_stride.items())) + "."]
    total = meta.get("wall_s_all_calls", meta["wall_s"])
    lines += ["", f"Wall time: {total / 60:.1f} min on {meta['cpu']} ({meta['device']}), all calls of this study "
              f"together ({meta['wall_s'] / 60:.1f} min in the last)."]
    return "\n".join(lines) + "\n"


def run_study(profile: str, out: Path, settings: StudySettings = StudySettings(), progress: bool = False,
              real_roots: Sequence[Path] = ()) -> dict:
    """Train and evaluate every (encoder, seed), aggregate, write ``study.json`` + ``study.md``.

    ``real_roots``: collected datasets (``tvface collect`` output) of real video, measured without
    ground truth (jitter, NME to the detected landmarks) for every method that has a seed.
    """
    from tvface.data import layout
    from tvface.face_models.factory import load_face_model
    from tvface.training.precision import cpu_name

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    base = load_config(profile, list(settings.overrides))
    for stride in settings.window_strides:  # refused now, not after the first runs have trained
        load_config(profile, [*settings.overrides, f"temporal.window_stride={stride}"])
    root, gt_root = dataset_roots(base)
    tune, test = split_tuning(heldout_sequences(root, gt_root, base.data.val_fraction, base.data.split_seed),
                              settings.tune_fraction, settings.tune_seed)
    face = load_face_model(base.face_model)
    bpath = out / "baselines.json"
    baselines = json.loads(bpath.read_text()) if bpath.is_file() else []
    have = {r["method"] for r in baselines}
    it = settings.fit_iters
    factories = {MeanFaceMethod.name: lambda: MeanFaceMethod(face, iters=it),
                 TrainingMeanMethod.name: lambda: TrainingMeanMethod(
                     face, training_mean_codes(root, gt_root, base.data.val_fraction, base.data.split_seed), iters=it),
                 LandmarkFitMethod.name: lambda: LandmarkFitMethod(face, iters=it)}
    missing = [make() for name, make in factories.items() if name not in have]
    if missing:  # a study from before a baseline was added gets it, the others are kept
        baselines += evaluate(missing, test, face)["results"]
        atomic_write_text(bpath, json.dumps(baselines, indent=1) + "\n")
    real = [p for r in real_roots for p in layout.list_sequences(Path(r))]
    previous_s = 0.0  # the time earlier calls of this study took (a resumed study adds up)
    if (out / "study.json").is_file():
        previous_s = float(json.loads((out / "study.json").read_text())["meta"].get("wall_s_all_calls", 0.0))
    per_seed: dict[int, list[dict]] = {}
    real_per_seed: dict[int, list[dict]] = {}
    lags: dict[str, list[float]] = {}
    latency: dict[str, list[float]] = {}
    runs = []
    for seed in settings.seeds:
        rows = list(baselines)
        for encoder in settings.encoders:
            cfg = run_config(profile, encoder, seed, settings.overrides)
            rdir = run_dir(out, encoder, seed)
            t_run = time.perf_counter()
            train_run(cfg, rdir, settings.stages, progress)
            evals = [evaluate_run(cfg, rdir, encoder, face, tune, test, real)]
            if encoder == "temporal":  # the same run at other strides
                for stride in dict.fromkeys(settings.window_strides):
                    if stride != cfg.temporal.window_stride:
                        cfg_k = run_config(profile, encoder, seed,
                                           [*settings.overrides, f"temporal.window_stride={stride}"])
                        evals.append(evaluate_run(cfg_k, rdir, encoder, face, tune, test, real,
                                                  name=stride_method(stride), cache=f"eval-stride{stride}.json"))
            for ev in evals:
                rows += ev["results"]
                real_per_seed.setdefault(seed, []).extend({**r, "condition": "real"} for r in ev["real"])
                for k, v in ev["lag_frames"].items():
                    lags.setdefault(k, []).append(v)
                for k, v in ev["latency_frames"].items():
                    latency.setdefault(k, []).append(v)
            runs.append({"encoder": encoder, "seed": seed, "run": str(rdir),
                         "seconds_this_call": round(time.perf_counter() - t_run, 1), "tuning": evals[0]["tuning"],
                         "tuning_windows": [ev["tuning"]["window"] for ev in evals if "window" in ev["tuning"]]})
        per_seed[seed] = rows
    rows = aggregate(per_seed)
    order = ["mean face", TrainingMeanMethod.name, "landmark fit", METHOD_NAMES["resnet"], ONE_EURO, MOVING_AVERAGE,
             METHOD_NAMES["temporal"], *(stride_method(k) for k in sorted(settings.window_strides))]
    rows.sort(key=lambda r: order.index(r["method"]) if r["method"] in order else len(order))
    real_rows = _aggregate_real(real_per_seed)
    study = {"rows": rows, "real_rows": real_rows, "runs": runs, "meta": {
        "real_sequences": [str(p) for p in real],
        "format_version": FORMAT_VERSION, "profile": profile, "overrides": list(settings.overrides),
        "seeds": list(settings.seeds), "encoders": list(settings.encoders), "stages": list(settings.stages),
        "window_stride": base.temporal.window_stride, "window_strides": list(settings.window_strides),
        "n_tune_sequences": len(tune), "n_test_sequences": len(test),
        "test_sequences": [f"{s.seq_dir.parent.name}/{s.seq_dir.name}" for s in test],
        "lag_frames": {k: float(np.mean(v)) for k, v in lags.items()},
        "latency_frames": {k: float(np.mean(v)) for k, v in latency.items()},
        "wall_s": round(time.perf_counter() - t0, 1),
        "wall_s_all_calls": round(previous_s + time.perf_counter() - t0, 1), "cpu": cpu_name(),
        "device": str(base.train.device)}}
    atomic_write_text(out / "study.json", json.dumps(study, indent=1) + "\n")
    atomic_write_text(out / "study.md", to_markdown(study))
    return study


def book_study(profile: str, work: Path, seed: int = 0,
               extra_overrides: Sequence[str] = ()) -> tuple[StudySettings, Path]:
    """The one-seed study the book runs (chapters "Temporal encoder training" and "Qualitative
    results" share it): the profile's schedule at 64^2 (a temporal step costs ~3x a per-frame one), or
    on ``smoke`` a tiny set and a tiny temporal encoder in ``work``. ``extra_overrides`` (``k=v``
    strings, e.g. a ``tvface book batch`` grid cell's) come after these. Returns (settings, study folder)."""
    if Path(str(profile)).stem == "smoke":
        root = Path(work) / "synth"
        over = {"synth.root": root, "synth.gt_root": Path(work) / "synth-gt", "data.root": root,
                "synth.n_sequences": 6, "synth.n_frames": 8, "synth.image_size": 64, "data.image_size": 64,
                "data.n_frames": 3, "data.val_fraction": 0.8, "render.uv_size": 32, "temporal.n_frames": 3,
                "temporal.window_stride": 2, "temporal.flow_size": 32, "temporal.channels": 16,
                "temporal.offset_channels": 8, "temporal.deform_groups": 4}
        fit_iters = 30
    else:
        over, fit_iters = {"model.image_size": 64}, 100
    overrides = (*(f"{k}={v}" for k, v in over.items()), *extra_overrides)
    settings = StudySettings(seeds=(seed,), fit_iters=fit_iters, overrides=tuple(overrides))
    return settings, Path(work) / "study"


def default_study_dir(profile: str) -> Path:
    """Where ``tvface study`` writes without ``--out`` and where the book looks for a study:
    ``$TVFACE_DATA/studies/<profile>``."""
    from tvface.settings import data_dir

    return data_dir() / "studies" / profile


def load_run(profile: str, study_dir: Path, encoder: str, seed: int, overrides: Sequence[str] = ()):
    """The trained reconstructor of one run of a study (eval mode)."""
    from tvface.evaluation.run import load_trained

    return load_trained(run_config(profile, encoder, seed, overrides), run_dir(study_dir, encoder, seed))


def _cmd_study(args) -> int:
    logging.basicConfig(level=logging.WARNING, format="tvface: %(message)s")
    settings = StudySettings(seeds=tuple(args.seeds), encoders=tuple(args.encoders), fit_iters=args.fit_iters,
                             overrides=tuple(args.set), stages=tuple(args.stages),
                             window_strides=tuple(args.window_strides))
    out = Path(args.out) if args.out else default_study_dir(args.profile)
    print(f"study folder: {out}")
    study = run_study(args.profile, out, settings, progress=not args.quiet,
                      real_roots=[Path(p) for p in args.real])
    print(to_markdown(study))
    return 0


def add_study_parser(subparsers) -> None:
    p = subparsers.add_parser("study", help="per-frame vs temporal encoders: train + evaluate over seeds, one table")
    p.add_argument("--profile", default="cpu-demo")
    p.add_argument("--out", default="", help="study folder (runs, evaluations, study.json + study.md); default "
                   "$TVFACE_DATA/studies/<profile>, where the book's temporal chapter looks for it")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--encoders", nargs="+", default=list(ENCODERS), choices=list(ENCODERS))
    p.add_argument("--fit-iters", type=int, default=100, help="iterations of the landmark-fit baselines")
    p.add_argument("--stages", nargs="+", default=list(STUDY_STAGES), choices=["pretrain", "coarse", "detail"],
                   help="stages each run trains (default: pretrain coarse; the metrics are coarse)")
    p.add_argument("--real", nargs="*", default=[], metavar="DATASET",
                   help="collected datasets of real video (tvface collect): jitter and NME to detections")
    p.add_argument("--window-strides", type=int, nargs="+", default=[], metavar="K",
                   help="also evaluate the temporal runs at these sliding-window strides (inference only, no "
                        "retraining), as methods 'temporal, stride K'")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every run")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_study)
