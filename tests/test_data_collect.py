"""The collection end to end on small real inputs (MTCNN + dlib, no downloads)."""
import json

import cv2
import numpy as np
import pytest

from tests._data_fixtures import (
    astronaut,
    astronaut_patches,
    data_cfg,
    hopper,
    hopper_patches,
    tree_digest,
    write_rgb,
)
from tvface.data import layout
from tvface.data.collect.pipeline import collect
from tvface.data.collect.synthetic_episode import make_episode


@pytest.fixture(scope="module")
def episode_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("episode")
    video, shots = make_episode(tmp / "input", frames_per_shot=10)
    report = collect([video], data_cfg(descriptor="dlib"), tmp / "ds", tmp / "work")
    return report, shots, tmp


def test_synthetic_episode_sequences_and_rejections(episode_run):
    report, shots, tmp = episode_run
    (src,) = report["sources"]
    kept = sorted(tuple(s["source_frames"]) for s in src["sequences"])
    assert kept == [(s.first, s.last) for s in shots if s.expect == "sequence"]
    # Two different people -> two identities after per-episode clustering.
    assert len({s["identity"] for s in src["sequences"]}) == 2
    reason_of = {}
    for r in src["rejections"]:
        for i in range(r["frames"][0], r["frames"][1] + 1):
            reason_of[i] = r["reason"]
    for s in shots:
        if s.expect != "sequence":
            assert {reason_of.get(i) for i in range(s.first, s.last + 1)} == {s.expect}, s
    md = (tmp / "ds" / "qc" / "report.md").read_text()
    assert "several_faces" in md and (tmp / "ds" / "qc" / "contact_sheet.jpg").stat().st_size > 1000
    manifest = json.loads((tmp / "ds" / "manifest.json").read_text())
    assert manifest["n_sequences"] == 2 and manifest["n_frames"] == 20


def test_bad_inputs_are_reported_and_never_stop_the_run(tmp_path):
    frames = tmp_path / "clip"
    (frames / "frame_001.jpg").parent.mkdir(parents=True)
    (frames / "frame_001.jpg").write_bytes(b"")
    write_rgb(frames / "frame_002.png", np.full((240, 320, 3), 128, np.uint8))
    write_rgb(frames / "frame_003.png", cv2.resize(cv2.GaussianBlur(
        np.random.default_rng(0).uniform(0, 255, (60, 80, 3)).astype(np.uint8), (5, 5), 0), (320, 240)))
    three = np.concatenate([cv2.resize(hopper()[80:400, 130:400], (160, 190)),
                            cv2.resize(astronaut()[30:260, 120:330], (160, 190)),
                            cv2.resize(hopper()[80:400, 130:400], (160, 190))[:, ::-1]], 1)
    write_rgb(frames / "frame_004.png", three)
    small = np.full((240, 320, 3), 90, np.uint8)
    small[100:125, 150:170] = cv2.resize(hopper()[120:370, 170:370], (20, 25))
    write_rgb(frames / "frame_005.png", small)
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    video, _ = make_episode(tmp_path / "ep", frames_per_shot=10)
    data = video.read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 3])
    report = collect([frames, tmp_path / "broken.mp4", truncated, tmp_path / "missing.avi"], data_cfg(),
                     tmp_path / "ds", tmp_path / "work")
    by_name = {s["name"]: s for s in report["sources"]}
    clip = {r["frames"][0]: (r["reason"], r["detail"]) for r in by_name["clip"]["rejections"]}
    assert clip[1] == ("unreadable_frame", "zero-byte file")
    assert clip[2][0] == "blank_frame"
    assert clip[3][0] == "no_face"
    assert clip[4] == ("several_faces", "3 faces")
    assert clip[5][0] in ("face_too_small", "no_face")
    for name in ("broken", "missing"):
        (rej,) = by_name[name]["rejections"]
        assert rej["reason"] == "source_unreadable" and name in rej["detail"]
    trunc = by_name["truncated"]
    assert trunc["warnings"] or trunc["rejections"][0]["reason"] == "source_unreadable"
    md = (tmp_path / "ds" / "qc" / "report.md").read_text()
    assert "zero-byte file" in md and "3 faces" in md and "cannot open" in md


class Killed(RuntimeError):
    pass


def _killer(stage, after):
    count = {"n": 0}

    def hook(s, source, index):
        if s == stage:
            count["n"] += 1
            if count["n"] > after:
                raise Killed(f"killed in {stage} at {source}:{index}")
    return hook


def test_resume_after_kill_equals_a_clean_run(tmp_path):
    inputs = tmp_path / "patches"
    hopper_patches(inputs / "id_a", n=12, start=100)
    hopper_patches(inputs / "id_b", n=11, start=500)
    cfg = data_cfg()
    collect([inputs], cfg, tmp_path / "clean", tmp_path / "clean_work")
    clean = tree_digest(tmp_path / "clean")
    assert sum(1 for k in clean if k.endswith("_kpt2d.npy")) == 23
    root, work = tmp_path / "resumed", tmp_path / "resumed_work"
    with pytest.raises(Killed):
        collect([inputs], cfg, root, work, hook=_killer("detect", 13))  # inside id_b's detection
    with pytest.raises(Killed):
        collect([inputs], cfg, root, work, hook=_killer("export", 5))  # inside id_b's sequence folder
    assert any(p.name.startswith(".") and p.name.endswith(".partial") for p in root.rglob("*"))
    collect([inputs], cfg, root, work)
    resumed = tree_digest(root)
    assert set(resumed) == set(clean)
    # Every dataset file is byte-identical; only the root-level index and QC name their own root.
    assert {k: v for k, v in resumed.items() if not k.startswith("qc/") and k != "manifest.json"} == \
        {k: v for k, v in clean.items() if not k.startswith("qc/") and k != "manifest.json"}
    assert not [p for p in root.rglob("*") if p.name.endswith((".tmp", ".partial"))]
    assert len(layout.list_sequences(root)) == 2
    collect([inputs], cfg, root, work)  # idempotent: a third run changes nothing
    assert tree_digest(root) == resumed


def test_patch_folder_identity_check_relabels_another_person(tmp_path):
    folder = tmp_path / "id_x"
    hopper_patches(folder, n=10, start=100)
    hopper_patches(folder, n=10, start=200)
    astronaut_patches(folder, n=10, start=300)
    report = collect([folder], data_cfg(descriptor="dlib"), tmp_path / "ds", tmp_path / "work")
    (src,) = report["sources"]
    assert [s["identity"] for s in src["sequences"]] == ["id_x", "id_x", "id_x_person1"]
    assert any("identity check" in w and "frame 300" in w for w in src["warnings"])
