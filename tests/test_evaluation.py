"""Evaluation: alignment, vertex error, NME, the landmark-fit baselines and the benchmark, with known answers."""
import json
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from tvface.data import layout
from tvface.data.evaluate import nme as nme_reference
from tvface.evaluation.benchmark import (
    CallableMethod,
    LandmarkFitMethod,
    MeanFaceMethod,
    evaluate,
    heldout_sequences,
    load_sequence,
    to_markdown,
    write_results,
)
from tvface.evaluation.fit import fit_landmarks, fit_rigid, init_camera, landmark_view
from tvface.evaluation.metrics import (
    acceleration_error_mm,
    align,
    apply_similarity,
    face_region_vertices,
    jitter_mm,
    landmark_nme,
    second_difference,
    umeyama,
    vertex_error_mm,
)
from tvface.io.atomic import atomic_save_npy, atomic_save_npz, atomic_write_text
from tvface.rendering.camera import orth_to_screen, pixels_to_screen, screen_to_pixels
from tvface.synthetic.sequences import CONDITIONS
from tvface.synthetic.writer import ground_truth_mesh


@pytest.fixture(autouse=True)
def _one_thread():
    """The fits are many tiny ops: on a shared 2-core machine a second thread only adds contention
    (6x slower measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def random_rotations(n: int, gen: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(n, 3, 3, generator=gen, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r, dim1=1, dim2=2))[:, None]  # unique QR
    q[:, :, 0] *= torch.sign(torch.linalg.det(q))[:, None]  # det +1
    return q


# ---------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------

def test_umeyama_recovers_a_known_similarity_batched_and_not():
    gen = torch.Generator().manual_seed(0)
    src = torch.randn(4, 50, 3, generator=gen, dtype=torch.float64)
    rot = random_rotations(4, gen)
    scale = torch.tensor([0.5, 1.0, 2.0, 7.5], dtype=torch.float64)
    t = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    dst = scale[:, None, None] * src @ rot.transpose(1, 2) + t[:, None]
    s_hat, r_hat, t_hat = umeyama(src, dst)
    torch.testing.assert_close(s_hat, scale, atol=1e-5, rtol=0)
    torch.testing.assert_close(r_hat, rot, atol=1e-5, rtol=0)
    torch.testing.assert_close(t_hat, t, atol=1e-5, rtol=0)
    s1, r1, t1 = umeyama(src[2].float(), dst[2].float())  # unbatched, float32
    assert s1.shape == () and r1.shape == (3, 3) and t1.shape == (3,) and s1.dtype == torch.float32
    assert abs(s1.item() - 2.0) < 1e-5 and (r1 - rot[2]).abs().max() < 1e-5 and (t1 - t[2]).abs().max() < 1e-5
    torch.testing.assert_close(align(src, dst), dst, atol=1e-10, rtol=0)
    _, _, t_rigid = umeyama(src, src @ rot.transpose(1, 2) + t[:, None], with_scale=False)
    torch.testing.assert_close(t_rigid, t, atol=1e-10, rtol=0)


def test_umeyama_never_returns_a_reflection():
    # Axis points with variances 18 : 8 : 2 along x, y, z, mirrored in z. The cross-covariance is
    # diag(18, 8, -2) / 6: the best orthogonal map is the mirror itself; the best rotation is I,
    # with scale (18 + 8 - 2) / (18 + 8 + 2) = 6 / 7 (Umeyama 1991, Eqs. 39-43).
    src = torch.tensor([[3, 0, 0], [-3, 0, 0], [0, 2, 0], [0, -2, 0], [0, 0, 1], [0, 0, -1]], dtype=torch.float64)
    dst = src * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)
    s, r, t = umeyama(src, dst)
    assert torch.linalg.det(r).item() == pytest.approx(1.0, abs=1e-12)
    torch.testing.assert_close(r, torch.eye(3, dtype=torch.float64), atol=1e-12, rtol=0)
    assert s.item() == pytest.approx(6 / 7, abs=1e-12) and t.abs().max().item() < 1e-12
    # random mirrored clouds: always a proper rotation
    gen = torch.Generator().manual_seed(1)
    cloud = torch.randn(8, 30, 3, generator=gen, dtype=torch.float64)
    _, rots, _ = umeyama(cloud, cloud * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(torch.linalg.det(rots), torch.ones(8, dtype=torch.float64), atol=1e-10, rtol=0)


def test_vertex_error_is_zero_for_similar_meshes_and_uniform_normal_offsets():
    gen = torch.Generator().manual_seed(2)
    gt = torch.randn(3, 200, 3, generator=gen, dtype=torch.float64) * 0.05
    rot = random_rotations(3, gen)
    pred = 1.3 * gt @ rot.transpose(1, 2) + torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64)
    region = torch.arange(200)
    assert vertex_error_mm(pred, gt, region).abs().max().item() < 1e-9
    # 1 mm along the normals of a 10 cm sphere is a uniform scaling: removed by the alignment
    dirs = gt / gt.norm(dim=-1, keepdim=True)
    sphere = 0.1 * dirs
    assert vertex_error_mm(sphere + 0.001 * dirs, sphere, region).abs().max().item() < 1e-9


def test_vertex_error_of_a_non_rigid_change_has_its_analytic_value():
    # Octahedron of radius r; the two x vertices move out by d (1 mm). By symmetry the alignment has
    # R = I, t = 0 and s = (2 r (r + d) + 4 r^2) / (2 (r + d)^2 + 4 r^2) (Umeyama's Eq. 42).
    r, d = 0.1, 0.001
    gt = torch.tensor([[r, 0, 0], [-r, 0, 0], [0, r, 0], [0, -r, 0], [0, 0, r], [0, 0, -r]], dtype=torch.float64)
    pred = gt.clone()
    pred[:2, 0] *= (r + d) / r
    s = (2 * r * (r + d) + 4 * r * r) / (2 * (r + d) ** 2 + 4 * r * r)
    expected_mm = (2 * abs(s * (r + d) - r) + 4 * r * abs(s - 1)) / 6 * 1000
    # extra vertices outside the region, far off: they neither enter the fit nor the mean
    far = torch.full((2, 3), 5.0, dtype=torch.float64)
    pred_all, gt_all = torch.cat([pred, far]), torch.cat([gt, -far])
    got = vertex_error_mm(pred_all[None], gt_all[None], torch.arange(6))
    assert got.item() == pytest.approx(expected_mm, rel=1e-9)
    assert 0.3 < got.item() < 0.7  # a third to two thirds of a millimetre: what the alignment cannot absorb


def _octahedron_sequence(n_frames: int, eps: float):
    """A static isotropic point set (ground truth) and a prediction stretched by ``t^2 eps A`` (A symmetric,
    traceless): its per-frame similarity fit onto the truth is the identity up to O(eps^2), so the
    acceleration is exactly ``2 eps |A x|`` per point."""
    gt0 = 0.05 * torch.cat([torch.eye(3), -torch.eye(3)]).double()  # (6, 3), centred, isotropic
    a = torch.tensor([[1.0, 0.3, 0.0], [0.3, -0.5, 0.2], [0.0, 0.2, -0.5]], dtype=torch.float64)
    t = torch.arange(n_frames, dtype=torch.float64)
    gt = gt0.expand(n_frames, 6, 3).clone()
    pred = gt0 + (t ** 2)[:, None, None] * eps * (gt0 @ a.T)
    expected_mm = float(2 * eps * (gt0 @ a.T).norm(dim=-1).mean() * 1000)
    return pred, gt, expected_mm


def test_second_difference_known_values():
    t = torch.arange(6, dtype=torch.float64)
    torch.testing.assert_close(second_difference(3 * t + 1), torch.zeros(4, dtype=torch.float64))
    torch.testing.assert_close(second_difference(t ** 2), torch.full((4,), 2.0, dtype=torch.float64))
    assert second_difference(t[:2]).shape == (0,)


def test_acceleration_error_and_jitter_known_answer_and_invariances():
    gen = torch.Generator().manual_seed(3)
    pred, gt, expected = _octahedron_sequence(6, 1e-7)
    region = torch.arange(6)
    acc = acceleration_error_mm(pred, gt, region)
    jit = jitter_mm(pred, region)
    assert acc.shape == jit.shape == (4,)
    torch.testing.assert_close(acc, torch.full((4,), expected, dtype=torch.float64), rtol=1e-4, atol=0)
    torch.testing.assert_close(jit, torch.full((4,), expected, dtype=torch.float64), rtol=1e-4, atol=0)
    # Each predicted frame in its own pose, scale and place: the acceleration error does not move; each
    # in its own pose and place: the jitter does not.
    rot = random_rotations(6, gen)
    moved = apply_similarity(pred, torch.rand(6, generator=gen, dtype=torch.float64) + 0.5, rot,
                             torch.randn(6, 3, generator=gen, dtype=torch.float64))
    torch.testing.assert_close(acceleration_error_mm(moved, gt, region), acc, rtol=1e-6, atol=1e-9)
    rigid = apply_similarity(pred, torch.ones(6, dtype=torch.float64), rot,
                             torch.randn(6, 3, generator=gen, dtype=torch.float64))
    torch.testing.assert_close(jitter_mm(rigid, region), jit, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(jitter_mm(2 * pred, region), 2 * jit)  # metric: no scale is fitted
    # Following a moving truth exactly (rigid head motion + a non-rigid one) costs no acceleration error,
    # and a constant (static) shape error costs none either.
    moving_gt = apply_similarity(pred, torch.ones(6, dtype=torch.float64), rot,
                                 torch.randn(6, 3, generator=gen, dtype=torch.float64))
    assert acceleration_error_mm(moving_gt, moving_gt, region).abs().max() < 1e-9
    offset = 0.002 * torch.randn(6, 3, generator=gen, dtype=torch.float64)
    assert acceleration_error_mm(gt + offset, gt, region).abs().max() < 1e-9
    assert vertex_error_mm(gt + offset, gt, region).min() > 0.1  # ... though its vertex error is not 0
    assert acceleration_error_mm(pred[:2], gt[:2], region).shape == (0,)
    with pytest.raises(ValueError, match=r"\(T, V, 3\)"):
        jitter_mm(pred[0], region)


def test_face_region_vertices(ict_model):
    region = face_region_vertices(ict_model)
    # ICT's narrow face area (polygons 0-6559) uses exactly vertices 0-6705, landmarks included
    torch.testing.assert_close(region, torch.arange(6706))
    assert torch.isin(ict_model.lmk_idx, region).all()
    toy = SimpleNamespace(name="toy", faces=torch.tensor([[0, 1, 2], [2, 3, 4], [5, 6, 7]]),
                          skin_faces=torch.tensor([True, False, True]))
    assert face_region_vertices(toy).tolist() == [0, 1, 2, 5, 6, 7]


def test_landmark_nme_known_value_and_reference():
    gen = np.random.default_rng(3)
    gt = gen.uniform(50, 200, (2, 68, 2))
    gt[:, 36], gt[:, 45] = (100.0, 100.0), (140.0, 130.0)  # inter-ocular distance 50 px
    angle = gen.uniform(0, 2 * np.pi, (2, 68))
    pred = gt + np.stack([np.cos(angle), np.sin(angle)], -1)  # every point 1 px off
    got = landmark_nme(torch.as_tensor(pred), torch.as_tensor(gt))
    torch.testing.assert_close(got, torch.full((2,), 2.0, dtype=torch.float64), atol=1e-12, rtol=0)
    noisy = gt + gen.normal(0, 3, gt.shape)
    ref = [nme_reference(noisy[k], gt[k]) for k in range(2)]
    np.testing.assert_allclose(landmark_nme(torch.as_tensor(noisy), torch.as_tensor(gt)).numpy(), ref, rtol=1e-12)
    with pytest.raises(ValueError, match=r"\(N, 68, 2\)"):
        landmark_nme(torch.zeros(2, 68, 3), torch.zeros(2, 68, 3))


# ---------------------------------------------------------------------------------------------------
# Landmark fit
# ---------------------------------------------------------------------------------------------------

def known_params(model, n: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    exp = torch.rand(n, model.n_exp, generator=g) * 0.4 * (torch.rand(n, model.n_exp, generator=g) < 0.2)
    pose = torch.zeros(n, 6)
    pose[:, :3] = (torch.rand(n, 3, generator=g) - 0.5) * torch.tensor([0.4, 0.8, 0.3])
    pose[:, 3] = torch.rand(n, generator=g) * 0.15  # jaw open
    cam = torch.stack([6 + 2 * torch.rand(n, generator=g), (torch.rand(n, generator=g) - 0.5) * 0.02,
                       (torch.rand(n, generator=g) - 0.5) * 0.02], 1)
    return {"shape": 0.7 * torch.randn(n, model.n_shape, generator=g), "exp": exp, "pose": pose, "cam": cam}


def project(model, p: dict) -> torch.Tensor:
    """(N, 68, 3) DECA-normalised targets (visibility 1) of parameters ``p``."""
    with torch.no_grad():
        screen = orth_to_screen(model(p["shape"], p["exp"], p["pose"]).lmks_2d, p["cam"])[..., :2]
    return torch.cat([screen, torch.ones_like(screen[..., :1])], -1)


def fit_nme(model, fit: dict, target: torch.Tensor, size: int = 224) -> torch.Tensor:
    pred = project(model, fit)[..., :2]
    return landmark_nme(screen_to_pixels(pred, size), screen_to_pixels(target[..., :2], size))


def test_landmark_view_gives_the_full_models_landmarks(ict_model):
    p = known_params(ict_model, 4)
    view = landmark_view(ict_model)
    with torch.no_grad():
        full, small = ict_model(p["shape"], p["exp"], p["pose"]), view(p["shape"], p["exp"], p["pose"])
    assert small.verts.shape[1] < 1000 and ict_model.template.shape[0] == 24591  # the original is untouched
    torch.testing.assert_close(small.lmks_2d, full.lmks_2d, atol=0, rtol=0)
    torch.testing.assert_close(small.lmks_3d, full.lmks_3d, atol=0, rtol=0)


def test_init_camera_recovers_the_camera_of_the_unposed_mean_face(ict_model):
    z = ict_model.zeros(2)
    cam = torch.tensor([[7.0, 0.01, -0.02], [5.0, -0.03, 0.0]])
    target = project(ict_model, {**z, "cam": cam})
    torch.testing.assert_close(init_camera(ict_model, target), cam, atol=1e-5, rtol=1e-5)


def test_rigid_fit_of_the_mean_face_recovers_pose_and_camera(ict_model):
    p = {**known_params(ict_model, 4, seed=1)}
    p["shape"], p["exp"] = torch.zeros_like(p["shape"]), torch.zeros_like(p["exp"])
    target = project(ict_model, p)
    fit = fit_rigid(ict_model, target)
    assert fit["shape"].abs().max() == 0 and fit["exp"].abs().max() == 0
    nme = fit_nme(ict_model, fit, target)
    # % of ~100 px: a tenth of a pixel on average; one frame may keep a contour point on the
    # neighbouring silhouette candidate (2 px on that point, 0.2 % on the frame)
    assert nme.mean().item() < 0.1 and nme.max().item() < 0.25
    assert (fit["pose"][:, :3] - p["pose"][:, :3]).abs().max().item() < 0.01  # rad
    assert (fit["pose"][:, 3] - p["pose"][:, 3]).abs().max().item() < 0.01  # jaw opening
    torch.testing.assert_close(fit["cam"], p["cam"], atol=1e-3, rtol=3e-3)


def test_rigid_fit_with_fixed_codes_recovers_pose_and_camera_of_that_face(ict_model):
    """codes= fixes shape and expression at given values (the training mean's fit): with the true
    codes the rigid fit lands on the landmarks; the zero codes' mean face cannot."""
    p = known_params(ict_model, 3, seed=2)
    p["shape"], p["exp"] = p["shape"][:1].expand(3, -1), p["exp"][:1].expand(3, -1)  # one face, three poses
    target = project(ict_model, p)
    fit = fit_rigid(ict_model, target, codes={"shape": p["shape"][0], "exp": p["exp"][0]})
    torch.testing.assert_close(fit["shape"], p["shape"], rtol=0, atol=0)
    torch.testing.assert_close(fit["exp"], p["exp"], rtol=0, atol=0)
    nme = fit_nme(ict_model, fit, target)
    assert nme.max().item() < 0.3 and fit_nme(ict_model, fit_rigid(ict_model, target), target).mean() > 3 * nme.mean()
    with pytest.raises(ValueError, match="codes\\['exp'\\] must be"):
        fit_rigid(ict_model, target, codes={"exp": torch.zeros(ict_model.n_exp + 1)})


def test_landmark_fit_matches_landmarks_of_a_known_face(ict_model):
    p = known_params(ict_model, 6)
    target = project(ict_model, p)
    weak = fit_landmarks(ict_model, target, w_shape=1e-5, w_exp=1e-6)
    nme = fit_nme(ict_model, weak, target)
    inner = (project(ict_model, weak)[:, 17:, :2] - target[:, 17:, :2]).norm(dim=-1) * 112  # px at 224
    assert nme.mean().item() < 1.0 and nme.max().item() < 1.5 and inner.mean().item() < 0.5
    assert weak["exp"].min() >= 0 and weak["exp"].max() <= 1  # ICT blendshape weights stay in [0, 1]
    mean_face = fit_rigid(ict_model, target)
    assert fit_nme(ict_model, mean_face, target).mean().item() > 1.5 * nme.mean().item()
    # frames are independent: a frame's fit does not depend on the others in the batch
    alone = fit_landmarks(ict_model, target[:2], w_shape=1e-5, w_exp=1e-6)
    for key in ("pose", "cam", "shape"):
        torch.testing.assert_close(alone[key], weak[key][:2], atol=1e-3, rtol=1e-3)
    region = face_region_vertices(ict_model)
    with torch.no_grad():
        gt = ict_model(p["shape"], p["exp"], p["pose"]).verts
        err_fit = vertex_error_mm(ict_model(weak["shape"], weak["exp"], weak["pose"]).verts, gt, region)
        err_mean = vertex_error_mm(ict_model(mean_face["shape"], mean_face["exp"], mean_face["pose"]).verts, gt, region)
    assert err_fit.mean() < err_mean.mean()


# ---------------------------------------------------------------------------------------------------
# Benchmark
# ---------------------------------------------------------------------------------------------------

SIZE = 64
N_FRAMES = 3
SEQS = (("ida", "clean"), ("idb", "profile"), ("idc", "blur"))  # val_fraction 1.0 keeps idc for training


def write_pair(root, gt_root, model, ident: str, condition: str, seed: int) -> dict:
    """One sequence: dataset folder (jpg, kpt with 1 px detector noise, seg, serial, manifest) + gt."""
    p = known_params(model, N_FRAMES, seed)
    p["shape"] = p["shape"][:1].expand(N_FRAMES, -1)
    p["cam"][:, 0] = 12.0  # the face fills the 64 crop
    lmks_px = screen_to_pixels(project(model, p)[..., :2], SIZE).double().numpy()
    gt_dir, seq_dir = gt_root / ident / "seq000", root / ident / "seq000"
    atomic_save_npz(gt_dir / "gt.npz", shape=p["shape"][0].numpy(), exp=p["exp"].numpy(), pose=p["pose"].numpy(),
                    deca_cam=p["cam"].numpy(), lmks_2d_px=lmks_px)
    atomic_write_text(gt_dir / "gt.json", json.dumps({"model_id": "ict:test", "condition": condition,
                                                      "image_size": SIZE, "n_frames": N_FRAMES}))
    noise = np.random.default_rng(seed).normal(0, 1.0, lmks_px.shape)
    for k in range(N_FRAMES):
        stem = layout.frame_name(k)
        path = layout.image_path(seq_dir, stem)
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), np.full((SIZE, SIZE, 3), 40 * k, np.uint8))
        atomic_save_npy(layout.kpt_path(seq_dir, stem), (lmks_px[k] + noise[k]).astype(np.float32))
        atomic_save_npy(layout.mask_path(seq_dir, stem), np.ones((SIZE, SIZE)))
    atomic_save_npy(seq_dir / "serial.npy", np.array([f"{layout.frame_name(k)}.jpg" for k in range(N_FRAMES)]))
    atomic_write_text(seq_dir / layout.SEQUENCE_MANIFEST, json.dumps({"identity": ident, "n_frames": N_FRAMES}))
    return {"verts": ground_truth_mesh(model, {"shape": p["shape"][0].numpy(), "exp": p["exp"].numpy(),
                                               "pose": p["pose"].numpy()}),
            "lmks_px": torch.as_tensor(lmks_px)}


