"""model.norm: BatchNorm for pretrained trunks, GroupNorm for random ones (tvface.models.norm)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from tvface.models.norm import resolve_norm, to_group_norm
from tvface.training.checkpoint import CheckpointError, check_compatible


def test_resolve_norm():
    assert resolve_norm("auto", pretrained=True) == "batch"
    assert resolve_norm("auto", pretrained=False) == "group"
    assert resolve_norm("batch", pretrained=False) == "batch"
    assert resolve_norm("group", pretrained=True) == "group"
    with pytest.raises(ValueError, match="model.norm"):
        resolve_norm("layer", pretrained=False)


def test_group_norm_is_per_image():
    """The point of the switch: an image's features do not depend on the rest of the batch."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 64, 3), nn.BatchNorm2d(64), nn.ReLU(), nn.Conv2d(64, 48, 1), nn.BatchNorm2d(48))
    assert to_group_norm(net) == 2
    assert [type(m).__name__ for m in net] == ["Conv2d", "GroupNorm", "ReLU", "Conv2d", "GroupNorm"]
    assert net[1].num_groups == 32 and net[4].num_groups == 16  # gcd(32, 48)
    x = torch.randn(4, 3, 9, 9)
    net.train()
    alone = net(x[:1])
    together = net(torch.cat([x[:1], 10 * x[1:]]))[:1]
    torch.testing.assert_close(alone, together)
    # GroupNorm(1 group per channel pair ...) matches its definition on one image.
    y = net[1](net[0](x[:1]))
    z = net[0](x[:1]).reshape(1, 32, -1)
    ref = ((z - z.mean(-1, keepdim=True)) / torch.sqrt(z.var(-1, unbiased=False, keepdim=True) + 1e-5)).reshape(y.shape)
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-5)


def test_reconstructor_norm_follows_the_initialisation(tmp_path):
    from tvface import assets
    from tvface.config import load_config
    from tvface.models.reconstructor import build_reconstructor

    if assets.find("ict_model") is None:
        pytest.skip("ICT model not built")
    over = {"model.image_size": 32, "render.uv_size": 32, "model.encoder_init": "random"}
    auto = build_reconstructor(load_config("smoke", over), seed=0)
    assert auto.norm == "group" and auto.describe()["norm"] == "group"
    assert not any(isinstance(m, nn.BatchNorm2d) for m in auto.encoder.modules())
    batch = build_reconstructor(load_config("smoke", {**over, "model.norm": "batch"}), seed=0)
    assert batch.norm == "batch" and any(isinstance(m, nn.BatchNorm2d) for m in batch.encoder.modules())
    temporal = build_reconstructor(load_config("smoke", {**over, "model.encoder": "temporal"}), seed=0)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in temporal.encoder.modules())
    with pytest.raises(ValueError, match="model.norm=group cannot load DECA"):
        build_reconstructor(load_config("smoke", {**over, "model.norm": "group",
                                                  "model.checkpoint": str(tmp_path / "deca_model.tar")}), seed=0)
    # A checkpoint from before the key existed was BatchNorm: refused by a GroupNorm model, by name.
    old = {"describe": {k: v for k, v in batch.describe().items() if k != "norm"}}
    check_compatible(old, batch.describe(), tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match="norm: checkpoint 'batch', this config 'group'"):
        check_compatible(old, auto.describe(), tmp_path / "old.pt")
