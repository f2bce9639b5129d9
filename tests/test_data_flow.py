"""Flow convention: flow_prev of frame i warps frame i-1 onto frame i (backward warping)."""
import numpy as np
import torch

from tvface.data.flow import dis_flow, warp_backward


def _texture(shift_x: float, shift_y: float, size: int = 112) -> np.ndarray:
    rng = np.random.default_rng(1)
    base = rng.uniform(0, 255, (size // 4 + 4, size // 4 + 4)).astype(np.float32)
    import cv2

    big = cv2.resize(base, (size + 16, size + 16), interpolation=cv2.INTER_CUBIC)
    A = np.float32([[1, 0, shift_x - 8], [0, 1, shift_y - 8]])
    img = cv2.warpAffine(big, A, (size, size), flags=cv2.INTER_LINEAR)
    return np.repeat(np.clip(img, 0, 255).astype(np.uint8)[..., None], 3, -1)


def test_flow_prev_of_translation_is_minus_the_motion_and_warps_back():
    prev = _texture(0, 0)
    cur = _texture(3, 2)  # content moved by (+3, +2): cur(x) = prev(x - (3, 2))
    flow = dis_flow(cur, prev)  # flow from i to i-1
    inner = (slice(16, -16), slice(16, -16))
    np.testing.assert_allclose(np.median(flow[inner][..., 0]), -3, atol=0.25)
    np.testing.assert_allclose(np.median(flow[inner][..., 1]), -2, atol=0.25)
    try:  # the temporal encoder's warp when it exists, else the cv2.remap reference
        from tvface.ops.flow_warp import flow_warp

        x = torch.from_numpy(prev[..., 0].astype(np.float32))[None, None]
        f = torch.from_numpy(flow).permute(2, 0, 1)[None]
        warped = flow_warp(x, f)[0, 0].numpy()
    except ImportError:
        warped = warp_backward(prev[..., 0].astype(np.float32), flow)
    err = np.abs(warped[inner] - cur[..., 0][inner].astype(np.float32)).mean()
    assert err < 3.0, err
    assert np.abs(prev[..., 0][inner].astype(np.float32) - cur[..., 0][inner]).mean() > 4 * err


def test_missing_flow_is_zero_only_at_sequence_ends(tmp_path):
    import pytest

    from tvface.data import layout
    from tvface.data.flow import load_flow

    seq = tmp_path / "id" / "seq"
    assert not load_flow(seq, "00000", "prev", is_end=True).any()  # no neighbour: zeros
    with pytest.raises(FileNotFoundError, match="tvface collect flow"):
        load_flow(seq, "00003", "prev")
    p = layout.flow_path(seq, "00003", "prev")
    p.parent.mkdir(parents=True, exist_ok=True)
    np.save(p, np.ones((112, 112, 2), np.float32))
    assert load_flow(seq, "00003", "prev").mean() == 1.0
