import itertools

import numpy as np
import pytest
import torch

from tvface.face_models.albedo import (
    ICT_ALBEDO_MODES,
    AlbedoModel,
    build_ict_albedo,
    ict_albedo_regions,
    load_flame_albedo,
    vertex_uvs,
)

SIZE = 128


@pytest.fixture(scope="module")
def ict_albedo(ict_model):
    return build_ict_albedo(ict_model, size=SIZE)


def test_albedo_model_is_mean_plus_basis():
    gen = torch.Generator().manual_seed(0)
    mean, basis = torch.rand(3, 4, 5, generator=gen), torch.rand(2, 3, 4, 5, generator=gen)
    model = AlbedoModel(mean, basis)
    out = model(torch.tensor([[0.0, 0.0], [1.0, -2.0]]))
    assert out.shape == (2, 3, 4, 5)
    assert torch.equal(out[0], mean)
    # A matrix product against elementwise sums: equal up to float32 rounding (absolute, since the
    # result can be near zero where a relative tolerance is meaningless).
    torch.testing.assert_close(out[1], mean + basis[0] - 2 * basis[1], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        model(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="same H, W"):
        AlbedoModel(mean, torch.rand(2, 3, 4, 4))


def test_ict_albedo_zero_is_mean_and_deterministic(ict_albedo, ict_model):
    assert ict_albedo.n_tex == len(ICT_ALBEDO_MODES) and ict_albedo.mean.shape == (3, SIZE, SIZE)
    assert torch.equal(ict_albedo(torch.zeros(1, ict_albedo.n_tex))[0], ict_albedo.mean)
    again = build_ict_albedo(ict_model, size=SIZE)
    assert torch.equal(again.mean, ict_albedo.mean) and torch.equal(again.basis, ict_albedo.basis)
    assert build_ict_albedo(ict_model, size=SIZE, n_tex=2).n_tex == 2


def test_ict_albedo_modes_orthogonal_and_scaled(ict_albedo):
    flat = ict_albedo.basis.reshape(ict_albedo.n_tex, -1).double()
    gram = flat @ flat.T
    cos = gram / torch.sqrt(torch.outer(gram.diag(), gram.diag()))
    assert (cos - torch.eye(len(cos), dtype=cos.dtype)).abs().max() < 1e-4  # orthogonal directions
    peaks = flat.abs().max(dim=1).values
    assert torch.allclose(peaks, torch.tensor([m[3] for m in ICT_ALBEDO_MODES], dtype=peaks.dtype), atol=1e-6)


def test_ict_albedo_in_range_over_three_sigma(ict_albedo):
    corners = torch.tensor(list(itertools.product([-3.0, 3.0], repeat=ict_albedo.n_tex)))
    out = ict_albedo(corners)
    print(f"albedo range over +-3 sigma: [{out.min():.3f}, {out.max():.3f}]")
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_lips_redder_than_cheek_and_brows_darker(ict_albedo, ict_model):
    reg = ict_albedo_regions(ict_model, SIZE)
    mean = ict_albedo.mean.numpy()
    uv = vertex_uvs(ict_model.faces.numpy(), ict_model.uv_faces.numpy(), ict_model.uv_coords.numpy(), ict_model.n_verts)
    cheek_uv = uv[ict_model.lmk_idx.numpy()[[2, 14]]]  # jaw contour points at cheek height
    cheek_uv = (cheek_uv + uv[ict_model.lmk_idx.numpy()[[31, 35]]]) / 2  # halfway to the nose wings
    cols = np.clip((cheek_uv[:, 0] * SIZE).astype(int), 0, SIZE - 1)
    rows = np.clip(((1 - cheek_uv[:, 1]) * SIZE).astype(int), 0, SIZE - 1)
    cheek = mean[:, rows, cols].mean(axis=1)
    lips = mean[:, reg["lips"] > 0.9].mean(axis=1)
    brows = mean[:, reg["brows"] > 0.5 * reg["brows"].max()].mean(axis=1)
    assert lips[0] / lips[1] > 1.2 * cheek[0] / cheek[1]  # red over green
    assert brows.sum() < 0.8 * cheek.sum()
    # The lip-redness mode reddens the lips and leaves the cheeks alone.
    k = [m[0] for m in ICT_ALBEDO_MODES].index("lip_redness")
    tex = torch.zeros(1, ict_albedo.n_tex)
    tex[0, k] = 1.0
    delta = (ict_albedo(tex) - ict_albedo.mean)[0].numpy()
    assert delta[0][reg["lips"] > 0.9].mean() > 0.02
    assert np.abs(delta[:, rows, cols]).max() < 2e-3


def _write_flame_npz(path, n=3):
    rng = np.random.default_rng(0)
    mean = rng.uniform(0, 255, (512, 512, 3)).astype(np.float32)
    mean[..., 0] = 255.0  # stored BGR: blue channel full
    tex_dir = rng.normal(size=(512, 512, 3, n)).astype(np.float32)
    np.savez(path, mean=mean, tex_dir=tex_dir)
    return mean, tex_dir


def test_flame_texture_loader(tmp_path):
    path = tmp_path / "FLAME_texture.npz"
    _, tex_dir = _write_flame_npz(path)
    model = load_flame_albedo(path, n_tex=2, size=512)
    assert model.n_tex == 2 and model.mean.shape == (3, 512, 512)
    assert torch.allclose(model.mean[2], torch.ones(512, 512))  # BGR -> RGB, /255 as DECA
    assert torch.allclose(model.basis[1, 0], torch.from_numpy(tex_dir[..., 2, 1] / 255.0), atol=1e-6)
    small = load_flame_albedo(path, n_tex=3, size=256)
    assert small(torch.zeros(2, 3)).shape == (2, 3, 256, 256)
    full = load_flame_albedo(path, n_tex=3, size=512)
    # DECA's FLAMETex resizes with F.interpolate's default (nearest): every other texel, no blur.
    assert torch.equal(small.mean, full.mean[:, ::2, ::2]) and torch.equal(small.basis, full.basis[:, :, ::2, ::2])
    with pytest.raises(ValueError, match="has 3 texture modes"):
        load_flame_albedo(path, n_tex=4)


def test_bfm_albedo_loader_and_errors(tmp_path):
    n_pix = 512 * 512 * 3
    mu = np.full((1, n_pix), 0.5, np.float32)
    pc = np.zeros((n_pix, 4), np.float32)
    pc[0, 1] = 1.0  # first value = pixel (0, 0), channel B
    path = tmp_path / "FLAME_albedo_from_BFM.npz"
    np.savez(path, MU=mu, PC=pc, specMU=mu)
    model = load_flame_albedo(path, n_tex=4, size=512)
    out = model(torch.tensor([[0.0, 0.2, 0.0, 0.0]]))
    assert torch.isclose(out[0, 2, 0, 0], torch.tensor(0.7)) and torch.isclose(out[0, 0, 0, 0], torch.tensor(0.5))
    bad = tmp_path / "bad.npz"
    np.savez(bad, foo=mu)
    with pytest.raises(ValueError, match="expected keys"):
        load_flame_albedo(bad, n_tex=1)
    np.savez(bad, MU=mu[:, :10], PC=pc[:10])
    with pytest.raises(ValueError, match="512x512x3"):
        load_flame_albedo(bad, n_tex=1)
    with pytest.raises(FileNotFoundError, match="FLAME texture space not found"):
        load_flame_albedo(tmp_path / "missing.npz", n_tex=1)
