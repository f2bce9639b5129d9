"""Detail-stage losses: the terms of the report's eq. 10, after DECA's ``decalib/trainer.py`` (detail branch)
and ``decalib/utils/lossfunc.py`` (``IDMRFLoss``).

Conventions:

* ``uv_disp``: (N, 1, S, S) displacement map D in UV, N frames. The last axis is u: for a left-right
  symmetric layout (FLAME's) the face's mirror image of texel (i, j) is (i, S - 1 - j).
* Masks: (N or 1, 1, S, S) in [0, 1] (a UV-space region; broadcast over frames when N is 1).
* Images for :class:`IDMRFLoss`: (N, 3, H, W) RGB in [0, 1].
* Every function returns a scalar; frame-summed DECA terms are averaged over frames here so that a weight
  in ``cfg.loss`` means the same at any batch size.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

EPS = 1e-8
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's VGG19 input normalisation
IMAGENET_STD = (0.229, 0.224, 0.225)
MRF_BIAS = 1.0  # DECA's IDMRFLoss.bias
MRF_SIGMA = 0.5  # DECA's IDMRFLoss.nn_stretch_sigma
MRF_REL_EPS = 1e-5  # DECA's compute_relative_distances epsilon
# DECA's feature layers as indices into torchvision's ``vgg19().features``. DECA's ``VGG19FeatLayer`` names
# them 'relu3_2' and 'relu4_2', but its counter advances on convs *and* ReLUs, so those are modules 11 and
# 20: relu3_1 and relu4_1 in the usual naming (the ID-MRF paper's relu3_2 / relu4_2 would be 13 and 22).
# We use the layers DECA's code computes. Style weights {relu3_2: 1, relu4_2: 1}, content {relu4_2: 1},
# lambda_style = lambda_content = 1: module 20 counts twice.
DECA_STYLE_LAYERS = {11: 1.0, 20: 1.0}
DECA_CONTENT_LAYERS = {20: 1.0}


def _check_uv(uv_disp: Tensor, *masks: Tensor | None) -> None:
    if uv_disp.ndim != 4 or uv_disp.shape[1] != 1:
        raise ValueError(f"uv_disp must be (N, 1, S, S), got {tuple(uv_disp.shape)}")
    n, _, h, w = uv_disp.shape
    for m in masks:
        if m is not None and (m.ndim != 4 or m.shape[1] != 1 or m.shape[0] not in (1, n) or m.shape[2:] != (h, w)):
            raise ValueError(f"UV mask must be ({n} or 1, 1, {h}, {w}) like uv_disp, got {tuple(m.shape)}")


def _masked_mean(x: Tensor, mask: Tensor | None) -> Tensor:
    """sum(mask x) / sum(mask) with mask broadcast to x; the plain mean without a mask."""
    if mask is None:
        return x.mean()
    m = mask.to(x.dtype).expand_as(x)
    return (x * m).sum() / (m.sum() + EPS)


def displacement_loss(uv_disp: Tensor, uv_mask: Tensor | None = None) -> Tensor:
    """DECA's ``z_reg``: mean |D|, over the texels of ``uv_mask`` (weighted by it) when given.

    ``sum m |D| / (sum m + 1e-8)``; DECA uses the plain ``uv_z.abs().mean()`` (``uv_mask=None``).

    Args:
        uv_disp: (N, 1, S, S). uv_mask: (N or 1, 1, S, S) in [0, 1], optional.
    Returns:
        scalar.
    """
    _check_uv(uv_disp, uv_mask)
    return _masked_mean(uv_disp.abs(), uv_mask)


def smoothness_loss(uv_disp: Tensor, uv_mask: Tensor | None = None) -> Tensor:
    """Smoothness of D (the report's reg_diff): mean |forward difference| along u plus the same along v.

    ``mean_{m_x} |D[i, j+1] - D[i, j]| + mean_{m_y} |D[i+1, j] - D[i, j]|``, each mean weighted by
    ``m_x = m[i, j] m[i, j+1]`` (resp. ``m_y = m[i, j] m[i+1, j]``): a difference counts when both its
    texels are in ``uv_mask``. 0 for a constant D. DECA's code instead applies ``shading_smooth_loss``
    (mean *squared* differences, border rows/columns dropped) to the detail shading, not to D.

    Args:
        uv_disp: (N, 1, S, S). uv_mask: (N or 1, 1, S, S) in [0, 1], optional.
    Returns:
        scalar.
    """
    _check_uv(uv_disp, uv_mask)
    dx = (uv_disp[..., :, 1:] - uv_disp[..., :, :-1]).abs()  # (N, 1, S, S-1)
    dy = (uv_disp[..., 1:, :] - uv_disp[..., :-1, :]).abs()  # (N, 1, S-1, S)
    if uv_mask is None:
        return dx.mean() + dy.mean()
    m = uv_mask.to(uv_disp.dtype)
    return _masked_mean(dx, m[..., :, 1:] * m[..., :, :-1]) + _masked_mean(dy, m[..., 1:, :] * m[..., :-1, :])


def soft_symmetry_loss(uv_disp: Tensor, visibility_mask: Tensor) -> Tensor:
    """DECA's ``z_sym``: where a texel is not visible, D should equal its left-right mirror.

    ``sum_{n,i,j} (1 - vis) |D - flip_u(D).detach()| / N``: the mirror is a fixed target (no gradient flows
    through it), as in DECA. DECA sums over the batch (no 1 / N) and passes ``1 - erode(vis)``; erode the
    visibility before calling if you want that.

    Args:
        uv_disp: (N, 1, S, S).
        visibility_mask: (N or 1, 1, S, S) in [0, 1], 1 where the UV texel is visible in the frame.
    Returns:
        scalar.
    """
    _check_uv(uv_disp, visibility_mask)
    nonvis = 1 - visibility_mask.to(uv_disp.dtype)
    mirror = torch.flip(uv_disp, [-1]).detach()  # (N, 1, S, S)
    return (nonvis * (uv_disp - mirror).abs()).sum() / uv_disp.shape[0]


# --------------------------------------------------------------------------- ID-MRF
def id_mrf(gen: Tensor, tar: Tensor, bias: float = MRF_BIAS, sigma: float = MRF_SIGMA) -> Tensor:
    """The implicit-diversified MRF term of Wang et al. (NeurIPS 2018) on 1x1 feature patches, as DECA's
    ``IDMRFLoss.mrf_loss``, averaged over frames (DECA sums).

    Per frame: both feature maps minus the target's mean over channels (DECA's ``mean(tar, 1)``), unit
    vectors per position; ``d_qp = (1 - cos(t_q, g_p)) / 2`` for every target position q and generated
    position p; relative distance ``d_qp / (min_q' d_q'p + 1e-5)``; contextual similarity
    ``cs_qp = softmax_q((bias - rel_qp) / sigma)``; loss ``-log(mean_q max_p cs_qp)``. 0 when every
    target feature has an exact, distinct match in ``gen`` (in any arrangement), growing as matches fail.

    Args:
        gen: (N, C, H, W) generated features. tar: (N, C, H', W') target features.
    Returns:
        scalar.
    """
    if gen.ndim != 4 or tar.ndim != 4 or gen.shape[:2] != tar.shape[:2]:
        raise ValueError(f"id_mrf: gen and tar must be (N, C, H, W) with equal N, C, got {tuple(gen.shape)} "
                         f"and {tuple(tar.shape)}")
    mean_t = tar.mean(1, keepdim=True)  # (N, 1, H', W')
    gen_n = F.normalize((gen - mean_t).flatten(2), dim=1)  # (N, C, P)
    tar_n = F.normalize((tar - mean_t).flatten(2), dim=1)  # (N, C, Q)
    cos = torch.einsum("ncq,ncp->nqp", tar_n, gen_n)  # (N, Q, P)
    dist = (1 - cos) / 2
    rel = dist / (dist.min(dim=1, keepdim=True)[0] + MRF_REL_EPS)
    cs = torch.softmax((bias - rel) / sigma, dim=1)  # DECA: exp(.) / sum_q exp(.)
    k_max = cs.max(dim=2)[0]  # (N, Q) best match of each target feature
    return -torch.log(k_max.mean(dim=1)).mean()


class IDMRFLoss(nn.Module):
    """DECA's ID-MRF loss on VGG19 features: ``sum_l w_l id_mrf(phi_l(gen), phi_l(tar))`` over
    :data:`DECA_STYLE_LAYERS` and :data:`DECA_CONTENT_LAYERS` (see there for DECA's layer names).

    Args:
        vgg_features: torchvision ``vgg19().features`` (:func:`tvface.losses.vgg.load_vgg19`; random weights in
            tests); only the modules up to the deepest layer used are kept, frozen, in eval mode.
        style_layers, content_layers: module index -> weight; DECA's by default.
        bias, sigma: DECA's ``bias`` and ``nn_stretch_sigma``.
    Call with gen, tar: (N, 3, H, W) RGB in [0, 1] (ImageNet-normalised inside; ``tar`` gets no gradient).
    Returns a scalar, averaged over frames (DECA sums over the batch).
    """

    def __init__(self, vgg_features: nn.Module, style_layers: Mapping[int, float] = DECA_STYLE_LAYERS,
                 content_layers: Mapping[int, float] = DECA_CONTENT_LAYERS, bias: float = MRF_BIAS,
                 sigma: float = MRF_SIGMA) -> None:
        super().__init__()
        self.terms = [(i, float(w)) for i, w in style_layers.items()] + [(i, float(w)) for i, w in
                                                                          content_layers.items()]
        depth = max(i for i, _ in self.terms) + 1
        modules = list(vgg_features.children())
        if len(modules) < depth:
            raise ValueError(f"vgg_features has {len(modules)} modules; the ID-MRF layers need {depth} "
                             f"(torchvision vgg19().features has 37)")
        self.vgg = nn.Sequential(*modules[:depth]).eval()
        for p in self.vgg.parameters():
            p.requires_grad_(False)
        self.bias, self.sigma = bias, sigma
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> IDMRFLoss:
        super().train(mode)
        self.vgg.eval()
        return self

    def features(self, images: Tensor) -> dict[int, Tensor]:
        """(N, 3, H, W) in [0, 1] -> {module index: (N, C, h, w) output} for the layers used."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (N, 3, H, W) RGB in [0, 1], got {tuple(images.shape)}")
        wanted = {i for i, _ in self.terms}
        x = (images - self.mean.to(images)) / self.std.to(images)
        out = {}
        for i, layer in enumerate(self.vgg):
            # torchvision's ReLUs are in place; DECA swaps in out-of-place ones, and so do we.
            x = F.relu(x) if isinstance(layer, nn.ReLU) else layer(x)
            if i in wanted:
                out[i] = x
        return out

    def forward(self, gen: Tensor, tar: Tensor) -> Tensor:
        if gen.shape != tar.shape:
            raise ValueError(f"ID-MRF: gen and tar must have one shape, got {tuple(gen.shape)} and {tuple(tar.shape)}")
        f_gen = self.features(gen)
        with torch.no_grad():
            f_tar = self.features(tar)
        return sum(w * id_mrf(f_gen[i], f_tar[i], self.bias, self.sigma) for i, w in self.terms)
