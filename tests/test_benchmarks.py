"""The benchmark scripts' own machinery (not their timings): they must keep running as the library moves."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))


def test_bench_stepper_takes_the_trainers_step_with_its_warm_up():
    """bench_scale / bench_temporal_train time Trainer.step through _Stepper (no dataset): one step
    changes the coarse weights, at the learning rate the trainer would use (warm-up included)."""
    from tvface import assets
    from tvface.config import load_config
    from tvface.models.reconstructor import build_reconstructor
    from tvface.training.objective import Batch, Objective
    from tvface.training.precision import resolve_precision

    if assets.find("ict_model") is None:
        pytest.skip("ICT model not built")
    from bench_scale import _Stepper

    cfg = load_config("smoke", {"model.image_size": 32, "render.uv_size": 32, "model.encoder_init": "random",
                                "train.warmup_steps": 4})
    model = build_reconstructor(cfg, seed=0)
    stepper = _Stepper(cfg, model, Objective.build(cfg.loss, quiet=True), resolve_precision("float32", "cpu"),
                       torch.device("cpu"))
    torch.manual_seed(0)
    frames = torch.rand(1, 2, 3, 32, 32)
    with torch.no_grad():
        lm = model.decode(model.encode(frames, with_detail=False), render=False).lmks_2d
    landmark = torch.cat([lm + 0.05, torch.ones_like(lm[..., :1])], -1).unflatten(0, (1, 2))
    before = [p.detach().clone() for p in model.coarse_parameters()]
    stepper(Batch(frames, landmark, torch.ones(1, 2, 1, 32, 32)))
    assert stepper.optimizer.param_groups[0]["lr"] == pytest.approx(cfg.train.lr / 4)  # step 1 of a 4-step ramp
    assert any(not torch.equal(a, b) for a, b in zip(before, model.coarse_parameters()))