@pytest.fixture(scope="module")
def tiny_benchmark(ict_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("bench") / "synth"
    gt_root = root.parent / "synth-gt"
    truth = {f"{ident}/seq000": write_pair(root, gt_root, ict_model, ident, cond, seed)
             for seed, (ident, cond) in enumerate(SEQS)}
    return {"root": root, "gt_root": gt_root, "truth": truth}


def test_heldout_sequences_are_the_validation_identities(tiny_benchmark):
    seqs = heldout_sequences(tiny_benchmark["root"], tiny_benchmark["gt_root"], val_fraction=1.0)
    assert [(s.seq_dir.parent.name, s.condition) for s in seqs] == [("ida", "clean"), ("idb", "profile")]
    assert all(s.gt_dir == tiny_benchmark["gt_root"] / s.seq_dir.parent.name / "seq000" for s in seqs)
    with pytest.raises(ValueError, match="no held-out identity"):
        heldout_sequences(tiny_benchmark["root"], tiny_benchmark["gt_root"], val_fraction=0.0)


def test_training_mean_codes_average_the_training_identities_ground_truth(tiny_benchmark, ict_model, tmp_path):
    from tvface.evaluation.benchmark import BenchmarkSequence, TrainingMeanMethod, training_mean_codes

    root, gt_root = tiny_benchmark["root"], tiny_benchmark["gt_root"]
    codes = training_mean_codes(root, gt_root, 1.0, 0)  # val_fraction 1.0 keeps idc for training
    gt = np.load(gt_root / "idc" / "seq000" / "gt.npz")
    np.testing.assert_allclose(codes["shape"].numpy(), gt["shape"], atol=1e-6)  # one identity: its shape
    np.testing.assert_allclose(codes["exp"].numpy(), gt["exp"].mean(0), atol=1e-6)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no training identity"):
        training_mean_codes(tmp_path / "empty", gt_root, 1.0, 0)
    # on the training identity's own sequence the shape is exact and the expression the frames'
    # average: it beats the zero-code mean face there
    own = [BenchmarkSequence(root / "idc" / "seq000", gt_root / "idc" / "seq000", "blur")]
    result = evaluate([MeanFaceMethod(ict_model, iters=30, rigid_iters=10),
                       TrainingMeanMethod(ict_model, codes, iters=30, rigid_iters=10)], own, ict_model, image_size=32)
    err = {r["method"]: r["vertex_mm_mean"] for r in result["results"] if r["condition"] == "all"}
    assert err["training mean"] < 0.5 * err["mean face"]


def test_load_sequence_normalises_detected_landmarks(tiny_benchmark):
    seq = tiny_benchmark["root"] / "ida" / "seq000"
    batch = load_sequence(seq, image_size=32)
    kpt = np.load(layout.kpt_path(seq, "00001"))
    assert batch["image"].shape == (N_FRAMES, 3, 32, 32) and batch["image_size"] == 32
    np.testing.assert_allclose(batch["landmark"][0, :, :2].numpy(), (kpt + 0.5) * 2 / SIZE - 1, atol=1e-6)
    assert batch["image"][1].max().item() == pytest.approx(40 / 255, abs=1e-6)
    both = load_sequence(seq, image_size=32, with_native=True)  # one decode, both sizes
    assert torch.equal(both["image"], batch["image"])
    assert torch.equal(both["native_image"], load_sequence(seq)["image"]) and both["native_image"].shape[-1] == SIZE
    same = load_sequence(seq, image_size=SIZE, with_native=True)
    assert same["native_image"] is same["image"]


def test_evaluate_oracle_mean_face_and_fit(tiny_benchmark, ict_model, tmp_path):
    truth = tiny_benchmark["truth"]
    seqs = heldout_sequences(tiny_benchmark["root"], tiny_benchmark["gt_root"], val_fraction=1.0)

    def oracle(batch):  # the ground truth itself, in the method's (resized) crop
        t = truth[batch["sequence"]]
        return {"verts": t["verts"], "lmks_px": screen_to_pixels(pixels_to_screen(t["lmks_px"], SIZE),
                                                                 batch["image_size"])}

    methods = [CallableMethod("oracle", oracle), MeanFaceMethod(ict_model, iters=30, rigid_iters=10),
               LandmarkFitMethod(ict_model, iters=30, rigid_iters=10)]
    result = evaluate(methods, seqs, ict_model, image_size=32)
    rows = {(r["method"], r["condition"]): r for r in result["results"]}
    assert len(result["results"]) == 3 * (len(CONDITIONS) + 1)
    assert [r["condition"] for r in result["results"][:len(CONDITIONS) + 1]] == [*CONDITIONS, "all"]
    for cond in ("clean", "profile", "all"):
        o = rows[("oracle", cond)]
        assert o["vertex_mm_mean"] < 1e-3 and o["vertex_mm_median"] < 1e-3 and o["nme_mean"] < 1e-6
        assert o["accel_mm_mean"] < 1e-3 and o["jitter_mm_mean"] >= 0
        assert rows[("mean face", cond)]["vertex_mm_mean"] > 0.5 and rows[("mean face", cond)]["nme_mean"] > 0.5
        assert o["n_frames"] == (2 * N_FRAMES if cond == "all" else N_FRAMES) and o["ms_per_frame"] >= 0
    assert rows[("oracle", "blur")]["n_frames"] == 0 and rows[("oracle", "blur")]["vertex_mm_mean"] is None
    mf = [rows[("mean face", c)]["vertex_mm_mean"] for c in ("clean", "profile", "all")]
    assert mf[2] == pytest.approx((mf[0] + mf[1]) / 2)  # equal frame counts: "all" is the average
    assert result["meta"]["n_frames"] == 2 * N_FRAMES and len(result["per_sequence"]) == 3 * 2

    md = to_markdown(result)
    for name in ("oracle", "mean face", "landmark fit", "vertex mm", "NME %", "accel / jitter", "ms/frame"):
        assert name in md
    for cond in (*CONDITIONS, "all"):
        assert any(line.startswith(f"| {cond} |") or line.startswith(f"| **{cond}** |") for line in md.splitlines())
    write_results(result, tmp_path / "bench.json", tmp_path / "bench.md")
    assert json.loads((tmp_path / "bench.json").read_text()) == result
    assert (tmp_path / "bench.md").read_text() == md


def test_evaluate_rejects_bad_predictions(tiny_benchmark, ict_model):
    seqs = heldout_sequences(tiny_benchmark["root"], tiny_benchmark["gt_root"], val_fraction=1.0)
    bad = CallableMethod("bad", lambda b: {"verts": torch.zeros(N_FRAMES, 10, 3),
                                           "lmks_px": torch.zeros(N_FRAMES, 68, 2)})
    with pytest.raises(ValueError, match=r"'bad' must return verts of shape \(3, 24591, 3\)"):
        evaluate([bad], seqs, ict_model)
