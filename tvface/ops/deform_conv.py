"""Modulated deformable convolution (DCNv2) in plain PyTorch.

Same maths, argument order and offset layout as :func:`torchvision.ops.deform_conv2d` with a mask and
as mmcv's ``ModulatedDeformConv2d``:

* ``offset``: (N, 2 * G * kh * kw, Ho, Wo). For deformable group ``g`` and tap ``k = i * kw + j``
  (taps row-major), channel ``2 * (g * kh * kw + k)`` is Δy and the next channel is Δx, in pixels.
* ``mask``: (N, G * kh * kw, Ho, Wo), channel ``g * kh * kw + k``.
* Tap ``k`` of output pixel (ho, wo) samples the input bilinearly at
  ``y = ho * stride - pad + i * dilation + Δy``, ``x = wo * stride - pad + j * dilation + Δx``;
  corners outside the image count as zeros.

How it is fast, on CPU (:class:`_DeformConvGather`): a small C++ library, compiled on first use
with the system compiler into ``~/.cache/tvface/kernels`` (about a second; see :func:`_kernels`),
does the bilinear sampling. The input is laid out channels-last within each deformable group, so a
bilinear corner is one contiguous row of C / G values; the four corner rows and weights of each
(tap, pixel) are computed once and shared by those channels, and the mask is folded into the
weights, so the im2col columns come out modulated in one pass. One matrix product per block of
pixels applies the weights. The backward pass gathers the same corners once more: the offset and
mask gradients are dot products of the corner rows with the column gradient, and the input
gradient scatters rows back into a per-group plane. Threads (PyTorch's own OpenMP pool) split the
deformable groups, whose planes are disjoint, so there are no atomics and results are
deterministic. The columns are recomputed for the weight gradient, not stored (storing them was
slower here; ``TVFACE_DCN_SAVED_COLUMNS_MB`` turns it on). At the pinned benchmark shape, forward +
backward is about 2.7x a plain conv2d (2 CPU threads); it was 5x with the path below.

On GPU, and on CPU when no compiler is available or ``TVFACE_NO_COMPILE=1``
(:class:`_DeformConvFunction`): one call to :func:`torch.nn.functional.grid_sample` gathers every tap
of every deformable group into an im2col buffer already laid out as (N, C_in * kh * kw, Ho * Wo) —
the deformable groups ride in grid_sample's batch dimension and the taps in its output rows — then
one batched matrix product applies the weights. Its backward pass is hand-written: grid_sample's own
vectorised backward gives the gradients of the input and the sampling grid (its input gradient
scatters within one (sample, group) slice per thread, so no atomics), the mask gradient is the
gathered values contracted with the column gradient, and the weight gradient is one matrix product.
Both paths process batches in chunks so the im2col buffer stays small, and recompute it in the
backward pass (activation memory is the input, offsets and mask only).
"""
from __future__ import annotations

import ctypes
import functools
import math
import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tvface.ops.cpu_kernels import compile_library

__all__ = ["deform_conv2d", "ModulatedDeformConv2d"]

# Elements of the im2col buffer per block (see _budget).
_CHUNK_ELEMENTS_CPU = 2 * 1024 * 1024
_CHUNK_ELEMENTS_CUDA = 64 * 1024 * 1024
# Default cap on columns kept from forward to backward by the CPU kernels (see _saved_columns_bytes).
_SAVED_COLUMNS_MB_DEFAULT = 0


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


def _saved_columns_bytes() -> int:
    """Memory the CPU kernels may spend keeping the columns from forward to backward (they are the
    layer's input times kh*kw). ``TVFACE_DCN_SAVED_COLUMNS_MB`` overrides the default; 0 always recomputes."""
    return int(float(os.environ.get("TVFACE_DCN_SAVED_COLUMNS_MB", _SAVED_COLUMNS_MB_DEFAULT)) * 2 ** 20)


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
    """DCNv2 through grid_sample (GPU, and CPU without a C++ compiler; see module docstring)."""

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


