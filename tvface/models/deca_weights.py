"""DECA's released weights (``deca_model.tar``, asset ``deca_model``) in tvface's FLAME reconstructor.

DECA (yfeng95/DECA, ``decalib/deca.py``, ``_setup_model``) saves ``{"E_flame": ..., "E_detail": ...,
"D_detail": ...}``, one state dict per network (other top-level keys, such as optimizer state, are
ignored here):

* ``E_flame`` / ``E_detail``: DECA's ``ResnetEncoder`` (``decalib/models/encoders.py``): its own
  ResNet50 under ``encoder.`` with torchvision's names (``conv1``, ``bn1``, ``layer1..4``; no ``fc``,
  its ``AvgPool2d(7)`` has no weights) and the regressor ``layers.0`` (Linear 2048 -> 1024),
  ``layers.2`` (Linear 1024 -> 236 coarse / 128 detail).
* ``D_detail``: DECA's ``Generator`` (``decalib/models/decoders.py``), latent 3 jaw + 50 exp + 128
  detail = 181; :class:`tvface.models.reconstructor.DetailDecoder` has the same names (``l1``,
  ``conv_blocks``), BatchNorm running statistics included.

Mapping to the :class:`~tvface.models.reconstructor.Reconstructor`'s state dict::

    E_flame.encoder.conv1.*    -> encoder.coarse.stem.0.*
    E_flame.encoder.bn1.*      -> encoder.coarse.stem.1.*
    E_flame.encoder.layer{k}.* -> encoder.coarse.layers.{k-1}.*
    E_flame.layers.{0,2}.*     -> encoder.coarse.head.fc.{0,2}.*
    E_detail.*                 -> encoder.detail.* (the same way)
    D_detail.*                 -> detail_decoder.*

Unlike DECA's ``copy_state_dict`` (which copies the keys that happen to match), loading is strict:
every encoder and detail-decoder tensor must come from the file with the right shape, or one
:class:`DecaWeightsError` lists every missing, unexpected and misshapen key. The only tolerated
gaps are BatchNorm ``num_batches_tracked`` counters (not used in eval mode; reported as defaulted).

Two things outside the file decide whether the weights mean what they meant in DECA:

* **Priors.** DECA's codes have no cam/light offsets; tvface adds ``cam_prior`` and ``light_prior``
  (non-persistent buffers) to them. :func:`load_deca_weights` zeroes both in place and says so in
  its report; a reconstructor rebuilt from a profile needs ``model.cam_prior: [0, 0, 0]`` and
  ``model.light_prior: 0`` to keep DECA's meaning.
* **Input.** DECA's encoders see 224 x 224 RGB crops in [0, 1] without mean/std normalisation (as
  tvface's frames) and run with BatchNorm in eval mode: call ``reconstructor.eval()`` for inference.
"""
from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch
from torch import Tensor, nn

from tvface import assets
from tvface.models.reconstructor import PerFrameEncoders

__all__ = ["DECA_CODE_SIZES", "DECA_DETAIL_SIZE", "DECA_KEYS", "DecaWeightsError", "deca_to_tvface",
           "load_deca_weights"]

DECA_KEYS = ("E_flame", "E_detail", "D_detail")
# DECA's configuration (decalib/utils/config.py): n_shape 100, n_tex 50, n_exp 50, n_pose 6, n_cam 3,
# n_light 27 -> E_flame outputs 236 numbers; n_detail 128.
DECA_CODE_SIZES = {"shape": 100, "tex": 50, "exp": 50, "pose": 6, "cam": 3, "light": 27}
DECA_DETAIL_SIZE = 128
DECA_DETAIL_SCALE = 0.01  # DECA's max_z, the Generator's out_scale

_PREFIXES = {"E_flame": "encoder.coarse.", "E_detail": "encoder.detail.", "D_detail": "detail_decoder."}
_ENCODER_RENAMES = (("encoder.conv1.", "stem.0."), ("encoder.bn1.", "stem.1."), ("layers.", "head.fc."))
_LAYER = re.compile(r"encoder\.layer([1-4])\.(.+)")
# torchvision's classifier: DECA's ResNet comments it out, a torchvision-built file may carry it.
_IGNORED_ENCODER_PREFIX = "encoder.fc."
_OPTIONAL_SUFFIX = "num_batches_tracked"
_FIX = ("Use DECA's released deca_model.tar unchanged (DECA's README); checkpoints of other DECA "
        "variants or code sizes do not fit")


class DecaWeightsError(ValueError):
    """A DECA checkpoint that cannot be read, or whose keys/shapes do not fit the reconstructor."""


def _encoder_key(key: str) -> str | None:
    """DECA ``ResnetEncoder`` key -> tvface ``ResnetEncoder`` key; None when it has no tvface name."""
    m = _LAYER.fullmatch(key)
    if m:
        return f"layers.{int(m.group(1)) - 1}.{m.group(2)}"
    for deca, ours in _ENCODER_RENAMES:
        if key.startswith(deca):
            return ours + key[len(deca):]
    return None


