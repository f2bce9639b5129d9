"""Blind estimators that recover each degradation's strength from output images.

They check that the recorded strengths in the ground truth are what the pixels show:

* :func:`estimate_blur_length` -- the edge-spread function across a straight edge: a box blur of
  length L convolves the line-spread function with a box of variance L^2 / 12;
* :func:`estimate_noise_sigma` -- Immerkaer's (1996) Laplacian-difference operator on the flattest
  blocks (response std = 6 sigma for white noise);
* :func:`jpeg_quality_from_file` -- the luminance quantisation table in the file's DQT segment,
  matched to libjpeg's IJG quality scaling; :func:`estimate_jpeg_quality` does the same from
  decoded pixels by finding the quantisation step of each low-frequency DCT coefficient;
* :func:`estimate_downsample_factor` -- the power spectrum's roll-off and nulls, matched against the
  transfer of down-and-up sampling by each candidate factor (content above about 0.5 / s cycles
  per pixel is removed).
"""
from __future__ import annotations

import functools
import math
from pathlib import Path

import cv2
import numpy as np

# ITU-T T.81 Annex K, table K.1 (luminance), natural (row-major) order.
STD_LUMA_TABLE = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], np.int64)
# Zig-zag scan: ZIGZAG[k] is the natural index of the k-th coefficient stored in a DQT segment.
ZIGZAG = np.array([
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14,
    21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53,
    60, 61, 54, 47, 55, 62, 63], np.int64)
# Variance of the line-spread function of an unblurred edge: pixel-area coverage (box of width 1,
# 1/12) plus the bilinear splat used to draw a kernel (a tent, 1/6).
BASE_EDGE_VARIANCE = 1 / 12 + 1 / 6


