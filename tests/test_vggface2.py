"""VGGFace2 ResNet-50: cydonia999's resnet50_ft_weight.pkl format, the safe loader's errors, the
descriptors, and ``data.descriptor: auto`` picking it when the file is in the assets folder.

The weights file is random (same keys, shapes and pickle protocol as the real one); no download.
"""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from _data_fixtures import data_cfg, hopper, hopper_patches

from tvface.models.vggface2 import (
    FEATURE_DIM,
    MEAN_BGR,
    VGGFace2ResNet50,
    VGGFace2WeightsError,
    expected_shapes,
    load_vggface2,
    preprocess_faces,
)

N_KEYS = 267  # resnet50_ft: 53 convs + 53 BNs x 4 arrays + fc weight and bias (no num_batches_tracked)


def random_weights(seed: int = 0) -> dict[str, np.ndarray]:
    """A ``resnet50_ft_weight.pkl`` dict with random values: convs He-initialised (fan-out, as the
    reference ResNet), BN near identity with random statistics, a small classifier."""
    rng = np.random.default_rng(seed)
    out = {}
    for key, shape in expected_shapes().items():
        if key.endswith("running_var"):
            value = rng.uniform(0.5, 1.5, shape)
        elif key.endswith("running_mean") or key.startswith("fc.") or (key.endswith("bias") and len(shape) == 1):
            value = 0.01 * rng.standard_normal(shape)
        elif len(shape) == 4:  # conv weight (out, in, kh, kw)
            value = rng.standard_normal(shape) * np.sqrt(2.0 / (shape[0] * shape[2] * shape[3]))
        else:  # BN weight
            value = rng.uniform(0.5, 1.0, shape)
        out[key] = value.astype(np.float32)
    return out


def write_pickle(path, obj, protocol: int = 2) -> None:
    """Protocol 2 is the released file's (Python 2 era); the key/shape checks don't depend on it, so
    the damaged-file tests use protocol 5, which writes and loads ~4x faster."""
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


@pytest.fixture(scope="module")
def weights() -> dict[str, np.ndarray]:
    return random_weights()


@pytest.fixture(scope="module")
def assets_with_vggface2(tmp_path_factory, weights):
    folder = tmp_path_factory.mktemp("assets")
    write_pickle(folder / "resnet50_ft_weight.pkl", weights)
    return folder


@pytest.fixture(scope="module")
def model(assets_with_vggface2) -> VGGFace2ResNet50:
    return load_vggface2(assets_with_vggface2 / "resnet50_ft_weight.pkl")


def face_crops() -> np.ndarray:
    img = hopper()
    return np.stack([img[100:400, 150:390][:240], img[110:410, 140:380][:240]])  # (2, 240, 240, 3) uint8


def test_key_names_and_shapes_are_the_reference_resnet50_ft():
    shapes = expected_shapes()
    assert len(shapes) == N_KEYS
    assert shapes["conv1.weight"] == (64, 3, 7, 7)
    assert shapes["layer1.0.downsample.0.weight"] == (256, 64, 1, 1)
    assert shapes["layer1.0.downsample.1.running_var"] == (256,)
    assert shapes["layer4.2.bn3.weight"] == (2048,)
    assert shapes["fc.weight"] == (8631, 2048)
    assert "layer1.1.downsample.0.weight" not in shapes


def test_caffe_bottleneck_strides_on_the_first_1x1_conv():
    m = VGGFace2ResNet50()
    for stage in (m.layer2, m.layer3, m.layer4):
        assert stage[0].conv1.stride == (2, 2) and stage[0].conv2.stride == (1, 1)
        assert stage[0].downsample[0].stride == (2, 2)


def test_loads_through_the_restricted_unpickler_and_copies_every_array(model, weights):
    state = model.state_dict()
    for key, value in weights.items():
        np.testing.assert_array_equal(state[key].numpy(), value)
    assert not model.training


def test_preprocess_is_bgr_minus_the_prototxt_mean():
    face = np.zeros((224, 224, 3), np.uint8)
    face[..., 0], face[..., 1], face[..., 2] = 200, 100, 50  # R, G, B
    x = preprocess_faces(face)
    assert x.shape == (1, 3, 224, 224)
    expected = np.array([50, 100, 200]) - np.array(MEAN_BGR)  # B, G, R minus mean
    np.testing.assert_allclose(x[0, :, 5, 7].numpy(), expected, rtol=1e-6)


def test_embed_is_deterministic_unit_norm_and_separates_images(model):
    crops = face_crops()
    a = model.embed(crops)
    b = model.embed(crops)
    assert a.shape == (2, FEATURE_DIM) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-5)
    same = model.embed(np.stack([crops[0], crops[0]]))
    assert 1.0 - float(same[0] @ same[1]) == pytest.approx(0.0, abs=1e-6)
    assert 1.0 - float(a[0] @ a[1]) > 1e-4  # different crops -> different descriptors
    # A tensor input gives the same descriptors as the numpy array.
    np.testing.assert_allclose(model.embed(torch.from_numpy(crops)), a, atol=1e-6)


