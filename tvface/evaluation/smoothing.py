"""Temporal smoothing of per-frame code sequences: the baselines a temporal encoder is compared against.

A per-frame regressor predicts each frame's codes (shape, expression, pose, camera) on its own, so
its output jitters from frame to frame. The cheapest way to remove the jitter is to filter the code
sequence over time afterwards; a temporal encoder has to beat these filters, at the same lag, to be
worth its cost. Two filters, each applied to every channel independently:

* **One-Euro filter** (Casiez, Roussel, Vogel, "1€ Filter: A Simple Speed-based Low-pass Filter for
  Noisy Input in Interactive Systems", CHI 2012): a causal first-order low-pass (an exponential
  moving average) whose cutoff frequency rises with the signal's speed, so that it smooths hard
  when the signal is still (jitter) and little when it moves (lag). For a sampling rate ``rate``
  (Hz; 1 = time measured in frames) and a cutoff ``f_c`` (Hz), the smoothing factor is::

      alpha(f_c) = 1 / (1 + tau * rate),    tau = 1 / (2 pi f_c)

  and, per frame ``t >= 1`` (frame 0 passes through: ``xhat_0 = x_0``, ``dxhat_0 = 0``)::

      dx_t    = (x_t - xhat_{t-1}) * rate                       derivative estimate
      dxhat_t = alpha(d_cutoff) dx_t + (1 - alpha(d_cutoff)) dxhat_{t-1}
      f_c,t   = min_cutoff + beta |dxhat_t|
      a_t     = alpha(f_c,t)
      xhat_t  = a_t x_t + (1 - a_t) xhat_{t-1}

  This is the pseudocode of the paper's appendix, where the derivative is taken against the
  previous *filtered* value (``hatxprev``); some ports differentiate the previous raw sample
  instead. With ``beta = 0`` it is a plain exponential moving average of constant
  ``alpha = 1 / (1 + 1 / (2 pi min_cutoff))`` (at ``rate = 1``).

* **Centred moving average** over an odd window of ``width`` frames. It has zero lag (a linear
  trend passes through unchanged) but is not causal: frame ``t`` needs ``(width - 1) / 2`` future
  frames, which is its latency in a live system. At the ends the window shrinks symmetrically, so
  no frame lags and every frame gets a value.

**Lag** (:func:`ema_lag`): a first-order low-pass ``xhat_t = a x_t + (1 - a) xhat_{t-1}`` is the
convolution of the input with the impulse response ``h_k = a (1 - a)^k``, whose centroid
``sum_k k h_k = (1 - a) / a`` frames is the delay it introduces; on a linear ramp ``x_t = t`` the
steady-state offset ``x_t - xhat_t`` is exactly that. For the One-Euro filter, whose ``a_t``
varies, the lag reported is the mean of ``(1 - a_t) / a_t`` over frames ``1..T-1`` and channels.
"""
from __future__ import annotations

import math
import operator
from typing import Mapping, Sequence

import torch
from torch import Tensor

__all__ = ["METHODS", "ema_lag", "moving_average", "one_euro", "smooth_codes"]

METHODS = ("one_euro", "moving_average", "none")
DEFAULT_KEYS = ("shape", "exp", "pose", "cam")


def _as_2d(name: str, x: Tensor) -> tuple[Tensor, bool]:
    """(T,) or (T, D) -> ((T, D) float64, whether the input was 1-D)."""
    if x.ndim not in (1, 2):
        raise ValueError(f"{name} must be (T,) or (T, D), got {tuple(x.shape)}")
    squeeze = x.ndim == 1
    x2 = x.unsqueeze(1) if squeeze else x
    return x2.to(torch.float64), squeeze


def _out_dtype(x: Tensor) -> torch.dtype:
    return x.dtype if x.is_floating_point() else torch.get_default_dtype()


def _alpha(cutoff: Tensor | float, rate: float) -> Tensor | float:
    """Smoothing factor of a first-order low-pass of cutoff ``cutoff`` Hz sampled at ``rate`` Hz."""
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau * rate)