_KERNEL_SOURCE = r"""
// Bilinear gather (forward) and its adjoint (backward) for DCNv2 on CPU: one sample, a block of
// output pixels and a range of deformable groups per call. x and grad_x are (G, H*W + 1, Cg): channels
// last within each group, so a bilinear corner is one contiguous row of Cg values, plus one zero row
// that corners outside the image point to (so the inner loops have no branches). offset is
// (2*G*K, Ho*Wo), mask (G*K, Ho*Wo); columns are (C*K, pixels of the block, row stride ld) in weight
// order (c, k).
// Loops run (group, tap) outer and pixels inner, in tiles: the corner geometry of a tile is computed
// first (vectorised across pixels), then each pixel's Cg channels are gathered (vectorised across
// channels), then the tile is transposed into the columns.
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef __AVX__
#include <immintrin.h>
#endif

namespace {

constexpr int kTile = 64;

// A row of CG channels as one GCC vector: keeps the per-pixel work vectorised across channels (the
// compiler would otherwise vectorise across pixels with slow gathers).
template <typename T, int CG>
struct Row {
  typedef T type __attribute__((vector_size(sizeof(T) * (CG ? CG : 4))));
};
template <typename V, typename T>
inline V load_row(const T* p) { V v; __builtin_memcpy(&v, p, sizeof(V)); return v; }
template <typename V, typename T>
inline void store_row(T* p, const V& v) { __builtin_memcpy(p, &v, sizeof(V)); }

// Channel sums of four rows: out[c] = sum(r[c]).
template <typename T, typename V, int CG>
inline void sum4(const V* r, T* out) {
#ifdef __AVX__
  if constexpr (std::is_same_v<T, float> && CG == 8) {
    __m256 a, b, c, e;
    __builtin_memcpy(&a, &r[0], 32); __builtin_memcpy(&b, &r[1], 32);
    __builtin_memcpy(&c, &r[2], 32); __builtin_memcpy(&e, &r[3], 32);
    const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, e));
    const __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    _mm_storeu_ps(out, s);
    return;
  }
#endif
  for (int c4 = 0; c4 < 4; ++c4) {
    T s = T(0);
    for (int cc = 0; cc < CG; ++cc) s += r[c4][cc];
    out[c4] = s;
  }
}

struct Dims {
  int64_t h, w, wo, howo, g, cg, kh, kw, sh, sw, ph, pw, dh, dw, p_start, n_pix;
  int64_t ld;  // row stride of the columns (>= n_pix)
};

template <typename T>
struct Geometry {  // bilinear corners of the sampling points of one tile of pixels
  int32_t o[4][kTile];  // row offsets of the four corners in the group plane (zero row if outside)
  T ly[kTile], lx[kTile], m[kTile];
};

// Sampling point (yb + ty + dy, xb + tx + dx) of tap (g, k) for pixels [p, p + n), where (yb, xb) is
// the pixel's undeformed top-left tap position (precomputed by pixel_bases).
template <typename T>
inline void tile_geometry(const Dims& d, const T* __restrict off, const T* __restrict msk,
                          const T* __restrict yb, const T* __restrict xb, int64_t gk, T ty, T tx,
                          int64_t p, int n, Geometry<T>& geo) {
  const T* __restrict dy = off + (2 * gk) * d.howo + p;
  const T* __restrict dx = dy + d.howo;
  const T* __restrict m = msk + gk * d.howo + p;
  const int32_t h = int32_t(d.h), w = int32_t(d.w), cg = int32_t(d.cg), zero_row = h * w * cg;
  const T fh = T(d.h), fw = T(d.w);
  int32_t ys[kTile], xs[kTile];
  for (int j = 0; j < n; ++j) {
    const T y = yb[j] + ty + dy[j], x = xb[j] + tx + dx[j];
    // As torchvision's bilinear_interpolate: zero outside (-1, H) x (-1, W), corners outside are zeros.
    const bool inside = (y > T(-1)) & (y < fh) & (x > T(-1)) & (x < fw);
    const T yc = inside ? y : T(-2), xc = inside ? x : T(-2);  // also keeps floor() in int range
    const T yf = std::floor(yc), xf = std::floor(xc);
    geo.ly[j] = yc - yf;
    geo.lx[j] = xc - xf;
    geo.m[j] = m[j];
    ys[j] = int32_t(yf);
    xs[j] = int32_t(xf);
  }
  for (int j = 0; j < n; ++j) {
    const int32_t y0 = ys[j], x0 = xs[j];
    const bool vy0 = (y0 >= 0) & (y0 < h), vy1 = (y0 >= -1) & (y0 + 1 < h);
    const bool vx0 = (x0 >= 0) & (x0 < w), vx1 = (x0 >= -1) & (x0 + 1 < w);
    const int32_t base = (y0 * w + x0) * cg;
    geo.o[0][j] = vy0 & vx0 ? base : zero_row;
    geo.o[1][j] = vy0 & vx1 ? base + cg : zero_row;
    geo.o[2][j] = vy1 & vx0 ? base + w * cg : zero_row;
    geo.o[3][j] = vy1 & vx1 ? base + (w + 1) * cg : zero_row;
  }
}

// Undeformed position of tap (0, 0), without padding, for pixels [p0, p1).
template <typename T>
inline void pixel_bases(const Dims& d, int64_t p0, int64_t p1, T* yb, T* xb) {
  int64_t ho = p0 / d.wo, wo = p0 % d.wo;
  for (int64_t p = p0; p < p1; ++p, ++wo) {
    if (wo == d.wo) { wo = 0; ++ho; }
    yb[p - p0] = T(ho * d.sh);
    xb[p - p0] = T(wo * d.sw);
  }
}

template <typename T, int CG>
void forward_impl(const T* __restrict x, const T* __restrict off, const T* __restrict msk,
                  T* __restrict cols, const Dims& d, int64_t p0, int64_t p1, int64_t g0, int64_t g1) {
  const int64_t cg = CG ? CG : d.cg, K = d.kh * d.kw, plane = (d.h * d.w + 1) * cg, np = d.ld;
  Geometry<T> geo;
  std::vector<T> yb(p1 - p0), xb(p1 - p0);
  pixel_bases(d, p0, p1, yb.data(), xb.data());
  T tile[kTile * (CG ? CG : 1)];
  for (int64_t g = g0; g < g1; ++g) {
    const T* __restrict xg = x + g * plane;
    for (int64_t k = 0; k < K; ++k) {
      const T ty = T((k / d.kw) * d.dh - d.ph), tx = T((k % d.kw) * d.dw - d.pw);
      T* __restrict col = cols + (g * cg * K + k) * np - d.p_start;  // channel cc: col[cc*K*np + p]
      for (int64_t p = p0; p < p1; p += kTile) {
        const int n = int(p1 - p < kTile ? p1 - p : kTile);
        tile_geometry(d, off, msk, yb.data() + (p - p0), xb.data() + (p - p0), g * K + k, ty, tx, p, n, geo);
        for (int j = 0; j < n; ++j) {
          // Mask folded into the bilinear weights (DCNv2 modulation).
          const T ly = geo.ly[j], lx = geo.lx[j], hy = T(1) - ly, hx = T(1) - lx, m = geo.m[j];
          const T w00 = m * hy * hx, w01 = m * hy * lx, w10 = m * ly * hx, w11 = m * ly * lx;
          const T* __restrict a = xg + geo.o[0][j];
          const T* __restrict b = xg + geo.o[1][j];
          const T* __restrict c = xg + geo.o[2][j];
          const T* __restrict e = xg + geo.o[3][j];
          if constexpr (CG > 0) {
            using V = typename Row<T, CG>::type;
            store_row(tile + j * CG, w00 * load_row<V>(a) + w01 * load_row<V>(b) + w10 * load_row<V>(c) +
                                         w11 * load_row<V>(e));
          } else {
            for (int64_t cc = 0; cc < cg; ++cc)
              col[cc * K * np + p + j] = w00 * a[cc] + w01 * b[cc] + w10 * c[cc] + w11 * e[cc];
          }
        }
        if (CG) {
          for (int cc = 0; cc < CG; ++cc) {
            T* __restrict dst = col + cc * K * np + p;
            for (int j = 0; j < n; ++j) dst[j] = tile[j * CG + cc];
          }
        }
      }
    }
  }
}

template <typename T, int CG>
void backward_impl(const T* __restrict x, const T* __restrict off, const T* __restrict msk,
                   const T* __restrict gcols, T* gx, T* __restrict goff, T* __restrict gmsk,
                   const Dims& d, int64_t p0, int64_t p1, int64_t g0, int64_t g1) {
  const int64_t cg = CG ? CG : d.cg, K = d.kh * d.kw, plane = (d.h * d.w + 1) * cg, np = d.ld;
  const bool need_dots = goff != nullptr || gmsk != nullptr;
  Geometry<T> geo;
  std::vector<T> yb(p1 - p0), xb(p1 - p0);
  pixel_bases(d, p0, p1, yb.data(), xb.data());
  T dot[4][kTile];
  const int64_t tile_cg = CG ? CG : cg;
  T* tile = new T[kTile * tile_cg];  // dL/d(column) of the tile, (pixel, channel)
  for (int64_t g = g0; g < g1; ++g) {
    const T* __restrict xg = x + g * plane;
    T* gxg = gx ? gx + g * plane : nullptr;
    for (int64_t k = 0; k < K; ++k) {
      const int64_t gk = g * K + k;
      const T ty = T((k / d.kw) * d.dh - d.ph), tx = T((k % d.kw) * d.dw - d.pw);
      const T* __restrict gcol = gcols + (g * cg * K + k) * np - d.p_start;  // as the forward's col
      for (int64_t p = p0; p < p1; p += kTile) {
        const int n = int(p1 - p < kTile ? p1 - p : kTile);
        tile_geometry(d, off, msk, yb.data() + (p - p0), xb.data() + (p - p0), gk, ty, tx, p, n, geo);
        for (int64_t cc = 0; cc < tile_cg; ++cc) {
          const T* __restrict src = gcol + cc * K * np + p;
          for (int j = 0; j < n; ++j) tile[j * tile_cg + cc] = src[j];
        }
        for (int j = 0; j < n; ++j) {
          const T ly = geo.ly[j], lx = geo.lx[j], hy = T(1) - ly, hx = T(1) - lx, m = geo.m[j];
          const T* gc = tile + j * tile_cg;
          const T wt[4] = {m * hy * hx, m * hy * lx, m * ly * hx, m * ly * lx};
          if constexpr (CG > 0) {
            using V = typename Row<T, CG>::type;
            const V gv = load_row<V>(gc);
            if (need_dots) {
              V prod[4];
              for (int c4 = 0; c4 < 4; ++c4) prod[c4] = gv * load_row<V>(xg + geo.o[c4][j]);
              T sums[4];
              sum4<T, V, CG>(prod, sums);
              for (int c4 = 0; c4 < 4; ++c4) dot[c4][j] = sums[c4];
            }
            if (gxg) {
              // Corners outside the image accumulate into the zero row, which the caller drops.
              for (int c4 = 0; c4 < 4; ++c4) {
                T* dst = gxg + geo.o[c4][j];
                store_row(dst, load_row<V>(dst) + wt[c4] * gv);
              }
            }
          } else {
            if (need_dots) {
              for (int c4 = 0; c4 < 4; ++c4) {
                const T* xc = xg + geo.o[c4][j];
                T s = T(0);
                for (int64_t cc = 0; cc < cg; ++cc) s += gc[cc] * xc[cc];
                dot[c4][j] = s;
              }
            }
            if (gxg) {
              for (int c4 = 0; c4 < 4; ++c4) {
                T* dst = gxg + geo.o[c4][j];
                for (int64_t cc = 0; cc < cg; ++cc) dst[cc] += wt[c4] * gc[cc];
              }
            }
          }
        }
        if (gmsk) {
          T* __restrict gm = gmsk + gk * d.howo + p;
          for (int j = 0; j < n; ++j) {
            const T ly = geo.ly[j], lx = geo.lx[j], hy = T(1) - ly, hx = T(1) - lx;
            gm[j] = hy * hx * dot[0][j] + hy * lx * dot[1][j] + ly * hx * dot[2][j] + ly * lx * dot[3][j];
          }
        }
        if (goff) {
          T* __restrict goy = goff + (2 * gk) * d.howo + p;
          T* __restrict gox = goy + d.howo;
          for (int j = 0; j < n; ++j) {
            const T ly = geo.ly[j], lx = geo.lx[j], hy = T(1) - ly, hx = T(1) - lx, m = geo.m[j];
            goy[j] = m * (hx * (dot[2][j] - dot[0][j]) + lx * (dot[3][j] - dot[1][j]));
            gox[j] = m * (hy * (dot[1][j] - dot[0][j]) + ly * (dot[3][j] - dot[2][j]));
          }
        }
      }
    }
  }
  delete[] tile;
}

// Splits [0, n) into `parts` near-equal ranges; returns range `i`.
inline void split(int64_t n, int parts, int i, int64_t& a, int64_t& b) {
  a = n * i / parts;
  b = n * (i + 1) / parts;
}

// Runs body(i, parts) on up to n_threads threads: OpenMP from the same runtime as PyTorch's (the
// library links the libgomp PyTorch has loaded), so no second thread pool competes for the cores.
template <typename F>
inline void run_parallel(int n_threads, F&& body) {
#ifdef _OPENMP
  if (n_threads > 1) {
#pragma omp parallel num_threads(n_threads)
    body(omp_get_thread_num(), omp_get_num_threads());
    return;
  }
#endif
  body(0, 1);
}

template <typename T>
void forward_dispatch(const T* x, const T* off, const T* msk, T* cols, const int64_t* dims, int n_threads) {
  const Dims& d = *reinterpret_cast<const Dims*>(dims);
  run_parallel(n_threads, [&](int i, int parts) {
    // Threads own disjoint rows of the columns: split the groups, or the pixels when too few groups.
    int64_t p0 = d.p_start, p1 = d.p_start + d.n_pix, g0 = 0, g1 = d.g;
    if (d.g >= parts) {
      split(d.g, parts, i, g0, g1);
    } else {
      split(d.n_pix, parts, i, p0, p1);
      p0 += d.p_start; p1 += d.p_start;
    }
    switch (d.cg) {
      case 4: forward_impl<T, 4>(x, off, msk, cols, d, p0, p1, g0, g1); break;
      case 8: forward_impl<T, 8>(x, off, msk, cols, d, p0, p1, g0, g1); break;
      case 16: forward_impl<T, 16>(x, off, msk, cols, d, p0, p1, g0, g1); break;
      default: forward_impl<T, 0>(x, off, msk, cols, d, p0, p1, g0, g1);
    }
  });
}

template <typename T>
void backward_dispatch(const T* x, const T* off, const T* msk, const T* gcols, T* gx, T* goff, T* gmsk,
                       const int64_t* dims, int n_threads) {
  const Dims& d = *reinterpret_cast<const Dims*>(dims);
  // Groups own disjoint planes of grad_x, so splitting them needs no atomics.
  run_parallel(d.g > 1 ? n_threads : 1, [&](int i, int parts) {
    const int64_t p0 = d.p_start, p1 = d.p_start + d.n_pix;
    int64_t g0, g1;
    split(d.g, parts, i, g0, g1);
    switch (d.cg) {
      case 4: backward_impl<T, 4>(x, off, msk, gcols, gx, goff, gmsk, d, p0, p1, g0, g1); break;
      case 8: backward_impl<T, 8>(x, off, msk, gcols, gx, goff, gmsk, d, p0, p1, g0, g1); break;
      case 16: backward_impl<T, 16>(x, off, msk, gcols, gx, goff, gmsk, d, p0, p1, g0, g1); break;
      default: backward_impl<T, 0>(x, off, msk, gcols, gx, goff, gmsk, d, p0, p1, g0, g1);
    }
  });
}

}  // namespace

extern "C" {
void dcn_forward_f32(const float* x, const float* off, const float* msk, float* cols, const int64_t* dims,
                     int n_threads) {
  forward_dispatch<float>(x, off, msk, cols, dims, n_threads);
}
void dcn_forward_f64(const double* x, const double* off, const double* msk, double* cols, const int64_t* dims,
                     int n_threads) {
  forward_dispatch<double>(x, off, msk, cols, dims, n_threads);
}
void dcn_backward_f32(const float* x, const float* off, const float* msk, const float* gcols, float* gx,
                      float* goff, float* gmsk, const int64_t* dims, int n_threads) {
  backward_dispatch<float>(x, off, msk, gcols, gx, goff, gmsk, dims, n_threads);
}
void dcn_backward_f64(const double* x, const double* off, const double* msk, const double* gcols, double* gx,
                      double* goff, double* gmsk, const int64_t* dims, int n_threads) {
  backward_dispatch<double>(x, off, msk, gcols, gx, goff, gmsk, dims, n_threads);
}
}
"""

