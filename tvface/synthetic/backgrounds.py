"""Backgrounds: random procedural textures and real photos shipped inside installed packages.

Photos come from scikit-image's bundled ``skimage.data`` images and matplotlib's sample data, so
nothing is downloaded. Images with a human face (``astronaut``, ``grace_hopper``) are left out so
the offline face detector finds the rendered face, not a face in the background. A background is a
plate larger than the crop; each frame reads a window that moves against the tracker's jitter, so
the background moves like a static scene seen through a jittering crop.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import cv2
import numpy as np

# skimage.data images bundled with the wheel (no pooch download needed), without faces.
SKIMAGE_PHOTOS = ("coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field",
                  "brick", "grass", "gravel", "camera", "moon", "coins", "clock", "page", "colorwheel", "text")
MATPLOTLIB_PHOTOS = ("Minduka_Present_Blue_Pack.png", "logo2.png")
TEXTURE_KINDS = ("fractal", "stripes", "blocks", "gradient")
PLATE_MARGIN = 1.5  # plate side / crop side: room for the crop to move


def _to_rgb_float(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    img = img[..., :3]
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0
    return np.clip(img.astype(np.float32), 0.0, 1.0)


@functools.lru_cache(maxsize=1)
def photo_library() -> tuple[tuple[str, np.ndarray], ...]:
    """(name, (H, W, 3) float32 in [0, 1]) for every packaged photo that loads on this install."""
    out = []
    try:
        import skimage.data as skd

        for name in SKIMAGE_PHOTOS:
            try:
                out.append((f"skimage:{name}", _to_rgb_float(getattr(skd, name)())))
            except Exception:  # an image missing from this scikit-image version (or needing pooch)
                continue
    except ImportError:
        pass
    try:
        import matplotlib

        folder = os.path.join(matplotlib.get_data_path(), "sample_data")
        for name in MATPLOTLIB_PHOTOS:
            path = os.path.join(folder, name)
            img = cv2.imread(path, cv2.IMREAD_COLOR)
            if img is not None:
                out.append((f"matplotlib:{name}", _to_rgb_float(img[..., ::-1])))
    except ImportError:
        pass
    return tuple(out)


def fractal_noise(rng: np.random.Generator, size: int, beta: float = 2.0) -> np.ndarray:
    """(size, size) 1/f^beta noise normalised to [0, 1] (natural-image-like power spectrum)."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None]
    f = np.sqrt(fx * fx + fy * fy)
    f[0, 0] = 1.0
    spec = (rng.standard_normal(f.shape) + 1j * rng.standard_normal(f.shape)) / f ** (beta / 2)
    spec[0, 0] = 0
    img = np.fft.irfft2(spec, s=(size, size))
    img -= img.min()
    return (img / max(img.max(), 1e-12)).astype(np.float32)


