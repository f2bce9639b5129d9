"""flow_warp / compose_flows known answers (convention of tvface.ops.flow_warp)."""
import numpy as np
import torch

from tvface.models.flow import SequenceFlowEstimator, dis_flow
from tvface.ops.flow_warp import compose_flows, flow_from_hw2, flow_to_hw2, flow_warp, resize_flow


def _const(dx, dy, b=1, h=8, w=9):
    f = torch.zeros(b, 2, h, w)
    f[:, 0], f[:, 1] = dx, dy
    return f


def test_flow_minus_one_is_one_pixel_shift():
    x = torch.randn(2, 3, 8, 9)
    out = flow_warp(x, _const(-1.0, 0.0, b=2))
    assert torch.allclose(out[..., 1:], x[..., :-1], atol=1e-5)  # out(x) = in(x - 1)
    assert torch.allclose(out[..., 0], torch.zeros(2, 3, 8), atol=1e-6)  # zeros outside
    out = flow_warp(x, _const(0.0, 2.0, b=2))
    assert torch.allclose(out[..., :-2, :], x[..., 2:, :], atol=1e-5)


def test_composition_of_constant_flows_is_their_sum():
    f = compose_flows(_const(1.0, -2.0), _const(0.5, 1.0))
    assert torch.allclose(f[..., 2:-2, 2:-2], _const(1.5, -1.0)[..., 2:-2, 2:-2], atol=1e-5)


def test_layout_helpers_and_resize():
    f = torch.randn(2, 2, 4, 6)
    assert torch.equal(flow_from_hw2(flow_to_hw2(f)), f)
    big = resize_flow(_const(1.0, -1.0, h=4, w=6), (8, 12))
    assert torch.allclose(big, _const(2.0, -2.0, h=8, w=12))


def test_dis_flow_follows_the_convention():
    """Frame shifted right by 3 px: flow_{ref->supp} is +3 in x, and warping supp recovers ref."""
    rng = np.random.default_rng(0)
    base = (rng.random((80, 80)) * 255).astype(np.uint8)
    import cv2
    base = cv2.GaussianBlur(base, (7, 7), 2)
    supp = np.roll(base, 3, axis=1)
    flow = dis_flow(base, supp)
    assert abs(np.median(flow[10:-10, 10:-10, 0]) - 3) < 0.3
    assert abs(np.median(flow[10:-10, 10:-10, 1])) < 0.3


def test_sequence_flows_shapes_and_t1():
    est = SequenceFlowEstimator("dis", flow_size=16)
    fl = est(torch.rand(2, 4, 3, 32, 32))
    assert fl.to_prev.shape == fl.to_next.shape == (2, 3, 2, 16, 16)
    fl1 = est(torch.rand(1, 1, 3, 32, 32))
    assert fl1.to_prev.shape[1] == 0


def test_composition_follows_the_first_flow_then_samples_the_second():
    """Non-constant flows do not commute: flow_ac(x) = flow_ab(x) + flow_bc(x + flow_ab(x))."""
    h, w = 8, 12
    xs = torch.arange(w, dtype=torch.float32).expand(h, w)
    flow_ab = torch.zeros(1, 2, h, w)
    flow_ab[0, 0] = 1.0  # one pixel right everywhere
    flow_bc = torch.zeros(1, 2, h, w)
    flow_bc[0, 0] = 0.1 * xs  # depends on where it is sampled
    got = compose_flows(flow_ab, flow_bc)[0, 0, :, :-1]  # the last column samples outside
    torch.testing.assert_close(got, 1.0 + 0.1 * (xs[:, :-1] + 1.0))
    wrong_order = compose_flows(flow_bc, flow_ab)[0, 0, :, :-2]
    assert not torch.allclose(wrong_order, got[:, :-1])
