"""tvface reconstruct: exports that read back to what was predicted, resumable tracks, clear errors."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from _training_fixtures import training_cfg

from tvface.data import layout
from tvface.face_models.obj import read_obj
from tvface.io.exports import (
    read_blendshape_csv,
    read_displacement_png,
    read_ply,
    write_blendshape_csv,
    write_displacement_png,
    write_obj,
    write_ply,
)
from tvface.reconstruct import ReconstructError, ReconstructSettings, load_model, reconstruct


def _mesh(gen):
    verts = torch.randn(50, 3, generator=gen, dtype=torch.float64).numpy() * 0.1
    faces = torch.randint(0, 50, (80, 3), generator=gen).numpy()
    return verts, faces


def test_obj_and_ply_round_trip():
    gen = torch.Generator().manual_seed(0)
    verts, faces = _mesh(gen)
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        write_obj(Path(d) / "m.obj", verts, faces)
        m = read_obj(Path(d) / "m.obj")
        np.testing.assert_allclose(m.verts, verts, rtol=0, atol=5.0001e-7)  # 6 decimals (micrometres)
        np.testing.assert_array_equal(m.poly_verts.reshape(-1, 3), faces)
        write_ply(Path(d) / "m.ply", verts, faces)
        v, f = read_ply(Path(d) / "m.ply")
        np.testing.assert_allclose(v, verts.astype(np.float32))
        np.testing.assert_array_equal(f, faces)
        (Path(d) / "cut.ply").write_bytes((Path(d) / "m.ply").read_bytes()[:-10])
        with pytest.raises(ValueError, match="truncated PLY"):
            read_ply(Path(d) / "cut.ply")
    with pytest.raises(ValueError, match=r"\(F, 3\) triangles"):
        write_obj("/nonexistent/x.obj", verts, faces[:, :2])


def test_obj_vertex_lines_are_printf_fixed_point():
    """Known answer: every coordinate token is ``"%.6f" % x`` (negative zero printed as zero), for
    small, large, negative and rounding-edge values."""
    from tvface.io.exports import obj_vertex_lines

    rng = np.random.default_rng(0)
    v = np.concatenate([rng.normal(size=(500, 3)) * 0.1, rng.normal(size=(50, 3)) * 300,
                        [[0, 0, 0], [-4e-7, 5e-7, -5e-7], [123.4567894, -0.9999996, 9.9999996], [-1, 10, -100]]])
    lines = obj_vertex_lines(v).decode().splitlines()
    assert len(lines) == len(v) and all(line.startswith("v ") for line in lines)
    for line, row in zip(lines, v):
        want = [("%.6f" % x).replace("-0.000000", "0.000000") for x in row]
        assert line.split()[1:] == want, (line, want)
    with pytest.raises(ValueError, match="finite"):
        obj_vertex_lines(np.array([[0.0, np.nan, 1.0]]))


def test_blendshape_csv_and_displacement_png_round_trip(tmp_path):
    gen = torch.Generator().manual_seed(1)
    w = torch.rand(4, 3, generator=gen, dtype=torch.float64).numpy()
    write_blendshape_csv(tmp_path / "b.csv", w, ["eyeBlink_L", "jawOpen", "mouthSmile_R"], ["00000", "00001",
                         "00002", "00003"], [10, 11, None, 13])
    names, frames, got = read_blendshape_csv(tmp_path / "b.csv")
    assert names == ["eyeBlink_L", "jawOpen", "mouthSmile_R"] and frames[2] == "00002"
    np.testing.assert_allclose(got, w, atol=5e-7)
    assert (tmp_path / "b.csv").read_text().splitlines()[3].startswith("00002,,")
    d = (torch.rand(16, 16, generator=gen, dtype=torch.float64).numpy() * 2 - 1) * 0.01
    write_displacement_png(tmp_path / "d.png", d, 0.01)
    np.testing.assert_allclose(read_displacement_png(tmp_path / "d.png", 0.01), d, atol=0.01 / 65535)


@pytest.fixture(scope="module")
def tiny_run(tiny_synth, tmp_path_factory):
    """A checkpoint of the tiny per-frame model (2 pretrain steps) and the tiny set as a dataset."""
    from tvface.training import Trainer

    cfg = training_cfg(tiny_synth, **{"train.pretrain_steps": 2})
    run = tmp_path_factory.mktemp("rec") / "run"
    Trainer(cfg, run, progress=False).run(["pretrain"])
    return {"run": run, "root": tiny_synth["root"], "cfg": cfg}


def test_reconstruct_a_dataset_exports_read_back_to_the_prediction(tiny_run, tmp_path):
    settings = ReconstructSettings(checkpoint=tiny_run["run"], profile="smoke", detail=True)
    out = tmp_path / "out"
    summary = reconstruct([tiny_run["root"]], out, settings, progress=False)
    seqs = layout.list_sequences(tiny_run["root"])
    assert summary.tracks == len(seqs) and summary.frames == 8 * len(seqs) and not summary.skipped
    track = out / "tracks" / f"{seqs[0].parent.name}__{seqs[0].name}"
    for rel in ("params.npz", "blendshapes.csv", "overlay.mp4", "track.json", "meshes/00001.obj",
                "meshes_detail/00008.obj", "uv_disp/00003.png"):
        assert (track / rel).is_file(), rel
    model, _, _ = load_model(settings)
    from tvface.evaluation.benchmark import load_sequence

    batch = load_sequence(seqs[0], model.image_size)
    with torch.no_grad():
        pred = model.predict(batch["image"][None])
    params = np.load(track / "params.npz")
    np.testing.assert_allclose(params["exp"], pred["exp"].numpy(), rtol=1e-5, atol=1e-6)
    mesh = read_obj(track / "meshes" / "00006.obj")
    np.testing.assert_allclose(mesh.verts, pred["verts"][5].numpy(), rtol=1e-6, atol=5.0001e-7)
    names, frames, w = read_blendshape_csv(track / "blendshapes.csv")
    assert names == list(model.face_model.expression_names) and len(frames) == 8
    with torch.no_grad():
        drive = model.face_model.expression_weights(torch.as_tensor(params["exp"]), torch.as_tensor(params["pose"]))
    np.testing.assert_allclose(w, drive.numpy(), atol=5e-7)  # the weights that drive the mesh
    jaw = [names.index(n) for n in ("jawOpen", "jawLeft", "jawRight")]
    rest = [i for i in range(len(names)) if i not in jaw]
    np.testing.assert_allclose(w[:, rest], params["exp"][:, rest], atol=5e-7)  # = the expression codes
    import cv2

    cap = cv2.VideoCapture(str(track / "overlay.mp4"))
    n, width = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
    cap.release()
    crop = layout.read_manifest(seqs[0])["image_size"]
    assert crop != model.image_size and n == 8 and width == 3 * crop  # drawn at the crops' size, not the encoder's
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["checkpoint"]["sha256"] and manifest["inputs"][0]["sha256"] and len(manifest["tracks"]) == len(seqs)


def test_killed_run_resumes_to_the_same_outputs(tiny_run, tmp_path, monkeypatch):
    import tvface.reconstruct as rec

    settings = ReconstructSettings(checkpoint=tiny_run["run"], profile="smoke", overlay=False)
    clean = tmp_path / "clean"
    reconstruct([tiny_run["root"]], clean, settings, progress=False)
    real_track = rec.reconstruct_track
    calls = []

    def dies_on_the_second(model, seq_dir, out_dir, st, key):
        calls.append(seq_dir)
        if len(calls) == 2:
            out_dir.with_name(out_dir.name + ".partial").mkdir(parents=True)  # half-written, as a kill leaves it
            raise KeyboardInterrupt
        return real_track(model, seq_dir, out_dir, st, key)

    monkeypatch.setattr(rec, "reconstruct_track", dies_on_the_second)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        reconstruct([tiny_run["root"]], out, settings, progress=False)
    monkeypatch.setattr(rec, "reconstruct_track", real_track)
    first = sorted((out / "tracks").glob("*/track.json"))
    assert len(first) == 1
    stamp = first[0].stat().st_mtime_ns
    summary = reconstruct([tiny_run["root"]], out, settings, progress=False)
    assert summary.tracks_skipped_done == 1 and first[0].stat().st_mtime_ns == stamp  # not redone
    assert not list((out / "tracks").glob("*.partial"))  # nothing half-written or duplicated
    assert sorted(p.name for p in (out / "tracks").iterdir()) == sorted(p.name for p in (clean / "tracks").iterdir())
    for track in (clean / "tracks").iterdir():
        a, b = np.load(track / "params.npz"), np.load(out / "tracks" / track.name / "params.npz")
        for k in a.files:
            np.testing.assert_array_equal(a[k], b[k])
        assert sorted(p.name for p in (track / "meshes").iterdir()) == \
            sorted(p.name for p in (out / "tracks" / track.name / "meshes").iterdir())


def test_bad_inputs_give_one_clear_message_and_other_tracks_go_on(tiny_run, tmp_path):
    with pytest.raises(ReconstructError, match="holds a per-frame encoder, not temporal"):
        load_model(ReconstructSettings(checkpoint=tiny_run["run"], profile="smoke", encoder="temporal"))
    data = tmp_path / "data"
    shutil.copytree(tiny_run["root"], data)
    seqs = layout.list_sequences(data)
    broken = seqs[0]
    layout.image_path(broken, layout.frame_stems(broken)[2]).write_bytes(b"not a jpeg")
    summary = reconstruct([data, tmp_path / "missing.mp4"], tmp_path / "out",
                          ReconstructSettings(checkpoint=tiny_run["run"], profile="smoke", overlay=False),
                          progress=False)
    reasons = {Path(s["input"]).name: s["reason"] for s in summary.skipped}
    assert reasons["missing.mp4"] == "not found"
    assert "cannot read frame" in reasons[broken.name]
    assert summary.tracks == len(seqs) - 1
    assert not list((tmp_path / "out" / "tracks").glob("*.partial"))


def test_detail_without_overlay_and_ply_meshes(tiny_run, tmp_path):
    seq = layout.list_sequences(tiny_run["root"])[0]
    settings = ReconstructSettings(checkpoint=tiny_run["run"], profile="smoke", detail=True, overlay=False,
                                   mesh_format="ply")
    summary = reconstruct([seq], tmp_path / "out", settings, progress=False)
    track = tmp_path / "out" / "tracks" / f"{seq.parent.name}__{seq.name}"
    assert summary.tracks == 1 and not (track / "overlay.mp4").exists()
    coarse, _ = read_ply(track / "meshes" / "00002.ply")
    detailed, faces = read_ply(track / "meshes_detail" / "00002.ply")
    model, _, _ = load_model(settings)
    assert faces.shape == tuple(model.face_model.faces.shape)
    moved = np.linalg.norm(detailed - coarse, axis=1)
    assert moved.max() <= model.detail_decoder.out_scale * 2 + 1e-6  # |D| <= scale (+ fixed) along unit normals
    assert (track / "uv_disp" / "00002.png").is_file()
