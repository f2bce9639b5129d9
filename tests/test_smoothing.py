"""Temporal smoothing baselines: One-Euro against a scalar reference, EMA closed forms, lag, moving average."""
import math

import pytest
import torch

from tvface.evaluation.smoothing import ema_lag, moving_average, one_euro, smooth_codes


class LowPassFilter:
    """First-order low-pass of the 1€ paper's appendix (Casiez et al., CHI 2012), one scalar."""

    def __init__(self):
        self.first_time = True
        self.hatx_prev = None

    def hatxprev(self):
        return self.hatx_prev

    def filter(self, x, alpha):
        if self.first_time:
            self.first_time = False
            hatx = x
        else:
            hatx = alpha * x + (1.0 - alpha) * self.hatx_prev
        self.hatx_prev = hatx
        return hatx


class OneEuroFilter:
    """The 1€ filter of the paper's appendix pseudocode, one scalar channel, plain Python floats."""

    def __init__(self, rate, min_cutoff, beta, d_cutoff):
        self.rate, self.min_cutoff, self.beta, self.d_cutoff = rate, min_cutoff, beta, d_cutoff
        self.first_time = True
        self.x_filt, self.dx_filt = LowPassFilter(), LowPassFilter()
        self.last_alpha = 1.0

    def alpha(self, cutoff):
        tau = 1.0 / (2.0 * math.pi * cutoff)
        te = 1.0 / self.rate
        return 1.0 / (1.0 + tau / te)

    def filter(self, x):
        if self.first_time:
            self.first_time = False
            dx = 0.0
        else:
            dx = (x - self.x_filt.hatxprev()) * self.rate
        edx = self.dx_filt.filter(dx, self.alpha(self.d_cutoff))
        cutoff = self.min_cutoff + self.beta * abs(edx)
        a = self.alpha(cutoff)
        self.last_alpha = a if not self.x_filt.first_time else 1.0
        return self.x_filt.filter(x, a)


def _reference(signal, rate, min_cutoff, beta, d_cutoff):
    f = OneEuroFilter(rate, min_cutoff, beta, d_cutoff)
    out, alphas = [], []
    for v in signal:
        out.append(f.filter(v))
        alphas.append(f.last_alpha)
    return out, alphas


