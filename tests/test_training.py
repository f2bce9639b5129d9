"""The trainer: exact resume, a smoke run whose loss goes down, staged freezing, bad input, checkpoints."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from _training_fixtures import training_cfg

from tvface.config import ConfigError
from tvface.training import CheckpointError, Trainer, TrainingError, load_checkpoint
from tvface.training.checkpoint import PREVIOUS
from tvface.training.precision import resolve_precision
from tvface.training.trainer import trainable_state


def _weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in trainable_state(trainer.model).items()}


@pytest.mark.parametrize("warmup", [0, 3])
def test_resume_is_exact(tiny_synth, tmp_path, warmup):
    """N steps straight == N/2 steps, a new process-like Trainer resuming from disk, N/2 steps (also
    inside a learning-rate warm-up)."""
    cfg = training_cfg(tiny_synth, **{"train.pretrain_steps": 2, "train.coarse_steps": 2,
                                      "train.warmup_steps": warmup})
    straight = Trainer(cfg, tmp_path / "a", progress=False)
    straight.run(["pretrain", "coarse"])
    first = Trainer(cfg, tmp_path / "b", progress=False)
    first.run(["pretrain", "coarse"], stop_after=3)  # stops inside the coarse stage
    assert first.global_step == 3 and first.stage == "coarse"
    torch.manual_seed(123)  # the resumed run must not depend on the state of this process
    np.random.seed(123)
    resumed = Trainer(cfg, tmp_path / "b", progress=False)
    resumed.resume()
    assert resumed.global_step == 3 and resumed.stage_step == 1
    resumed.run(["pretrain", "coarse"])
    assert resumed.global_step == straight.global_step == 4
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    oa, ob = straight.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    torch.testing.assert_close(oa[0]["exp_avg"], ob[0]["exp_avg"], rtol=1e-5, atol=1e-7)
    # the metrics log of the resumed run has each step once
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))


def test_warmup_ramps_the_learning_rate_per_stage(tiny_synth, tmp_path):
    """Known answer: lr (k + 1) / w * train.lr over a stage's first w steps, then train.lr; the
    optimiser's groups carry it."""
    cfg = training_cfg(tiny_synth, **{"train.pretrain_steps": 2, "train.coarse_steps": 1, "train.warmup_steps": 4,
                                      "train.lr": 2e-4})
    t = Trainer(cfg, tmp_path / "w", progress=False)
    assert [t.lr_factor(k) for k in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    t.run(["pretrain"])
    assert t.optimizer.param_groups[0]["lr"] == pytest.approx(2e-4 * 2 / 4)  # after its 2nd step
    t.run(["coarse"])  # a new stage starts its own ramp
    assert t.optimizer.param_groups[0]["lr"] == pytest.approx(2e-4 / 4)
    with pytest.raises(ConfigError, match="warmup_steps"):
        training_cfg(tiny_synth, **{"train.warmup_steps": -1})


def test_smoke_training_reduces_the_loss(tiny_synth, tmp_path):
    """Overfit a fixed batch: the landmark loss falls (a real optimisation, not a logged constant)."""
    cfg = training_cfg(tiny_synth, **{"train.pretrain_steps": 25, "train.lr": 1e-3, "train.batch_size": 1})
    tr = Trainer(cfg, tmp_path / "run", progress=False)
    # A batch with landmarks to fit: at 64^2 the collection flags many frames (their weight is 0).
    fixed = next(b for b in map(tr.data.batch, range(50)) if (b.landmark[..., 2] > 0).sum() >= 68)
    tr.data.batch = lambda step, device="cpu", dist=None: fixed  # the same batch every step
    (res,) = tr.run(["pretrain"])
    assert res.steps == 25 and res.skipped == 0
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    lm = [r["landmark"] for r in rows]
    assert np.mean(lm[-5:]) < 0.7 * np.mean(lm[:3]), lm
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["losses"]["identity"]["on"] is False and "resnet50_ft_weight.pkl" in manifest["losses"]["identity"]["reason"]
    assert manifest["losses"]["mrf"]["on"] is False and "vgg19-dcbb9e9d.pth" in manifest["losses"]["mrf"]["reason"]
    assert manifest["precision"]["dtype"] in ("float32", "bfloat16") and manifest["precision"]["cpu"]


def test_all_stages_run_and_detail_freezes_the_coarse_encoder(tiny_synth, tmp_path):
    cfg = training_cfg(tiny_synth, **{"train.pretrain_steps": 1, "train.coarse_steps": 2, "train.detail_steps": 2})
    tr = Trainer(cfg, tmp_path / "run", progress=False)
    tr.run(["pretrain", "coarse"])
    coarse_before = {k: v.clone() for k, v in tr.model.encoder.coarse.state_dict().items()}
    detail_before = {k: v.clone() for k, v in tr.model.detail_decoder.state_dict().items()}
    tr.run(["pretrain", "coarse", "detail"])
    assert [d["stage"] for d in tr.done] == ["pretrain", "coarse", "detail"]
    for k, v in tr.model.encoder.coarse.state_dict().items():  # weights and BN statistics unchanged
        torch.testing.assert_close(v, coarse_before[k], rtol=0, atol=0, msg=k)
    changed = [k for k, v in tr.model.detail_decoder.state_dict().items() if not torch.equal(v, detail_before[k])]
    assert changed
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    detail_rows = [r for r in rows if r["stage"] == "detail"]
    assert detail_rows and {"photometric_detail", "symmetry", "displacement", "detail_consistency"} <= set(detail_rows[0])
    coarse_rows = [r for r in rows if r["stage"] == "coarse"]
    assert {"photometric", "shape_consistency", "reg_light"} <= set(coarse_rows[0])
    assert "photometric" not in [r for r in rows if r["stage"] == "pretrain"][0]


def test_non_finite_losses_skip_then_stop(tiny_synth, tmp_path, monkeypatch):
    cfg = training_cfg(tiny_synth, **{"train.pretrain_steps": 10, "loss.max_bad_steps": 3})
    tr = Trainer(cfg, tmp_path / "run", progress=False)
    before = _weights(tr)
    original = tr.objective.coarse

    def poisoned(model, codes, batch, stage):
        terms, dec = original(model, codes, batch, stage)
        terms["landmark"] = terms["landmark"] * float("nan")
        return terms, dec

    monkeypatch.setattr(tr.objective, "coarse", poisoned)
    with pytest.raises(TrainingError, match="3 steps in a row with a non-finite loss"):
        tr.run(["pretrain"])
    after = _weights(tr)
    for k in before:  # skipped steps never touched the weights
        torch.testing.assert_close(after[k], before[k], rtol=0, atol=0)
    skipped = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("skipped") for r in skipped] == [["landmark"]] * 3


