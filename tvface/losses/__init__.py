"""Every term of the report's eq. 9 (coarse) and eq. 10 (detail), one function each.

Weights live in ``cfg.loss`` (:class:`tvface.config.LossConfig`); :mod:`tvface.training.objective`
combines them per stage. Consistency terms (shape / detail codes swapped within a sequence) re-use
these functions on a second decode.
"""
from tvface.losses.coarse import (
    EYE_PAIRS,
    LIP_PAIRS,
    VGGFace2Features,
    code_regulariser,
    eye_closure_loss,
    identity_loss,
    landmark_loss,
    landmark_weights,
    light_regulariser,
    lip_closure_loss,
    photometric_loss,
)
from tvface.losses.detail import IDMRFLoss, displacement_loss, smoothness_loss, soft_symmetry_loss
from tvface.losses.vgg import VGG19_FILE, load_vgg19, vgg19_asset_path

__all__ = ["EYE_PAIRS", "LIP_PAIRS", "VGG19_FILE", "IDMRFLoss", "VGGFace2Features", "code_regulariser",
           "displacement_loss", "eye_closure_loss", "identity_loss", "landmark_loss", "landmark_weights",
           "light_regulariser", "lip_closure_loss", "load_vgg19", "photometric_loss", "smoothness_loss",
           "soft_symmetry_loss", "vgg19_asset_path"]
