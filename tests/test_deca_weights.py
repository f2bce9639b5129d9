"""DECA's ``deca_model.tar`` into the FLAME reconstructor, on checkpoints written here with DECA's layout.

The file is built from an independent description of DECA's networks: torchvision's ResNet50 names
(DECA's ``resnet.py`` copies them, without ``fc``) under ``encoder.``, the regressor ``layers.0/2``,
and the Generator written out from ``decalib/models/decoders.py``. The reference forward passes
apply those tensors to these plain modules, not to tvface's.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
import torchvision
from torch import Tensor, nn

from tvface.face_models.albedo import AlbedoModel
from tvface.face_models.base import FaceModel
from tvface.models.deca_weights import DECA_KEYS, DecaWeightsError, deca_to_tvface, load_deca_weights
from tvface.models.reconstructor import PerFrameEncoders, Reconstructor

IMAGE_SIZE = 32
UV_SIZE = 32
N_COARSE = 236  # 100 shape + 50 tex + 50 exp + 6 pose + 3 cam + 27 light
N_DETAIL = 128
N_LATENT = 181  # 3 jaw + 50 exp + 128 detail


class TinyFaceModel(FaceModel):
    """Two triangles reporting a face model's name and sizes (the loader never runs the geometry)."""

    def __init__(self, name: str, n_shape: int, n_exp: int) -> None:
        super().__init__(n_shape, n_exp)
        self.name = name
        verts = torch.tensor([[0.0, 0.0, 0.0], [0.1, 0.0, 0.0], [0.0, 0.1, 0.0], [0.1, 0.1, 0.0]])
        faces = torch.tensor([[0, 1, 2], [1, 3, 2]])
        self.register_buffer("template", verts)
        self.register_buffer("faces", faces)
        self.register_buffer("uv_coords", verts[:, :2] * 10)
        self.register_buffer("uv_faces", faces.clone())
        self.register_buffer("skin_faces", torch.ones(2, dtype=torch.bool))


def tiny_reconstructor(name: str, n_shape: int, n_exp: int, n_tex: int, encoder: nn.Module | None = None
                       ) -> Reconstructor:
    albedo = AlbedoModel(torch.full((3, 4, 4), 0.5), torch.zeros(n_tex, 3, 4, 4))
    coarse = n_shape + n_tex + n_exp + 6 + 3 + 27
    encoder = PerFrameEncoders(coarse, N_DETAIL) if encoder is None else encoder
    return Reconstructor(TinyFaceModel(name, n_shape, n_exp), albedo, encoder, IMAGE_SIZE, UV_SIZE)


def deca_generator() -> tuple[nn.Linear, nn.Sequential]:
    """DECA's ``Generator(latent_dim=181)`` as written in decalib/models/decoders.py: ``l1.0``, ``conv_blocks``."""
    blocks: list[nn.Module] = [nn.BatchNorm2d(128)]
    for cin, cout in ((128, 128), (128, 64), (64, 64), (64, 32), (32, 16)):
        blocks += [nn.Upsample(scale_factor=2, mode="bilinear"), nn.Conv2d(cin, cout, 3, 1, 1),
                   nn.BatchNorm2d(cout, 0.8), nn.LeakyReLU(0.2)]
    blocks += [nn.Conv2d(16, 1, 3, 1, 1), nn.Tanh()]
    return nn.Linear(N_LATENT, 128 * 8 * 8), nn.Sequential(*blocks)


def _randomise(state: dict[str, Tensor], gen: torch.Generator) -> dict[str, Tensor]:
    """Distinct values everywhere (BN statistics too), kept in ranges where a forward pass stays finite."""
    out = {}
    for k, v in state.items():
        if k.endswith("num_batches_tracked"):
            out[k] = torch.tensor(7)
        elif k.endswith("running_var"):
            out[k] = torch.rand(v.shape, generator=gen) + 0.5
        elif k.endswith(("running_mean", "bias")):
            out[k] = torch.randn(v.shape, generator=gen) * 0.1
        elif v.ndim == 1:  # BN weight
            out[k] = 1 + torch.randn(v.shape, generator=gen) * 0.1
        else:  # He-scaled conv / linear weights
            fan_in = v[0].numel()
            out[k] = torch.randn(v.shape, generator=gen) * (2.0 / fan_in) ** 0.5
    return out


def deca_encoder_state(n_out: int, seed: int) -> dict[str, Tensor]:
    """DECA ``ResnetEncoder`` state dict: ``encoder.<torchvision resnet50 names without fc>``, ``layers.0/2``."""
    resnet = {f"encoder.{k}": v for k, v in torchvision.models.resnet50(weights=None).state_dict().items()
              if not k.startswith("fc.")}
    head = {"layers.0.weight": torch.empty(1024, 2048), "layers.0.bias": torch.empty(1024),
            "layers.2.weight": torch.empty(n_out, 1024), "layers.2.bias": torch.empty(n_out)}
    return _randomise({**resnet, **head}, torch.Generator().manual_seed(seed))


