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
    to_vggface2_input,
)
from tvface.losses.detail import (
    DECA_CONTENT_LAYERS,
    DECA_STYLE_LAYERS,
    IDMRFLoss,
    displacement_loss,
    id_mrf,
    smoothness_loss,
    soft_symmetry_loss,
)
from tvface.losses.vgg import VGG19_FILE, load_vgg19, vgg19_asset_path, vgg19_features

__all__ = ["DECA_CONTENT_LAYERS", "DECA_STYLE_LAYERS", "EYE_PAIRS", "LIP_PAIRS", "VGG19_FILE", "IDMRFLoss",
           "VGGFace2Features", "code_regulariser", "displacement_loss", "eye_closure_loss", "id_mrf",
           "identity_loss", "landmark_loss", "landmark_weights", "light_regulariser", "lip_closure_loss",
           "load_vgg19", "photometric_loss", "smoothness_loss", "soft_symmetry_loss", "to_vggface2_input",
           "vgg19_asset_path", "vgg19_features"]