def test_checkpoint_errors(tiny_synth, tmp_path):
    cfg = training_cfg(tiny_synth, **{"train.pretrain_steps": 1})
    tr = Trainer(cfg, tmp_path / "run", progress=False)
    tr.run(["pretrain"])
    tr.save()  # a second save keeps the first as previous.pt
    last, prev = tmp_path / "run" / "last.pt", tmp_path / "run" / PREVIOUS
    assert prev.is_file() and load_checkpoint(prev)["global_step"] == 1
    # another config (encoder input size) -> one error naming the file and the difference
    other = Trainer(training_cfg(tiny_synth, **{"model.image_size": 48}), tmp_path / "other", progress=False)
    with pytest.raises(CheckpointError, match=r"last\.pt was trained for another model or config: image_size"):
        other.resume(last)
    # another face model's layout (code sizes) -> refused too
    ckpt = load_checkpoint(last)
    ckpt["describe"] = {**ckpt["describe"], "face_model": "flame", "code_sizes": {"shape": 100}}
    torch.save(ckpt, tmp_path / "flame.pt")
    with pytest.raises(CheckpointError, match="face_model: checkpoint 'flame'"):
        tr.resume(tmp_path / "flame.pt")
    # truncated -> one error naming the file, pointing at the intact previous checkpoint
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"last\.pt: not a readable tvface checkpoint.*previous\.pt is intact"):
        Trainer(cfg, tmp_path / "run", progress=False).resume()
    assert load_checkpoint(prev)["global_step"] == 1
    # a pickle that would run code is refused by weights_only
    import pickle

    class Evil:
        def __reduce__(self):
            return (shutil.rmtree, (str(tmp_path / "run"),))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"format": "tvface-checkpoint-1", "x": Evil()}))
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(tmp_path / "evil.pt")
    assert (tmp_path / "run").is_dir()


def test_bad_datasets_fail_before_training(tiny_synth, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrainingError, match="no sequences under .*empty.*tvface synth generate"):
        Trainer(training_cfg(tiny_synth, **{"data.root": str(tmp_path / "empty")}), tmp_path / "r1", progress=False)
    with pytest.raises(TrainingError, match="needs.*(no train-split sequence has the 20 frames)|20 frames"):
        Trainer(training_cfg(tiny_synth, **{"data.n_frames": 20}), tmp_path / "r2", progress=False)
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


def test_cli_train_and_refuse_overwrite(tiny_synth, tmp_path):
    from tvface.cli import main

    sets = ["data.root=" + str(tiny_synth["root"]), "data.image_size=64", "data.n_frames=3", "model.image_size=32",
            "render.uv_size=32", "train.pretrain_steps=1", "train.image_every=1", "data.val_fraction=0.3"]
    args = ["train", "--profile", "smoke", "--stage", "pretrain", "--out", str(tmp_path / "run"), "--quiet"]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 0
    assert (tmp_path / "run" / "last.pt").is_file() and list((tmp_path / "run" / "tb").iterdir())
    assert main(args) == 2  # the run exists: --resume or another --out
    assert main(args + ["--resume"]) == 0


def test_precision_is_fp32_without_native_bf16(monkeypatch):
    from tvface.training import precision as P

    monkeypatch.setattr(P, "cpu_flags", lambda: {"avx2"})
    assert resolve_precision("auto", "cpu").dtype == torch.float32
    monkeypatch.setattr(P, "cpu_flags", lambda: {"avx512f", "amx_bf16"})
    p = resolve_precision("auto", "cpu")
    assert p.dtype == torch.bfloat16 and "AMX" in p.reason
    assert resolve_precision("float32", "cpu").dtype == torch.float32