def one_euro(
    x: Tensor, min_cutoff: float, beta: float, d_cutoff: float = 1.0, rate: float = 1.0
) -> tuple[Tensor, Tensor]:
    """Causal One-Euro filter (Casiez et al., CHI 2012) of every channel of a sequence.

    The recursion is in the module docstring; it runs in float64, vectorised over channels (the
    loop is over frames only).

    Args:
        x: (T, D) sequence, T frames of D independent channels, or (T,) a single channel.
        min_cutoff: minimum cutoff frequency (Hz, > 0); lower smooths more when still.
        beta: speed coefficient (>= 0); higher lags less when moving. 0 = constant EMA.
        d_cutoff: cutoff frequency (Hz, > 0) of the derivative's low-pass.
        rate: sampling rate (Hz, > 0); 1 measures time in frames.

    Returns:
        ``(filtered, alpha)``, both shaped like ``x`` and in its dtype (float inputs; others come
        back in the default float dtype): the filtered sequence and the smoothing factor ``a_t``
        used at each frame and channel (``alpha[0] = 1``: the first sample passes through).
    """
    if not min_cutoff > 0:
        raise ValueError(f"min_cutoff must be > 0, got {min_cutoff}")
    if not beta >= 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if not d_cutoff > 0:
        raise ValueError(f"d_cutoff must be > 0, got {d_cutoff}")
    if not rate > 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    x64, squeeze = _as_2d("x", x)
    out = torch.empty_like(x64)
    alphas = torch.ones_like(x64)
    if x64.shape[0] > 0:
        a_d = _alpha(float(d_cutoff), float(rate))
        xhat = x64[0].clone()
        dxhat = torch.zeros_like(xhat)
        out[0] = xhat
        for t in range(1, x64.shape[0]):
            dx = (x64[t] - xhat) * rate
            dxhat = a_d * dx + (1.0 - a_d) * dxhat
            a = _alpha(min_cutoff + beta * dxhat.abs(), float(rate))
            xhat = a * x64[t] + (1.0 - a) * xhat
            out[t] = xhat
            alphas[t] = a
    dtype = _out_dtype(x)
    if squeeze:
        out, alphas = out.squeeze(1), alphas.squeeze(1)
    return out.to(dtype), alphas.to(dtype)


def _lag_terms(alpha: Tensor) -> tuple[float, int]:
    """Sum of ``(1 - a) / a`` over frames 1.. and channels of a (T,) or (T, D) alpha, and the count."""
    a, _ = _as_2d("alpha", alpha)
    a = a[1:]
    if a.numel() and not bool((a > 0).all()):
        raise ValueError("alpha must be > 0 (a first-order low-pass smoothing factor in (0, 1])")
    return float(((1.0 - a) / a).sum()), a.numel()


def ema_lag(alpha: Tensor) -> float:
    """Lag, in frames, of a first-order low-pass with per-frame smoothing factors ``alpha``.

    ``xhat_t = a x_t + (1 - a) xhat_{t-1}`` has the impulse response ``a (1 - a)^k``, whose centroid
    is ``(1 - a) / a`` frames: the delay it introduces, and the steady-state offset ``x_t - xhat_t``
    on a ramp ``x_t = t``. With a varying factor (the One-Euro filter) this returns the mean of
    ``(1 - a_t) / a_t`` over frames ``1..T-1`` and all channels; frame 0, which passes through
    (``a_0 = 1``), is left out. 0.0 when there is no frame after the first.

    Args:
        alpha: (T, D) or (T,) smoothing factors in (0, 1], e.g. the second output of :func:`one_euro`.

    Returns:
        The mean lag in frames (divide by the rate for seconds).
    """
    total, count = _lag_terms(alpha)
    return total / count if count else 0.0