def random_palette(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 3) muted colours, as sets and walls are."""
    hsv = np.stack([rng.uniform(0, 180, n), rng.uniform(20, 160, n), rng.uniform(40, 230, n)], axis=1)
    rgb = cv2.cvtColor(hsv.astype(np.uint8)[None], cv2.COLOR_HSV2RGB)[0]
    return rgb.astype(np.float32) / 255.0


def procedural_texture(rng: np.random.Generator, size: int, kind: str) -> np.ndarray:
    """(size, size, 3) float32 texture: "fractal" clouds, "stripes", "blocks" (shelves, windows) or
    "gradient" (a lit wall)."""
    pal = random_palette(rng, 4)
    if kind == "fractal":
        n = fractal_noise(rng, size, rng.uniform(1.6, 2.6))[..., None]
        return (pal[0] * (1 - n) + pal[1] * n).astype(np.float32)
    if kind == "stripes":
        period = rng.uniform(6, 40)
        ang = rng.uniform(0, np.pi)
        yy, xx = np.mgrid[:size, :size].astype(np.float32)
        w = 0.5 + 0.5 * np.sign(np.sin(2 * np.pi * (xx * np.cos(ang) + yy * np.sin(ang)) / period))
        img = pal[0] * (1 - w[..., None]) + pal[1] * w[..., None]
        return cv2.GaussianBlur(img.astype(np.float32), (0, 0), 0.7)
    if kind == "blocks":
        img = np.empty((size, size, 3), np.float32)
        img[:] = pal[0]
        for _ in range(int(rng.integers(6, 20))):
            x0, y0 = rng.integers(0, size, 2)
            w, h = rng.integers(size // 16, size // 3, 2)
            img[y0:y0 + h, x0:x0 + w] = random_palette(rng, 1)[0]
        return cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 3.0))
    if kind == "gradient":
        yy, xx = np.mgrid[:size, :size].astype(np.float32) / size
        ang = rng.uniform(0, 2 * np.pi)
        g = np.clip(0.5 + (xx - 0.5) * np.cos(ang) + (yy - 0.5) * np.sin(ang), 0, 1)[..., None]
        return (pal[0] * (1 - g) + pal[1] * g).astype(np.float32)
    raise ValueError(f"unknown texture kind {kind!r}; known: {TEXTURE_KINDS}")


@dataclass(frozen=True)
class Background:
    plate: np.ndarray  # (P, P, 3) float32 in [0, 1]
    source: str  # "skimage:coffee", "texture:stripes", "flat"

    def window(self, offset_px: np.ndarray, image_size: int) -> np.ndarray:
        """(S, S, 3) view of the plate centred at ``offset_px`` (x, y) from the plate centre."""
        p = self.plate.shape[0]
        c = (p - 1) / 2
        a = np.array([[1.0, 0.0, c + offset_px[0] - (image_size - 1) / 2],
                      [0.0, 1.0, c + offset_px[1] - (image_size - 1) / 2]])
        return cv2.warpAffine(self.plate, a, (image_size, image_size),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)


def sample_background(rng: np.random.Generator, image_size: int, photo_prob: float = 0.5,
                      kind: str | None = None) -> Background:
    """A background plate of side ``PLATE_MARGIN * image_size``.

    ``kind``: None draws (photo with ``photo_prob``, else a texture); "photo", a texture kind, or
    "flat" (one grey level: calibration scenes for the noise estimator) force one.
    """
    size = int(round(PLATE_MARGIN * image_size))
    if kind == "flat":
        return Background(np.full((size, size, 3), rng.uniform(0.3, 0.7), np.float32), "flat")
    photos = photo_library()
    if kind == "photo" or (kind is None and photos and rng.random() < photo_prob):
        name, img = photos[int(rng.integers(len(photos)))]
        # A random square window of 30-100 % of the photo's short side, flipped half the time.
        short = min(img.shape[:2])
        side = int(rng.uniform(0.3, 1.0) * short)
        y0 = int(rng.integers(0, img.shape[0] - side + 1))
        x0 = int(rng.integers(0, img.shape[1] - side + 1))
        win = img[y0:y0 + side, x0:x0 + side]
        if rng.random() < 0.5:
            win = win[:, ::-1]
        plate = cv2.resize(np.ascontiguousarray(win), (size, size),
                           interpolation=cv2.INTER_AREA if side > size else cv2.INTER_LINEAR)
        # Sets are rarely saturated: pull colours a little towards grey and vary exposure.
        plate = np.clip((0.8 * plate + 0.2 * plate.mean()) * rng.uniform(0.7, 1.1), 0, 1)
        return Background(defocus(rng, plate.astype(np.float32), image_size), name)
    tex = kind if kind in TEXTURE_KINDS else TEXTURE_KINDS[int(rng.integers(len(TEXTURE_KINDS)))]
    return Background(defocus(rng, procedural_texture(rng, size, tex), image_size), f"texture:{tex}")


def defocus(rng: np.random.Generator, plate: np.ndarray, image_size: int, prob: float = 0.5) -> np.ndarray:
    """TV's shallow depth of field: half the backgrounds get a Gaussian defocus of 0.5-2.5 px at 224."""
    if rng.random() >= prob:
        return plate
    sigma = rng.uniform(0.5, 2.5) * image_size / 224
    return cv2.GaussianBlur(plate, (0, 0), sigma)
