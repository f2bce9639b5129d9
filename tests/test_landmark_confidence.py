"""Issue 17: head pose from 68 points, MediaPipe's face mesh as a 68-point backend, the per-face
confidence and flag, the track's face among several, and flagged frames giving no landmark loss."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from tests._data_fixtures import data_cfg
from tvface.data.collect import headpose as hp
from tvface.data.collect import landmarks as lm
from tvface.data.collect.detect import Detection


# --------------------------------------------------------------------------- head pose
def test_euler_round_trip_and_signs():
    for ypr in ((40, -10, 5), (-70, 20, -15), (0, 0, 0)):
        np.testing.assert_allclose(hp.euler_yxz(hp.rotation_yxz(*ypr)), ypr, atol=1e-9)
    # yaw > 0 turns the face (+z) towards +x: the subject's left, the image's right
    assert hp.rotation_yxz(30, 0, 0)[:, 2][0] > 0.4
    # pitch > 0 brings the forehead (+y) towards the camera (+z): looking down
    assert (hp.rotation_yxz(0, 20, 0) @ [0, 1, 0])[2] > 0.3


def test_head_pose_recovers_a_projected_mean_face():
    rng = np.random.default_rng(0)
    for yaw, pitch, roll in ((0, 0, 0), (35, -12, 8), (-62, 15, -20), (75, 5, 3)):
        R = hp.rotation_yxz(yaw, pitch, roll)
        x = hp.project(hp.MEAN_FACE_68, R, 1.7, np.array([320.0, 240.0]))
        fit = hp.fit_head_pose(x + rng.normal(0, 0.2, x.shape))
        np.testing.assert_allclose([fit.yaw, fit.pitch, fit.roll], [yaw, pitch, roll], atol=1.0)
        assert fit.scale == pytest.approx(1.7, rel=0.01) and fit.residual < 0.4
    with pytest.raises(ValueError, match="68, 2"):
        hp.fit_head_pose(np.zeros((5, 2)))


def test_mean_face_is_the_ict_neutral(ict_model):
    z = ict_model.zeros(1)
    with torch.no_grad():
        ref = ict_model(z["shape"], z["exp"], z["pose"]).lmks_3d[0].double().numpy() * 1000
    np.testing.assert_allclose(hp.MEAN_FACE_68, ref, atol=0.006)


def test_head_pose_within_a_few_degrees_on_synthetic_profiles(ict_model):
    """ICT faces of random identities and expressions (not the mean face), turned to profile: the
    pose fitted to their 68 projected points is the rotation the face model applied."""
    from tvface.face_models.base import batch_rodrigues

    rng = np.random.default_rng(1)
    n = 12
    yaw = rng.choice([-1, 1], n) * rng.uniform(45, 70, n)
    ypr = np.stack([yaw, rng.uniform(-15, 15, n), rng.uniform(-10, 10, n)], 1)
    from scipy.spatial.transform import Rotation

    R = np.stack([hp.rotation_yxz(*a) for a in ypr])
    w = torch.tensor(Rotation.from_matrix(R).as_rotvec())  # axis-angle: the face model's pose input
    torch.testing.assert_close(batch_rodrigues(w), torch.tensor(R), atol=1e-6, rtol=0)
    z = ict_model.zeros(n)
    pose = torch.cat([w.float(), torch.zeros(n, 3)], 1)
    shape = torch.randn(n, z["shape"].shape[1]) * 0.8
    exp = torch.rand(n, z["exp"].shape[1]) * 0.3
    with torch.no_grad():
        l3 = ict_model(shape, exp, pose).lmks_3d.double().numpy() * 1000  # (n, 68, 3) mm, rotated
    for k in range(n):
        px = np.stack([l3[k, :, 0], -l3[k, :, 1]], 1) * 2.0 + 200  # orthographic camera, y down
        fit = hp.fit_head_pose(px)
        assert abs(fit.yaw - ypr[k, 0]) < 4 and abs(fit.pitch - ypr[k, 1]) < 5 and abs(fit.roll - ypr[k, 2]) < 4, (
            k, ypr[k], (fit.yaw, fit.pitch, fit.roll))


# --------------------------------------------------------------------------- mirror arithmetic
def test_mirror_permutation_maps_the_mean_face_onto_itself():
    assert (lm.MIRROR_68[lm.MIRROR_68] == np.arange(68)).all()
    mirrored = hp.MEAN_FACE_68 * [-1, 1, 1]
    np.testing.assert_allclose(mirrored[lm.MIRROR_68], hp.MEAN_FACE_68, atol=0.05)  # ICT is symmetric (mm)


def test_mirrored_run_of_an_exact_backend_gives_the_same_points():
    """A backend that places the (symmetric) frontal mean face in the box: its mirrored run, mapped
    back, equals the direct run, which pins the mirror's pixel convention and point order."""
    frontal = hp.project(hp.MEAN_FACE_68, np.eye(3), 1.0, np.zeros(2))
    frontal = (frontal - frontal.min(0)) / np.ptp(frontal, 0)  # in [0, 1]^2

    def place(image, det):
        x0, y0, x1, y1 = det.box
        return frontal * [x1 - x0, y1 - y0] + [x0, y0]

    image = np.zeros((300, 400, 3), np.uint8)
    det = Detection((101.3, 52.7, 201.9, 170.2), 0.99, ((130, 90), (170, 91), (150, 115), (135, 140), (168, 141)))
    back = lm._mirrored_run(place, image, det)
    np.testing.assert_allclose(back, place(image, det), atol=0.05)


