"""Degradations of TV footage, each with one recorded strength (see :mod:`tvface.synthetic.estimate`
for the estimators that recover every strength from the output images).

Applied in the camera and broadcast chain's order by :func:`degrade_frame`:

1. motion blur -- during compositing, on each moving layer (face, occluder) before it is laid
   over the background: a linear kernel along the layer's true image motion between frames times
   the shutter fraction (:func:`motion_blur_vector`); its strength is the kernel length in pixels;
2. low light -- the scene's exposure (the dark condition also dims the face's SH light), then
   sensor noise: additive Gaussian, ``noise_sigma`` in 8-bit levels;
3. down-and-up sampling -- area down by ``downsample`` then bicubic back (SD broadcast, digital zoom);
4. JPEG -- the frame file is written at ``jpeg_quality`` (libjpeg's IJG quality scale).

Images are float32 (H, W, 3) in [0, 1] until :func:`to_uint8`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np

KERNEL_SAMPLES_PER_PX = 8  # points splatted per pixel of blur length when drawing a kernel
CLEAN_JPEG_QUALITY = 95


@dataclass(frozen=True)
class Degradation:
    """Recorded strengths for one frame (the ground truth's ``degradation`` entry)."""

    blur_length: float = 0.0  # px, face layer's linear motion-blur kernel length
    blur_angle: float = 0.0  # degrees, direction of the blur in the image (x right, y down)
    exposure: float = 1.0  # scene brightness multiplier (< 1: dark)
    noise_sigma: float = 0.0  # additive Gaussian sensor noise, 8-bit levels
    downsample: float = 1.0  # down-and-up sampling factor (>= 1), as realised on the pixel grid
    jpeg_quality: int = CLEAN_JPEG_QUALITY  # IJG quality of the written JPEG

    def to_dict(self) -> dict:
        return {k: (round(float(v), 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def motion_blur_kernel(length: float, angle_deg: float) -> np.ndarray:
    """Normalised linear motion-blur kernel: a segment of ``length`` px at ``angle_deg`` (x right,
    y down), splatted bilinearly from evenly spaced points, centred, odd side."""
    if length < 1e-3:
        return np.ones((1, 1), np.float32)
    half = int(math.ceil(length / 2)) + 1
    k = np.zeros((2 * half + 1, 2 * half + 1), np.float64)
    n = max(int(math.ceil(length * KERNEL_SAMPLES_PER_PX)), 2)
    s = (np.arange(n) + 0.5) / n - 0.5  # evenly spaced along [-L/2, L/2]
    ang = math.radians(angle_deg)
    xs = half + s * length * math.cos(ang)
    ys = half + s * length * math.sin(ang)
    x0, y0 = np.floor(xs).astype(int), np.floor(ys).astype(int)
    fx, fy = xs - x0, ys - y0
    for dx, wx in ((0, 1 - fx), (1, fx)):
        for dy, wy in ((0, 1 - fy), (1, fy)):
            np.add.at(k, (y0 + dy, x0 + dx), wx * wy)
    return (k / k.sum()).astype(np.float32)


def motion_blur(image: np.ndarray, length: float, angle_deg: float) -> np.ndarray:
    """Convolve (H, W, C) with :func:`motion_blur_kernel`; for premultiplied RGBA layers, zeros
    outside (a layer ends at the image border like everything else)."""
    if length < 1e-3:
        return image
    k = motion_blur_kernel(length, angle_deg)
    return cv2.filter2D(image, -1, k, borderType=cv2.BORDER_REFLECT)


def blur_layer(rgba: np.ndarray, length: float, angle_deg: float) -> np.ndarray:
    """Motion-blur a premultiplied RGBA layer (colour and coverage together, so edges smear into
    the background when composited)."""
    if length < 1e-3:
        return rgba
    k = motion_blur_kernel(length, angle_deg)
    return cv2.filter2D(rgba, -1, k, borderType=cv2.BORDER_CONSTANT)


def motion_blur_vector(displacement_px: np.ndarray, shutter: float) -> tuple[float, float]:
    """(length px, angle deg) of the blur a layer moving by ``displacement_px`` (dx, dy) per frame
    gets with the shutter open ``shutter`` of the frame interval (TV: 1/50 s of 1/25 s = 0.5)."""
    d = np.asarray(displacement_px, np.float64) * shutter
    return float(np.hypot(d[0], d[1])), float(math.degrees(math.atan2(d[1], d[0])))


def composite(background: np.ndarray, layers: list[np.ndarray]) -> np.ndarray:
    """Porter-Duff "over": premultiplied RGBA ``layers`` (bottom first) over an RGB background."""
    out = background.astype(np.float32)
    for rgba in layers:
        out = rgba[..., :3] + (1.0 - rgba[..., 3:4]) * out
    return out


def add_sensor_noise(image: np.ndarray, sigma_levels: float, rng: np.random.Generator) -> np.ndarray:
    """Additive white Gaussian noise of ``sigma_levels`` / 255 per channel, clipped to [0, 1]."""
    if sigma_levels <= 0:
        return image
    noise = rng.standard_normal(image.shape).astype(np.float32) * (sigma_levels / 255.0)
    return np.clip(image + noise, 0.0, 1.0)


def down_up(image: np.ndarray, factor: float) -> tuple[np.ndarray, float]:
    """Area-downsample by ``factor`` and bicubic-upsample back to the input size.

    Returns the image and the factor as realised on the pixel grid (size / round(size / factor)).
    """
    h, w = image.shape[:2]
    if factor <= 1.0:
        return image, 1.0
    small = (max(1, int(round(w / factor))), max(1, int(round(h / factor))))
    low = cv2.resize(image, small, interpolation=cv2.INTER_AREA)
    up = cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(up, 0.0, 1.0), w / small[0]


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)


def encode_jpeg(image_u8: np.ndarray, quality: int) -> bytes:
    """RGB uint8 -> JPEG bytes (libjpeg through OpenCV, 4:2:0 chroma, IJG quality)."""
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(image_u8[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG")
    return buf.tobytes()


def decode_jpeg(data: bytes) -> np.ndarray:
    """JPEG bytes -> RGB uint8."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return img[..., ::-1].copy()


def degrade_frame(image: np.ndarray, deg: Degradation, rng: np.random.Generator) -> np.ndarray:
    """Steps 2-3 on a composited (already motion-blurred) frame: exposure, noise, down-up.

    Returns float32 (H, W, 3) in [0, 1]; JPEG happens when the frame is written.
    """
    out = np.clip(image * deg.exposure, 0.0, 1.0).astype(np.float32)
    out = add_sensor_noise(out, deg.noise_sigma, rng)
    out, _ = down_up(out, deg.downsample)
    return out