@functools.lru_cache(maxsize=1)
def _kernels() -> ctypes.CDLL | None:
    """The CPU gather/scatter kernels, compiled once into a cache, or None (then grid_sample is used).

    Set ``TVFACE_NO_COMPILE=1`` to skip them; ``TVFACE_KERNEL_CACHE`` moves the cache
    (default ``~/.cache/tvface/kernels``). Needs a C++ compiler (``$CXX`` or ``g++``); the build takes
    about a second and any failure falls back to the grid_sample path with a warning
    (:func:`tvface.ops.cpu_kernels.compile_library`).
    """
    lib = compile_library("deform_conv", _KERNEL_SOURCE)
    if lib is None:
        return None
    ptr = ctypes.c_void_p
    for suffix in ("f32", "f64"):
        getattr(lib, f"dcn_forward_{suffix}").argtypes = [ptr] * 5 + [ctypes.c_int]
        getattr(lib, f"dcn_backward_{suffix}").argtypes = [ptr] * 8 + [ctypes.c_int]
    return lib


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _pixel_chunks(n: int, n_pix: int, per_pixel: int, budget: int) -> list[tuple[int, int, int]]:
    """(sample, first pixel, end pixel) blocks whose columns hold about ``budget`` elements."""
    step = max(1, min(n_pix, budget // max(1, per_pixel)))
    return [(i, p, min(n_pix, p + step)) for i in range(n) for p in range(0, n_pix, step)]


def _group_rows(x: Tensor, g: int) -> Tensor:
    """(N, C, H, W) -> (N, G, H * W + 1, C / G): each bilinear corner is one contiguous row of C / G
    values; the last row of each group is zeros, read by corners outside the image."""
    n, c, h, w = x.shape
    rows = x.new_empty(n, g, h * w + 1, c // g)
    rows[:, :, : h * w] = x.view(n, g, c // g, h * w).transpose(2, 3)
    rows[:, :, h * w] = 0
    return rows


class _GatherKernels:
    """Calls into the compiled kernels for one (input, offset, mask) triple; see _DeformConvGather."""

    def __init__(self, lib: ctypes.CDLL, x_rows: Tensor, in_hw: tuple[int, int], offset: Tensor, mask: Tensor,
                 kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int],
                 dilation: tuple[int, int]) -> None:
        _, g, _, cg = x_rows.shape
        h, w = in_hw
        ho, wo = offset.shape[-2:]
        suffix = {torch.float32: "f32", torch.float64: "f64"}[x_rows.dtype]
        self.fwd, self.bwd = getattr(lib, f"dcn_forward_{suffix}"), getattr(lib, f"dcn_backward_{suffix}")
        self.x_rows, self.offset, self.mask = x_rows, offset, mask
        self.g, self.n_threads = g, max(1, torch.get_num_threads())
        self.geom = (h, w, wo, ho * wo, g, cg, *kernel, *stride, *padding, *dilation)

    def _dims(self, p0: int, p1: int, cols: Tensor) -> Tensor:
        if cols.stride(1) != 1 or cols.stride(0) < p1 - p0:
            raise ValueError(f"columns need unit pixel stride, got strides {cols.stride()}")
        return torch.tensor([*self.geom, p0, p1 - p0, cols.stride(0)], dtype=torch.int64)

    def columns(self, s: int, p0: int, p1: int, cols: Tensor) -> None:
        """Fills ``cols`` (C * K, p1 - p0), masked bilinear samples of sample ``s``, pixels [p0, p1)."""
        dims = self._dims(p0, p1, cols)
        self.fwd(_ptr(self.x_rows[s]), _ptr(self.offset[s]), _ptr(self.mask[s]), _ptr(cols), _ptr(dims),
                 self.n_threads)

    def adjoint(self, s: int, p0: int, p1: int, grad_cols: Tensor, grad_x_rows: Tensor | None,
                grad_offset: Tensor | None, grad_mask: Tensor | None) -> None:
        """Accumulates into grad_x_rows[s] and writes grad_offset[s], grad_mask[s] for pixels [p0, p1)."""
        dims = self._dims(p0, p1, grad_cols)
        self.bwd(_ptr(self.x_rows[s]), _ptr(self.offset[s]), _ptr(self.mask[s]), _ptr(grad_cols),
                 _ptr(None if grad_x_rows is None else grad_x_rows[s]),
                 _ptr(None if grad_offset is None else grad_offset[s]),
                 _ptr(None if grad_mask is None else grad_mask[s]), _ptr(dims), self.n_threads)


class _DeformConvGather(torch.autograd.Function):
    """DCNv2 on CPU with compiled bilinear gather / scatter kernels (see module docstring)."""

    @staticmethod
    def forward(ctx, x: Tensor, offset: Tensor, mask: Tensor, weight: Tensor, bias: Tensor | None,
                stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int],
                n_groups: int, groups: int) -> Tensor:
        n, c, h, w = x.shape
        c_out, _, kh, kw = weight.shape
        k, ho, wo = kh * kw, *offset.shape[-2:]
        x_rows = _group_rows(x, n_groups)  # (N, G, H * W + 1, Cg)
        kern = _GatherKernels(_kernels(), x_rows, (h, w), offset, mask, (kh, kw), stride, padding, dilation)
        w_mat = weight.reshape(groups, c_out // groups, (c // groups) * k)
        out = x.new_empty(n, c_out, ho * wo)
        # Keep the columns for the weight gradient when they fit the budget, else recompute them.
        keep = ctx.needs_input_grad[3] and n * c * k * ho * wo * x.element_size() <= _saved_columns_bytes()
        all_cols = x.new_empty(n, c * k, ho * wo) if keep else None
        for s, p0, p1 in _pixel_chunks(n, ho * wo, c * k, _budget(x)):
            cols = all_cols[s, :, p0:p1] if keep else x.new_empty(c * k, p1 - p0)
            kern.columns(s, p0, p1, cols)
            out[s, :, p0:p1] = torch.matmul(w_mat, cols.view(groups, -1, p1 - p0)).view(c_out, p1 - p0)
        if bias is not None:
            out += bias.view(1, c_out, 1)
        ctx.save_for_backward(x_rows, offset, mask, weight, all_cols)
        ctx.conf = (stride, padding, dilation, n_groups, groups, bias is not None, (c, h, w))
        return out.view(n, c_out, ho, wo)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x_rows, offset, mask, weight, all_cols = ctx.saved_tensors
        stride, padding, dilation, _, groups, has_bias, (c, h, w) = ctx.conf
        n = x_rows.shape[0]
        c_out, _, kh, kw = weight.shape
        k, ho, wo = kh * kw, *offset.shape[-2:]
        need_x, need_off, need_mask, need_w, need_b = ctx.needs_input_grad[:5]
        kern = _GatherKernels(_kernels(), x_rows, (h, w), offset, mask, (kh, kw), stride, padding, dilation)
        w_mat = weight.reshape(groups, c_out // groups, (c // groups) * k)
        grad_out = grad_out.contiguous().view(n, c_out, ho * wo)
        grad_x_rows = torch.zeros_like(x_rows) if need_x else None
        grad_off = torch.empty_like(offset) if need_off else None
        grad_mask = torch.empty_like(mask) if need_mask else None
        grad_w = torch.zeros_like(w_mat) if need_w else None
        for s, p0, p1 in _pixel_chunks(n, ho * wo, c * k, _budget(x_rows)):
            pix = p1 - p0
            go = grad_out[s, :, p0:p1].view(groups, c_out // groups, pix)
            if need_w:
                if all_cols is not None:
                    cols = all_cols[s, :, p0:p1]
                else:
                    cols = x_rows.new_empty(c * k, pix)
                    kern.columns(s, p0, p1, cols)
                grad_w.baddbmm_(go, cols.view(groups, -1, pix).transpose(1, 2))
                del cols
            if not (need_x or need_off or need_mask):
                continue
            grad_cols = torch.matmul(w_mat.transpose(1, 2), go)  # (groups, C*K/groups, pixels)
            kern.adjoint(s, p0, p1, grad_cols.view(c * k, pix), grad_x_rows, grad_off, grad_mask)
        grad_x = None
        if need_x:
            grad_x = grad_x_rows[:, :, : h * w].transpose(2, 3).reshape(n, c, h, w)
        grad_b = grad_out.sum((0, 2)) if (has_bias and need_b) else None
        if grad_w is not None:
            grad_w = grad_w.view_as(weight)
        return grad_x, grad_off, grad_mask, grad_w, grad_b, None, None, None, None, None


def _use_kernels(x: Tensor, n_groups: int) -> bool:
    _, c, h, w = x.shape
    small = (h * w + 1) * (c // n_groups) < 2 ** 31  # the kernels index a group's plane with int32
    return (x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and small
            and _kernels() is not None)


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
    fn = _DeformConvGather if _use_kernels(input, g) else _DeformConvFunction
    return fn.apply(input.contiguous(), offset.contiguous(), mask.contiguous(), weight.contiguous(), bias,
                    stride, padding, dilation, g, groups)


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