def _noisy(T, D, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(T, dtype=torch.float64).unsqueeze(1)
    freq = torch.linspace(0.01, 0.08, D, dtype=torch.float64)
    clean = torch.sin(2 * math.pi * freq * t) * torch.linspace(0.5, 3.0, D, dtype=torch.float64)
    return clean + 0.1 * torch.randn(T, D, generator=g, dtype=torch.float64)


@pytest.mark.parametrize(
    "min_cutoff,beta,d_cutoff,rate",
    [(0.05, 0.5, 1.0, 1.0), (0.2, 0.0, 1.0, 1.0), (1.0, 0.007, 1.0, 30.0), (0.5, 2.0, 0.3, 25.0)],
)
def test_one_euro_matches_scalar_reference(min_cutoff, beta, d_cutoff, rate):
    x = _noisy(80, 4, seed=1)
    got, alpha = one_euro(x, min_cutoff, beta, d_cutoff, rate)
    assert got.shape == x.shape and alpha.shape == x.shape and got.dtype == torch.float64
    for d in range(x.shape[1]):
        ref, ref_alpha = _reference(x[:, d].tolist(), rate, min_cutoff, beta, d_cutoff)
        assert torch.allclose(got[:, d], torch.tensor(ref, dtype=torch.float64), rtol=0, atol=1e-10)
        assert torch.allclose(alpha[:, d], torch.tensor(ref_alpha, dtype=torch.float64), rtol=0, atol=1e-10)
    assert torch.all(alpha[0] == 1.0)
    assert torch.equal(got[0], x[0])  # first sample passes through


def test_one_euro_1d_and_dtype():
    x = _noisy(30, 1, seed=2)
    got2, a2 = one_euro(x, 0.1, 0.3)
    got1, a1 = one_euro(x[:, 0], 0.1, 0.3)
    assert got1.shape == (30,) and a1.shape == (30,)
    assert torch.allclose(got1, got2[:, 0], rtol=0, atol=1e-12)
    got32, a32 = one_euro(x.float(), 0.1, 0.3)
    assert got32.dtype == torch.float32 and a32.dtype == torch.float32
    assert torch.allclose(got32.double(), got2, atol=1e-5)


def test_one_euro_speed_raises_alpha():
    """A faster signal gets a higher cutoff, hence a larger alpha (less smoothing, less lag)."""
    t = torch.arange(40, dtype=torch.float64)
    _, slow = one_euro(0.01 * t, 0.1, 1.0)
    _, fast = one_euro(1.0 * t, 0.1, 1.0)
    assert torch.all(fast[5:] > slow[5:])


def test_one_euro_rejects_bad_params():
    x = torch.zeros(5, 2)
    with pytest.raises(ValueError):
        one_euro(x, 0.0, 0.1)
    with pytest.raises(ValueError):
        one_euro(x, 0.1, -1.0)
    with pytest.raises(ValueError):
        one_euro(torch.zeros(2, 3, 4), 0.1, 0.1)


@pytest.mark.parametrize("min_cutoff", [0.05, 0.3, 2.0])
def test_beta_zero_is_ema_closed_form(min_cutoff):
    a = 1.0 / (1.0 + 1.0 / (2.0 * math.pi * min_cutoff))
    T = 25
    x = torch.zeros(T, dtype=torch.float64)
    x[0] = -0.5
    x[7:] = 1.0  # a step (after a non-zero start, so the (1-a)^t x_0 term matters)
    got, alpha = one_euro(x, min_cutoff, beta=0.0, d_cutoff=0.7)
    assert torch.allclose(alpha[1:], torch.full((T - 1,), a, dtype=torch.float64), rtol=0, atol=1e-14)
    expected = torch.tensor(
        [sum(a * (1 - a) ** k * x[t - k].item() for k in range(t)) + (1 - a) ** t * x[0].item() for t in range(T)],
        dtype=torch.float64,
    )
    assert torch.allclose(got, expected, rtol=0, atol=1e-12)
    # After the step the closed form reduces to 1 - (1-a)^(t-6) * (1 - xhat_6).
    t = torch.arange(7, T, dtype=torch.float64)
    assert torch.allclose(got[7:], 1 - (1 - a) ** (t - 6) * (1 - got[6]), rtol=0, atol=1e-12)
    assert ema_lag(alpha) == pytest.approx((1 - a) / a, rel=1e-12)


@pytest.mark.parametrize("min_cutoff", [0.05, 0.15, 0.5])
def test_ema_lag_matches_ramp_offset(min_cutoff):
    T = 600
    x = torch.arange(T, dtype=torch.float64)
    got, alpha = one_euro(x, min_cutoff, beta=0.0)
    measured = (x[-1] - got[-1]).item()  # steady-state offset of a ramp = the lag in frames
    a = 1.0 / (1.0 + 1.0 / (2.0 * math.pi * min_cutoff))
    assert measured == pytest.approx((1 - a) / a, rel=1e-9)
    assert ema_lag(alpha) == pytest.approx(measured, rel=1e-9)


def test_ema_lag_mean_over_frames_after_first():
    alpha = torch.tensor([[1.0, 1.0], [0.5, 0.25], [1.0, 0.5]])
    # (1-a)/a over frames 1..: 1, 3, 0, 1 -> mean 1.25 (frame 0 left out)
    assert ema_lag(alpha) == pytest.approx(1.25)
    assert ema_lag(torch.tensor([1.0])) == 0.0


def test_moving_average_ramp_and_constant_unchanged():
    T = 17
    ramp = torch.stack([torch.arange(T, dtype=torch.float64), 3.0 - 2.0 * torch.arange(T, dtype=torch.float64)], 1)
    for width in (1, 3, 5, 9, 41):
        assert torch.allclose(moving_average(ramp, width), ramp, rtol=0, atol=1e-12)
    const = torch.full((T, 3), 2.5, dtype=torch.float64)
    assert torch.allclose(moving_average(const, 7), const, rtol=0, atol=1e-12)


def test_moving_average_hand_computed():
    x = torch.tensor([0.0, 3.0, 0.0, 3.0, 0.0])
    got = moving_average(x, 3)
    assert got.shape == (5,) and got.dtype == torch.float32
    assert torch.allclose(got, torch.tensor([0.0, 1.0, 2.0, 1.0, 0.0]))
    # width 5: h = 0, 1, 2, 1, 0 -> [0, 1, 6/5, 1, 0]
    assert torch.allclose(moving_average(x, 5), torch.tensor([0.0, 1.0, 1.2, 1.0, 0.0]))


def test_moving_average_identity_and_bad_width():
    x = _noisy(12, 3)
    assert torch.equal(moving_average(x, 1), x)
    for bad in (0, 2, 4, -1, 3.0, True):
        with pytest.raises(ValueError, match="odd integer"):
            moving_average(x, bad)


def _codes(T=20):
    g = torch.Generator().manual_seed(3)
    return {
        "shape": torch.randn(T, 10, generator=g),
        "exp": torch.randn(T, 5, generator=g),
        "pose": torch.randn(T, 6, generator=g),
        "cam": torch.randn(T, 3, generator=g),
        "light": torch.randn(T, 27, generator=g),
    }


def test_smooth_codes_none_and_passthrough():
    codes = _codes()
    out, lag = smooth_codes(codes, "none", {})
    assert lag == 0.0 and out.keys() == codes.keys()
    assert all(torch.equal(out[k], codes[k]) for k in codes)

    out, lag = smooth_codes(codes, "one_euro", {"min_cutoff": 0.1, "beta": 0.0}, keys=("exp", "pose"))
    for k in ("shape", "cam", "light"):
        assert out[k] is codes[k]
    for k in ("exp", "pose"):
        assert torch.allclose(out[k], one_euro(codes[k], 0.1, 0.0)[0])
        assert not torch.allclose(out[k], codes[k])
    a = 1.0 / (1.0 + 1.0 / (2.0 * math.pi * 0.1))
    assert lag == pytest.approx((1 - a) / a, rel=1e-6)


def test_smooth_codes_pooled_lag_and_moving_average():
    codes = _codes()
    params = {"min_cutoff": 0.2, "beta": 0.5, "d_cutoff": 1.0}
    out, lag = smooth_codes(codes, "one_euro", params)
    alphas = [one_euro(codes[k], **params)[1] for k in ("shape", "exp", "pose", "cam")]
    assert lag == pytest.approx(ema_lag(torch.cat(alphas, 1)), rel=1e-6)
    assert out["light"] is codes["light"]

    out, lag = smooth_codes(codes, "moving_average", {"width": 5})
    assert lag == 0.0
    for k in ("shape", "exp", "pose", "cam"):
        assert torch.allclose(out[k], moving_average(codes[k], 5))
    assert out["light"] is codes["light"]


def test_smooth_codes_rejects_bad_method_and_params():
    codes = _codes()
    with pytest.raises(ValueError, match="unknown smoothing method"):
        smooth_codes(codes, "kalman", {})
    with pytest.raises(ValueError, match="needs params"):
        smooth_codes(codes, "one_euro", {"beta": 0.1})
    with pytest.raises(ValueError, match="does not take"):
        smooth_codes(codes, "moving_average", {"width": 3, "beta": 0.1})
