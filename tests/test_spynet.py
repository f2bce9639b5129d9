"""SPyNet: loads BasicVSR++'s key format; wrong checkpoints give one clear error; freezing."""
import pytest
import torch

from tvface.models.spynet import SPyNet, SpynetCheckpointError, param_groups, set_trainable


def _basicvsr_state(net: SPyNet) -> dict:
    """Our weights renamed to mmagic's ConvModule keys (basic_module.L.basic_module.j.conv.*)."""
    out = {}
    for k, v in net.state_dict().items():
        lvl, _, idx, leaf = k.split(".")[1], None, int(k.split(".")[3]), k.split(".")[4]
        out[f"basic_module.{lvl}.basic_module.{idx // 2}.conv.{leaf}"] = v.clone()
    return out


def test_loads_basicvsr_checkpoint(tmp_path):
    src = SPyNet(frozen=False)
    path = tmp_path / "spynet_20210409-c6c1bd09.pth"
    torch.save({"state_dict": _basicvsr_state(src)}, path)
    net = SPyNet(path)
    for a, b in zip(src.parameters(), net.parameters()):
        assert torch.equal(a, b)
    assert not any(p.requires_grad for p in net.parameters())  # frozen by default


@pytest.mark.parametrize("break_it", ["key", "shape"])
def test_wrong_checkpoint_one_clear_error(tmp_path, break_it):
    state = _basicvsr_state(SPyNet())
    k = "basic_module.0.basic_module.0.conv.weight"
    if break_it == "key":
        state["basic_module.0.basic_module.0.kernel"] = state.pop(k)
    else:
        state[k] = torch.zeros(1, 2, 3, 3)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(SpynetCheckpointError, match="not a BasicVSR\\+\\+ SPyNet checkpoint"):
        SPyNet(path)


def test_flow_shape_zero_for_identical_frames_at_init_and_unfreeze():
    net = SPyNet()
    img = torch.rand(2, 3, 40, 56)
    flow = net(img, img)
    assert flow.shape == (2, 2, 40, 56)
    set_trainable(net, True)
    assert all(p.requires_grad for p in net.parameters())
    group = param_groups(net, 1e-4, 0.25)
    assert group["lr"] == pytest.approx(2.5e-5) and len(group["params"]) == 6 * 10
