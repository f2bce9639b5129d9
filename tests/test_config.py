import dataclasses
from pathlib import Path

import pytest

from tvface.config import (
    PROFILES,
    ConfigError,
    ProfileConfig,
    expand_path,
    load_config,
    parse_overrides,
    save_config,
)


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_loads(profile):
    cfg = load_config(profile)
    assert isinstance(cfg, ProfileConfig)
    assert cfg.name == profile


def test_paper_profile_is_the_reports_configuration():
    cfg = load_config("paper")
    assert cfg.face_model.kind == "flame"
    assert (cfg.face_model.n_shape, cfg.face_model.n_exp, cfg.face_model.n_tex) == (100, 50, 50)
    t = cfg.temporal
    assert (t.variant, t.n_frames, t.n_levels, t.channels, t.propagation_scale) == ("paper", 5, 2, 64, 2)


def test_base_inheritance_and_overrides():
    smoke = load_config("smoke")
    demo = load_config("cpu-demo")
    assert smoke.render.image_size == 64 and demo.render.image_size == 224
    assert smoke.face_model == demo.face_model  # inherited untouched
    cfg = load_config("smoke", ["render.image_size=32", "train.lr=0.5", "data.flow=none"])
    assert cfg.render.image_size == 32 and cfg.train.lr == 0.5 and cfg.data.flow == "none"
    cfg = load_config("smoke", {"train.steps": 7})
    assert cfg.train.steps == 7


def test_unknown_keys_and_bad_types_are_rejected(tmp_path):
    with pytest.raises(ConfigError, match="unknown key.*image_szie"):
        load_config("smoke", ["render.image_szie=3"])
    with pytest.raises(ConfigError, match="expected an integer"):
        load_config("smoke", ["render.image_size=big"])
    with pytest.raises(ConfigError, match="not of the form"):
        parse_overrides(["render.image_size"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("render: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("no-such-profile")


def test_circular_base_is_an_error(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="circular"):
        load_config(tmp_path / "a.yaml")


def test_config_is_frozen_and_round_trips(tmp_path):
    cfg = load_config("cpu-demo")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.render.image_size = 3  # type: ignore[misc]
    save_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml") == cfg


def test_expand_path_uses_tvface_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("TVFACE_DATA", str(tmp_path))
    assert expand_path("${TVFACE_DATA}/x") == tmp_path / "x"
    monkeypatch.delenv("TVFACE_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert expand_path("$TVFACE_DATA/y") == tmp_path / "cache" / "tvface" / "data" / "y"
    with pytest.raises(ConfigError, match="NOPE_NOT_SET"):
        expand_path("${NOPE_NOT_SET}/z")
    assert expand_path("~/a") == Path.home() / "a"


def test_paper_profile_passes_the_paper_layout_check():
    load_config("paper").temporal.check_paper()  # raises ConfigError on any deviation
    with pytest.raises(ConfigError):
        load_config("paper", ["temporal.n_blocks=2"])


def test_relative_paths_are_relative_to_the_yaml_file(tmp_path):
    sub = tmp_path / "exp"
    sub.mkdir()
    (sub / "run.yaml").write_text("base: ../base.yaml\ndata:\n  root: datasets/tv\n")
    (tmp_path / "base.yaml").write_text("face_model:\n  model_path: models/ict.npz\nsynth:\n  root: ${TVFACE_DATA}/s\n")
    cfg = load_config(sub / "run.yaml")
    assert cfg.data.root == str(sub / "datasets" / "tv")
    assert cfg.face_model.model_path == str(tmp_path / "models" / "ict.npz")  # relative to base.yaml
    assert cfg.synth.root == "${TVFACE_DATA}/s"  # variables expand later, at use
    assert load_config(sub / "run.yaml", ["data.root=elsewhere"]).data.root == "elsewhere"  # CLI: cwd


def test_exponent_floats_without_a_dot_are_numbers():
    # YAML 1.1 (PyYAML) reads `1e-3` as a string; `--set train.lr=1e-3` must still mean 0.001.
    cfg = load_config("smoke", ["train.lr=1e-3", "loss.mrf=5E-2"])
    assert cfg.train.lr == 0.001 and cfg.loss.mrf == 0.05
    with pytest.raises(ConfigError, match="train.lr: expected a number"):
        load_config("smoke", ["train.lr=fast"])


def test_moving_data_root_moves_the_synthetic_ground_truth(tmp_path):
    # A profile built on cpu-demo (smoke, tests) must never write into cpu-demo's synthetic set.
    from tvface.synthetic.writer import dataset_roots

    demo = dataset_roots(load_config("cpu-demo"))
    smoke = dataset_roots(load_config("smoke"))
    assert set(demo).isdisjoint(smoke)
    assert dataset_roots(load_config("smoke", {"data.root": str(tmp_path / "x")})) == (tmp_path / "x",
                                                                                       tmp_path / "x-gt")


def test_stored_configs_without_newer_keys_read_as_the_runs_were_made():
    from tvface.config import LEGACY_VALUES, with_legacy_values

    stored = {"temporal": {"channels": 64, "init": "he"}, "model": {"encoder": "temporal"}}
    filled = with_legacy_values(stored)
    assert filled["temporal"] == {"channels": 64, "init": "he", "head_stride": LEGACY_VALUES["temporal.head_stride"]}
    assert "head_stride" not in stored["temporal"]  # the input is not changed
    assert load_config("cpu-demo", {"temporal.head_stride": 1}).temporal.head_stride == 1


def test_window_stride_defaults_to_windows_side_by_side():
    """No stride given: n_frames (each frame propagated once), whatever n_frames is; a given one is kept
    and must let windows cover every frame."""
    assert load_config("cpu-demo").temporal.window_stride == load_config("cpu-demo").temporal.n_frames == 5
    assert load_config("cpu-demo", {"temporal.n_frames": 3, "data.n_frames": 3}).temporal.window_stride == 3
    assert load_config("cpu-demo", {"temporal.window_stride": 3}).temporal.window_stride == 3
    with pytest.raises(ConfigError, match="window_stride=6"):
        load_config("cpu-demo", {"temporal.window_stride": 6})
