"""SPyNet optical flow (Ranjan & Black, CVPR 2017) as used by BasicVSR++.

Our own module with the layout of mmagic's ``SPyNet`` so BasicVSR++'s pretrained
``spynet_20210409-c6c1bd09.pth`` (asset ``spynet``) loads into it: six pyramid levels, each a
``SPyNetBasicModule`` of five 7x7 convs 8->32->64->32->16->2 with ReLU between. Checkpoint keys
``basic_module.{level}.basic_module.{j}.conv.{weight,bias}`` (mmagic ConvModule) and BasicSR's
``basic_module.{level}.basic_module.{2j}.{weight,bias}`` are both accepted; an optional
``state_dict`` / ``params`` wrapper is unwrapped.

Flows follow :mod:`tvface.ops.flow_warp`: ``spynet(ref, supp)`` is ``flow_{ref->supp}``, (B, 2, H, W),
(dx, dy) pixels, so ``flow_warp(supp, flow)`` aligns ``supp`` to ``ref``. Inputs are RGB in [0, 1].
Freezing and the later unfreezing at a reduced learning rate are controlled from the training loop
through :func:`set_trainable` and :func:`param_groups` (no training logic here).
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tvface.ops.flow_warp import flow_warp

__all__ = ["SPyNet", "load_spynet_weights", "SpynetCheckpointError"]

N_LEVELS = 6  # pyramid levels: the coarsest is 1/32 of the input
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_CHANNELS = (8, 32, 64, 32, 16, 2)


class SpynetCheckpointError(ValueError):
    """A SPyNet checkpoint whose keys or shapes do not match BasicVSR++'s SPyNet."""


