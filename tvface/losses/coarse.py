"""Coarse-stage losses: the terms of the report's eq. 9, after DECA's ``decalib/utils/lossfunc.py`` and
``decalib/trainer.py`` (``training_step``, coarse branch).

Conventions:

* N frames (batch x time flattened); every function returns a scalar and modifies none of its inputs
  (DECA's ``batch_kp_2d_l1_loss`` writes the weights into the target's third column; we don't).
* Landmarks are DECA-normalised screen points: x right, y down, in [-1, 1]. Predictions ``(N, 68, 2)``;
  targets ``(N, 68, 3)`` whose third column is a weight (visibility / confidence). A weight of 0 drops a
  point; a flagged frame has all zeros and contributes nothing to any landmark term.
* Images ``(N, 3, H, W)`` RGB in [0, 1]; masks ``(N, 1, H, W)`` in [0, 1].
* Regularisers average over frames where DECA sums over the batch, so a weight in ``cfg.loss`` means the
  same at any batch size (see :func:`code_regulariser`).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tvface.models.vggface2 import INPUT_SIZE, MEAN_BGR

EPS = 1e-8  # DECA's guard on the landmark normaliser
N_LANDMARKS = 68
N_SH = 9
# DECA's eye_dis / lip_dis: (upper, lower) 0-based iBUG-68 indices.
EYE_PAIRS = ((37, 41), (38, 40), (43, 47), (44, 46))  # upper / lower eyelid, both eyes
LIP_PAIRS = ((61, 67), (62, 66), (63, 65))  # upper / lower inner lip


def landmark_weights(device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """DECA's ``weighted_landmark_loss`` per-point weights, a new (68,) tensor.

    1 everywhere; 2 for jaw points 5, 6, 10, 11; 1.5 for the nose (27-35) with 3 for the tip (30) and the
    nostril ends (31, 35); 1.5 for the mouth (48-67) with 3 for the corners (48, 54).
    """
    w = torch.ones(N_LANDMARKS, dtype=dtype, device=device)
    w[5:7] = 2
    w[10:12] = 2
    w[27:36] = 1.5
    w[[30, 31, 35]] = 3
    w[48:68] = 1.5
    w[[48, 54]] = 3
    return w


def _check_landmarks(pred: Tensor, target: Tensor, n_points: int | None = N_LANDMARKS) -> None:
    k = pred.shape[1] if pred.ndim == 3 else -1
    if (pred.ndim != 3 or pred.shape[-1] != 2 or target.shape != (*pred.shape[:-1], 3)
            or (n_points is not None and k != n_points)):
        want = "K" if n_points is None else str(n_points)
        raise ValueError(f"landmarks: pred must be (N, {want}, 2) and target (N, {want}, 3) (x, y, weight), got "
                         f"{tuple(pred.shape)} and {tuple(target.shape)}")


def landmark_loss(pred: Tensor, target: Tensor, weights: Tensor | None = None) -> Tensor:
    """DECA's weighted L1 landmark loss (``weighted_landmark_loss`` -> ``batch_kp_2d_l1_loss``).

    ``sum_nk v_nk w_k (|dx_nk| + |dy_nk|) / (2 sum_nk v_nk w_k + 1e-8)``: the weighted mean absolute
    coordinate error, with v the target's third column.

    Args:
        pred: (N, K, 2) predicted landmarks.
        target: (N, K, 3) detected landmarks and their weight; not modified.
        weights: (K,) per-point weights; default :func:`landmark_weights` (then K must be 68).
    Returns:
        scalar.
    """
    _check_landmarks(pred, target, N_LANDMARKS if weights is None else None)
    w = landmark_weights(pred.device, pred.dtype) if weights is None else weights.to(pred)
    if w.shape != pred.shape[1:2]:
        raise ValueError(f"landmark weights must be ({pred.shape[1]},), got {tuple(w.shape)}")
    vis = target[..., 2].to(pred.dtype) * w  # (N, K)
    err = (pred - target[..., :2].to(pred.dtype)).abs().sum(-1)  # (N, K) |dx| + |dy|
    return (err * vis).sum() / (2 * vis.sum() + EPS)


def _pair_distance_loss(pred: Tensor, target: Tensor, pairs: Sequence[tuple[int, int]]) -> Tensor:
    """Visibility-weighted mean |d_pred - d_target| of the distances between each (upper, lower) pair."""
    _check_landmarks(pred, target)
    up, lo = [p[0] for p in pairs], [p[1] for p in pairs]
    d_pred = (pred[:, up] - pred[:, lo]).norm(dim=-1)  # (N, P)
    d_gt = (target[:, up, :2] - target[:, lo, :2]).to(pred.dtype).norm(dim=-1)  # (N, P)
    vis = (target[:, up, 2] * target[:, lo, 2]).to(pred.dtype)  # (N, P) both points' weights
    return ((d_pred - d_gt).abs() * vis).sum() / (vis.sum() + EPS)


def eye_closure_loss(pred: Tensor, target: Tensor) -> Tensor:
    """DECA's ``eyed_loss``: L1 between predicted and detected upper-to-lower eyelid distances.

    Pairs :data:`EYE_PAIRS` (37-41, 38-40, 43-47, 44-46). Each pair is weighted by the product of its two
    points' target weights: ``sum_np v_np |d^pred_np - d^gt_np| / (sum_np v_np + 1e-8)``. With every weight
    1 this is DECA's plain mean (DECA ignores the weights); frames with weight 0 contribute nothing.

    Args:
        pred: (N, 68, 2). target: (N, 68, 3); not modified.
    Returns:
        scalar.
    """
    return _pair_distance_loss(pred, target, EYE_PAIRS)


def lip_closure_loss(pred: Tensor, target: Tensor) -> Tensor:
    """DECA's ``lipd_loss``: :func:`eye_closure_loss` on the inner lips, pairs :data:`LIP_PAIRS`
    (61-67, 62-66, 63-65). pred (N, 68, 2), target (N, 68, 3) -> scalar."""
    return _pair_distance_loss(pred, target, LIP_PAIRS)


def photometric_loss(pred_images: Tensor, images: Tensor, mask: Tensor) -> Tensor:
    """DECA's ``photometric_texture``: ``(mask * |pred - image|).mean()`` over all N*3*H*W elements.

    The mean runs over every pixel, not over the mask, as in DECA: a smaller face weighs less.

    Args:
        pred_images: (N, 3, H, W) rendered images in [0, 1].
        images: (N, 3, H, W) input frames in [0, 1].
        mask: (N, 1, H, W) in [0, 1]; the caller passes the face-parsing skin mask times the render's
            coverage (alpha), so pixels outside either are ignored.
    Returns:
        scalar.
    """
    if (pred_images.ndim != 4 or pred_images.shape != images.shape
            or mask.shape != (images.shape[0], 1, *images.shape[2:])):
        raise ValueError(f"photometric: pred_images and images must be (N, 3, H, W) and mask (N, 1, H, W), got "
                         f"{tuple(pred_images.shape)}, {tuple(images.shape)} and {tuple(mask.shape)}")
    return (mask * (pred_images - images).abs()).mean()


def to_vggface2_input(images: Tensor) -> Tensor:
    """(N, 3, H, W) RGB in [0, 1] -> (N, 3, 224, 224) the VGGFace2 ResNet-50's input, differentiable.

    The same conversion as :func:`tvface.models.vggface2.preprocess_faces` on the uint8 image ``255 x``:
    antialiased bilinear resize to 224^2, RGB -> BGR, x 255, minus :data:`~tvface.models.vggface2.MEAN_BGR`;
    the dtype is kept. DECA's ``VGGFace2Loss`` also crops a 10-pixel border and feeds ``2 x - 1`` of the
    mean-subtracted image; we feed the network the input it was trained on.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (N, 3, H, W) RGB in [0, 1], got {tuple(images.shape)}")
    x = images.flip(1) * 255  # (N, 3, H, W) BGR in [0, 255]
    if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=True)
    return x - x.new_tensor(MEAN_BGR).view(1, 3, 1, 1)