# --------------------------------------------------------------------------- confidence and flag
def _fake_runs(monkeypatch, mesh, mesh_back, dlib, face_score=1.0):
    def run(backend, image, det, mirror=False):
        if backend == "mediapipe":
            return mesh, face_score, mesh_back if mirror else None
        return dlib, 1.0, None
    monkeypatch.setattr(lm, "_run", run)


def _frontal(yaw=0.0, scale=2.0):
    return hp.project(hp.MEAN_FACE_68, hp.rotation_yxz(yaw, 0, 0), scale, np.array([200.0, 200.0]))


def test_confidence_is_the_documented_product(monkeypatch):
    cfg = data_cfg()
    pts = _frontal()
    d = 3.0  # the mirrored run sits 3 px to the right
    _fake_runs(monkeypatch, pts, pts + [d, 0], pts, face_score=0.9)
    det = Detection((150, 150, 250, 260), 0.95)
    r = lm.locate_landmarks(np.zeros((400, 400, 3), np.uint8), det, cfg, "mediapipe")
    iod = 2.0 * lm.MEAN_EYE_DISTANCE_MM
    e = lm.MIRROR_ERROR_SCALE * d / iod * 100
    assert r.error == pytest.approx(e, rel=1e-3)
    assert r.confidence == pytest.approx(0.95 * 0.9 * 0.5 ** ((e / cfg.landmark_max_error) ** 2), rel=1e-3)
    np.testing.assert_allclose(r.points, pts + [d / 2, 0], atol=1e-4)  # the two runs averaged
    assert not r.flagged and r.reason is None
    # a disagreement of twice the error budget: flagged, and the reason says why
    d = 2 * cfg.landmark_max_error / 100 * iod / lm.MIRROR_ERROR_SCALE
    _fake_runs(monkeypatch, pts, pts + [d, 0], pts)
    r = lm.locate_landmarks(np.zeros((400, 400, 3), np.uint8), det, cfg, "mediapipe")
    assert r.flagged and r.confidence < cfg.landmark_min_confidence
    assert "data.landmark_max_error" in r.reason and "mirror test" in r.reason
    assert r.to_dict()["flagged"] is True and set(r.to_dict()) >= {"yaw", "pitch", "roll", "backend", "confidence"}


def test_auto_uses_dlib_only_on_frontal_faces_it_agrees_on(monkeypatch):
    cfg = data_cfg()
    img, det = np.zeros((400, 400, 3), np.uint8), Detection((150, 150, 250, 260), 0.99)
    pts = _frontal()
    _fake_runs(monkeypatch, pts, pts, pts + [1.0, 0])  # frontal, dlib 1 px off the mesh: agree
    assert lm.locate_landmarks(img, det, cfg, "dlib+mediapipe").backend == "dlib"
    far = 0.2 * 2.0 * lm.MEAN_EYE_DISTANCE_MM  # 20 % of the eye distance: disagree -> the mesh
    _fake_runs(monkeypatch, pts, pts, pts + [far, 0])
    r = lm.locate_landmarks(img, det, cfg, "dlib+mediapipe")
    assert r.backend == "mediapipe" and r.others["dlib_error"] == pytest.approx(20.0, rel=1e-3)
    side = _frontal(yaw=50)
    _fake_runs(monkeypatch, side, side, side)  # a profile: the mesh even where dlib agrees
    r = lm.locate_landmarks(img, det, cfg, "dlib+mediapipe")
    assert r.backend == "mediapipe" and r.pose.yaw == pytest.approx(50, abs=0.5)


