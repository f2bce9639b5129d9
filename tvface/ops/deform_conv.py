"""Modulated deformable convolution (DCNv2) in plain PyTorch.

Same maths, argument order and offset layout as :func:`torchvision.ops.deform_conv2d` with a mask and
as mmcv's ``ModulatedDeformConv2d``:

* ``offset``: (N, 2 * G * kh * kw, Ho, Wo). For deformable group ``g`` and tap ``k = i * kw + j``
  (taps row-major), channel ``2 * (g * kh * kw + k)`` is Δy and the next channel is Δx, in pixels.
* ``mask``: (N, G * kh * kw, Ho, Wo), channel ``g * kh * kw + k``.
* Tap ``k`` of output pixel (ho, wo) samples the input bilinearly at
  ``y = ho * stride - pad + i * dilation + Δy``, ``x = wo * stride - pad + j * dilation + Δx``;
  corners outside the image count as zeros.

How it is fast: one call to :func:`torch.nn.functional.grid_sample` gathers every tap of every
deformable group into an im2col buffer already laid out as (N, C_in * kh * kw, Ho * Wo) — the
deformable groups ride in grid_sample's batch dimension and the taps in its output rows — then one
batched matrix product applies the weights. The backward pass is hand-written
(:class:`_DeformConvFunction`): grid_sample's own vectorised backward gives the gradients of the input
and the sampling grid (its input gradient scatters within one (sample, group) slice per thread, so no
atomics), the mask gradient is the gathered values contracted with the column gradient, and the
weight gradient is one matrix product. Batches are processed in chunks so the im2col buffer stays
small; the buffer is recomputed in the backward pass rather than stored (activation memory is the
input, offsets and mask only).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["deform_conv2d", "ModulatedDeformConv2d"]

# Elements of the im2col buffer per block (see _budget).
_CHUNK_ELEMENTS_CPU = 2 * 1024 * 1024
_CHUNK_ELEMENTS_CUDA = 64 * 1024 * 1024


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _sampling_grid(offset: Tensor, in_hw: tuple[int, int], kernel: tuple[int, int],
                   stride: tuple[int, int], padding: tuple[int, int],
                   dilation: tuple[int, int], row0: int = 0, in_row0: int = 0) -> Tensor:
    """grid_sample grid for every (sample, group, tap, output pixel) of a band of output rows.

    Args:
        offset: (N, 2 * G * K, rows, Wo), interleaved (Δy, Δx) per tap; output rows start at ``row0``.
        in_hw: size of the sampled input band, whose first row is input row ``in_row0``.
    Returns:
        (N * G, K * rows, Wo, 2) normalised (x, y) coordinates for ``align_corners=False``.
    """
    n, c, ho, wo = offset.shape
    kh, kw = kernel
    k = kh * kw
    g = c // (2 * k)
    h, w = in_hw
    dev, dt = offset.device, offset.dtype
    off = offset.reshape(n, g, k, 2, ho, wo)
    ki = torch.arange(kh, device=dev, dtype=dt).repeat_interleave(kw)  # (K,) tap row
    kj = torch.arange(kw, device=dev, dtype=dt).repeat(kh)  # (K,) tap column
    # Pixel -> normalised coordinate for align_corners=False: u = (2 p + 1) / size - 1, folded into
    # the base grid so that each offset needs one multiply-add.
    base_y = (torch.arange(row0, row0 + ho, device=dev, dtype=dt) * stride[0]
              - (padding[0] + in_row0)).view(1, ho, 1) \
        + (ki * dilation[0]).view(k, 1, 1)  # (K, rows, 1)
    base_x = (torch.arange(wo, device=dev, dtype=dt) * stride[1] - padding[1]).view(1, 1, wo) \
        + (kj * dilation[1]).view(k, 1, 1)  # (K, 1, Wo)
    grid = torch.empty(n, g, k, ho, wo, 2, device=dev, dtype=dt)
    torch.add(base_x, off[:, :, :, 1], out=grid[..., 0]).mul_(2.0 / w).add_(1.0 / w - 1.0)
    torch.add(base_y, off[:, :, :, 0], out=grid[..., 1]).mul_(2.0 / h).add_(1.0 / h - 1.0)
    return grid.view(n * g, k * ho, wo, 2)


def _input_band(offset: Tensor, h: int, kh: int, stride: int, padding: int, dilation: int,
                row0: int, row1: int) -> tuple[int, int]:
    """Input rows [y0, y1) that the taps of output rows [row0, row1) can touch (bilinear corners).

    Lets a block gather from, and scatter its input gradient into, a band of the input rather than
    the whole image. Needs the offsets' range on the host, so it is used on CPU only.
    """
    dy = offset.view(offset.shape[0], -1, 2, *offset.shape[-2:])[:, :, 0]
    lo, hi = torch.aminmax(dy)
    y_lo = row0 * stride - padding + math.floor(float(lo))
    y_hi = (row1 - 1) * stride - padding + (kh - 1) * dilation + math.floor(float(hi)) + 2
    y0, y1 = max(0, y_lo), min(h, y_hi)
    return (y0, y1) if y0 < y1 else (0, 1)


def _chunks(n: int, ho: int, per_row: int, budget: int) -> list[tuple[int, int, int, int]]:
    """Split (samples, output rows) into blocks whose im2col buffer has about ``budget`` elements.

    Returns (sample start, sample end, row start, row end) tuples.
    """
    rows = max(1, min(ho, budget // max(1, per_row)))
    if rows < ho:
        return [(i, i + 1, r, min(ho, r + rows)) for i in range(n) for r in range(0, ho, rows)]
    samples = max(1, budget // max(1, per_row * ho))
    return [(i, min(n, i + samples), 0, ho) for i in range(0, n, samples)]


def _band(x: Tensor, offset: Tensor, kh: int, stride: tuple[int, int], padding: tuple[int, int],
          dilation: tuple[int, int], row0: int, row1: int) -> tuple[int, int]:
    if x.is_cuda:
        return 0, x.shape[-2]
    return _input_band(offset, x.shape[-2], kh, stride[0], padding[0], dilation[0], row0, row1)


def _budget(x: Tensor) -> int:
    # CPU: keep the im2col block in the last-level cache (~8 MiB in fp32); it was 2x faster than
    # one buffer per sample at the pinned shape. GPU: big blocks keep the device busy.
    return _CHUNK_ELEMENTS_CUDA if x.is_cuda else _CHUNK_ELEMENTS_CPU


def _check_args(x: Tensor, offset: Tensor, weight: Tensor, mask: Tensor | None,
                out_hw: tuple[int, int], kernel: tuple[int, int]) -> tuple[int, int]:
    if x.dim() != 4 or offset.dim() != 4 or weight.dim() != 4:
        raise ValueError(f"deform_conv2d expects 4-D input, offset and weight; got {tuple(x.shape)}, "
                         f"{tuple(offset.shape)}, {tuple(weight.shape)}")
    n, c = x.shape[:2]
    k = kernel[0] * kernel[1]
    if offset.shape[1] % (2 * k) or offset.shape[1] == 0:
        raise ValueError(f"offset has {offset.shape[1]} channels; expected 2 * deform_groups * {k}")
    g = offset.shape[1] // (2 * k)
    if c % g:
        raise ValueError(f"input channels {c} not divisible by deform_groups {g}")
    if c % weight.shape[1]:
        raise ValueError(f"input channels {c} not divisible by weight.shape[1]={weight.shape[1]}")
    groups = c // weight.shape[1]
    expect_off = (n, 2 * g * k, *out_hw)
    if tuple(offset.shape) != expect_off:
        raise ValueError(f"offset shape {tuple(offset.shape)}; expected {expect_off}")
    if mask is not None and tuple(mask.shape) != (n, g * k, *out_hw):
        raise ValueError(f"mask shape {tuple(mask.shape)}; expected {(n, g * k, *out_hw)}")
    return g, groups


class _DeformConvFunction(torch.autograd.Function):
    """Forward and hand-written backward of DCNv2 (see module docstring)."""

    @staticmethod
    def forward(ctx, x: Tensor, offset: Tensor, mask: Tensor, weight: Tensor, bias: Tensor | None,
                stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int],
                n_groups: int, groups: int) -> Tensor:
        n, c, h, w = x.shape
        c_out, _, kh, kw = weight.shape
        k, g = kh * kw, n_groups
        ho, wo = offset.shape[-2:]
        w_mat = weight.reshape(groups, c_out // groups, (c // groups) * k)
        out = x.new_empty(n, c_out, ho, wo)
        for s, e, r0, r1 in _chunks(n, ho, c * k * wo, _budget(x)):
            m, rows = e - s, r1 - r0
            off = offset[s:e, :, r0:r1]
            y0, y1 = _band(x, off, kh, stride, padding, dilation, r0, r1)
            grid = _sampling_grid(off, (y1 - y0, w), (kh, kw), stride, padding, dilation, r0, y0)
            cols = F.grid_sample(x[s:e, :, y0:y1].reshape(m * g, c // g, y1 - y0, w), grid, mode="bilinear",
                                 padding_mode="zeros", align_corners=False)  # (m*G, C/G, K*rows, Wo)
            cols = cols.view(m, g, c // g, k, rows, wo) * mask[s:e, :, r0:r1].reshape(m, g, 1, k, rows, wo)
            cols = cols.view(m, groups, (c // groups) * k, rows * wo)
            out[s:e, :, r0:r1] = torch.matmul(w_mat, cols).view(m, c_out, rows, wo)
        if bias is not None:
            out += bias.view(1, c_out, 1, 1)
        ctx.save_for_backward(x, offset, mask, weight)
        ctx.conf = (stride, padding, dilation, g, groups, bias is not None)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, offset, mask, weight = ctx.saved_tensors
        stride, padding, dilation, g, groups, has_bias = ctx.conf
        n, c, h, w = x.shape
        c_out, _, kh, kw = weight.shape
        k, cg = kh * kw, c // g
        ho, wo = offset.shape[-2:]
        need_x, need_off, need_mask, need_w, need_b = ctx.needs_input_grad[:5]
        w_mat = weight.reshape(groups, c_out // groups, (c // groups) * k)
        w_t = w_mat.transpose(-1, -2)
        grad_out = grad_out.contiguous()
        grad_x = torch.zeros_like(x) if need_x else None
        grad_off = torch.empty_like(offset) if need_off else None
        grad_mask = torch.empty_like(mask) if need_mask else None
        grad_w = torch.zeros_like(w_mat) if need_w else None
        for s, e, r0, r1 in _chunks(n, ho, c * k * wo, _budget(x)):
            m, rows = e - s, r1 - r0
            go = grad_out[s:e, :, r0:r1].reshape(m, groups, c_out // groups, rows * wo)
            off = offset[s:e, :, r0:r1]
            y0, y1 = _band(x, off, kh, stride, padding, dilation, r0, r1)
            grid = _sampling_grid(off, (y1 - y0, w), (kh, kw), stride, padding, dilation, r0, y0)
            xs = x[s:e, :, y0:y1].reshape(m * g, cg, y1 - y0, w)
            sampled = F.grid_sample(xs, grid, mode="bilinear", padding_mode="zeros",
                                    align_corners=False).view(m, g, cg, k, rows * wo)
            msk = mask[s:e, :, r0:r1].reshape(m, g, 1, k, rows * wo)
            if need_w:
                cols = (sampled * msk).view(m, groups, -1, rows * wo)
                grad_w += torch.matmul(go, cols.transpose(-1, -2)).sum(0)
                del cols
            if not (need_x or need_off or need_mask):
                continue
            grad_cols = torch.matmul(w_t, go).view(m, g, cg, k, rows * wo)  # dL/d(masked columns)
            if need_mask:
                gm = (grad_cols * sampled).sum(2)  # (m, G, K, rows*Wo)
                grad_mask[s:e, :, r0:r1] = gm.view(m, g * k, rows, wo)
            if need_x or need_off:
                grad_sampled = (grad_cols * msk).view(m * g, cg, k * rows, wo)
                gx, ggrid = torch.ops.aten.grid_sampler_2d_backward(
                    grad_sampled, xs, grid, 0, 0, False, [need_x, need_off])
                if need_x:
                    grad_x[s:e, :, y0:y1] += gx.view(m, c, y1 - y0, w)
                if need_off:
                    # grid (x, y) normalised -> offset (Δy, Δx) pixels, interleaved per tap
                    # (d(normalised)/d(pixel) = 2 / size for align_corners=False).
                    scale = torch.tensor([2.0 / w, 2.0 / (y1 - y0)], dtype=x.dtype, device=x.device)
                    ggrid = (ggrid * scale).view(m, g, k, rows, wo, 2).flip(-1)
                    grad_off[s:e, :, r0:r1] = ggrid.permute(0, 1, 2, 5, 3, 4).reshape(m, 2 * g * k, rows, wo)
        grad_b = grad_out.sum((0, 2, 3)) if (has_bias and need_b) else None
        if grad_w is not None:
            grad_w = grad_w.view_as(weight)
        return grad_x, grad_off, grad_mask, grad_w, grad_b, None, None, None, None, None


def deform_conv2d(input: Tensor, offset: Tensor, weight: Tensor, bias: Tensor | None = None,
                  stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0,
                  dilation: int | tuple[int, int] = 1, mask: Tensor | None = None) -> Tensor:
    """Modulated deformable convolution, a drop-in for :func:`torchvision.ops.deform_conv2d`.

    Args:
        input: (N, C_in, H, W).
        offset: (N, 2 * G * kh * kw, Ho, Wo) pixel offsets, (Δy, Δx) interleaved per tap, taps
            row-major, grouped by deformable group ``G`` (inferred from the channel count).
        weight: (C_out, C_in / groups, kh, kw); ``groups`` inferred from C_in.
        bias: (C_out,) or None.
        mask: (N, G * kh * kw, Ho, Wo) modulation (DCNv2), or None for ones (DCNv1).
    Returns:
        (N, C_out, Ho, Wo).
    """
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    kh, kw = weight.shape[-2:]
    h, w = input.shape[-2:]
    ho = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    g, groups = _check_args(input, offset, weight, mask, (ho, wo), (kh, kw))
    if mask is None:
        mask = offset.new_ones(offset.shape[0], g * kh * kw, ho, wo)
    return _DeformConvFunction.apply(input.contiguous(), offset.contiguous(), mask.contiguous(),
                                     weight.contiguous(), bias, stride, padding, dilation, g, groups)


class ModulatedDeformConv2d(nn.Module):
    """DCNv2 layer holding weight and bias; offsets and mask are forward arguments (as mmcv's).

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias: as nn.Conv2d.
        deform_groups: number of deformable groups G (offsets per tap per group).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int] = 3,
                 stride: int = 1, padding: int = 1, dilation: int = 1, groups: int = 1,
                 deform_groups: int = 1, bias: bool = True) -> None:
        super().__init__()
        kh, kw = _pair(kernel_size)
        if in_channels % groups or out_channels % groups or in_channels % deform_groups:
            raise ValueError(f"channels {in_channels}->{out_channels} must divide groups={groups} "
                             f"and deform_groups={deform_groups}")
        self.stride, self.padding, self.dilation = _pair(stride), _pair(padding), _pair(dilation)
        self.groups, self.deform_groups = groups, deform_groups
        self.kernel_size = (kh, kw)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kh, kw))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        # nn.Conv2d's default initialisation.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, x: Tensor, offset: Tensor, mask: Tensor | None) -> Tensor:
        """x (N, C_in, H, W), offset (N, 2*G*K, Ho, Wo), mask (N, G*K, Ho, Wo) -> (N, C_out, Ho, Wo)."""
        return deform_conv2d(x, offset, self.weight, self.bias, self.stride, self.padding,
                             self.dilation, mask)

    def extra_repr(self) -> str:
        return (f"{self.weight.shape[1] * self.groups}, {self.weight.shape[0]}, "
                f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, groups={self.groups}, deform_groups={self.deform_groups}")
