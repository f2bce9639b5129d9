"""torchrun + DDP: two gloo processes on CPU train exactly what one process trains on the same global batch."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from _training_fixtures import make_tiny_synth, training_cfg

from tvface.config import config_to_dict
from tvface.training.checkpoint import load_checkpoint
from tvface.training.distributed import (
    DistContext,
    GlobalBatchNorm2d,
    convert_batchnorm,
    global_batch_norm,
    rank_slice,
)


@pytest.fixture()
def one_process_group(tmp_path):
    """A gloo group of one process: every all-reduce is the identity, so the global maths can be checked."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_global_batch_norm_equals_batch_norm(one_process_group):
    """Forward, input/affine gradients and running statistics equal F.batch_norm's (the reference)."""
    torch.manual_seed(0)
    x = (torch.randn(6, 4, 5, 3, dtype=torch.float64) * 3 + 1).requires_grad_()
    w = torch.randn(4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    up = torch.randn(6, 4, 5, 3, dtype=torch.float64)
    rm, rv = torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64)
    rm_ref, rv_ref = rm.clone(), rv.clone()

    y = global_batch_norm(x, w, b, rm, rv, momentum=0.1, eps=1e-5)
    gx, gw, gb = torch.autograd.grad((y * up).sum(), (x, w, b))
    y_ref = F.batch_norm(x, rm_ref, rv_ref, w, b, training=True, momentum=0.1, eps=1e-5)
    gx_ref, gw_ref, gb_ref = torch.autograd.grad((y_ref * up).sum(), (x, w, b))
    for got, ref in ((y, y_ref), (gx, gx_ref), (gw, gw_ref), (gb, gb_ref), (rm, rm_ref), (rv, rv_ref)):
        torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)


def test_convert_batchnorm_keeps_the_state_dict():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                              torch.nn.BatchNorm2d(4, 0.8))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert convert_batchnorm(net) == 2
    assert isinstance(net[1], GlobalBatchNorm2d) and net[3].eps == 0.8
    assert before.keys() == net.state_dict().keys()
    x = torch.randn(2, 3, 8, 8)
    ref = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                              torch.nn.BatchNorm2d(4, 0.8))
    ref.load_state_dict(before)
    torch.testing.assert_close(net(x), ref(x))  # no process group: plain BatchNorm


def test_rank_slice_splits_the_global_batch():
    assert [rank_slice(4, DistContext(r, 2)) for r in (0, 1)] == [slice(0, 2), slice(2, 4)]
    with pytest.raises(ValueError, match="multiple of 2"):
        rank_slice(3, DistContext(0, 2))


def _torchrun(args: list[str], n: int = 2, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n),
           "-m", "tvface.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def oracle_synth(tmp_path_factory) -> dict:
    """6 sequences x 6 frames at 64^2 with the ground-truth landmarks as inputs (every weight 1)."""
    return make_tiny_synth(tmp_path_factory.mktemp("synth") / "oracle", n_frames=6, **{"synth.oracle": True})


def test_two_gloo_ranks_equal_one_process(oracle_synth, tmp_path):
    """pretrain (2 ranks) -> --resume coarse (2 ranks) == pretrain + coarse in one process, same global batch.

    Each rank holds one of the batch's two sequences; BatchNorm sees the global batch through
    GlobalBatchNorm2d and DDP averages the gradients. The runs are in float64: a ResNet50 trained
    from random weights on 3-frame batches is chaotic in its first Adam steps (fp32 rounding of the
    summation order alone moves the weights by ~lr within 5 steps), so equality is tested where
    rounding is 1e-16, and then it holds to 1e-6 of weights that moved by ~lr per step. The stage
    switch rebuilds DDP around the new trainable set, and the resumed run reads rank 0's checkpoint.
    """
    from tvface.training.trainer import Trainer

    cfg = training_cfg(oracle_synth, **{"train.pretrain_steps": 2, "train.coarse_steps": 1, "train.batch_size": 2,
                                        "train.threads": 1, "train.lr": 1e-4, "train.dtype": "float64",
                                        "loss.identity": 0.0, "model.norm": "batch"})
    profile = tmp_path / "profile.yaml"
    profile.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))

    single = Trainer(cfg, tmp_path / "single", progress=False)
    single.run(["pretrain", "coarse"])
    ref = load_checkpoint(tmp_path / "single")

    ddp = tmp_path / "ddp"
    for stage, extra in (("pretrain", []), ("coarse", ["--resume"])):
        proc = _torchrun(["train", "--profile", str(profile), "--stage", stage, "--out", str(ddp), "--quiet", *extra])
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = load_checkpoint(ddp)
    assert got["global_step"] == ref["global_step"] == 3
    assert [d["stage"] for d in got["done"]] == ["pretrain", "coarse"]
    manifest = yaml.safe_load((ddp / "manifest.json").read_text())
    assert manifest["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert got["model"].keys() == ref["model"].keys()
    params = [k for k, v in ref["model"].items() if v.is_floating_point() and "running_" not in k]
    stats = [k for k in ref["model"] if "running_" in k]
    # Adam's first step of a stage is lr * g / (|g| + eps): an element whose true gradient is zero up to
    # rounding (1e-20) moves by +-lr with the sign of that rounding, in either run. So: all but a few
    # parts per million of the weights agree to 1e-6, and none differs by more than those two moves.
    diff = {k: (got["model"][k] - ref["model"][k]).abs() for k in params}
    n_off = sum(int((d > 1e-6).sum()) for d in diff.values())
    n_all = sum(d.numel() for d in diff.values())
    assert n_off < 1e-4 * n_all, f"{n_off} of {n_all} weights differ by more than 1e-6"
    worst = max(d.max().item() for d in diff.values())
    assert worst <= 2.05 * cfg.train.lr, f"largest parameter difference after 3 steps: {worst:.3g}"
    logged = [[json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()] for d in (ddp, tmp_path / "single")]
    assert [r["step"] for r in logged[0]] == [r["step"] for r in logged[1]] == [1, 2, 3]
    for a, b in zip(*logged):  # the loss of the global batch (mean over ranks) at every step
        assert a["total"] == pytest.approx(b["total"], rel=1e-5, abs=1e-6)
    rel = max(((got["model"][k] - ref["model"][k]).abs() / (ref["model"][k].abs() + 1e-3)).max().item()
              for k in stats)
    assert rel < 1e-4, f"largest relative BatchNorm statistics difference: {rel:.3g}"
    init = Trainer(cfg, tmp_path / "init", progress=False).model.state_dict()
    moved = max((ref["model"][k] - init[k].to(ref["model"][k])).abs().max().item() for k in params)
    assert moved > 1e-4  # the comparison is about trained weights, not two copies of the initialisation


def test_batch_that_does_not_split_is_one_error(oracle_synth, tmp_path):
    cfg = training_cfg(oracle_synth, **{"train.batch_size": 3, "train.threads": 1})
    profile = tmp_path / "profile.yaml"
    profile.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    proc = _torchrun(["train", "--profile", str(profile), "--stage", "pretrain", "--out", str(tmp_path / "r")])
    assert proc.returncode != 0
    assert "train.batch_size to a multiple of 2" in proc.stderr
    assert not (Path(tmp_path / "r") / "last.pt").exists()
