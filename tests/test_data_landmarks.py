"""Landmark backends: dlib inside an MTCNN-style box, and the 2D-FAN wiring (a random-weight FAN in a
temporary assets folder: proves no detector or weight download happens)."""
import numpy as np
import pytest
import torch

from tests._data_fixtures import astronaut, data_cfg
from tvface.data.collect import landmarks as lm


def test_dlib_landmarks_in_mtcnn_box_land_on_the_face():
    box = (181.05, 62.16, 267.75, 172.05)  # MTCNN's box on the astronaut
    pts = lm.detect_landmarks(astronaut(), [box], "dlib")[0]
    assert pts.shape == (68, 2) and pts.dtype == np.float32
    left_eye, right_eye, mouth = pts[36:42].mean(0), pts[42:48].mean(0), pts[48:68].mean(0)
    assert 195 < left_eye[0] < 215 and 235 < right_eye[0] < 255 and 95 < left_eye[1] < 110
    assert 135 < mouth[1] < 150


def test_landmark_backend_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("TVFACE_ASSETS", str(tmp_path))
    assert lm.landmark_backend(data_cfg(landmarks="auto")) == "dlib+mediapipe"
    with pytest.raises(FileNotFoundError, match="2D-FAN"):
        lm.landmark_backend(data_cfg(landmarks="fan"))


@pytest.mark.slow  # ~13 s: builds and runs a full-size FAN on CPU
def test_fan_backend_uses_the_assets_file_and_given_boxes(tmp_path, monkeypatch):
    pytest.importorskip("face_alignment")
    from face_alignment.models import FAN

    monkeypatch.setenv("TVFACE_ASSETS", str(tmp_path))
    torch.manual_seed(0)
    torch.save(FAN(4).state_dict(), tmp_path / "2DFAN4-11f355bf06.pth.tar")
    lm._fan.cache_clear()
    try:
        assert lm.landmark_backend(data_cfg()) == "fan+mediapipe"
        pts = lm.detect_landmarks(astronaut(), [(181.05, 62.16, 267.75, 172.05)], "fan")
        assert pts.shape == (1, 68, 2) and np.isfinite(pts).all()
    finally:
        lm._fan.cache_clear()
