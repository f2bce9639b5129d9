"""Detail-stage losses (the report's eq. 10; DECA's detail training in ``decalib/trainer.py``).

``uv_disp``: (N, 1, S, S) displacement D in UV (row 0 at v = 1, the layout's left-right mirror axis at
u = 0.5 for symmetric layouts such as FLAME's); masks (1 or N, 1, S, S) in [0, 1].
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

EPS = 1e-8


def _masked_mean(x: Tensor, mask: Tensor | None) -> Tensor:
    if mask is None:
        return x.mean()
    m = mask.to(x.dtype).expand_as(x)
    return (x * m).sum() / (m.sum() + EPS)


def displacement_loss(uv_disp: Tensor, uv_mask: Tensor | None = None) -> Tensor:
    """DECA's ``reg_z``: mean |D| (inside ``uv_mask`` when given); a scalar."""
    return _masked_mean(uv_disp.abs(), uv_mask)


def smoothness_loss(uv_disp: Tensor, uv_mask: Tensor | None = None) -> Tensor:
    """DECA's ``reg_diff`` on D: mean absolute forward difference along x plus along y, where both texels of
    a difference are inside ``uv_mask``; a scalar (0 for a constant D)."""
    dx = (uv_disp[..., :, 1:] - uv_disp[..., :, :-1]).abs()
    dy = (uv_disp[..., 1:, :] - uv_disp[..., :-1, :]).abs()
    if uv_mask is None:
        return dx.mean() + dy.mean()
    m = uv_mask.to(uv_disp.dtype)
    return _masked_mean(dx, m[..., :, 1:] * m[..., :, :-1]) + _masked_mean(dy, m[..., 1:, :] * m[..., :-1, :])


def soft_symmetry_loss(uv_disp: Tensor, visibility: Tensor) -> Tensor:
    """DECA's ``z_sym``: where a texel is not visible, D should equal its mirror (flipped along u, the
    mirror detached): ``sum (1 - vis) |D - flip(D)|`` / N. visibility (N, 1, S, S) in [0, 1]; a scalar."""
    nonvis = 1 - visibility.to(uv_disp.dtype)
    return (nonvis * (uv_disp - torch.flip(uv_disp, [-1]).detach()).abs()).sum() / uv_disp.shape[0]


# --------------------------------------------------------------------------- ID-MRF
VGG19_LAYERS = ("conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1", "conv2_1", "relu2_1", "conv2_2", "relu2_2",
                "pool2", "conv3_1", "relu3_1", "conv3_2", "relu3_2", "conv3_3", "relu3_3", "conv3_4", "relu3_4",
                "pool3", "conv4_1", "relu4_1", "conv4_2", "relu4_2")  # torchvision vgg19.features[:23]


class IDMRFLoss(nn.Module):
    """Implicit-diversified MRF loss (Wang et al. 2018) as DECA uses it: VGG19 ``relu3_2`` and ``relu4_2``
    features (style weights 1, 1) plus ``relu4_2`` as the content term, bias 1, sigma 0.5.

    Args:
        vgg_features: torchvision ``vgg19().features`` (at least its first 23 modules), frozen here.
    Images (N, 3, H, W) in [0, 1] are ImageNet-normalised inside. Returns a scalar (summed over frames,
    as DECA).
    """

    style_layers = {"relu3_2": 1.0, "relu4_2": 1.0}
    content_layers = {"relu4_2": 1.0}

    def __init__(self, vgg_features: nn.Module, bias: float = 1.0, sigma: float = 0.5) -> None:
        super().__init__()
        self.vgg = nn.Sequential(*list(vgg_features.children())[:len(VGG19_LAYERS)]).eval()
        for p in self.vgg.parameters():
            p.requires_grad_(False)
        self.bias, self.sigma = bias, sigma
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.vgg.eval()
        return self

    def features(self, x: Tensor) -> dict[str, Tensor]:
        x = (x - self.mean.to(x)) / self.std.to(x)
        out = {}
        for name, layer in zip(VGG19_LAYERS, self.vgg):
            x = layer(x)
            out[name] = x
        return out

    def mrf(self, gen: Tensor, tar: Tensor) -> Tensor:
        mean_t = tar.mean(1, keepdim=True)
        gen_n = F.normalize(gen - mean_t, dim=1)
        tar_n = F.normalize(tar - mean_t, dim=1)
        n, c = tar.shape[:2]
        # cosine similarity of every generated feature to every target feature (1x1 patches)
        cos = torch.einsum("ncp,ncq->nqp", gen_n.flatten(2), tar_n.flatten(2))  # (N, target q, gen p)
        dist = (1 - cos) / 2
        rel = dist / (dist.min(dim=1, keepdim=True)[0] + 1e-5)
        w = torch.exp((self.bias - rel) / self.sigma)
        cs = w / w.sum(dim=1, keepdim=True)
        k_max = cs.max(dim=2)[0]  # (N, q): best match of each target feature
        return -torch.log(k_max.mean(dim=1)).sum()

    def forward(self, gen: Tensor, tar: Tensor) -> Tensor:
        fg, ft = self.features(gen), self.features(tar.detach())
        terms = [w * self.mrf(fg[k], ft[k]) for k, w in {**self.style_layers}.items()]
        terms += [w * self.mrf(fg[k], ft[k]) for k, w in self.content_layers.items()]
        return functools.reduce(lambda a, b: a + b, terms)
