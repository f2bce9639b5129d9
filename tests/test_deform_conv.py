"""Our DCNv2 against torchvision's op (and mmcv's when importable), gradcheck, and the conv2d limit."""
import pytest
import torch
import torch.nn.functional as F
import torchvision

from tvface.ops import deform_conv as dcn
from tvface.ops.deform_conv import ModulatedDeformConv2d, deform_conv2d

# (N, C_in, H, W, C_out, kernel, stride, padding, dilation, deform_groups, groups)
CASES = [
    (2, 8, 9, 11, 6, 3, 1, 1, 1, 2, 1),
    (2, 8, 10, 7, 4, 3, 2, 2, 2, 4, 2),
    (1, 4, 6, 6, 4, 1, 1, 0, 1, 1, 1),
    (2, 6, 8, 8, 6, (3, 2), (2, 1), (1, 0), (1, 2), 3, 3),
    (1, 32, 12, 12, 16, 3, 1, 1, 1, 16, 1),
    (2, 16, 7, 9, 8, 3, 1, 1, 1, 2, 1),  # 8 channels per deformable group: the CPU kernels' fast path
    (1, 32, 6, 5, 8, 3, 1, 1, 1, 2, 2),  # 16 per group, two conv groups
]


def _pair(v):
    return (v, v) if isinstance(v, int) else v


