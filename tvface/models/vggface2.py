"""VGGFace2 ResNet-50 (``resnet50_ft``): identity features for descriptors and DECA's identity loss.

The network is the Caffe ResNet-50 of Cao et al., "VGGFace2: A dataset for recognising faces across
pose and age" (FG 2018), pre-trained on MS-Celeb-1M and fine-tuned on VGGFace2 (8631 identities), as
converted to PyTorch by cydonia999/VGGFace2-pytorch (``models/resnet.py``). The weights users bring
are that repository's ``resnet50_ft_weight.pkl``: a pickled dict ``state_dict key -> numpy array``.
Module and parameter names here match those keys exactly, so the file loads without renaming.

Two Caffe details differ from torchvision's ResNet-50:

* the bottleneck puts its stride on the first 1x1 convolution (``conv1``), not on the 3x3 one;
* the stem's max-pool has no padding and rounds up (``ceil_mode=True``).

Input: 224x224 BGR in [0, 255] minus the per-channel mean :data:`MEAN_BGR` (from ``resnet50_ft.prototxt``),
no std scaling. DECA's ``VGGFace2Loss`` (decalib/utils/lossfunc.py) uses the 2048-d average-pooled
features of this network; :meth:`VGGFace2ResNet50.features` is that, differentiable.

Usage::

    model = load_vggface2(assets.require("vggface2"))
    desc = model.embed(faces)            # (N, H, W, 3) uint8 RGB -> (N, 2048) unit vectors
    feats = model.features(preprocess_faces(x))  # with gradients, for an identity loss
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

INPUT_SIZE = 224  # the network's training crop
FEATURE_DIM = 2048  # avg-pool features = 512 * Bottleneck expansion
N_CLASSES = 8631  # VGGFace2 training identities (resnet50_ft classifier)
LAYERS = (3, 4, 6, 3)  # ResNet-50 blocks per stage
MEAN_BGR = (91.4953, 103.8827, 131.0912)  # resnet50_ft.prototxt mean, BGR order


class Bottleneck(nn.Module):
    """Caffe-style bottleneck: 1x1 (stride) -> 3x3 -> 1x1 (x4 channels), BN after each, identity or
    projected shortcut."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


def _make_stage(inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    """One ResNet stage; the first block projects the shortcut (``downsample.0`` conv, ``downsample.1`` BN)."""
    out_planes = planes * Bottleneck.expansion
    downsample = None
    if stride != 1 or inplanes != out_planes:
        downsample = nn.Sequential(nn.Conv2d(inplanes, out_planes, kernel_size=1, stride=stride, bias=False),
                                   nn.BatchNorm2d(out_planes))
    layers = [Bottleneck(inplanes, planes, stride, downsample)]
    layers += [Bottleneck(out_planes, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


def preprocess_faces(faces: np.ndarray | Tensor) -> Tensor:
    """Face crops -> the network's input.

    Args:
        faces: (N, H, W, 3) or (H, W, 3) RGB, uint8 in [0, 255] (numpy array or tensor).
    Returns:
        (N, 3, 224, 224) float32 BGR with :data:`MEAN_BGR` subtracted (bilinear resize when H, W != 224).
    """
    x = torch.as_tensor(np.ascontiguousarray(faces) if isinstance(faces, np.ndarray) else faces)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"faces must be (N, H, W, 3) or (H, W, 3) RGB, got shape {tuple(x.shape)}")
    x = x.permute(0, 3, 1, 2).flip(1).float()  # (N, 3, H, W) BGR
    if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=True)
    return x - torch.tensor(MEAN_BGR, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)


class VGGFace2ResNet50(nn.Module):
    """ResNet-50 of VGGFace2 ``resnet50_ft``; ``state_dict`` keys equal those of ``resnet50_ft_weight.pkl``."""

    def __init__(self, n_classes: int = N_CLASSES):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = _make_stage(64, 64, LAYERS[0], stride=1)
        self.layer2 = _make_stage(256, 128, LAYERS[1], stride=2)
        self.layer3 = _make_stage(512, 256, LAYERS[2], stride=2)
        self.layer4 = _make_stage(1024, 512, LAYERS[3], stride=2)
        self.fc = nn.Linear(FEATURE_DIM, n_classes)  # classifier; kept so every key of the file has a home

    def features(self, x: Tensor) -> Tensor:
        """Average-pooled features (differentiable; not normalised).

        Args:
            x: (B, 3, 224, 224) BGR minus :data:`MEAN_BGR` (see :func:`preprocess_faces`).
        Returns:
            (B, 2048) features.
        """
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"x must be (B, 3, H, W) BGR minus MEAN_BGR, got shape {tuple(x.shape)}")
        x = F.relu(self.bn1(self.conv1(x)))  # (B, 64, 112, 112)
        x = F.max_pool2d(x, kernel_size=3, stride=2, padding=0, ceil_mode=True)  # (B, 64, 56, 56)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B, 2048, 7, 7)
        # Caffe's pool5 is a 7x7 average over the 7x7 map at 224 input: the global mean.
        return x.mean(dim=(2, 3))  # (B, 2048)

    def forward(self, x: Tensor) -> Tensor:
        """Identity logits over the 8631 VGGFace2 training identities, (B, 8631)."""
        return self.fc(self.features(x))

    @torch.no_grad()
    def embed(self, faces: np.ndarray | Tensor) -> np.ndarray:
        """Identity descriptors of face crops.

        Args:
            faces: (N, H, W, 3) or (H, W, 3) uint8 RGB crops (a loose square around the face; see
                :func:`tvface.data.collect.identity.vggface2_descriptors`).
        Returns:
            (N, 2048) float32 L2-normalised avg-pool features; compare with cosine distance.
        """
        was_training = self.training
        self.eval()
        try:
            x = preprocess_faces(faces).to(next(self.parameters()).device)
            feats = self.features(x)
        finally:
            self.train(was_training)
        return F.normalize(feats, dim=1).cpu().numpy().astype(np.float32)