def _deca_name(ours: str) -> str:
    """Reconstructor key -> the name it has in DECA's file (for messages)."""
    for module, prefix in _PREFIXES.items():
        if not ours.startswith(prefix):
            continue
        key = ours[len(prefix):]
        if module == "D_detail":
            return f"{module}.{key}"
        m = re.fullmatch(r"layers\.(\d+)\.(.+)", key)
        if m:
            return f"{module}.encoder.layer{int(m.group(1)) + 1}.{m.group(2)}"
        for deca, tv in _ENCODER_RENAMES:
            if key.startswith(tv):
                return f"{module}.{deca}{key[len(tv):]}"
        return f"{module}.{key}"
    return ours


def _modules(checkpoint, where: str) -> dict[str, dict]:
    """The three state dicts of a DECA checkpoint, or one error naming what is missing."""
    if not isinstance(checkpoint, dict):
        raise DecaWeightsError(f"{where}: expected DECA's dict with keys {list(DECA_KEYS)}, got "
                               f"{type(checkpoint).__name__}. {_FIX}.")
    missing = [k for k in DECA_KEYS if k not in checkpoint]
    not_dicts = [k for k in DECA_KEYS if k in checkpoint and not isinstance(checkpoint[k], dict)]
    if missing or not_dicts:
        raise DecaWeightsError(
            f"{where}: not a DECA checkpoint: top-level keys {sorted(map(str, checkpoint))}; missing "
            f"{missing}{f', not state dicts: {not_dicts}' if not_dicts else ''} (DECA saves "
            f"{list(DECA_KEYS)}, decalib/deca.py model_dict). {_FIX}.")
    return {k: checkpoint[k] for k in DECA_KEYS}


def _convert(checkpoint, where: str) -> tuple[dict[str, Tensor], list[str], list[str]]:
    """(mapped tensors by Reconstructor key, ignored DECA names, DECA names with no tvface name)."""
    modules = _modules(checkpoint, where)
    mapped: dict[str, Tensor] = {}
    ignored = sorted(str(k) for k in checkpoint if k not in DECA_KEYS)
    unknown: list[str] = []
    for module, state in modules.items():
        for key, value in state.items():
            name = f"{module}.{key}"
            if module != "D_detail" and key.startswith(_IGNORED_ENCODER_PREFIX):
                ignored.append(name)
                continue
            ours = key if module == "D_detail" else _encoder_key(key)
            if ours is None or not isinstance(value, Tensor):
                unknown.append(name if ours is None else f"{name} (a {type(value).__name__}, not a tensor)")
                continue
            mapped[_PREFIXES[module] + ours] = value
    return mapped, ignored, unknown


def deca_to_tvface(checkpoint: dict) -> dict[str, Tensor]:
    """DECA's checkpoint dict -> tensors named as the Reconstructor's state dict.

    Args:
        checkpoint: what ``torch.load("deca_model.tar")`` returns (``E_flame``, ``E_detail``,
            ``D_detail`` state dicts; other top-level keys and ``encoder.fc.*`` are dropped).
    Returns:
        ``encoder.coarse.*``, ``encoder.detail.*`` and ``detail_decoder.*`` tensors.
    Raises:
        DecaWeightsError: a top-level key is missing, or a key has no tvface name.
    """
    mapped, _, unknown = _convert(checkpoint, "DECA checkpoint")
    if unknown:
        raise DecaWeightsError(f"DECA checkpoint: keys with no tvface name: {unknown}. {_FIX}.")
    return mapped


def _check_reconstructor(reconstructor: nn.Module, where: str) -> None:
    """DECA's weights need FLAME with DECA's code sizes and the per-frame encoders."""
    problems = []
    if not isinstance(reconstructor.encoder, PerFrameEncoders):
        problems.append(f"encoder is {type(reconstructor.encoder).__name__}, DECA's weights are the "
                        f"per-frame ResNet50 encoders (PerFrameEncoders, model.encoder: resnet)")
    name = reconstructor.face_model.name
    if name != "flame":
        problems.append(f"face model is {name!r}, not 'flame'")
    differ = [f"{k} {reconstructor.sizes.get(k)} (DECA: {n})" for k, n in DECA_CODE_SIZES.items()
              if reconstructor.sizes.get(k) != n]
    if reconstructor.detail_size != DECA_DETAIL_SIZE:
        differ.append(f"detail {reconstructor.detail_size} (DECA: {DECA_DETAIL_SIZE})")
    if differ:
        problems.append("code sizes differ: " + ", ".join(differ))
    if problems:
        raise DecaWeightsError(
            f"{where}: DECA's weights do not fit this reconstructor: {'; '.join(problems)}. DECA's weights "
            f"need face_model.kind: flame with n_shape: 100, n_exp: 50, n_tex: 50, model.detail_size: 128 "
            f"and model.encoder: resnet.")


