"""Evaluation: metrics with known answers, the landmark-fit baselines and the synthetic benchmark."""
from tvface.evaluation.metrics import (
    align,
    face_region_vertices,
    landmark_nme,
    umeyama,
    vertex_error_mm,
)

__all__ = ["align", "face_region_vertices", "landmark_nme", "umeyama", "vertex_error_mm"]