class SPyNetBasicModule(nn.Module):
    """One pyramid level: [ref, warped supp, upsampled flow] (8 ch) -> flow residual (2 ch)."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip(_CHANNELS[:-1], _CHANNELS[1:])):
            layers.append(nn.Conv2d(cin, cout, 7, padding=3))
            if i < len(_CHANNELS) - 2:
                layers.append(nn.ReLU())
        self.basic_module = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.basic_module(x)


class SPyNet(nn.Module):
    """SPyNet. ``forward(ref, supp)`` -> flow_{ref->supp} (B, 2, H, W) in pixels, any H, W.

    Args:
        weights: checkpoint to load (BasicVSR++/mmagic or BasicSR key format), or None for random
            initialisation (tests, or when the asset is missing).
        frozen: start with ``requires_grad=False`` on every parameter (BasicVSR++'s default).
    """

    def __init__(self, weights: str | Path | None = None, frozen: bool = True) -> None:
        super().__init__()
        self.basic_module = nn.ModuleList(SPyNetBasicModule() for _ in range(N_LEVELS))
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if weights is not None:
            load_spynet_weights(self, weights)
        set_trainable(self, not frozen)

    def compute_flow(self, ref: Tensor, supp: Tensor) -> Tensor:
        """Coarse-to-fine flow for inputs whose H, W are multiples of 32."""
        n, _, h, w = ref.shape
        refs = [(ref - self.mean) / self.std]
        supps = [(supp - self.mean) / self.std]
        for _ in range(N_LEVELS - 1):
            refs.append(F.avg_pool2d(refs[-1], 2, 2, count_include_pad=False))
            supps.append(F.avg_pool2d(supps[-1], 2, 2, count_include_pad=False))
        refs, supps = refs[::-1], supps[::-1]
        flow = ref.new_zeros(n, 2, h // 32, w // 32)
        for level, (r, s) in enumerate(zip(refs, supps)):
            if level == 0:
                flow_up = flow
            else:
                # Upsample x2 and double the pixel displacements (as mmagic).
                flow_up = F.interpolate(flow, scale_factor=2, mode="bilinear", align_corners=True) * 2.0
            warped = flow_warp(s, flow_up, padding_mode="border")
            flow = flow_up + self.basic_module[level](torch.cat([r, warped, flow_up], 1))
        return flow

    def forward(self, ref: Tensor, supp: Tensor) -> Tensor:
        """ref, supp: (B, 3, H, W) RGB in [0, 1] -> (B, 2, H, W) flow_{ref->supp}, (dx, dy) pixels."""
        if ref.shape != supp.shape or ref.dim() != 4 or ref.shape[1] != 3:
            raise ValueError(f"SPyNet expects two (B, 3, H, W) images; got {tuple(ref.shape)}, "
                             f"{tuple(supp.shape)}")
        h, w = ref.shape[-2:]
        h_up, w_up = -(-h // 32) * 32, -(-w // 32) * 32
        if (h_up, w_up) != (h, w):
            ref = F.interpolate(ref, size=(h_up, w_up), mode="bilinear", align_corners=False)
            supp = F.interpolate(supp, size=(h_up, w_up), mode="bilinear", align_corners=False)
        flow = self.compute_flow(ref, supp)
        if (h_up, w_up) != (h, w):
            flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False)
            scale = torch.tensor([w / w_up, h / h_up], dtype=flow.dtype, device=flow.device)
            flow = flow * scale.view(1, 2, 1, 1)
        return flow


def set_trainable(spynet: nn.Module, trainable: bool) -> None:
    """Freeze or unfreeze every SPyNet parameter (the training loop calls this at its unfreeze step)."""
    for p in spynet.parameters():
        p.requires_grad_(trainable)


def _map_key(key: str) -> str | None:
    """Checkpoint key -> our key; None for keys we ignore (mean/std constants)."""
    if key in ("mean", "std"):
        return None
    m = re.fullmatch(r"basic_module\.(\d+)\.basic_module\.(\d+)\.conv\.(weight|bias)", key)
    if m:  # mmagic / BasicVSR++ ConvModule: conv j -> Sequential index 2j
        return f"basic_module.{m.group(1)}.basic_module.{2 * int(m.group(2))}.{m.group(3)}"
    if re.fullmatch(r"basic_module\.(\d+)\.basic_module\.(\d+)\.(weight|bias)", key):
        return key  # BasicSR layout: already ours
    return key  # unknown: reported by the check below


def load_spynet_weights(spynet: SPyNet, path: str | Path) -> None:
    """Load BasicVSR++'s SPyNet checkpoint into ``spynet``; one clear error if it does not fit."""
    path = Path(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "params"):
        if isinstance(state, dict) and wrapper in state and isinstance(state[wrapper], dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise SpynetCheckpointError(f"{path}: expected a state dict, got {type(state).__name__}")
    prefix = next((p for p in ("spynet.", "generator.spynet.", "module.")
                   if any(k.startswith(p) for k in state)), "")
    mapped = {}
    for key, value in state.items():
        key = key[len(prefix):] if key.startswith(prefix) else key
        ours = _map_key(key)
        if ours is not None:
            mapped[ours] = value
    own = spynet.state_dict()
    missing = sorted(set(own) - set(mapped))
    unexpected = sorted(set(mapped) - set(own))
    bad_shapes = [f"{k}: checkpoint {tuple(mapped[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in sorted(set(own) & set(mapped)) if mapped[k].shape != own[k].shape]
    if missing or unexpected or bad_shapes:
        raise SpynetCheckpointError(
            f"{path} is not a BasicVSR++ SPyNet checkpoint (expected keys like "
            f"'basic_module.0.basic_module.0.conv.weight', as spynet_20210409-c6c1bd09.pth from the "
            f"mmagic model zoo). Missing: {missing[:4]}{'...' if len(missing) > 4 else ''}; "
            f"unexpected: {unexpected[:4]}{'...' if len(unexpected) > 4 else ''}; "
            f"wrong shapes: {bad_shapes[:4]}. Replace the file (asset 'spynet') or set temporal.flow: dis.")
    spynet.load_state_dict(mapped)


def param_groups(spynet: nn.Module, base_lr: float, lr_mult: float) -> dict:
    """Optimizer parameter group for SPyNet at ``base_lr * lr_mult`` (BasicVSR++: 0.25)."""
    return {"params": list(spynet.parameters()), "lr": base_lr * lr_mult, "name": "spynet"}