class VGGFace2Features(nn.Module):
    """Identity features for :func:`identity_loss`: [0, 1] RGB images -> (N, 2048) average-pooled features
    of :class:`tvface.models.vggface2.VGGFace2ResNet50` (:func:`to_vggface2_input`, then ``net.features``).

    Differentiable with respect to the images; the network is frozen and stays in eval mode (its batch-norm
    statistics are the file's).

    Args:
        net: a module with ``features((N, 3, 224, 224) BGR minus mean) -> (N, D)``, e.g. from
            :func:`tvface.models.vggface2.load_vggface2`.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> VGGFace2Features:
        super().train(mode)
        self.net.eval()  # frozen batch-norm statistics
        return self

    def forward(self, images: Tensor) -> Tensor:
        """(N, 3, H, W) RGB in [0, 1] -> (N, D) features."""
        return torch.flatten(self.net.features(to_vggface2_input(images)), 1)


def identity_loss(net: Callable[[Tensor], Tensor], pred_images: Tensor, images: Tensor,
                  mask: Tensor | None = None) -> Tensor:
    """DECA's ``VGGFace2Loss``: ``1 - cos(net(pred), net(image))``, mean over frames.

    Args:
        net: maps (N, 3, H, W) in [0, 1] to (N, D) features (:class:`VGGFace2Features`).
        pred_images: (N, 3, H, W) in [0, 1]; DECA feeds the rendered face pasted onto the frame.
        images: (N, 3, H, W) in [0, 1]; their features carry no gradient.
        mask: optional (N, 1, H, W); both images are multiplied by it before ``net``.
    Returns:
        scalar in [0, 2].
    """
    if pred_images.ndim != 4 or pred_images.shape != images.shape:
        raise ValueError(f"identity: pred_images and images must both be (N, 3, H, W), got "
                         f"{tuple(pred_images.shape)} and {tuple(images.shape)}")
    if mask is not None:
        pred_images, images = pred_images * mask, images * mask
    f_pred = net(pred_images)  # (N, D)
    with torch.no_grad():
        f_gt = net(images)  # (N, D)
    return (1 - F.cosine_similarity(f_pred, f_gt, dim=-1)).mean()


def code_regulariser(code: Tensor) -> Tensor:
    """``mean_n sum_j code_nj^2 / 2``: DECA's ``shape_reg`` / ``expression_reg`` / ``tex_reg``.

    DECA computes ``torch.sum(code**2) / 2`` over the whole batch; we average over frames instead, so this
    is DECA's value divided by N and a weight does not depend on the batch size.

    Args:
        code: (N, n) codes (shape, expression or albedo).
    Returns:
        scalar.
    """
    if code.ndim != 2:
        raise ValueError(f"code must be (N, n), got {tuple(code.shape)}")
    return code.square().sum(-1).mean() / 2


def light_regulariser(light: Tensor) -> Tensor:
    """DECA's ``light_reg``: ``((mean_c light - light)^2).mean()``, the mean squared deviation of each SH
    coefficient from its mean over R, G, B: 0 for white (grey) light.

    Args:
        light: (N, 9, 3) SH coefficients per colour channel.
    Returns:
        scalar.
    """
    if light.ndim != 3 or light.shape[1:] != (N_SH, 3):
        raise ValueError(f"light must be (N, 9, 3), got {tuple(light.shape)}")
    return (light.mean(dim=2, keepdim=True) - light).square().mean()