def test_features_carry_gradients_for_an_identity_loss(model):
    x = preprocess_faces(face_crops()[:1]).requires_grad_(True)
    feats = model.features(x)
    assert feats.shape == (1, FEATURE_DIM)
    feats.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("damage, message", [
    (lambda w: w.pop("layer3.2.bn2.running_var"), "missing key 'layer3.2.bn2.running_var'"),
    (lambda w: w.__setitem__("fc.bias", "not an array"), "'fc.bias' must be a numeric numpy array"),
    (lambda w: w.__setitem__("se.fc1.weight", np.zeros(3, np.float32)), "unexpected key 'se.fc1.weight'"),
])
def test_bad_weights_give_one_error_naming_the_file_and_key(tmp_path, weights, damage, message):
    bad = dict(weights)
    damage(bad)
    path = tmp_path / "resnet50_ft_weight.pkl"
    write_pickle(path, bad, protocol=5)
    with pytest.raises(VGGFace2WeightsError) as info:
        load_vggface2(path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_wrong_shape_message_gives_both_shapes(tmp_path, weights):
    bad = dict(weights)
    bad["layer2.0.conv1.weight"] = np.zeros((128, 64, 1, 1), np.float32)
    path = tmp_path / "w.pkl"
    write_pickle(path, bad, protocol=5)
    with pytest.raises(VGGFace2WeightsError, match=r"has shape \(128, 64, 1, 1\), expected \(128, 256, 1, 1\)"):
        load_vggface2(path)


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_pickle_that_would_run_code_is_refused_naming_the_file(tmp_path, weights):
    from tvface.io.safe_pickle import UnsafePickleError

    path, marker = tmp_path / "resnet50_ft_weight.pkl", tmp_path / "ran"
    write_pickle(path, {"conv1.weight": _RunsCode(marker), "bn1.weight": weights["bn1.weight"]})
    with pytest.raises(UnsafePickleError) as info:
        load_vggface2(path)
    assert str(path) in str(info.value) and "system" in str(info.value)
    assert not marker.exists()  # nothing in the file was executed


def test_asset_check_uses_the_loader(tmp_path, weights):
    from tvface.asset_checks import check_assets

    write_pickle(tmp_path / "resnet50_ft_weight.pkl", {k: v for k, v in weights.items() if k != "fc.bias"},
                 protocol=5)
    rows = {name: (state, detail) for name, state, detail in check_assets(tmp_path)}
    state, detail = rows["resnet50_ft_weight.pkl"]
    assert state == "error" and "missing key 'fc.bias'" in detail


def test_auto_picks_dlib_without_the_weights(tmp_path, monkeypatch):
    from tvface.data.collect.identity import descriptor_backend

    monkeypatch.setenv("TVFACE_ASSETS", str(tmp_path))
    assert descriptor_backend(data_cfg(descriptor="auto")) == "dlib"
    assert descriptor_backend(data_cfg(descriptor="none")) == "none"
    with pytest.raises(FileNotFoundError, match="resnet50_ft_weight.pkl"):
        descriptor_backend(data_cfg(descriptor="vggface2"))
    with pytest.raises(ValueError, match="data.descriptor"):
        descriptor_backend(data_cfg(descriptor="facenet"))


def test_auto_picks_vggface2_when_present_and_records_it(tmp_path, monkeypatch, assets_with_vggface2):
    from tvface.data import layout
    from tvface.data.collect.identity import descriptor_backend
    from tvface.data.collect.pipeline import collect

    monkeypatch.setenv("TVFACE_ASSETS", str(assets_with_vggface2))
    cfg = data_cfg(descriptor="auto", descriptor_stride=3, landmarks="dlib", masks="landmarks")
    assert descriptor_backend(cfg) == "vggface2"
    folder = hopper_patches(tmp_path / "id_h", n=10)
    report = collect([folder], cfg, tmp_path / "ds", tmp_path / "work")
    (src,) = report["sources"]
    assert [s["identity"] for s in src["sequences"]] == ["id_h"]
    saved = np.load(tmp_path / "work" / "id_h" / "descriptors.npz")
    assert str(saved["backend"]) == "vggface2"
    assert saved["descriptors"].shape == (4, FEATURE_DIM)  # frames 0, 3, 6, 9
    np.testing.assert_allclose(np.linalg.norm(saved["descriptors"], axis=1), 1.0, rtol=1e-5)
    (seq_dir,) = layout.list_sequences(tmp_path / "ds")
    assert layout.read_manifest(seq_dir)["backends"]["descriptor"] == "vggface2"


def test_vggface2_threshold_is_the_same_decision_in_euclidean_units():
    from tvface.data.collect.identity import descriptor_distance, euclidean_threshold

    cfg = data_cfg(identity_threshold_vggface2=0.5)
    assert euclidean_threshold(cfg, "vggface2") == pytest.approx(1.0)  # |a - b| = sqrt(2 * 0.5)
    assert euclidean_threshold(cfg, "dlib") == cfg.identity_threshold
    a, b = np.eye(3)[0], np.eye(3)[1]  # orthogonal unit vectors: cosine distance 1, Euclidean sqrt(2)
    assert descriptor_distance(a, b, "vggface2") == pytest.approx(1.0)
    assert descriptor_distance(a, b, "dlib") == pytest.approx(np.sqrt(2))
    rng = np.random.default_rng(0)
    for _ in range(50):
        u, v = (x / np.linalg.norm(x) for x in rng.standard_normal((2, 8)))
        assert (descriptor_distance(u, v, "vggface2") < 0.5) == (np.linalg.norm(u - v) < 1.0)
