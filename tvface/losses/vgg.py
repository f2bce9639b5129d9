"""VGG19 feature extractor for the ID-MRF loss (:class:`tvface.losses.detail.IDMRFLoss`).

The weights users bring are torchvision's ImageNet VGG19, ``vgg19-dcbb9e9d.pth`` (the file
``torchvision.models.vgg19(weights="IMAGENET1K_V1")`` downloads): a state dict whose ``features.*`` keys
are the 16 convolutions of ``vgg19().features``. It is read with ``torch.load(weights_only=True)`` (tensors
only; nothing in it is executed) and checked key by key; the classifier is dropped.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.models import vgg

VGG19_FILE = "vgg19-dcbb9e9d.pth"
VGG19_URL = f"https://download.pytorch.org/models/{VGG19_FILE}"
HOW_TO_GET = (f"get torchvision's ImageNet VGG19 weights {VGG19_FILE} ({VGG19_URL}, what "
              "torchvision.models.vgg19(weights='IMAGENET1K_V1') downloads) and put it into $TVFACE_ASSETS")
PREFIX = "features."


def vgg19_asset_path(root: str | os.PathLike | None = None) -> Path:
    """Where the VGG19 weights are expected: ``root`` (default ``$TVFACE_ASSETS``) / ``vgg19-dcbb9e9d.pth``."""
    from tvface import settings

    return Path(root if root is not None else settings.assets_dir()) / VGG19_FILE


def vgg19_features() -> nn.Sequential:
    """torchvision's ``vgg19().features`` architecture (37 modules, no batch norm), randomly initialised,
    without building the 120M-parameter classifier."""
    return vgg.make_layers(vgg.cfgs["E"], batch_norm=False)


def load_vgg19(path: str | os.PathLike) -> nn.Sequential:
    """``vgg19().features`` with the weights of torchvision's ``vgg19-dcbb9e9d.pth``, frozen, in eval mode.

    Raises:
        FileNotFoundError: no such file (the message says how to get it).
        ValueError: unreadable (truncated, corrupt, not a torch file), or not VGG19's weights: lists the
            missing, unexpected and wrong-shaped ``features.*`` keys. The message names the file and the fix.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"VGG19 weights not found at {path}; {HOW_TO_GET}.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, random bytes, a pickle with code: all "not these weights"
        raise ValueError(f"{path}: not a readable torch weights file ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}); it may be truncated or corrupt. "
                         f"Download it again: {HOW_TO_GET}.") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict (key -> tensor), got {type(state).__name__}; {HOW_TO_GET}.")
    features = vgg19_features()
    want = {k: tuple(v.shape) for k, v in features.state_dict().items()}
    got: dict[str, Tensor] = {k[len(PREFIX):]: v for k, v in state.items()
                              if isinstance(k, str) and k.startswith(PREFIX)}
    missing = [PREFIX + k for k in want if k not in got]
    unexpected = [PREFIX + k for k in got if k not in want]
    wrong = [f"{PREFIX}{k}: {tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__}, expected {want[k]}"
             for k, v in got.items() if k in want and (not isinstance(v, Tensor) or tuple(v.shape) != want[k])]
    if missing or unexpected or wrong:
        problems = "; ".join(f"{name}: {', '.join(keys)}" for name, keys in
                             (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong))
                             if keys)
        raise ValueError(f"{path}: not torchvision's VGG19 weights ({problems}); {HOW_TO_GET}.")
    features.load_state_dict({k: got[k].float() for k in want})
    for p in features.parameters():
        p.requires_grad_(False)
    return features.eval()
