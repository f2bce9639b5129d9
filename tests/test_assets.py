import pytest

from tvface import assets


def test_table_reports_found_and_missing(tmp_path):
    (tmp_path / "generic_model.pkl").write_bytes(b"x")
    (tmp_path / "79999_iter.pth").write_bytes(b"")  # empty counts as missing
    rows = {r["asset"]: r for r in assets.status_rows(tmp_path)}
    assert rows["generic_model.pkl"]["status"] == "found"
    assert rows["79999_iter.pth"]["status"] == "missing"
    assert rows["deca_model.tar"]["looked for at"] == str(tmp_path / "deca_model.tar")
    text = assets.format_table(tmp_path)
    for a in assets.ASSETS:
        assert a.filename in text
    md = assets.format_table(tmp_path, markdown=True)
    assert md.count("\n") == len(assets.ASSETS) + 1


def test_documented_file_names():
    names = {a.filename for a in assets.ASSETS}
    for required in ["generic_model.pkl", "head_template.obj", "landmark_embedding.npy", "uv_face_mask.png",
                     "uv_face_eye_mask.png", "fixed_displacement_256.npy", "mean_texture.jpg",
                     "FLAME_texture.npz", "FLAME_albedo_from_BFM.npz", "deca_model.tar",
                     "resnet50_ft_weight.pkl", "2DFAN4-11f355bf06.pth.tar", "79999_iter.pth",
                     "spynet_20210409-c6c1bd09.pth"]:
        assert required in names


def test_require_names_file_and_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("TVFACE_ASSETS", str(tmp_path))
    with pytest.raises(assets.AssetMissingError) as err:
        assets.require("flame_model")
    msg = str(err.value)
    assert str(tmp_path / "generic_model.pkl") in msg and "flame.is.tue.mpg.de" in msg
    (tmp_path / "generic_model.pkl").write_bytes(b"data")
    assert assets.require("flame_model") == tmp_path / "generic_model.pkl"
    assert assets.find("deca_model") is None
    with pytest.raises(KeyError, match="unknown asset"):
        assets.get("nope")


def test_check_reports_bad_files_by_name(tmp_path, shared_dir):
    import shutil

    from tvface.asset_checks import check_assets

    flame_dir = shared_dir / "assets" / "flame-topology"
    for name in ["landmark_embedding.npy", "head_template.obj", "uv_face_mask.png", "fixed_displacement_256.npy"]:
        shutil.copy(flame_dir / name, tmp_path / name)
    (tmp_path / "generic_model.pkl").write_bytes(b"\x80\x02}q\x00(X")  # truncated pickle
    (tmp_path / "79999_iter.pth").write_bytes(b"not a checkpoint")
    rows = {name: (state, detail) for name, state, detail in check_assets(tmp_path)}
    for name in ["landmark_embedding.npy", "head_template.obj", "uv_face_mask.png", "fixed_displacement_256.npy"]:
        assert rows[name][0] == "ok", rows[name]
    assert rows["generic_model.pkl"][0] == "error" and "generic_model.pkl" in rows["generic_model.pkl"][1]
    assert rows["79999_iter.pth"][0] == "error" and "79999_iter.pth" in rows["79999_iter.pth"][1]
    assert rows["deca_model.tar"][0] == "missing"


def test_resolve_backend_auto_explicit_and_bad(tmp_path):
    resolve = assets.resolve_backend
    assert resolve("data.masks", "auto", "bisenet", "bisenet", ("landmarks",), tmp_path) == "landmarks"
    with pytest.raises(assets.AssetMissingError, match="79999_iter.pth"):
        resolve("data.masks", "bisenet", "bisenet", "bisenet", ("landmarks",), tmp_path)
    (tmp_path / "79999_iter.pth").write_bytes(b"w")
    assert resolve("data.masks", "auto", "bisenet", "bisenet", ("landmarks",), tmp_path) == "bisenet"
    assert resolve("data.descriptor", "none", "vggface2", "vggface2", ("dlib", "none"), tmp_path) == "none"
    with pytest.raises(ValueError, match="data.masks must be one of"):
        resolve("data.masks", "hull", "bisenet", "bisenet", ("landmarks",), tmp_path)


def test_profile_needs_name_the_paper_assets_and_their_fallbacks(tmp_path, capsys):
    from tvface.cli import main
    from tvface.config import load_config

    cfg = load_config("gpu-full")
    needs = {n.filename: n for n in assets.profile_needs(cfg, tmp_path)}
    for key in ("flame_model", "vggface2", "fan", "bisenet", "spynet", "imagenet_resnet50"):
        assert assets.get(key).filename in needs, key
    assert not any(n.present for n in needs.values())
    assert needs["generic_model.pkl"].fatal and not needs["resnet50_ft_weight.pkl"].fatal
    assert needs["resnet50_ft_weight.pkl"].without == "identity loss off"
    assert main(["assets", "--assets-dir", str(tmp_path), "--profile", "gpu-full"]) == 1  # FLAME missing: cannot run
    assert "MISSING generic_model.pkl" in capsys.readouterr().out
    for key in ("flame_model", "flame_template", "flame_landmarks", "fan", "bisenet", "spynet"):
        (tmp_path / assets.get(key).filename).write_bytes(b"x")
    needs = {n.filename: n for n in assets.profile_needs(cfg, tmp_path)}
    assert needs["generic_model.pkl"].present and not needs["resnet50_ft_weight.pkl"].present
    assert main(["assets", "--assets-dir", str(tmp_path), "--profile", "gpu-full"]) == 0  # only optional ones missing
    # The offline demo uses no FLAME file and nothing it cannot run without but the ICT model.
    demo = assets.profile_needs(load_config("cpu-demo"), tmp_path)
    assert [n.filename for n in demo if n.fatal] == ["ict_facekit_model.npz"]
    assert not any("generic_model" in n.filename for n in demo)