def test_cli_evaluate_reports_every_method_and_refuses_another_config(tiny_synth, tmp_path, capsys):
    from tvface.cli import main

    sets = ["data.root=" + str(tiny_synth["root"]), "data.image_size=64", "data.n_frames=3", "model.image_size=32",
            "render.uv_size=32", "train.pretrain_steps=1", "train.image_every=0", "data.val_fraction=0.5"]
    flags = [a for s in sets for a in ("--set", s)]
    run = tmp_path / "run"
    assert main(["train", "--profile", "smoke", "--stage", "pretrain", "--out", str(run), "--quiet", *flags]) == 0
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--profile", "smoke", "--checkpoint", str(run), "--json", str(out), "--fit-iters", "5",
                 *flags]) == 0
    result = json.loads(out.read_text())
    assert result["meta"]["methods"] == ["mean face", "training mean", "landmark fit", "trained"]
    n_val = result["meta"]["n_frames"]
    assert n_val > 0 and n_val % 8 == 0  # whole held-out sequences of 8 frames
    for r in result["results"]:
        if r["condition"] == "all":
            assert r["n_frames"] == n_val and r["vertex_mm_mean"] > 0 and r["ms_per_frame"] > 0
    assert "| **all** |" in out.with_suffix(".md").read_text()
    capsys.readouterr()
    # the same checkpoint with another encoder size: one error naming what differs, exit status 2
    assert main(["evaluate", "--profile", "smoke", "--checkpoint", str(run), "--fit-iters", "5", *flags,
                 "--set", "model.image_size=64"]) == 2
    assert "image_size" in capsys.readouterr().err


def test_open_run_moves_a_run_of_another_config_aside(tiny_synth, tmp_path, capsys, caplog):
    """What the book does when executed again after a profile change: the old run is kept, renamed
    (and the missing-asset warnings are given once, not again for the new run)."""
    import logging

    from tvface.training.trainer import open_run

    cfg = training_cfg(tiny_synth, **{"train.pretrain_steps": 1})
    first = open_run(cfg, tmp_path / "run")
    first.run(["pretrain"])
    again = open_run(cfg, tmp_path / "run")  # same config: continues (nothing left to do)
    assert again.global_step == 1 and [d["stage"] for d in again.done] == ["pretrain"]
    other = training_cfg(tiny_synth, **{"train.pretrain_steps": 1, "model.image_size": 48})
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        Trainer(other, tmp_path / "plain")
    once = len(caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        fresh = open_run(other, tmp_path / "run")
    assert len(caplog.records) == once  # one Trainer's worth, though two were built
    assert fresh.global_step == 0 and not (tmp_path / "run").exists()
    assert (tmp_path / "run.stale-1" / "last.pt").is_file()
    assert "image_size: checkpoint 32, this config 48" in capsys.readouterr().out
    fresh.run(["pretrain"])
    assert (tmp_path / "run" / "last.pt").is_file()


def test_open_run_compares_the_settings_a_result_depends_on(tiny_synth, tmp_path, capsys):
    """A changed loss weight moves the run aside; a longer schedule continues it; a key a run saved
    before it existed counts as its legacy value (temporal.init: pytorch, temporal.head_stride: 1); the
    inference-only window stride is not compared."""
    from tvface.config import load_config
    from tvface.training.trainer import open_run, run_config_differences

    cfg = training_cfg(tiny_synth, **{"train.pretrain_steps": 1})
    open_run(cfg, tmp_path / "run").run(["pretrain"])
    longer = training_cfg(tiny_synth, **{"train.pretrain_steps": 2})
    assert open_run(longer, tmp_path / "run").global_step == 1  # continued
    heavier = training_cfg(tiny_synth, **{"train.pretrain_steps": 1, "loss.landmark": 2.0})
    assert open_run(heavier, tmp_path / "run").global_step == 0
    assert "loss.landmark: run 1.0, now 2.0" in capsys.readouterr().out
    assert (tmp_path / "run.stale-1" / "last.pt").is_file()
    from tvface.config import config_to_dict

    base = load_config("cpu-demo", ["model.encoder=temporal"])
    stored = config_to_dict(base)
    del stored["temporal"]["init"], stored["temporal"]["second_order"], stored["temporal"]["head_stride"]
    assert run_config_differences(stored, base) == ["temporal.head_stride: run 1, now 2",
                                                    "temporal.init: run 'pytorch', now 'he'"]
    per_frame = load_config("cpu-demo", ["model.encoder=resnet"])  # does not depend on the temporal section
    stored = config_to_dict(per_frame)
    del stored["temporal"]["init"]
    assert run_config_differences(stored, per_frame) == []
    assert run_config_differences(None, base) == []
    # The window stride is read by inference only: a run trained at one serves every other.
    assert run_config_differences(config_to_dict(base), load_config("cpu-demo", ["model.encoder=temporal",
                                                                              "temporal.window_stride=5"])) == []
