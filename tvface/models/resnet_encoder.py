"""DECA's per-frame encoder (ResNet50 features + two fully connected layers), the temporal encoder's
reference point for cost and its ResNet tail.

DECA (yfeng95/DECA, ``decalib/models/encoders.py``): ResNet50 without its classifier -> 2048-d
average-pooled feature -> Linear(2048, 1024) -> ReLU -> Linear(1024, code).
"""
from __future__ import annotations

import torch
import torchvision
from torch import Tensor, nn

__all__ = ["ResnetEncoder", "resnet50_layers", "CodeMLP", "FC_DIM", "RESNET_FEATURES"]

FC_DIM = 1024  # DECA's hidden width
RESNET_FEATURES = 2048


def resnet50_layers() -> nn.Sequential:
    """torchvision ResNet50 ``layer1..layer4`` (weights=None): (B, 64, 56, 56) -> (B, 2048, 7, 7)."""
    r = torchvision.models.resnet50(weights=None)
    return nn.Sequential(r.layer1, r.layer2, r.layer3, r.layer4)


class CodeMLP(nn.Module):
    """Average pooling + DECA's two fully connected layers: (B, 2048, h, w) -> (B, code)."""

    def __init__(self, code_size: int, fc_dim: int = FC_DIM) -> None:
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(RESNET_FEATURES, fc_dim), nn.ReLU(inplace=True),
                                nn.Linear(fc_dim, code_size))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class ResnetEncoder(nn.Module):
    """Per-frame DECA encoder: images (B, 3, 224, 224) -> (B, code_size)."""

    def __init__(self, code_size: int, fc_dim: int = FC_DIM) -> None:
        super().__init__()
        r = torchvision.models.resnet50(weights=None)
        self.stem = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool)
        self.layers = nn.Sequential(r.layer1, r.layer2, r.layer3, r.layer4)
        self.head = CodeMLP(code_size, fc_dim)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.layers(self.stem(images)))