def moving_average(x: Tensor, width: int) -> Tensor:
    """Centred moving average over time, with windows that shrink symmetrically at the ends.

    Frame ``t`` is the mean of frames ``t-h .. t+h`` with ``h = min((width - 1) / 2, t, T-1-t)``:
    every frame gets a value and none lags (a linear trend passes through unchanged, ends
    included). Non-causal: it needs ``(width - 1) / 2`` future frames, its latency in a live system,
    but its lag is zero. ``width = 1`` is the identity.

    Args:
        x: (T, D) sequence, or (T,) a single channel.
        width: odd window length >= 1 (frames); may exceed T (the windows are clipped).

    Returns:
        Same shape as ``x``, in its dtype (float inputs; others in the default float dtype).
    """
    try:
        w = operator.index(width) if not isinstance(width, bool) else None
    except TypeError:
        w = None
    if w is None or w < 1 or w % 2 == 0:
        raise ValueError(f"moving_average width must be an odd integer >= 1, got {width!r}")
    width = w
    x64, squeeze = _as_2d("x", x)
    T = x64.shape[0]
    if width > 1 and T > 0:
        t = torch.arange(T, device=x64.device)
        h = torch.minimum(torch.minimum(t, T - 1 - t), torch.full_like(t, (width - 1) // 2))
        cs = torch.cat([x64.new_zeros(1, x64.shape[1]), x64.cumsum(0)])
        x64 = (cs[t + h + 1] - cs[t - h]) / (2 * h + 1).to(x64.dtype).unsqueeze(1)
    out = x64.squeeze(1) if squeeze else x64
    return out.to(_out_dtype(x))


def smooth_codes(
    codes: Mapping[str, Tensor],
    method: str,
    params: Mapping[str, float] | None = None,
    keys: Sequence[str] = DEFAULT_KEYS,
) -> tuple[dict[str, Tensor], float]:
    """Smooth the named (T, n) code blocks of a sequence over time.

    Args:
        codes: name -> (T, n) (or (T,)) per-frame codes of one sequence, e.g. ``shape``, ``exp``,
            ``pose``, ``cam``.
        method: ``"one_euro"`` (:func:`one_euro`; params ``min_cutoff``, ``beta``, optional
            ``d_cutoff`` = 1 and ``rate`` = 1), ``"moving_average"`` (:func:`moving_average`;
            param ``width``) or ``"none"`` (no smoothing; params ignored).
        params: the method's parameters.
        keys: the blocks to smooth; those absent from ``codes`` are skipped, and every other entry
            of ``codes`` is passed through as the same tensor object.

    Returns:
        ``(smoothed, lag_frames)``: a new dict with the same keys as ``codes``, and the lag in
        frames, :func:`ema_lag` of the One-Euro factors of all smoothed blocks pooled (every frame
        after the first and every channel weighing the same); 0.0 for ``moving_average`` (zero lag,
        ``(width - 1) / 2`` frames of latency) and ``none``.
    """
    if method not in METHODS:
        raise ValueError(f"unknown smoothing method {method!r}; expected one of {METHODS}")
    params = dict(params or {})
    out = dict(codes)
    if method == "none":
        return out, 0.0
    if method == "one_euro":
        allowed, required = {"min_cutoff", "beta", "d_cutoff", "rate"}, {"min_cutoff", "beta"}
    else:
        allowed, required = {"width"}, {"width"}
    if missing := required - params.keys():
        raise ValueError(f"{method} needs params {sorted(missing)}, got {sorted(params)}")
    if extra := params.keys() - allowed:
        raise ValueError(f"{method} does not take params {sorted(extra)}; allowed: {sorted(allowed)}")
    total, count = 0.0, 0
    for k in keys:
        if k not in codes:
            continue
        if method == "one_euro":
            out[k], alpha = one_euro(codes[k], **params)
            s, n = _lag_terms(alpha)
            total, count = total + s, count + n
        else:
            out[k] = moving_average(codes[k], params["width"])
    return out, (total / count if count else 0.0)
