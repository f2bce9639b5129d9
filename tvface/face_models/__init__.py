"""Parametric face models behind one interface (:class:`tvface.face_models.base.FaceModel`)."""
from tvface.face_models.base import FaceModel, FaceModelOutput

__all__ = ["FaceModel", "FaceModelOutput"]
