"""Dataset layout round trip (write with the exporter, read with the loaders) and the split."""
import json

import cv2
import numpy as np
import pytest
import torch

from tests._data_fixtures import astronaut, data_cfg, shared_media
from tvface.data.collect.export import write_sequence
from tvface.data.dataset import FrameDataset, SequenceDataset, normalize_landmarks, split_identities
from tvface.data.flow import write_sequence_flows

BOX = {"box": [181.05, 62.16, 267.75, 172.05], "score": 0.9999, "points": None}  # MTCNN on astronaut
BACKENDS = {"detector": "mtcnn", "landmarks": "dlib", "masks": "landmarks"}


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    img = astronaut()
    for ident, n, shift in (("alice", 8, 0), ("bob", 6, 3)):
        frames, images = [], {}
        for k in range(n):
            A = np.float32([[1, 0, shift * k], [0, 1, k]])
            images[k] = cv2.warpAffine(img, A, (512, 512), borderMode=cv2.BORDER_REFLECT)
            box = dict(BOX, box=[BOX["box"][0] + shift * k, BOX["box"][1] + k, BOX["box"][2] + shift * k,
                                 BOX["box"][3] + k])
            frames.append({"index": k, "det": box, "file": None})
        write_sequence(root / ident / f"{ident}_000000", frames, images, {"path": "synthetic"}, ident, 224, 1.4,
                       BACKENDS, data_cfg())
    return root


def test_layout_matches_the_reports_sample(dataset_root):
    seq = dataset_root / "alice" / "alice_000000"
    names = sorted(p.name for p in (seq / "jpg").iterdir())
    assert names[:2] == ["00001.jpg", "00002.jpg"]
    serial = np.load(seq / "serial.npy")
    assert serial.dtype == np.dtype("<U9") and list(serial[:2]) == ["00001.jpg", "00002.jpg"]
    kpt, mask = np.load(seq / "kpt" / "00001_kpt2d.npy"), np.load(seq / "seg" / "masks" / "00001.npy")
    assert kpt.dtype == np.float32 and kpt.shape == (68, 2)
    assert mask.dtype == np.float64 and mask.shape == (224, 224) and set(np.unique(mask)) <= {0.0, 1.0}
    assert cv2.imread(str(seq / "jpg" / "00001.jpg")).shape == (224, 224, 3)
    media = shared_media()
    if media is not None and (media / "tv-sample" / "id1").is_dir():
        ref = media / "tv-sample" / "id1"
        rk, rm = np.load(ref / "kpt" / "00001_kpt2d.npy"), np.load(ref / "seg" / "masks" / "00001.npy")
        assert (rk.dtype, rk.shape, rm.dtype, rm.shape) == (kpt.dtype, kpt.shape, mask.dtype, mask.shape)
        assert np.load(ref / "serial.npy").dtype == serial.dtype
    # Landmarks lie on the face: eyes above the mouth, inside the crop.
    assert kpt[36:48, 1].mean() < kpt[48:68, 1].mean() and (kpt > 0).all() and (kpt < 224).all()
    m = json.loads((seq / "manifest.json").read_text())
    f = m["frames"][0]
    assert f["landmarks_backend"] == "dlib" and f["mask_backend"] == "landmarks" and len(f["crop_transform"]) == 2


def test_sequence_dataset_items(dataset_root):
    ds = SequenceDataset(dataset_root, n_frames=5, random_start=False)
    item = ds[0]
    assert item["image"].shape == (5, 3, 224, 224) and item["image"].dtype == torch.float32
    assert 0 <= item["image"].min() and item["image"].max() <= 1
    assert item["landmark"].shape == (5, 68, 3) and item["mask"].shape == (5, 224, 224)
    seq = dataset_root / "alice" / "alice_000000"
    kpt = np.load(seq / "kpt" / "00001_kpt2d.npy")
    np.testing.assert_allclose(item["landmark"][0, :, :2].numpy(), (kpt + 0.5) / 112 - 1, atol=1e-6)
    assert (item["landmark"][..., 2] == 1).all()
    img = cv2.cvtColor(cv2.imread(str(seq / "jpg" / "00001.jpg")), cv2.COLOR_BGR2RGB)
    np.testing.assert_allclose(item["image"][0].permute(1, 2, 0).numpy(), img / 255, atol=1e-6)
    assert ds.identities == ["alice", "bob"] and item["identity"] == 0
    np.random.seed(0)
    starts = {SequenceDataset(dataset_root, 5)[0]["start"] for _ in range(30)}
    assert starts <= {0, 1, 2, 3} and len(starts) > 1  # random start inside the 8-frame sequence
    frames = FrameDataset(dataset_root)
    assert len(frames) == 14 and frames[9]["image"].shape == (3, 224, 224)
    np.testing.assert_allclose(normalize_landmarks(np.array([[-0.5, 223.5]]), 224)[0], [-1, 1, 1], atol=1e-6)


def test_flow_files_and_loader(dataset_root):
    seq = dataset_root / "bob" / "bob_000000"
    assert write_sequence_flows(seq) == 10 and write_sequence_flows(seq) == 0  # idempotent
    ds = SequenceDataset(dataset_root, n_frames=5, random_start=False, flow=True)
    item = ds[1]
    assert item["flow_prev"].shape == (5, 2, 112, 112)
    # Crops follow the face, so neighbouring crops are aligned: near-zero flow; none before frame 1.
    assert (item["flow_prev"][0] == 0).all() and item["flow_prev"][1].abs().mean() < 0.5


def test_split_is_deterministic_by_identity():
    ids = [f"id_{k}" for k in range(50)]
    train, val = split_identities(ids, 0.2, seed=3)
    assert (train, val) == split_identities(list(reversed(ids)), 0.2, seed=3)
    assert not set(train) & set(val) and len(train) + len(val) == 50 and 3 <= len(val) <= 20
    _, val2 = split_identities(ids + ["new"], 0.2, seed=3)
    assert set(val) <= set(val2)  # adding an identity moves no other
    assert split_identities(["a"], 1.0) == (["a"], [])