def ijg_table(quality: int, base: np.ndarray = STD_LUMA_TABLE) -> np.ndarray:
    """libjpeg's ``jpeg_quality_scaling`` + ``jpeg_add_quant_table`` (baseline, clamp to 1..255)."""
    q = min(max(int(quality), 1), 100)
    scale = 5000 // q if q < 50 else 200 - 2 * q
    return np.clip((base * scale + 50) // 100, 1, 255)


def read_quant_tables(data: bytes) -> dict[int, np.ndarray]:
    """{table id: (64,) natural-order quantisation table} from a JPEG's DQT segments."""
    tables: dict[int, np.ndarray] = {}
    i = 2
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG stream (no SOI marker)")
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise ValueError(f"JPEG marker expected at byte {i}")
        marker = data[i + 1]
        if marker in (0xD9, 0xDA):  # EOI, SOS: no more tables before the scan
            break
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if marker == 0xDB:
            seg = data[i + 4:i + 2 + length]
            j = 0
            while j < len(seg):
                precision, tid = seg[j] >> 4, seg[j] & 15
                n = 128 if precision else 64
                raw = np.frombuffer(seg[j + 1:j + 1 + n], ">u2" if precision else np.uint8).astype(np.int64)
                table = np.empty(64, np.int64)
                table[ZIGZAG] = raw
                tables[tid] = table
                j += 1 + n
        i += 2 + length
    return tables


def quality_from_table(table: np.ndarray) -> tuple[int, float]:
    """IJG quality whose luminance table is closest to ``table``; (quality, mean abs error)."""
    errs = [np.abs(ijg_table(q) - table).mean() for q in range(1, 101)]
    best = int(np.argmin(errs))
    return best + 1, float(errs[best])


def jpeg_quality_from_file(path_or_bytes: str | Path | bytes) -> int:
    """IJG quality a JPEG file was written with, from its luminance quantisation table."""
    data = path_or_bytes if isinstance(path_or_bytes, bytes) else Path(path_or_bytes).read_bytes()
    tables = read_quant_tables(data)
    if 0 not in tables:
        raise ValueError("JPEG has no luminance quantisation table (id 0)")
    return quality_from_table(tables[0])[0]


def _luma(image_u8: np.ndarray) -> np.ndarray:
    """JFIF Y (what libjpeg quantises) of an RGB uint8 image, float64, level-shifted by 128."""
    img = image_u8.astype(np.float64)
    return 0.299 * img[..., 0] + 0.587 * img[..., 1] + 0.114 * img[..., 2] - 128.0


def block_dct(y: np.ndarray) -> np.ndarray:
    """(n_blocks, 8, 8) orthonormal DCT-II of the 8x8 blocks of a 2D array (JPEG's grid)."""
    h, w = (y.shape[0] // 8) * 8, (y.shape[1] // 8) * 8
    blocks = y[:h, :w].reshape(h // 8, 8, w // 8, 8).transpose(0, 2, 1, 3).reshape(-1, 8, 8)
    n = np.arange(8)
    c = np.sqrt(2 / 8) * np.cos(np.pi * (2 * n[None] + 1) * n[:, None] / 16)
    c[0] /= math.sqrt(2)
    return np.einsum("ij,bjk,lk->bil", c, blocks, c)


def estimate_quant_step(coefs: np.ndarray, max_step: int = 64) -> int:
    """Quantisation step of one DCT coefficient from its decoded values: the step q whose lattice
    q * round(c / q) fits best, preferring larger q when several fit (1 if nothing does)."""
    c = coefs[np.abs(coefs) > 0.5]
    if c.size < 20:
        return 0  # all (near) zero: the step is not observable
    best = 1
    for q in range(2, max_step + 1):
        resid = np.abs(c - q * np.round(c / q))
        if np.mean(resid < 1.0) > 0.85 and np.median(resid) < 0.6:
            best = q
    return best


def estimate_jpeg_quality(image_u8: np.ndarray, n_coefs: int = 10) -> int:
    """IJG quality of a decoded JPEG from its pixels alone.

    The DCT of each 8x8 luma block of a decoded JPEG sits near multiples of the quantisation step
    (up to rounding and chroma conversion noise); the steps of the first ``n_coefs`` zig-zag
    coefficients are estimated and matched to IJG tables. Reliable for qualities where the steps
    are >= 2 (about <= 95); returns 100 when no step is visible.
    """
    dct = block_dct(_luma(image_u8)).reshape(-1, 64)
    steps, idx = [], []
    for k in ZIGZAG[1:n_coefs + 1]:  # skip DC: it carries the level shift and rounding bias
        q = estimate_quant_step(dct[:, k])
        if q > 0:
            steps.append(q)
            idx.append(k)
    if not steps:
        return 100
    steps_a, idx_a = np.array(steps), np.array(idx)
    errs = [np.abs(np.log(ijg_table(q)[idx_a]) - np.log(steps_a)).mean() for q in range(1, 101)]
    return int(np.argmin(errs)) + 1


def edge_profile(image: np.ndarray, angle_deg: float) -> np.ndarray:
    """Mean profile of a grey image along direction ``angle_deg`` (x right, y down): the image is
    rotated so that direction points along +x, and its central rows are averaged."""
    grey = image.mean(axis=2) if image.ndim == 3 else image
    h, w = grey.shape
    rot = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle_deg, 1.0)
    turned = cv2.warpAffine(grey.astype(np.float32), rot, (w, h), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REFLECT)
    band = turned[h // 2 - h // 8: h // 2 + h // 8]
    return band.mean(axis=0).astype(np.float64)


def estimate_blur_length(image: np.ndarray, angle_deg: float = 0.0,
                         base_variance: float = BASE_EDGE_VARIANCE) -> float:
    """Length (px) of a linear motion blur along ``angle_deg`` from the edge-spread function of a
    straight step edge across that direction near the image centre.

    The line-spread function (derivative of the edge profile) of a box blur of length L has
    variance L^2 / 12 on top of the edge's own; L = sqrt(12 (var - base_variance)).
    """
    esf = edge_profile(image, angle_deg)
    lsf = np.diff(esf)
    if abs(lsf.sum()) < 1e-6:
        raise ValueError("no edge across the blur direction in this image")
    lsf = lsf * np.sign(lsf.sum())
    peak = int(np.argmax(lsf))
    # Keep the connected support around the peak (above 1 % of it): ignores other, weaker edges.
    thr = 0.01 * lsf[peak]
    lo = peak
    while lo > 0 and lsf[lo - 1] > thr:
        lo -= 1
    hi = peak
    while hi < len(lsf) - 1 and lsf[hi + 1] > thr:
        hi += 1
    w = np.clip(lsf[lo:hi + 1], 0, None)
    x = np.arange(lo, hi + 1) + 0.5
    mean = (w * x).sum() / w.sum()
    var = (w * (x - mean) ** 2).sum() / w.sum()
    return float(math.sqrt(max(12 * (var - base_variance), 0.0)))


IMMERKAER_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)


def estimate_noise_sigma(image: np.ndarray, block: int = 8, flat_fraction: float = 0.1,
                         clip_margin: float = 3.0) -> float:
    """Std (8-bit levels) of additive white noise, from the flattest blocks of an image in [0, 1].

    Per channel, Immerkaer's operator removes the signal up to second order (its response is
    6 sigma for white noise); the ``flat_fraction`` of blocks whose smoothed image varies least,
    and which are not near 0 or 1 (clipping hides noise), give the median estimate.
    """
    img = image.astype(np.float32)
    if img.ndim == 2:
        img = img[..., None]
    h, w = (img.shape[0] - 2) // block * block, (img.shape[1] - 2) // block * block
    sigmas = []
    for ch in range(img.shape[2]):
        x = img[..., ch]
        resp = cv2.filter2D(x, -1, IMMERKAER_KERNEL, borderType=cv2.BORDER_REFLECT)[1:1 + h, 1:1 + w]
        smooth = cv2.GaussianBlur(x, (0, 0), 2.0)[1:1 + h, 1:1 + w]
        grad = np.hypot(cv2.Sobel(smooth, cv2.CV_32F, 1, 0), cv2.Sobel(smooth, cv2.CV_32F, 0, 1))
        mean = x[1:1 + h, 1:1 + w].reshape(h // block, block, w // block, block).mean(axis=(1, 3))
        rstd = resp.reshape(h // block, block, w // block, block).std(axis=(1, 3)) / 6.0
        structure = grad.reshape(h // block, block, w // block, block).mean(axis=(1, 3))
        guess = np.median(rstd)
        ok = (mean > clip_margin * guess) & (mean < 1 - clip_margin * guess)
        if ok.sum() < 4:
            ok = np.ones_like(ok)
        s, r = structure[ok], rstd[ok]
        n = max(int(flat_fraction * s.size), 3)
        sigmas.append(np.median(r[np.argsort(s)[:n]]))
    return float(np.median(sigmas) * 255.0)


def axis_power_spectrum(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frequencies (cycles/px) and power of a grey image along x and y, averaged: rows and columns
    are Hann-windowed and transformed separately (down-and-up sampling is separable, so its
    transfer shows on each axis)."""
    grey = image.mean(axis=2) if image.ndim == 3 else image
    grey = grey.astype(np.float64) - grey.mean()
    h, w = grey.shape
    n = min(h, w)
    grey = grey[:n, :n]
    px = (np.abs(np.fft.rfft(grey * np.hanning(n)[None], axis=1)) ** 2).mean(axis=0)
    py = (np.abs(np.fft.rfft(grey * np.hanning(n)[:, None], axis=0)) ** 2).mean(axis=1)
    return np.fft.rfftfreq(n), 0.5 * (px + py)


DOWNSAMPLE_CANDIDATES = tuple(np.round(np.arange(1.0, 6.001, 0.125), 3))


@functools.lru_cache(maxsize=8)
def down_up_transfer(size: int) -> dict[float, np.ndarray]:
    """Power transfer of :func:`~tvface.synthetic.degrade.down_up` for each candidate factor,
    measured once on white noise of side ``size`` (fixed seed)."""
    from tvface.synthetic.degrade import down_up

    noise = (0.5 + 0.1 * np.random.default_rng(0).standard_normal((size, size))).astype(np.float32)
    _, p0 = axis_power_spectrum(noise)
    return {c: axis_power_spectrum(down_up(noise, c)[0])[1] / p0 for c in DOWNSAMPLE_CANDIDATES}


def estimate_downsample_factor(image: np.ndarray, f_min: float = 0.05) -> float:
    """Down-and-up sampling factor from the power spectrum.

    For each candidate factor c the spectrum above ``f_min`` is fitted as ``(K + K' f) T_c(f) + N``:
    the transfer ``T_c`` of down-and-up sampling (:func:`down_up_transfer`: a roll-off from about
    0.3 / c and nulls at multiples of 1 / c) over a locally flat spectrum, plus a flat floor ``N``
    (8-bit rounding, JPEG). The candidate with the smallest log residual wins.

    Needs content up to the Nyquist frequency before the downsampling (texture or sensor noise);
    a smooth image has nothing for the cut-off to remove, and the factor is then not identifiable.
    """
    f, p = axis_power_spectrum(image)
    transfer = down_up_transfer(min(image.shape[:2]))
    sel = f >= f_min
    y, fs = p[sel], f[sel]
    best, best_res = 1.0, np.inf
    for c, t_full in transfer.items():
        t = t_full[sel]
        # Least squares on relative error (linear in K, K', N): sum ((K t + K' f t + N) / y - 1)^2.
        a = np.stack([t / y, fs * t / y, 1.0 / y], axis=1)
        coef, *_ = np.linalg.lstsq(a, np.ones_like(y), rcond=None)
        coef[2] = max(coef[2], 0.0)
        pred = np.maximum(a @ coef * y, 1e-12)
        res = float(np.mean(np.log(pred / y) ** 2))
        if res < best_res:
            best, best_res = float(c), res
    return best