def _read(path: Path):
    """``torch.load`` with ``weights_only=True``; every failure becomes one :class:`DecaWeightsError`."""
    if not path.is_file():
        raise DecaWeightsError(
            f"DECA weights not found at {path}. Download deca_model.tar (the link in DECA's README, "
            f"github.com/yfeng95/DECA) and put it at $TVFACE_ASSETS/deca_model.tar (now "
            f"{assets.get('deca_model').path()}), then pass that path.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load raises RuntimeError, EOFError, KeyError, UnpicklingError, ...
        text = str(e)
        forbidden = re.search(r"GLOBAL (\S+)", text)
        if forbidden:
            raise DecaWeightsError(
                f"{path}: not a plain weights file: its pickle names {forbidden.group(1)}, which loading would "
                f"run as code (refused by torch.load(weights_only=True)). DECA's deca_model.tar holds only "
                f"state dicts; replace the file with the one from DECA's README.") from e
        if isinstance(e, pickle.UnpicklingError) and "Weights only load failed" in text:
            detail = text.partition("WeightsUnpickler error:")[2].strip().split("\n")[0] or "unsupported content"
            raise DecaWeightsError(
                f"{path}: not a plain weights file: torch.load(weights_only=True) refuses it ({detail}); "
                f"loading it unrestricted could run code. DECA's deca_model.tar holds only state dicts; "
                f"replace the file with the one from DECA's README.") from e
        raise DecaWeightsError(
            f"{path}: not a readable torch checkpoint (truncated, damaged or another format: "
            f"{type(e).__name__}: {text.split('. ')[0].strip() or 'no message'}). Download "
            f"deca_model.tar again (DECA's README) and check its size.") from e


def load_deca_weights(reconstructor: nn.Module, path: str | Path) -> dict:
    """Load DECA's ``deca_model.tar`` into a FLAME :class:`~tvface.models.reconstructor.Reconstructor`.

    Nothing is changed unless every check passes. On success, ``cam_prior`` and ``light_prior`` are
    set to zero in place: DECA's codes have no priors, and with tvface's offsets the loaded
    encoders would predict a different camera and lighting than DECA's.

    Args:
        reconstructor: FLAME (100 shape, 50 exp, 50 tex) with :class:`PerFrameEncoders` and detail 128.
        path: the checkpoint, normally ``$TVFACE_ASSETS/deca_model.tar``.
    Returns:
        Report: ``path``, ``loaded`` (Reconstructor keys), ``ignored`` (DECA names not used),
        ``defaulted`` (``num_batches_tracked`` counters absent from the file), ``priors_zeroed`` and
        ``warnings``.
    Raises:
        DecaWeightsError: missing file, unreadable or unsafe pickle, wrong layout, or a
            reconstructor DECA's weights do not fit; missing/unexpected/misshapen keys all listed.
    """
    path = Path(path)
    _check_reconstructor(reconstructor, str(path))
    mapped, ignored, unknown = _convert(_read(path), str(path))
    own = {k: v for k, v in reconstructor.state_dict().items() if k.startswith(tuple(_PREFIXES.values()))}
    absent = [k for k in own if k not in mapped]
    missing = [_deca_name(k) for k in absent if not k.endswith(_OPTIONAL_SUFFIX)]
    defaulted = [k for k in absent if k.endswith(_OPTIONAL_SUFFIX)]
    unexpected = unknown + [_deca_name(k) for k in mapped if k not in own]
    bad_shapes = [f"{_deca_name(k)}: file {tuple(v.shape)}, expected {tuple(own[k].shape)}"
                  for k, v in mapped.items() if k in own and v.shape != own[k].shape]
    if missing or unexpected or bad_shapes:
        parts = [f"{title} ({len(keys)}): {', '.join(keys)}"
                 for title, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shapes", bad_shapes))
                 if keys]
        raise DecaWeightsError(f"{path}: does not match DECA's layout for this reconstructor. "
                               + "; ".join(parts) + f". {_FIX}.")
    result = reconstructor.load_state_dict(mapped, strict=False)
    not_loaded = [k for k in result.missing_keys if k in own and k not in defaulted]
    if not_loaded or result.unexpected_keys:  # the checks above make this unreachable
        raise DecaWeightsError(f"{path}: load_state_dict left {not_loaded} unset and refused "
                               f"{result.unexpected_keys}")
    with torch.no_grad():
        reconstructor.cam_prior.zero_()
        reconstructor.light_prior.zero_()
    warnings = ["DECA's codes have no cam/light priors: cam_prior and light_prior were set to zero (they are "
                "not in state_dict; rebuild with model.cam_prior: [0, 0, 0] and model.light_prior: 0)"]
    scale = reconstructor.detail_decoder.out_scale
    if scale != DECA_DETAIL_SCALE:
        warnings.append(f"model.detail_scale is {scale}, DECA's is {DECA_DETAIL_SCALE}: displacements are "
                        f"scaled by {scale / DECA_DETAIL_SCALE:g} relative to DECA's")
    return {"path": str(path), "loaded": sorted(mapped), "ignored": ignored, "defaulted": defaulted,
            "priors_zeroed": ("cam_prior", "light_prior"), "warnings": warnings}
