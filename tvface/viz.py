"""Matplotlib figures used by the book: meshes (flat-shaded, painter's algorithm), landmarks, grids.

These are for looking at results, not for training (the differentiable renderer is
:mod:`tvface.rendering`). Everything takes numpy arrays or tensors and an axes.
"""
from __future__ import annotations

import numpy as np

LIGHT_DIR = np.array([0.3, 0.4, 1.0]) / np.linalg.norm([0.3, 0.4, 1.0])


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def plot_mesh(ax, verts, faces, color=(0.78, 0.74, 0.70), lmks=None, title: str | None = None,
              face_mask=None) -> None:
    """Flat-shaded orthographic front view (x right, y up) of a triangle mesh.

    Args:
        verts: (V, 3) vertices (FLAME axes: +z towards the viewer).
        faces: (F, 3) triangles.
        lmks: optional (68, 2|3) landmarks drawn on top.
        face_mask: optional (F,) bool, triangles to draw (e.g. skin only).
    """
    from matplotlib.collections import PolyCollection

    v = _np(verts).astype(np.float64)
    f = _np(faces).astype(np.int64)
    if face_mask is not None:
        f = f[_np(face_mask).astype(bool)]
    tri = v[f]  # (F, 3, 3)
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-12
    front = n[:, 2] > 0  # back faces are hidden
    tri, n = tri[front], n[front]
    order = np.argsort(tri[:, :, 2].mean(1))  # far to near
    shade = np.clip(n[order] @ LIGHT_DIR, 0.0, 1.0)[:, None] * 0.85 + 0.15
    colors = np.clip(np.asarray(color)[None] * shade, 0, 1)
    ax.add_collection(PolyCollection(tri[order, :, :2], facecolors=colors, edgecolors="none"))
    lo, hi = v[f.reshape(-1), :2].min(0), v[f.reshape(-1), :2].max(0)
    pad = 0.05 * (hi - lo).max()
    ax.set_xlim(lo[0] - pad, hi[0] + pad)
    ax.set_ylim(lo[1] - pad, hi[1] + pad)
    ax.set_aspect("equal")
    ax.axis("off")
    if lmks is not None:
        lm = _np(lmks)
        ax.scatter(lm[:, 0], lm[:, 1], s=4, c="tab:red", zorder=3)
    if title:
        ax.set_title(title, fontsize=9)


def image_grid(images, ncols: int, titles=None, figsize_per=2.0):
    """A figure of images ((N, H, W, 3) or list) in a grid; returns the figure."""
    import matplotlib.pyplot as plt

    images = list(images)
    nrows = int(np.ceil(len(images) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(figsize_per * ncols, figsize_per * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            img = _np(images[i])
            if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
                img = img.transpose(1, 2, 0)
            ax.imshow(np.clip(img, 0, 1) if img.dtype.kind == "f" else img)
            if titles is not None:
                ax.set_title(titles[i], fontsize=8)
    fig.tight_layout()
    return fig


def draw_points(images, points_screen, color=(1.0, 0.0, 0.0), radius: int = 1):
    """Copy of (N, 3, H, W) images with (N, K, 2) screen points ([-1, 1], x right, y down) drawn as squares."""
    import torch

    from tvface.rendering.camera import screen_to_pixels

    out = images.detach().float().clone()
    n, _, h, w = out.shape
    px = screen_to_pixels(points_screen.detach().float(), h, w).round().long()  # centres at integers
    col = torch.tensor(color, dtype=out.dtype, device=out.device)[:, None]
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            x = (px[..., 0] + dx).clamp(0, w - 1)
            y = (px[..., 1] + dy).clamp(0, h - 1)
            for b in range(n):
                out[b, :, y[b], x[b]] = col
    return out


def training_grid(batch, dec, max_frames: int = 4):
    """(3, H', W') grid for TensorBoard: input + detected landmarks (green), predicted landmarks (red),
    rendered image, shape (and detail) images, one row per frame."""
    import torch
    from torchvision.utils import make_grid

    img = batch.flat_image[:max_frames].detach().float()
    cols = [draw_points(img, batch.flat_landmark[:max_frames, :, :2], (0.0, 1.0, 0.0)),
            draw_points(img, dec.lmks_2d[:max_frames], (1.0, 0.0, 0.0))]
    if dec.render is not None:
        a = dec.render.alpha[:max_frames].float()
        cols.append(dec.render.images[:max_frames].detach().float().clamp(0, 1) * a + img * (1 - a))
        if dec.render.detail_images is not None:
            cols.append(dec.render.detail_images[:max_frames].detach().float().clamp(0, 1) * a + img * (1 - a))
    tiles = torch.stack(cols, 1).flatten(0, 1)  # frame-major rows
    return make_grid(tiles, nrow=len(cols), padding=2)


def reconstruction_panels(model, images, landmarks=None) -> dict:
    """The columns of the report's Fig. 3 for frames (N, 3, S, S) in [0, 1]: input, detected landmarks
    (green, DECA-normalised (N, 68, 3) or None), predicted landmarks (red), coarse shape, detail shape,
    rendered image (each (N, H, W, 3) numpy in [0, 1], at the reconstructor's size, over the input).

    The N frames are one sequence: a temporal encoder sees them together (sliding windows,
    :meth:`tvface.models.reconstructor.Reconstructor.encode_sequence`), a per-frame one one by one."""
    import torch
    import torch.nn.functional as F

    model.eval()
    with torch.no_grad():
        frames = images[None] if images.ndim == 4 else images
        codes = model.encode_sequence(frames, with_detail=True)
        dec = model.decode(codes, with_detail=True, with_shape=True)
        x = F.interpolate(frames.flatten(0, 1), size=(model.image_size,) * 2, mode="bilinear",
                          align_corners=False, antialias=True)
        a = dec.render.alpha

        def over(img):
            return (img.clamp(0, 1) * a + x * (1 - a)).permute(0, 2, 3, 1).numpy()

        out = {"input": x.permute(0, 2, 3, 1).numpy()}
        if landmarks is not None:
            out["detected landmarks"] = draw_points(x, landmarks[..., :2], (0.0, 1.0, 0.0)).permute(0, 2, 3, 1).numpy()
        out["predicted landmarks"] = draw_points(x, dec.lmks_2d, (1.0, 0.0, 0.0)).permute(0, 2, 3, 1).numpy()
        out["coarse shape"] = over(dec.render.shape_images)
        out["detail shape"] = over(dec.render.shape_detail_images)
        out["rendered"] = over(dec.render.images)
    return out


def shape_over(model, verts, cam, frames):
    """DECA's grey shape of (N, V, 3) vertices seen through DECA cameras (N, 3), over (N, 3, S, S)
    frames at the reconstructor's size: (N, S, S, 3) numpy in [0, 1] (ground truth beside predictions)."""
    import torch
    import torch.nn.functional as F

    from tvface.rendering.camera import orth_to_screen

    with torch.no_grad():
        verts, cam = verts.float(), cam.float()
        x = F.interpolate(frames.float(), size=(model.image_size,) * 2, mode="bilinear", align_corners=False,
                          antialias=True)
        out = model.renderer(verts, orth_to_screen(verts, cam), with_shape=True)
        a = out.alpha
        return (out.shape_images.clamp(0, 1) * a + x * (1 - a)).permute(0, 2, 3, 1).numpy()
