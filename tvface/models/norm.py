"""The encoders' normalisation: BatchNorm (DECA, ImageNet, BasicVSR++) or GroupNorm for small batches.

A training batch of the report is 2 sequences x T = 5 frames: ten images of two faces, the five of
each nearly alike. BatchNorm normalises every channel by the statistics of that batch, so the trunk
sees each frame relative to the mean of two faces: what is common to the batch (the absolute head
pose, the camera) is divided away in training, and comes back only through running statistics at
test time. From random weights this stalls learning: the supervised pose probe
(``benchmarks/probe_encoder.py``, 64^2, lr 1e-4, AMD EPYC) stays at the zero-pose error for 600
steps with BatchNorm on 2 x 5 batches (learning starts near step 1000), while the same trunk with
GroupNorm (statistics per image, Wu & He 2018) reaches L1 0.181 vs 0.229, and BatchNorm on ten
*different* sequences x 1 frame 0.156. ``model.norm: auto`` therefore keeps BatchNorm where the
trunks start from weights trained with it (ImageNet, DECA's release: their statistics are the
point) and uses GroupNorm(32) when they start from random weights.
"""
from __future__ import annotations

import math

from torch import nn

NORMS = ("auto", "batch", "group")
GROUPS = 32


def resolve_norm(setting: str, pretrained: bool) -> str:
    """``auto`` -> ``batch`` for trunks that start from BatchNorm-trained weights, else ``group``."""
    if setting not in NORMS:
        raise ValueError(f"model.norm must be one of {NORMS}, got {setting!r}")
    if setting == "auto":
        return "batch" if pretrained else "group"
    return setting


def to_group_norm(module: nn.Module, groups: int = GROUPS) -> int:
    """Replace every ``nn.BatchNorm2d`` under ``module`` by ``nn.GroupNorm`` (affine, weight 1, bias 0,
    the same eps) with ``gcd(groups, channels)`` groups, in place; returns how many were replaced."""
    n = 0
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            c = child.num_features
            setattr(module, name, nn.GroupNorm(math.gcd(groups, c), c, eps=child.eps, affine=True))
            n += 1
        else:
            n += to_group_norm(child, groups)
    return n