def _inputs(case, dtype=torch.float64, scale=2.0, seed=0):
    n, c, h, w, co, k, s, p, d, g, grp = case
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = _pair(k), _pair(s), _pair(p), _pair(d)
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=gen, dtype=dtype)
    off = torch.randn(n, 2 * g * kh * kw, ho, wo, generator=gen, dtype=dtype) * scale
    mask = torch.rand(n, g * kh * kw, ho, wo, generator=gen, dtype=dtype)
    wt = torch.randn(co, c // grp, kh, kw, generator=gen, dtype=dtype)
    b = torch.randn(co, generator=gen, dtype=dtype)
    return [t.requires_grad_() for t in (x, off, mask, wt, b)], dict(stride=s, padding=p, dilation=d)


def _run(fn, tensors, kw, grad_out):
    x, off, mask, wt, b = tensors
    y = fn(x, off, wt, b, mask=mask, **kw)
    return (y, *torch.autograd.grad(y, tensors, grad_out))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_matches_torchvision_forward_and_all_gradients(case, dtype):
    tensors, kw = _inputs(case, dtype)
    ref = torchvision.ops.deform_conv2d(*[t.detach() for t in tensors[:1]], tensors[1].detach(),
                                        tensors[3].detach(), tensors[4].detach(), mask=tensors[2].detach(), **kw)
    grad_out = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    ours = _run(deform_conv2d, tensors, kw, grad_out)
    theirs = _run(torchvision.ops.deform_conv2d, tensors, kw, grad_out)
    tol = 1e-10 if dtype == torch.float64 else 2e-4
    for name, a, b in zip(["out", "input", "offset", "mask", "weight", "bias"], ours, theirs):
        assert torch.allclose(a, b, atol=tol, rtol=tol), f"{name}: max diff {(a - b).abs().max():.3g}"


def test_matches_mmcv_when_importable():
    mmcv_ops = pytest.importorskip("mmcv.ops", reason="mmcv (with compiled ops) is not installed; "
                                   "torchvision's op is the reference here")
    tensors, kw = _inputs(CASES[0], torch.float32)
    x, off, mask, wt, b = (t.detach() for t in tensors)
    ref = mmcv_ops.modulated_deform_conv2d(x, off, mask, wt, b, kw["stride"], kw["padding"], kw["dilation"],
                                           1, off.shape[1] // 18)
    assert torch.allclose(deform_conv2d(x, off, wt, b, mask=mask, **kw), ref, atol=1e-4)


def test_gradcheck_float64():
    tensors, kw = _inputs((1, 4, 4, 5, 2, 3, 1, 1, 1, 2, 1), scale=1.3, seed=3)
    assert torch.autograd.gradcheck(lambda x, o, m, w, b: deform_conv2d(x, o, w, b, mask=m, **kw),
                                    tensors, eps=1e-6, atol=1e-5, fast_mode=True)


def test_zero_offsets_unit_mask_is_conv2d():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 13, 9, generator=gen)
    w = torch.randn(8, 16, 3, 3, generator=gen)
    b = torch.randn(8, generator=gen)
    off = torch.zeros(2, 2 * 4 * 9, 7, 5)
    mask = torch.ones(2, 4 * 9, 7, 5)
    y = deform_conv2d(x, off, w, b, stride=2, padding=1, dilation=1, mask=mask)
    assert torch.allclose(y, F.conv2d(x, w, b, stride=2, padding=1), atol=1e-5)


def test_offset_layout_is_dy_dx_per_tap():
    """A Δx of +1 on every tap of a 1x1 kernel reads the right-hand neighbour (interleaved (Δy, Δx))."""
    x = torch.arange(20.0).view(1, 1, 4, 5)
    w = torch.ones(1, 1, 1, 1)
    off = torch.zeros(1, 2, 4, 5)
    off[:, 1] = 1.0  # Δx
    y = deform_conv2d(x, off, w)
    assert torch.allclose(y[..., :4], x[..., 1:], atol=1e-5)
    assert torch.allclose(y[..., 4], torch.zeros(1, 1, 4), atol=1e-5)  # zeros outside


def test_module_and_shape_errors():
    m = ModulatedDeformConv2d(8, 4, 3, padding=1, deform_groups=2)
    x = torch.randn(1, 8, 6, 6)
    assert m(x, torch.zeros(1, 36, 6, 6), torch.ones(1, 18, 6, 6)).shape == (1, 4, 6, 6)
    with pytest.raises(ValueError, match="offset shape"):
        m(x, torch.zeros(1, 36, 5, 6), None)


needs_kernels = pytest.mark.skipif(dcn._kernels() is None, reason="no C++ compiler: CPU kernels unavailable")


@needs_kernels
@pytest.mark.parametrize("case", [CASES[0], CASES[1], CASES[5], CASES[6]])
def test_cpu_kernels_match_grid_sample_path(case, monkeypatch):
    """The compiled gather/scatter path and the grid_sample path agree, with offsets far outside the image."""
    tensors, kw = _inputs(case, torch.float64, scale=6.0, seed=2)
    grad_out = None
    results = []
    for use in (True, False):
        monkeypatch.setattr(dcn, "_use_kernels", lambda *a, use=use: use)
        x, off, mask, wt, b = tensors
        y = deform_conv2d(x, off, wt, b, mask=mask, **kw)
        grad_out = torch.randn(y.shape, generator=torch.Generator().manual_seed(4), dtype=y.dtype)
        results.append((y, *torch.autograd.grad(y, tensors, grad_out)))
    for name, a, b in zip(["out", "input", "offset", "mask", "weight", "bias"], *results):
        assert torch.allclose(a, b, atol=1e-10, rtol=1e-10), f"{name}: max diff {(a - b).abs().max():.3g}"


@needs_kernels
def test_saved_columns_match_recomputed(monkeypatch):
    tensors, kw = _inputs(CASES[5], torch.float32, seed=5)
    grads = []
    for budget_mb in ("0", "64"):
        monkeypatch.setenv("TVFACE_DCN_SAVED_COLUMNS_MB", budget_mb)
        x, off, mask, wt, b = tensors
        y = deform_conv2d(x, off, wt, b, mask=mask, **kw)
        grads.append(torch.autograd.grad(y.square().sum(), tensors))
    for a, b in zip(*grads):
        assert torch.equal(a, b)


@needs_kernels
def test_cpu_kernels_on_many_threads_are_deterministic():
    """Threads split the deformable groups, so the input gradient needs no atomics and is reproducible."""
    tensors, kw = _inputs((1, 64, 10, 10, 8, 3, 1, 1, 1, 8, 1), torch.float32, scale=3.0, seed=6)
    n_threads = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        runs = [torch.autograd.grad(deform_conv2d(tensors[0], tensors[1], tensors[3], tensors[4],
                                                  mask=tensors[2], **kw).sum(), tensors[:3]) for _ in range(2)]
    finally:
        torch.set_num_threads(n_threads)
    for a, b in zip(*runs):
        assert torch.equal(a, b)
