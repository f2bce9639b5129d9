"""VGG19 for the ID-MRF loss: torchvision's ImageNet weights ``vgg19-dcbb9e9d.pth`` read with
``torch.load(weights_only=True)`` and checked key by key."""
from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn

VGG19_FILE = "vgg19-dcbb9e9d.pth"
HOW_TO_GET = (f"torchvision's ImageNet VGG19 weights ({VGG19_FILE}, what torchvision.models.vgg19(weights="
              "'IMAGENET1K_V1') downloads), copied into $TVFACE_ASSETS")


def vgg19_asset_path(root: Path | None = None) -> Path:
    from tvface import settings

    return Path(root or settings.assets_dir()) / VGG19_FILE


def load_vgg19(path: Path) -> nn.Module:
    """``vgg19().features`` with the file's weights, frozen, eval mode; one ValueError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: not found; get {HOW_TO_GET}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: not a readable torch weights file ({type(exc).__name__}); "
                         f"re-download {HOW_TO_GET}") from None
    features = torchvision.models.vgg19(weights=None).features
    want = features.state_dict()
    got = {k[len("features."):]: v for k, v in state.items() if isinstance(k, str) and k.startswith("features.")} \
        if isinstance(state, dict) else {}
    missing = sorted(set(want) - set(got))
    shapes = [f"features.{k}: file {tuple(got[k].shape)}, expected {tuple(v.shape)}"
              for k, v in want.items() if k in got and tuple(got[k].shape) != tuple(v.shape)]
    if missing or shapes:
        raise ValueError(f"{path}: not torchvision's VGG19 weights: missing {['features.' + k for k in missing]}, "
                         f"shape mismatches {shapes}; get {HOW_TO_GET}")
    features.load_state_dict(got)
    for p in features.parameters():
        p.requires_grad_(False)
    return features.eval()
