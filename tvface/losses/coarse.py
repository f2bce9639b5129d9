"""Coarse-stage losses (the report's eq. 9, DECA's ``decalib/utils/lossfunc.py`` and ``trainer.py``).

Conventions: N frames (batch x time flattened). Landmarks are DECA-normalised screen points: x right,
y down, [-1, 1]; predictions ``(N, 68, 2)``, targets ``(N, 68, 3)`` whose third column is a weight
(visibility/confidence: 0 drops a point; a flagged frame has all zeros and contributes nothing).
Images ``(N, 3, H, W)`` in [0, 1], masks ``(N, 1, H, W)`` in [0, 1]. No function modifies its inputs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

EPS = 1e-8
EYE_PAIRS = ((37, 41), (38, 40), (43, 47), (44, 46))  # upper / lower eyelid (DECA's eyed_loss)
LIP_PAIRS = ((61, 67), (62, 66), (63, 65))  # upper / lower inner lip (DECA's lipd_loss)


def landmark_weights(device=None, dtype=torch.float32) -> Tensor:
    """(68,) DECA's ``weighted_landmark_loss`` weights: eye corners' neighbours, nose and mouth emphasised."""
    w = torch.ones(68, dtype=dtype, device=device)
    w[5:7] = 2
    w[10:12] = 2
    w[27:36] = 1.5
    w[[30, 31, 35]] = 3
    w[48:68] = 1.5
    w[[48, 54]] = 3
    return w


def _check(pred: Tensor, target: Tensor) -> None:
    if pred.ndim != 3 or pred.shape[-1] != 2 or target.shape != pred.shape[:-1] + (3,):
        raise ValueError(f"landmarks: pred must be (N, K, 2) and target (N, K, 3), got {tuple(pred.shape)} "
                         f"and {tuple(target.shape)}")


def landmark_loss(pred: Tensor, target: Tensor, weights: Tensor | None = None) -> Tensor:
    """DECA's weighted L1 landmark loss (``batch_kp_2d_l1_loss``), a scalar.

    ``sum_nk v_nk w_k (|dx| + |dy|) / (2 sum_nk v_nk w_k)``: the weighted mean absolute coordinate error.
    Args: pred (N, 68, 2), target (N, 68, 3), weights (68,) (default :func:`landmark_weights`).
    """
    _check(pred, target)
    w = landmark_weights(pred.device, pred.dtype) if weights is None else weights.to(pred)
    vis = target[..., 2].to(pred.dtype) * w
    err = (pred - target[..., :2].to(pred.dtype)).abs().sum(-1)
    return (err * vis).sum() / (2 * vis.sum() + EPS)


def _pair_distance_loss(pred: Tensor, target: Tensor, pairs) -> Tensor:
    _check(pred, target)
    up, lo = [p[0] for p in pairs], [p[1] for p in pairs]
    d_pred = (pred[:, up] - pred[:, lo]).norm(dim=-1)  # (N, P)
    d_gt = (target[:, up, :2] - target[:, lo, :2]).to(pred.dtype).norm(dim=-1)
    vis = (target[:, up, 2] * target[:, lo, 2]).to(pred.dtype)
    return ((d_pred - d_gt).abs() * vis).sum() / (vis.sum() + EPS)


def eye_closure_loss(pred: Tensor, target: Tensor) -> Tensor:
    """DECA's eye distance loss: L1 between predicted and detected upper-to-lower eyelid distances
    (pairs 37-41, 38-40, 43-47, 44-46), weighted by both points' visibility; a scalar."""
    return _pair_distance_loss(pred, target, EYE_PAIRS)


def lip_closure_loss(pred: Tensor, target: Tensor) -> Tensor:
    """DECA's lip distance loss: the same on the inner lips (61-67, 62-66, 63-65); a scalar."""
    return _pair_distance_loss(pred, target, LIP_PAIRS)


def photometric_loss(pred_images: Tensor, images: Tensor, mask: Tensor) -> Tensor:
    """DECA's ``(mask * |pred - image|).mean()`` over every element (N, 3, H, W); mask (N, 1, H, W) is the
    face-parsing skin mask times the render's coverage (the caller's job). A scalar."""
    if pred_images.shape != images.shape or mask.shape[0] != images.shape[0] or mask.shape[-2:] != images.shape[-2:]:
        raise ValueError(f"photometric: images {tuple(pred_images.shape)} / {tuple(images.shape)}, mask "
                         f"{tuple(mask.shape)} must be (N, 3, H, W) and (N, 1, H, W)")
    return (mask * (pred_images - images).abs()).mean()


def identity_loss(net, pred_images: Tensor, images: Tensor) -> Tensor:
    """1 - cosine similarity of face-recognition features (DECA: VGGFace2 ResNet50), mean over frames.

    ``net`` maps (N, 3, H, W) in [0, 1] to (N, D) (:class:`VGGFace2Features`). The target's features carry
    no gradient.
    """
    f_pred = net(pred_images)
    with torch.no_grad():
        f_gt = net(images)
    return (1 - F.cosine_similarity(f_pred, f_gt, dim=-1)).mean()


class VGGFace2Features(nn.Module):
    """Differentiable pooled features of :class:`tvface.models.vggface2.VGGFace2ResNet50` for [0, 1] RGB
    images: resized to 224^2, converted to its Caffe input (BGR, mean-subtracted, 0-255). Frozen."""



    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        from tvface.models.vggface2 import MEAN_BGR

        self.register_buffer("mean", torch.tensor(MEAN_BGR).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True):  # always in eval mode
        super().train(mode)
        self.net.eval()
        return self

    def forward(self, images: Tensor) -> Tensor:
        x = F.interpolate(images, size=(224, 224), mode="bilinear", align_corners=False)
        x = x.flip(1) * 255 - self.mean.to(x)
        return torch.flatten(self.net.features(x), 1)


def code_regulariser(code: Tensor) -> Tensor:
    """``sum_j code_j^2 / 2``, averaged over frames (DECA sums over the batch too; the mean keeps a
    weight's meaning independent of the batch size). code (N, n) -> scalar."""
    return code.square().sum(-1).mean() / 2


def light_regulariser(light: Tensor) -> Tensor:
    """DECA's light prior: mean squared deviation of each SH coefficient from its RGB mean (white light).
    light (N, 9, 3) -> scalar."""
    if light.ndim != 3 or light.shape[1:] != (9, 3):
        raise ValueError(f"light must be (N, 9, 3), got {tuple(light.shape)}")
    return (light.mean(dim=2, keepdim=True) - light).square().mean()
