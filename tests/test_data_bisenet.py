import torch

from tvface.data.collect.bisenet import FACE_CLASSES, BiSeNet, face_mask_from_parsing


def test_bisenet_state_dict_matches_face_parsing_pytorch():
    sd = BiSeNet(19).state_dict()
    # 79999_iter.pth holds 13,300,416 parameters (53 MB of float32) under these names.
    assert sum(v.numel() for k, v in sd.items() if "running" not in k and "num_batches" not in k) == 13_300_416
    for key, shape in {"cp.resnet.conv1.weight": (64, 3, 7, 7), "cp.resnet.layer2.0.downsample.0.weight": (128, 64, 1, 1),
                       "cp.arm32.conv_atten.weight": (128, 128, 1, 1), "cp.conv_avg.conv.weight": (128, 512, 1, 1),
                       "ffm.convblk.conv.weight": (256, 256, 1, 1), "ffm.conv1.weight": (64, 256, 1, 1),
                       "conv_out.conv_out.weight": (19, 256, 1, 1), "conv_out16.conv.conv.weight": (64, 128, 3, 3),
                       "conv_out32.conv_out.weight": (19, 64, 1, 1)}.items():
        assert tuple(sd[key].shape) == shape, key
    net = BiSeNet(19).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 3, 64, 64)).shape == (1, 19, 64, 64)


def test_face_classes_are_the_papers():
    labels = torch.arange(19).view(1, 19).numpy()
    assert face_mask_from_parsing(labels)[0].nonzero()[0].tolist() == list(FACE_CLASSES) == [1, 2, 3, 4, 5, 10, 11, 12, 13]


def test_bisenet_backend_loads_the_assets_file(tmp_path, monkeypatch):
    """A random-weight BiSeNet saved as ``79999_iter.pth`` loads strictly and yields paper-style masks."""
    import numpy as np

    from tests._data_fixtures import data_cfg
    from tvface.data.collect import masks
    from tvface.data.collect.bisenet import load_bisenet

    monkeypatch.setenv("TVFACE_ASSETS", str(tmp_path))
    assert masks.mask_backend(data_cfg()) == "landmarks"
    torch.manual_seed(0)
    torch.save(BiSeNet(19).state_dict(), tmp_path / "79999_iter.pth")
    load_bisenet.cache_clear()
    assert masks.mask_backend(data_cfg()) == "bisenet"
    m = masks.compute_masks(np.zeros((2, 64, 64, 3), np.uint8), np.zeros((2, 68, 2)), "bisenet")
    assert m.shape == (2, 64, 64) and m.dtype == np.float64 and set(np.unique(m)) <= {0.0, 1.0}
    load_bisenet.cache_clear()