def test_resolution_of_the_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("TVFACE_ASSETS", str(tmp_path))
    assert lm.landmark_backend(data_cfg(landmarks="auto")) == "dlib+mediapipe"
    assert lm.landmark_backend(data_cfg(landmarks="mediapipe")) == "mediapipe"
    assert lm.landmark_backend(data_cfg(landmarks="dlib")) == "dlib"
    (tmp_path / "2DFAN4-11f355bf06.pth.tar").write_bytes(b"x")
    assert lm.landmark_backend(data_cfg(landmarks="auto")) == "fan+mediapipe"
    with pytest.raises(ValueError, match="unknown landmark backend"):
        lm.locate_landmarks(np.zeros((8, 8, 3), np.uint8), Detection((0, 0, 4, 4), 1.0), data_cfg(), "sift")


# --------------------------------------------------------------------------- the face mesh backend
def test_mesh_to_ibug_mapping_is_well_formed():
    from tvface.data.collect import mediapipe_mesh as mm

    assert len(mm.MESH_TO_IBUG68) == 68
    np.testing.assert_allclose(mm.MAPPING.sum(1), 1.0)
    mesh = np.random.default_rng(0).normal(size=(2, 468, 3))
    out = mm.mesh_to_ibug68(mesh)
    assert out.shape == (2, 68, 3)
    np.testing.assert_allclose(out[:, 36], mesh[:, 33])  # right eye's outer corner
    with pytest.raises(ValueError, match="468"):
        mm.mesh_to_ibug68(np.zeros((10, 2)))


def test_roi_transform_is_mediapipes_crop():
    from tvface.data.collect import mediapipe_mesh as mm

    A = mm.roi_transform((100, 50, 200, 170))  # 100 x 120 box: crop side 1.5 x 120 = 180 px
    centre = A[:, :2] @ [150, 110] + A[:, 2]
    np.testing.assert_allclose(centre, [(mm.INPUT_SIZE - 1) / 2] * 2)
    assert np.sqrt(np.linalg.det(A[:, :2])) == pytest.approx(mm.INPUT_SIZE / 180)
    # eyes 45 deg off level: the crop turns them level
    A = mm.roi_transform((100, 50, 200, 170), eyes=((120, 90), (160, 130)))
    a, b = A[:, :2] @ [120, 90], A[:, :2] @ [160, 130]
    assert abs((b - a)[1]) < 1e-9 and (b - a)[0] > 0


@pytest.fixture(scope="module")
def rendered_faces():
    """Clean 224^2 ICT renders with their ground-truth 68 points (the synthetic benchmark's renderer)."""
    from tvface import assets
    from tvface.config import load_config

    if assets.find("ict_model") is None:
        pytest.skip("ICT model not built (tvface assets build-ict)")
    from tvface.synthetic.sequences import render_sequence, sample_sequence
    from tvface.synthetic.writer import build_context

    cfg = load_config("smoke", {"synth.image_size": 224, "synth.n_frames": 4})
    ctx = build_context(cfg)
    out = []
    for seed in (0, 1, 2):
        spec = sample_sequence(np.random.default_rng(seed), cfg.synth, ctx.model, ctx.albedo.n_tex,
                               condition="clean", center=ctx.center)
        spec = replace(spec, pose=spec.pose * [0.3, 0.3, 0.3, 1, 1, 1])  # near-frontal
        maps = ctx.albedo(torch.as_tensor(spec.tex, dtype=torch.float32)[None])
        r = render_sequence(ctx.model, ctx.renderer, maps, spec)
        out.append((r.frames[0], r.lmks_2d_px[0]))
    return out