def deca_decoder_state(seed: int) -> dict[str, Tensor]:
    l1, blocks = deca_generator()
    state = {**{f"l1.0.{k}": v for k, v in l1.state_dict().items()},
             **{f"conv_blocks.{k}": v for k, v in blocks.state_dict().items()}}
    return _randomise(state, torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def deca_file(tmp_path_factory) -> tuple[Path, dict]:
    ckpt = {"E_flame": deca_encoder_state(N_COARSE, 1), "E_detail": deca_encoder_state(N_DETAIL, 2),
            "D_detail": deca_decoder_state(3), "opt": {"lr": 1e-4, "step": torch.tensor(5)}}
    path = tmp_path_factory.mktemp("deca") / "deca_model.tar"
    torch.save(ckpt, path)
    return path, ckpt


@pytest.fixture(scope="module")
def flame_recon() -> Reconstructor:
    return tiny_reconstructor("flame", 100, 50, 50)


def _save_variant(ckpt: dict, path: Path, module: str, edit) -> Path:
    state = dict(ckpt[module])
    edit(state)
    torch.save({**ckpt, module: state}, path)
    return path


def test_round_trip_parameters_and_forward_match_deca(deca_file, flame_recon):
    path, ckpt = deca_file
    report = load_deca_weights(flame_recon, path)
    own = flame_recon.state_dict()
    pairs = {
        "encoder.coarse.stem.0.weight": ckpt["E_flame"]["encoder.conv1.weight"],
        "encoder.coarse.stem.1.running_mean": ckpt["E_flame"]["encoder.bn1.running_mean"],
        "encoder.coarse.layers.2.5.bn3.running_var": ckpt["E_flame"]["encoder.layer3.5.bn3.running_var"],
        "encoder.coarse.head.fc.2.weight": ckpt["E_flame"]["layers.2.weight"],
        "encoder.detail.layers.3.0.downsample.0.weight": ckpt["E_detail"]["encoder.layer4.0.downsample.0.weight"],
        "encoder.detail.head.fc.0.bias": ckpt["E_detail"]["layers.0.bias"],
        "detail_decoder.conv_blocks.21.weight": ckpt["D_detail"]["conv_blocks.21.weight"],
        "detail_decoder.conv_blocks.19.running_mean": ckpt["D_detail"]["conv_blocks.19.running_mean"],
    }
    for ours, theirs in pairs.items():
        assert torch.equal(own[ours], theirs), ours
    n_file = sum(len(ckpt[k]) for k in DECA_KEYS)
    assert len(report["loaded"]) == n_file
    assert report["ignored"] == ["opt"] and report["defaulted"] == []
    assert set(deca_to_tvface(ckpt)) == set(report["loaded"])

    # Independent DECA-like forward: torchvision ResNet50 (no fc) + Linear/ReLU/Linear, eval-mode BN.
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    for module, ours in (("E_flame", flame_recon.encoder.coarse), ("E_detail", flame_recon.encoder.detail)):
        resnet = torchvision.models.resnet50(weights=None)
        resnet.fc = nn.Identity()
        resnet.load_state_dict({k[len("encoder."):]: v for k, v in ckpt[module].items() if k.startswith("encoder.")})
        head = nn.Sequential(nn.Linear(2048, 1024), nn.ReLU(), nn.Linear(1024, ckpt[module]["layers.2.bias"].numel()))
        head.load_state_dict({k[len("layers."):]: v for k, v in ckpt[module].items() if k.startswith("layers.")})
        with torch.no_grad():
            want = head(resnet.eval()(x))
            got = ours.eval()(x)
        assert want.abs().max() > 1e-3  # not a trivially zero output
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)

    l1, blocks = deca_generator()
    l1.load_state_dict({k[len("l1.0."):]: v for k, v in ckpt["D_detail"].items() if k.startswith("l1.0.")})
    blocks.load_state_dict({k[len("conv_blocks."):]: v for k, v in ckpt["D_detail"].items()
                            if k.startswith("conv_blocks.")})
    latent = torch.randn(1, N_LATENT, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        want = blocks.eval()(l1(latent).view(1, 128, 8, 8)) * 0.01
        got = flame_recon.detail_decoder.eval()(latent)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_priors_are_zero_after_loading(deca_file, flame_recon):
    flame_recon.cam_prior.copy_(torch.tensor([8.0, 0.1, -0.1]))
    flame_recon.light_prior[0] = 3.5
    report = load_deca_weights(flame_recon, deca_file[0])
    assert torch.count_nonzero(flame_recon.cam_prior) == 0
    assert torch.count_nonzero(flame_recon.light_prior) == 0
    assert report["priors_zeroed"] == ("cam_prior", "light_prior")
    assert any("cam_prior" in w and "light_prior" in w for w in report["warnings"])


def test_torchvision_fc_is_ignored_and_missing_bn_counters_default(deca_file, flame_recon, tmp_path):
    path, ckpt = deca_file

    def edit(state):
        state["encoder.fc.weight"] = torch.zeros(1000, 2048)
        state["encoder.fc.bias"] = torch.zeros(1000)
        del state["encoder.bn1.num_batches_tracked"]

    report = load_deca_weights(flame_recon, _save_variant(ckpt, tmp_path / "fc.tar", "E_detail", edit))
    assert "E_detail.encoder.fc.weight" in report["ignored"]
    assert report["defaulted"] == ["encoder.detail.stem.1.num_batches_tracked"]


def test_missing_key_is_listed_with_the_file(deca_file, flame_recon, tmp_path):
    path, ckpt = deca_file
    bad = _save_variant(ckpt, tmp_path / "missing.tar", "E_flame",
                        lambda s: s.pop("encoder.layer3.2.bn2.running_mean"))
    with pytest.raises(DecaWeightsError) as err:
        load_deca_weights(flame_recon, bad)
    msg = str(err.value)
    assert str(bad) in msg
    assert "missing (1): E_flame.encoder.layer3.2.bn2.running_mean" in msg


def test_wrong_shape_lists_both_shapes_and_changes_nothing(deca_file, flame_recon, tmp_path):
    path, ckpt = deca_file

    def edit(state):
        state["layers.2.weight"] = torch.zeros(200, 1024)
        state["layers.2.bias"] = torch.zeros(200)
        state["encoder.layer5.0.conv1.weight"] = torch.zeros(1)

    bad = _save_variant(ckpt, tmp_path / "shape.tar", "E_flame", edit)
    flame_recon.cam_prior.fill_(8.0)
    before = flame_recon.encoder.coarse.head.fc[2].weight.clone()
    with pytest.raises(DecaWeightsError) as err:
        load_deca_weights(flame_recon, bad)
    msg = str(err.value)
    assert str(bad) in msg
    assert "E_flame.layers.2.weight: file (200, 1024), expected (236, 1024)" in msg
    assert "E_flame.layers.2.bias: file (200,), expected (236,)" in msg
    assert "unexpected (1): E_flame.encoder.layer5.0.conv1.weight" in msg
    assert torch.equal(flame_recon.encoder.coarse.head.fc[2].weight, before)
    assert flame_recon.cam_prior[0] == 8.0


def test_missing_top_level_key(deca_file, flame_recon, tmp_path):
    ckpt = {k: v for k, v in deca_file[1].items() if k != "D_detail"}
    path = tmp_path / "two.tar"
    torch.save(ckpt, path)
    with pytest.raises(DecaWeightsError, match=r"two\.tar: not a DECA checkpoint.*missing \['D_detail'\]"):
        load_deca_weights(flame_recon, path)


def test_missing_file_says_where_to_put_it(flame_recon, tmp_path):
    with pytest.raises(DecaWeightsError) as err:
        load_deca_weights(flame_recon, tmp_path / "nope.tar")
    assert "nope.tar" in str(err.value) and "$TVFACE_ASSETS/deca_model.tar" in str(err.value)


def test_truncated_file_is_one_error_naming_it(deca_file, flame_recon, tmp_path):
    data = deca_file[0].read_bytes()
    bad = tmp_path / "half.tar"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(DecaWeightsError, match=r"half\.tar: not a readable torch checkpoint"):
        load_deca_weights(flame_recon, bad)


class _RunsCode:
    """Pickles to a call of ``exec``: unpickling it unrestricted would write the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's note on protocol 4+ files
@pytest.mark.parametrize("how", ["torch_save", "pickle_protocol2", "pickle_default"])
def test_pickle_with_code_is_refused_and_nothing_runs(flame_recon, tmp_path, how):
    marker = tmp_path / "ran.txt"
    payload = {"opt": _RunsCode(marker), "E_flame": {}, "E_detail": {}, "D_detail": {}}
    bad = tmp_path / "evil.tar"
    if how == "torch_save":
        torch.save(payload, bad)
    else:
        bad.write_bytes(pickle.dumps(payload, protocol=2 if how == "pickle_protocol2" else None))
    with pytest.raises(DecaWeightsError, match=r"evil\.tar: not a plain weights file") as err:
        load_deca_weights(flame_recon, bad)
    if how != "pickle_default":  # protocol 4+ frames are refused before any global is read
        assert "exec" in str(err.value) and "run" in str(err.value)
    assert not marker.exists()


def test_ict_sized_reconstructor_names_the_differing_sizes(deca_file):
    ict = tiny_reconstructor("ict", 30, 53, 4)
    with pytest.raises(DecaWeightsError) as err:
        load_deca_weights(ict, deca_file[0])
    msg = str(err.value)
    assert "deca_model.tar" in msg and "face model is 'ict'" in msg
    assert "shape 30 (DECA: 100), tex 4 (DECA: 50), exp 53 (DECA: 50)" in msg
    assert "pose" not in msg.split("code sizes differ:")[1].split(".")[0]
    assert "face_model.kind: flame" in msg
    assert torch.count_nonzero(ict.cam_prior) > 0


def test_temporal_or_other_encoder_is_refused(deca_file):
    recon = tiny_reconstructor("flame", 100, 50, 50, encoder=nn.Identity())
    with pytest.raises(DecaWeightsError, match="per-frame ResNet50 encoders"):
        load_deca_weights(recon, deca_file[0])
