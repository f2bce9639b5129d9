"""The per-frame vs temporal study: split by identity, aggregation over seeds, smoothing tuned on the
tuning part under a lag budget, and one end-to-end run on the tiny set that a rerun does not repeat."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tvface.evaluation.benchmark import BenchmarkSequence
from tvface.evaluation.study import (
    MOVING_AVERAGE,
    ONE_EURO,
    StudySettings,
    aggregate,
    run_study,
    split_tuning,
    to_markdown,
)

TINY_TEMPORAL = ("temporal.n_frames=3", "temporal.window_stride=2", "temporal.flow_size=32", "temporal.channels=16",
                 "temporal.offset_channels=8", "temporal.deform_groups=4")


def _seq(identity: str, name: str) -> BenchmarkSequence:
    return BenchmarkSequence(Path("/r") / identity / name, Path("/g") / identity / name, "clean")


def test_split_tuning_is_by_identity_and_deterministic():
    seqs = [_seq(f"id{i:03d}", f"s{j}") for i in range(30) for j in range(2)]
    tune, test = split_tuning(seqs, 1 / 3)
    ids_tune = {s.seq_dir.parent.name for s in tune}
    ids_test = {s.seq_dir.parent.name for s in test}
    assert not ids_tune & ids_test and len(tune) + len(test) == len(seqs)
    assert 4 <= len(ids_tune) <= 16  # about a third of 30
    assert split_tuning(list(reversed(seqs)), 1 / 3)[0] == sorted(tune, key=lambda s: str(s.seq_dir), reverse=True)
    two = [_seq("a", "s0"), _seq("b", "s0")]
    t, r = split_tuning(two, 0.01)  # too few identities for the fraction: the tuning part still gets one
    assert len(t) == 1 and len(r) == 1
    with pytest.raises(ValueError, match="cannot be split"):
        split_tuning([_seq("a", "s0")], 0.5)
    with pytest.raises(ValueError, match="tune_fraction"):
        StudySettings(tune_fraction=1.0)
    with pytest.raises(ValueError, match="encoders"):
        StudySettings(encoders=("vit",))


def test_aggregate_mean_and_std_over_seeds():
    def row(method, v, nme=None):
        return {"method": method, "condition": "clean", "n_frames": 10, "vertex_mm_mean": v, "nme_mean": nme,
                "accel_mm_mean": None, "jitter_mm_mean": 2 * v, "ms_per_frame": 1.0}

    rows = aggregate({0: [row("a", 1.0, 3.0), row("b", 5.0)], 1: [row("a", 3.0, 5.0), row("b", 5.0)]})
    a, b = rows
    assert (a["method"], b["method"]) == ("a", "b") and a["n_seeds"] == 2
    assert a["vertex_mm_mean_mean"] == 2.0 and a["vertex_mm_mean_std"] == 1.0
    assert a["jitter_mm_mean_mean"] == 4.0 and a["jitter_mm_mean_std"] == 2.0
    assert a["nme_mean_mean"] == 4.0 and b["nme_mean_mean"] is None and b["vertex_mm_mean_std"] == 0.0
    assert a["accel_mm_mean_mean"] is None


def test_study_end_to_end_on_the_tiny_set(tiny_synth, tmp_path):
    root = tiny_synth["root"]
    overrides = [f"{k}={v}" for k, v in {
        "data.root": root, "data.image_size": 64, "data.n_frames": 3, "data.val_fraction": 0.8,
        "model.image_size": 32, "render.uv_size": 32, "train.batch_size": 1, "train.image_every": 0,
        "train.log_every": 1, "train.checkpoint_every": 1000, "train.pretrain_steps": 2,
        "train.coarse_steps": 1, "train.detail_steps": 1}.items()] + list(TINY_TEMPORAL)
    from tvface.config import load_config
    from tvface.evaluation.benchmark import heldout_sequences

    cfg = load_config("smoke", overrides)
    held = heldout_sequences(root, tiny_synth["gt_root"], cfg.data.val_fraction, cfg.data.split_seed)
    if len({s.seq_dir.parent.name for s in held}) < 2:
        pytest.skip("the tiny set's split left fewer than 2 held-out identities")
    settings = StudySettings(seeds=(0, 1), fit_iters=3, overrides=tuple(overrides), window_strides=(1, 2))
    real_root = tmp_path / "real"  # a "real" collected dataset: the tiny set's sequences, used without their GT
    (real_root / "person").mkdir(parents=True)
    import shutil

    for s in held[:1]:
        shutil.copytree(s.seq_dir, real_root / "person" / s.seq_dir.name)
    study = run_study("smoke", tmp_path / "study", settings, real_roots=[real_root])
    methods = list(dict.fromkeys(r["method"] for r in study["rows"]))
    assert methods == ["mean face", "training mean", "landmark fit", "per-frame", ONE_EURO, MOVING_AVERAGE,
                       "temporal", "temporal, stride 1"]  # stride 2 is the profile's: "temporal"
    by = {(r["method"], r["condition"]): r for r in study["rows"]}
    for m in methods:
        r = by[(m, "all")]
        assert r["n_seeds"] == 2 and r["vertex_mm_mean_mean"] > 0 and r["accel_mm_mean_mean"] >= 0
    assert by[("mean face", "all")]["vertex_mm_mean_std"] == 0.0  # no seed
    meta = study["meta"]
    assert meta["lag_frames"][ONE_EURO] <= (3 - 1) / 2 + 1e-9  # tuned under the temporal window's half width
    # T = 3: at stride 1 every frame is central (waits 1 frame); at stride 2 a window's last frame
    # answers with no wait every other frame (0.5, a little more with the sequence's start)
    assert meta["latency_frames"]["temporal, stride 1"] == pytest.approx(1.0, abs=0.01)
    assert meta["latency_frames"]["temporal"] == pytest.approx(0.5, abs=0.01)
    assert meta["window_stride"] == 2 and meta["window_strides"] == [1, 2]
    for run in study["runs"]:  # the temporal runs' errors on the tuning part, per stride
        if run["encoder"] == "temporal":
            assert [w["stride"] for w in run["tuning_windows"]] == [2, 1]
            assert all(w["vertex_mm"] > 0 and w["accel_mm"] >= 0 for w in run["tuning_windows"])
    for run in study["runs"]:
        if run["encoder"] == "resnet":
            tried = run["tuning"]["one_euro"]["grid"]
            ok = [t["vertex_mm"] for t in tried if t["lag"] <= 1.0 + 1e-9]
            assert run["tuning"]["one_euro"]["vertex_mm"] == pytest.approx(min(ok))
    for run in study["runs"]:
        manifest = json.loads((Path(run["run"]) / "manifest.json").read_text())
        assert [d["stage"] for d in manifest["stages_done"]] == ["pretrain", "coarse"]  # the metrics are coarse
    real = {r["method"]: r for r in study["real_rows"]}
    assert set(real) == {"per-frame", ONE_EURO, MOVING_AVERAGE, "temporal", "temporal, stride 1"}
    assert all(r["n_seeds"] == 2 and r["n_frames"] == 8 and r["jitter_mm_mean_mean"] >= 0 for r in real.values())
    md = (tmp_path / "study" / "study.md").read_text()
    assert md == to_markdown(study) and "Acceleration error" in md and "| per-frame + One-Euro |" in md
    assert "**Real video** (1 collected sequences" in md
    assert "Temporal model on the tuning part (where a stride is chosen), mean over seeds: stride 1: vertex" in md
    assert json.loads((tmp_path / "study" / "study.json").read_text())["rows"] == study["rows"]

    # A rerun trains nothing and re-evaluates nothing: same table, checkpoints untouched.
    ckpts = sorted((tmp_path / "study" / "runs").glob("*/last.pt"))
    assert len(ckpts) == 4
    stamps = [p.stat().st_mtime_ns for p in ckpts]
    again = run_study("smoke", tmp_path / "study", settings, real_roots=[real_root])
    assert [p.stat().st_mtime_ns for p in ckpts] == stamps
    assert again["rows"] == study["rows"]  # every evaluation came from its cache

    # Another configured stride is inference only: the runs are kept (not moved aside, not trained),
    # the temporal evaluations are redone at it and agree with the cached stride-1 ones.
    at_1 = StudySettings(seeds=(0, 1), fit_iters=3, overrides=(*overrides, "temporal.window_stride=1"))
    third = run_study("smoke", tmp_path / "study", at_1, real_roots=[real_root])
    assert [p.stat().st_mtime_ns for p in ckpts] == stamps and not list((tmp_path / "study" / "runs").glob("*.stale-*"))
    run = tmp_path / "study" / "runs" / "temporal-s0"
    assert json.loads((run / "eval.json").read_text())["window_stride"] == 1
    rows_1 = json.loads((run / "eval-stride1.json").read_text())["results"]
    assert [r["vertex_mm_mean"] for r in json.loads((run / "eval.json").read_text())["results"]] == \
        pytest.approx([r["vertex_mm_mean"] for r in rows_1])
    assert "temporal, stride 1" not in {r["method"] for r in third["rows"]}


def test_a_window_stride_longer_than_the_window_is_refused_before_any_training(tmp_path):
    from tvface.config import ConfigError

    with pytest.raises(ConfigError, match="window_stride=6"):
        run_study("cpu-demo", tmp_path / "study", StudySettings(seeds=(0,), window_strides=(6,)))
    assert not (tmp_path / "study" / "runs").exists()


def test_default_study_dir_is_under_tvface_data(monkeypatch, tmp_path):
    """Where `tvface study` writes without --out and the book's chapter looks: $TVFACE_DATA/studies/<profile>."""
    from tvface.evaluation.study import default_study_dir

    monkeypatch.setenv("TVFACE_DATA", str(tmp_path))
    assert default_study_dir("cpu-demo") == tmp_path / "studies" / "cpu-demo"
