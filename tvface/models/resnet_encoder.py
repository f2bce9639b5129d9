"""DECA's per-frame encoder (ResNet50 features + two fully connected layers), the temporal encoder's
reference point for cost and its ResNet tail.

DECA (yfeng95/DECA, ``decalib/models/encoders.py``): ResNet50 without its classifier -> 2048-d
average-pooled feature -> Linear(2048, 1024) -> ReLU -> Linear(1024, code).
"""
from __future__ import annotations

import torch
import torchvision
from torch import Tensor, nn

__all__ = ["ResnetEncoder", "resnet50_layers", "CodeMLP", "FC_DIM", "RESNET_FEATURES", "load_imagenet_trunk"]

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


def load_imagenet_trunk(encoder: ResnetEncoder, path) -> None:
    """Copy torchvision's ImageNet ResNet50 weights (``resnet50-*.pth``, read with ``weights_only=True``)
    into an encoder's stem and layer1-4 (DECA's start); the code MLP keeps its own initialisation.

    One ``ValueError`` naming the file for an unreadable file or one whose keys or shapes are not
    torchvision's ResNet50.
    """
    from pathlib import Path

    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, not a torch file, a pickle that would run code
        raise ValueError(f"{path}: not a readable ResNet50 state dict ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:160]}); use torchvision's resnet50-*.pth") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict (torchvision's resnet50-*.pth), got {type(state).__name__}")
    parts = {"conv1": encoder.stem[0], "bn1": encoder.stem[1],
             **{f"layer{i + 1}": encoder.layers[i] for i in range(4)}}  # torchvision's name -> our module
    wanted = {f"{name}.{k}": (name, k, v) for name, mod in parts.items() for k, v in mod.state_dict().items()}
    missing = [k for k in wanted if k not in state]
    shapes = [k for k, (_, _, v) in wanted.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or shapes:
        raise ValueError(f"{path}: not torchvision's ResNet50 weights: missing {missing[:6]}"
                         f"{'...' if len(missing) > 6 else ''}, shape mismatches {shapes[:6]}")
    with torch.no_grad():
        for name, mod in parts.items():
            mod.load_state_dict({k: state[f"{name}.{k}"] for k in mod.state_dict()})
