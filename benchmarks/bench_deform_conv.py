"""Benchmark: our DCNv2 vs a plain conv and torchvision's op at the temporal encoder's shape.

Pinned shape (BasicVSR++'s alignment at 112^2): input 10x128x112x112, 128 -> 64 channels, 3x3,
16 deformable groups, forward+backward with gradients to input, offsets, mask and weights, fp32.
Printed, not a timed test::

    python benchmarks/bench_deform_conv.py              # CPU, 2 threads
    python benchmarks/bench_deform_conv.py --batch 2    # quicker
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from tvface.ops.deform_conv import deform_conv2d


def _time(fn, repeats: int, sync) -> float:
    """Median wall time of ``fn`` in ms after one warm-up call."""
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return times[len(times) // 2]


def make_inputs(batch: int, device: str, size: int = 112, c_in: int = 128, c_out: int = 64,
                deform_groups: int = 16):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, c_in, size, size, generator=g).to(device).requires_grad_()
    off = (torch.randn(batch, 2 * deform_groups * 9, size, size, generator=g) * 3).to(device).requires_grad_()
    mask = torch.rand(batch, deform_groups * 9, size, size, generator=g).to(device).requires_grad_()
    w = (torch.randn(c_out, c_in, 3, 3, generator=g) * 0.03).to(device).requires_grad_()
    b = torch.zeros(c_out, device=device).requires_grad_()
    return x, off, mask, w, b


def run(batch: int = 10, repeats: int = 3, device: str = "cpu", with_torchvision: bool = True) -> dict:
    """Forward+backward ms per frame for plain conv, ours, torchvision's op; and ratios."""
    x, off, mask, w, b = make_inputs(batch, device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def step(fn):
        def go():
            y = fn()
            y.backward(torch.ones_like(y))
        return go

    res = {}
    res["conv2d"] = _time(step(lambda: F.conv2d(x, w, b, padding=1)), repeats, sync) / batch
    res["ours"] = _time(step(lambda: deform_conv2d(x, off, w, b, padding=1, mask=mask)), repeats, sync) / batch
    res["ours_fwd"] = _time(lambda: deform_conv2d(x.detach(), off.detach(), w.detach(), b.detach(),
                                                  padding=1, mask=mask.detach()), repeats, sync) / batch
    if with_torchvision:
        import torchvision

        res["torchvision"] = _time(step(lambda: torchvision.ops.deform_conv2d(
            x, off, w, b, padding=1, mask=mask)), max(1, repeats - 1), sync) / batch
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-torchvision", action="store_true", help="skip torchvision's (slow) CPU op")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"DCNv2 fwd+bwd, input {args.batch}x128x112x112, 128->64, 3x3, 16 deform groups, fp32, "
          f"{args.threads} CPU threads, torch {torch.__version__}")
    r = run(args.batch, args.repeats, "cpu", not args.no_torchvision)
    print(f"  plain conv2d          {r['conv2d']:8.1f} ms/frame   1.00x")
    print(f"  ours (fwd only)       {r['ours_fwd']:8.1f} ms/frame")
    print(f"  ours                  {r['ours']:8.1f} ms/frame   {r['ours'] / r['conv2d']:.2f}x conv")
    if "torchvision" in r:
        print(f"  torchvision CPU op    {r['torchvision']:8.1f} ms/frame   {r['torchvision'] / r['conv2d']:.2f}x conv"
              f"   (ours is {r['torchvision'] / r['ours']:.1f}x faster)")
    if torch.cuda.is_available():
        g = run(args.batch, args.repeats, "cuda", True)
        print(f"CUDA ({torch.cuda.get_device_name()}):")
        print(f"  plain conv2d          {g['conv2d']:8.2f} ms/frame")
        print(f"  ours                  {g['ours']:8.2f} ms/frame   {g['ours'] / g['conv2d']:.2f}x conv")
        print(f"  torchvision CUDA op   {g['torchvision']:8.2f} ms/frame   "
              f"{g['torchvision'] / g['conv2d']:.2f}x conv")


if __name__ == "__main__":
    main()