def test_face_mesh_68_points_on_a_rendered_ict_face(rendered_faces):
    pytest.importorskip("ai_edge_litert")
    from tvface.data.collect.mediapipe_mesh import landmarks_mediapipe
    from tvface.data.evaluate import nme

    errs = []
    for frame, gt in rendered_faces:
        image = (np.clip(frame, 0, 1) * 255).astype(np.uint8) if frame.dtype != np.uint8 else frame
        lo, hi = gt.min(0), gt.max(0)
        box = (lo[0], gt[19, 1] - 0.1 * (hi[1] - lo[1]), hi[0], hi[1])  # jaw width, brows to chin
        pts, score = landmarks_mediapipe(image, [box])
        assert score[0] > 0.5
        errs.append(nme(pts[0], gt))
        # no left/right swap and no region swap: each point is nearer its own ground truth than its
        # mirror partner's, and its nearest ground-truth point is in its own region
        d = np.linalg.norm(pts[0][:, None] - gt[None], axis=-1)  # (68 predicted, 68 gt)
        own, partner = d[np.arange(68), np.arange(68)], d[np.arange(68), lm.MIRROR_68]
        sides = lm.MIRROR_68 != np.arange(68)
        assert (own[sides] < partner[sides]).all(), np.nonzero(sides & (own >= partner))
        region = np.repeat(np.arange(5), [17, 10, 9, 12, 20])  # jaw, brows, nose, eyes, mouth
        assert (region[d.argmin(1)] == region).mean() > 0.9
    assert np.median(errs) < 10.0, errs


# --------------------------------------------------------------------------- the track's face
def test_track_face_follows_the_track_not_the_biggest_box():
    from tvface.data.collect.sequences import track_face

    me = Detection((100, 100, 160, 170), 0.99)
    moved = Detection((104, 101, 164, 171), 0.99)
    big = Detection((300, 50, 450, 230), 0.99)  # someone larger walks in
    assert track_face([big, moved], me, (400, 500), 0.5) is moved
    # start of a track in a patch: the face nearest the patch centre, not the larger one at the edge
    centre = Detection((200, 150, 290, 250), 0.99)
    assert track_face([big, centre], None, (400, 500), 0.5) is centre
    assert track_face([big, centre], None, None, 0.5) is big  # no picture size: the largest, as before


def test_patch_track_keeps_its_face_when_a_bigger_one_appears():
    from tvface.data.collect.sequences import classify_frame

    cfg = data_cfg(min_face_size=20)
    prev = None
    chosen = []
    for k in range(6):
        me = Detection((100 + k, 100, 160 + k, 170), 0.99)
        dets = [me] + ([Detection((10, 10, 200, 220), 0.99)] if k in (2, 3) else [])
        st = classify_frame(k, dets, cfg, one_person=True, previous=prev, frame_shape=(300, 260))
        assert st.ok
        chosen.append(st.det)
        prev = st.det
    assert all(d.box[0] >= 100 for d in chosen)


# --------------------------------------------------------------------------- flagged frames in training
def test_flagged_frame_gives_no_landmark_loss(tmp_path):
    import cv2

    from tvface.data import layout
    from tvface.data.dataset import SequenceDataset
    from tvface.losses.coarse import eye_closure_loss, landmark_loss

    seq = tmp_path / "ds" / "alice" / "alice_000000"
    frames = []
    for k in range(4):
        stem = layout.frame_name(k)
        layout.image_path(seq, stem).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(layout.image_path(seq, stem)), np.full((32, 32, 3), 128, np.uint8))
        layout.kpt_path(seq, stem).parent.mkdir(parents=True, exist_ok=True)
        np.save(layout.kpt_path(seq, stem), np.random.default_rng(k).uniform(4, 28, (68, 2)).astype(np.float32))
        layout.mask_path(seq, stem).parent.mkdir(parents=True, exist_ok=True)
        np.save(layout.mask_path(seq, stem), np.ones((32, 32)))
        frames.append({"name": stem, "landmarks": {"flagged": k == 2, "reason": "test"}})
    np.save(seq / "serial.npy", np.array([f"{f['name']}.jpg" for f in frames], dtype="<U9"))
    (seq / layout.SEQUENCE_MANIFEST).write_text(json.dumps({"identity": "alice", "sequence": seq.name,
                                                             "n_frames": 4, "frames": frames}))
    item = SequenceDataset(tmp_path / "ds", n_frames=4, random_start=False)[0]
    target = item["landmark"]  # (4, 68, 3)
    assert (target[2, :, 2] == 0).all() and (target[[0, 1, 3], :, 2] == 1).all()
    pred = target[..., :2].clone().requires_grad_(True)
    with torch.no_grad():
        pred[2] += 0.7  # a wildly different prediction on the flagged frame ...
        pred[[0, 1, 3]] += 0.01
    loss = landmark_loss(pred, target)
    loss_without = landmark_loss(pred[[0, 1, 3]], target[[0, 1, 3]])
    torch.testing.assert_close(loss, loss_without)  # ... changes nothing
    (loss + eye_closure_loss(pred, target)).backward()
    assert pred.grad[2].abs().max() == 0 and pred.grad[0].abs().max() > 0