class VGGFace2WeightsError(ValueError):
    """``resnet50_ft_weight.pkl`` does not hold the expected arrays."""


def expected_shapes(model: VGGFace2ResNet50 | None = None) -> dict[str, tuple[int, ...]]:
    """``key -> shape`` every ``resnet50_ft_weight.pkl`` must hold (BN ``num_batches_tracked`` excluded:
    the Caffe conversion predates it)."""
    model = model or VGGFace2ResNet50()
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}


def load_vggface2(path: str | os.PathLike, device: str | torch.device = "cpu") -> VGGFace2ResNet50:
    """Build the network from cydonia999's ``resnet50_ft_weight.pkl`` (in eval mode).

    The file is read with the restricted unpickler (numpy arrays only; nothing in it is executed).

    Raises:
        FileNotFoundError: no such file.
        tvface.io.safe_pickle.PickleLoadError: corrupt, truncated, or names a global that could run code.
        VGGFace2WeightsError: not a dict of arrays, or the first missing / unexpected key or wrong shape.
    """
    from tvface.io.safe_pickle import safe_load_pickle

    path = Path(path)
    weights = safe_load_pickle(path, allow="numpy")
    fix = "Download resnet50_ft_weight.pkl from github.com/cydonia999/VGGFace2-pytorch (resnet50_ft) again."
    if not isinstance(weights, dict):
        raise VGGFace2WeightsError(f"{path}: expected a pickled dict of numpy arrays (key -> array), got "
                                   f"{type(weights).__name__}. {fix}")
    model = VGGFace2ResNet50()
    shapes = expected_shapes(model)
    for key, shape in shapes.items():
        if key not in weights:
            raise VGGFace2WeightsError(f"{path}: missing key {key!r} (expected shape {shape}); "
                                       f"{len(weights)} keys present. {fix}")
        value = weights[key]
        if not isinstance(value, np.ndarray) or value.dtype.kind not in "fiu":
            raise VGGFace2WeightsError(f"{path}: {key!r} must be a numeric numpy array, got "
                                       f"{type(value).__name__} {getattr(value, 'dtype', '')}. {fix}")
        if value.shape != shape:
            raise VGGFace2WeightsError(f"{path}: {key!r} has shape {value.shape}, expected {shape}. {fix}")
    for key in sorted(weights, key=str):
        if key not in shapes and not (isinstance(key, str) and key.endswith("num_batches_tracked")):
            raise VGGFace2WeightsError(f"{path}: unexpected key {key!r}: not a resnet50_ft parameter "
                                       f"(a senet50 or other model's file?). {fix}")
    state = {k: torch.from_numpy(np.asarray(weights[k], np.float32)) for k in shapes}
    model.load_state_dict(state, strict=False)  # num_batches_tracked keeps its default
    return model.to(device).eval()
