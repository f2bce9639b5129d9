"""Linear blend skinning and FLAME in DECA's configuration, on a generated FLAME-format model."""
from __future__ import annotations

import math
import pickletools

import numpy as np
import pytest
import torch
from _flame_fixtures import write_flame_files, write_flame_pkl
from scipy.spatial.transform import Rotation

from tvface.assets import AssetMissingError
from tvface.face_models.base import batch_rodrigues
from tvface.face_models.flame import FLAME, contour_bin_index, load_flame, neck_chain_yaw
from tvface.face_models.flame_data import FlameFileError, load_flame_model
from tvface.face_models.lbs import (
    batch_rigid_transform,
    lbs,
    pose_feature,
    vertices_to_landmarks,
)
from tvface.io.safe_pickle import PickleLoadError, UnsafePickleError

torch.set_grad_enabled(True)


# --------------------------------------------------------------------------- LBS
def _toy_rig(n_verts=12, seed=0, dtype=torch.float64):
    """Two joints (root, jaw); the first half of the vertices is on the root, the rest on the jaw."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(n_verts, 3, generator=g, dtype=dtype)
    half = n_verts // 2
    J_regressor = torch.zeros(2, n_verts, dtype=dtype)
    J_regressor[0, :half] = 1.0 / half
    J_regressor[1, half:] = 1.0 / (n_verts - half)
    weights = torch.zeros(n_verts, 2, dtype=dtype)
    weights[:half, 0] = 1.0
    weights[half:, 1] = 1.0
    return {"v_template": v, "shapedirs": torch.randn(n_verts, 3, 4, generator=g, dtype=dtype) * 0.1,
            "posedirs": torch.randn(9, n_verts * 3, generator=g, dtype=dtype) * 0.1,
            "J_regressor": J_regressor, "parents": torch.tensor([-1, 0]), "lbs_weights": weights}


def _rotvec(*xyz):
    return torch.tensor([xyz], dtype=torch.float64)


def test_lbs_zero_params_return_the_template():
    rig = _toy_rig()
    out = lbs(torch.zeros(3, 4, dtype=torch.float64), torch.zeros(3, 6, dtype=torch.float64), **rig)
    torch.testing.assert_close(out.verts, rig["v_template"].expand(3, -1, -1), rtol=0, atol=1e-12)


def test_lbs_root_rotation_is_rigid_about_the_root_joint():
    rig = _toy_rig()
    rig["lbs_weights"] = torch.zeros_like(rig["lbs_weights"])
    rig["lbs_weights"][:, 0] = 1.0
    aa = np.array([0.3, -0.5, 0.2])
    pose = torch.cat([_rotvec(*aa), torch.zeros(1, 3, dtype=torch.float64)], 1)
    out = lbs(torch.zeros(1, 4, dtype=torch.float64), pose, **rig)
    R = torch.from_numpy(Rotation.from_rotvec(aa).as_matrix())
    v = rig["v_template"]
    J0 = rig["J_regressor"][0] @ v
    torch.testing.assert_close(out.verts[0], (v - J0) @ R.T + J0)  # no correctives: only the root moved


def test_lbs_jaw_rotation_moves_only_jaw_vertices_about_the_jaw():
    rig = _toy_rig()
    rig["posedirs"] = torch.zeros_like(rig["posedirs"])
    aa = np.array([0.4, 0.0, 0.1])
    pose = torch.cat([torch.zeros(1, 3, dtype=torch.float64), _rotvec(*aa)], 1)
    out = lbs(torch.zeros(1, 4, dtype=torch.float64), pose, **rig)
    v = rig["v_template"]
    J1 = rig["J_regressor"][1] @ v
    R = torch.from_numpy(Rotation.from_rotvec(aa).as_matrix())
    torch.testing.assert_close(out.verts[0, :6], v[:6], rtol=0, atol=1e-12)
    torch.testing.assert_close(out.verts[0, 6:], (v[6:] - J1) @ R.T + J1)
    torch.testing.assert_close(out.joints[0, 1], J1)


def test_pose_correctives_vanish_at_rest_and_follow_r_minus_identity():
    theta = 0.7
    rot = batch_rodrigues(torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, theta]], dtype=torch.float64))[None]
    feat = pose_feature(rot)  # only the non-root joint counts
    c, s = math.cos(theta), math.sin(theta)
    expected = torch.tensor([[c - 1, -s, 0, s, c - 1, 0, 0, 0, 0]], dtype=torch.float64)
    torch.testing.assert_close(feat, expected)
    torch.testing.assert_close(pose_feature(batch_rodrigues(torch.zeros(2, 3))[None]), torch.zeros(1, 9))

    rig = _toy_rig()
    pose = torch.cat([torch.zeros(1, 3, dtype=torch.float64), _rotvec(0, 0, theta)], 1)
    with_pd = lbs(torch.zeros(1, 4, dtype=torch.float64), pose, **rig).verts
    no_pd = lbs(torch.zeros(1, 4, dtype=torch.float64), pose, **{**rig, "posedirs": 0 * rig["posedirs"]}).verts
    offsets = (expected @ rig["posedirs"]).view(-1, 3)  # applied before skinning
    torch.testing.assert_close(with_pd[0, :6] - no_pd[0, :6], offsets[:6])  # root part is not rotated
    assert (with_pd - no_pd).abs().max() > 1e-3


def _reference_lbs(betas, pose, v_template, shapedirs, posedirs, J_regressor, parents, lbs_weights):
    """Readable numpy LBS, one vertex at a time (scipy for Rodrigues)."""
    betas, pose = betas.numpy(), pose.numpy()
    v_template, shapedirs, posedirs = v_template.numpy(), shapedirs.numpy(), posedirs.numpy()
    J_regressor, weights, parents = J_regressor.numpy(), lbs_weights.numpy(), parents.tolist()
    out = []
    for b in range(betas.shape[0]):
        v_shaped = v_template + shapedirs @ betas[b]
        joints = J_regressor @ v_shaped
        rots = Rotation.from_rotvec(pose[b].reshape(-1, 3)).as_matrix()
        feat = np.concatenate([(r - np.eye(3)).ravel() for r in rots[1:]])
        v_posed = v_shaped + (feat @ posedirs).reshape(-1, 3)
        world = []
        for j, r in enumerate(rots):
            local = np.eye(4)
            local[:3, :3] = r
            local[:3, 3] = joints[j] - (joints[parents[j]] if j else 0)
            world.append(local if j == 0 else world[parents[j]] @ local)
        verts = np.zeros_like(v_posed)
        for i, p in enumerate(v_posed):
            for j, G in enumerate(world):
                verts[i] += weights[i, j] * (G[:3, :3] @ (p - joints[j]) + G[:3, 3])
        out.append(verts)
    return np.stack(out)


def test_lbs_matches_a_slow_reference_on_a_random_chain():
    g = torch.Generator().manual_seed(1)
    n_verts, n_joints = 9, 4
    w = torch.rand(n_verts, n_joints, generator=g, dtype=torch.float64)
    rig = {"v_template": torch.randn(n_verts, 3, generator=g, dtype=torch.float64),
           "shapedirs": torch.randn(n_verts, 3, 5, generator=g, dtype=torch.float64) * 0.1,
           "posedirs": torch.randn(9 * (n_joints - 1), n_verts * 3, generator=g, dtype=torch.float64) * 0.1,
           "J_regressor": torch.softmax(torch.randn(n_joints, n_verts, generator=g, dtype=torch.float64), 1),
           "parents": torch.tensor([-1, 0, 1, 1]), "lbs_weights": w / w.sum(1, keepdim=True)}
    betas = torch.randn(2, 5, generator=g, dtype=torch.float64)
    pose = torch.randn(2, n_joints * 3, generator=g, dtype=torch.float64) * 0.5
    out = lbs(betas, pose, **rig)
    np.testing.assert_allclose(out.verts.numpy(), _reference_lbs(betas, pose, **rig), atol=1e-10)


def test_lbs_gradcheck():
    rig = _toy_rig(n_verts=6)
    betas = torch.randn(1, 4, dtype=torch.float64, requires_grad=True)
    pose = (torch.randn(1, 6, dtype=torch.float64) * 0.3).requires_grad_()
    assert torch.autograd.gradcheck(lambda b, p: lbs(b, p, **rig).verts, (betas, pose))


def test_rigid_transform_posed_joints_follow_the_chain():
    joints = torch.tensor([[[0.0, 0, 0], [0, 1, 0], [0, 2, 0]]], dtype=torch.float64)
    rot = batch_rodrigues(torch.tensor([[0, 0, math.pi / 2], [0, 0, 0], [0, 0, 0]], dtype=torch.float64))[None]
    posed, _ = batch_rigid_transform(rot, joints, torch.tensor([-1, 0, 1]))
    torch.testing.assert_close(posed[0], torch.tensor([[0.0, 0, 0], [-1, 0, 0], [-2, 0, 0]], dtype=torch.float64))


def test_vertices_to_landmarks_one_triangle():
    verts = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0, 1, 0]]])
    lmk = vertices_to_landmarks(verts, torch.tensor([[0, 1, 2]]), torch.tensor([0]), torch.tensor([[0.2, 0.3, 0.5]]))
    torch.testing.assert_close(lmk, torch.tensor([[[0.3, 0.5, 0.0]]]))


# --------------------------------------------------------------------------- FLAME files
@pytest.fixture(scope="module")
def flame_files(tmp_path_factory):
    return write_flame_files(tmp_path_factory.mktemp("flame"))


@pytest.fixture(scope="module")
def flame(flame_files):
    return FLAME.from_files(flame_files.model_path, flame_files.embedding_path, flame_files.template_obj_path,
                            n_shape=100, n_exp=50)


@pytest.fixture(scope="module")
def small_files(tmp_path_factory):
    return write_flame_files(tmp_path_factory.mktemp("flame_small"), prefer_flame=False)


def test_generated_pickle_has_the_real_file_layout(flame_files):
    data = flame_files.model_path.read_bytes()
    ops = list(pickletools.genops(data))
    assert ops[0][0].name == "PROTO" and ops[0][1] == 2
    globals_ = {arg for op, arg, _ in ops if op.name == "GLOBAL"}
    assert {"chumpy.ch Ch", "scipy.sparse.csc csc_matrix", "numpy.core.multiarray _reconstruct"} <= globals_
    with pytest.raises(ModuleNotFoundError, match="chumpy"):  # plain pickle needs chumpy, as with the real file
        import pickle
        pickle.loads(data, encoding="latin1")


def test_flame_model_loads_through_the_restricted_loader(flame_files):
    m = load_flame_model(flame_files.model_path)
    np.testing.assert_array_equal(m.shapedirs, flame_files.model["shapedirs"])
    np.testing.assert_array_equal(m.J_regressor, flame_files.model["J_regressor"])
    assert m.parents.tolist() == [-1, 0, 1, 1, 1]
    assert m.faces.dtype == np.int64


def test_flame_zero_params_and_buffers(flame, flame_files):
    z = flame.zeros(2)
    out = flame(z["shape"], z["exp"], z["pose"])
    template = torch.tensor(flame_files.model["v_template"], dtype=torch.float32)
    torch.testing.assert_close(out.verts, template.expand(2, -1, -1))
    assert out.lmks_2d.shape == out.lmks_3d.shape == (2, 68, 3)
    assert flame.faces.shape == flame.uv_faces.shape and flame.uv_coords.shape[1] == 2
    assert flame.param_sizes == {"shape": 100, "exp": 50, "pose": 6}
    assert flame.neck_kin_chain.tolist() == [1, 0]
    if flame_files.real_topology:
        assert (flame.n_verts, len(flame.faces), len(flame.uv_coords)) == (5023, 9976, 5118)
        eye_faces = (flame.faces >= 3931).all(1)
        assert torch.equal(flame.skin_faces, ~eye_faces) and int(eye_faces.sum()) == 2 * 1088


def test_flame_shape_and_expression_use_decas_columns(flame, flame_files):
    shape, exp, pose = flame.zeros(1).values()
    shape[0, 7] = 2.0
    exp[0, 4] = -1.5
    out = flame(shape, exp, pose)
    sd = flame_files.model["shapedirs"]
    expected = flame_files.model["v_template"] + 2.0 * sd[:, :, 7] - 1.5 * sd[:, :, 300 + 4]
    np.testing.assert_allclose(out.verts[0].numpy(), expected, atol=1e-6)


def test_flame_global_rotation_is_rigid_about_the_root(flame, flame_files):
    shape, exp, _ = flame.zeros(1).values()
    aa = np.array([0.1, 0.6, -0.2])
    pose = torch.tensor([[*aa, 0, 0, 0]], dtype=torch.float32)
    out = flame(shape, exp, pose)
    v = flame_files.model["v_template"]
    J0 = flame_files.model["J_regressor"][0] @ v
    expected = (v - J0) @ Rotation.from_rotvec(aa).as_matrix().T + J0
    np.testing.assert_allclose(out.verts[0].numpy(), expected, atol=1e-5)


def test_flame_jaw_moves_the_lower_face_only(flame, flame_files):
    shape, exp, _ = flame.zeros(1).values()
    pose = torch.tensor([[0, 0, 0, 0.3, 0, 0]])
    moved = (flame(shape, exp, pose).verts[0] - flame.template).norm(dim=1).numpy()
    on_jaw = flame_files.model["weights"][:, 2] > 0.5
    off_jaw = flame_files.model["weights"][:, 2] == 0
    # Off the jaw only the small pose correctives act.
    assert moved[on_jaw].mean() > 20 * moved[off_jaw].mean()


def test_flame_landmarks_follow_decas_embedding(flame, flame_files):
    emb = np.load(flame_files.embedding_path, allow_pickle=True, encoding="latin1")[()]  # our own test file
    shape, exp, _ = flame.zeros(1).values()
    yaw = 20.0
    pose = torch.tensor([[0, math.radians(yaw), 0, 0.1, 0, 0]])
    out = flame(shape, exp, pose)
    verts = out.verts[0].double().numpy()
    faces = flame_files.model["f"].astype(np.int64)

    def bary(face_idx, coords):
        return np.einsum("lkc,lk->lc", verts[faces[np.asarray(face_idx).reshape(-1)]],
                         np.asarray(coords, dtype=np.float64).reshape(-1, 3))

    dyn = bary(emb["dynamic_lmk_faces_idx"][20].numpy(), emb["dynamic_lmk_bary_coords"][20].numpy())
    static = bary(emb["static_lmk_faces_idx"], emb["static_lmk_bary_coords"])
    full = bary(emb["full_lmk_faces_idx"], emb["full_lmk_bary_coords"])
    np.testing.assert_allclose(out.lmks_2d[0].numpy(), np.concatenate([dyn, static]), atol=1e-5)
    np.testing.assert_allclose(out.lmks_3d[0].numpy(), full, atol=1e-5)
    at_rest_bin = bary(emb["dynamic_lmk_faces_idx"][0].numpy(), emb["dynamic_lmk_bary_coords"][0].numpy())
    assert np.abs(dyn - at_rest_bin).max() > 1e-4  # the contour moved with yaw


@pytest.mark.parametrize("yaw,bin_", [(0, 0), (10, 10), (10.4, 10), (10.6, 11), (39, 39), (39.6, 39), (60, 39),
                                     (-1, 40), (-10, 49), (-39, 78), (-39.6, 78), (-80, 78)])
def test_contour_bin_index_matches_decas_formula(yaw, bin_):
    assert contour_bin_index(torch.tensor([float(yaw)])).item() == bin_


def test_contour_yaw_composes_the_neck_chain():
    full_pose = torch.zeros(2, 15)
    full_pose[0, 1] = math.radians(25)  # global yaw
    full_pose[1, 1], full_pose[1, 4] = math.radians(-10), math.radians(-15)  # global + neck yaw
    yaw = neck_chain_yaw(full_pose, torch.tensor([1, 0])) * 180 / math.pi
    torch.testing.assert_close(yaw, torch.tensor([25.0, -25.0]), atol=1e-4, rtol=0)
    assert contour_bin_index(yaw).tolist() == [25, 64]


def test_flame_landmark_order_on_real_topology(flame, flame_files):
    if not flame_files.real_topology:
        pytest.skip("needs DECA's landmark embedding on the real FLAME topology")
    z = flame.zeros(1)
    lmk = flame(z["shape"], z["exp"], z["pose"]).lmks_3d[0]
    # iBUG order with +x the subject's left: 36-41 right eye (x < 0), 42-47 left eye, 8 is the chin.
    assert lmk[36:42, 0].mean() < 0 < lmk[42:48, 0].mean()
    assert lmk[8, 1] == lmk[:17, 1].min() and lmk[30, 2] == lmk[27:36, 2].max()


def test_flame_gradients_flow(flame):
    shape, exp, pose = (t.requires_grad_() for t in flame.zeros(1).values())
    out = flame(shape, exp, pose)
    (out.verts.sum() + out.lmks_2d.sum()).backward()
    assert shape.grad.abs().sum() > 0 and exp.grad.abs().sum() > 0 and pose.grad.abs().sum() > 0


def test_flame_rejects_bad_param_shapes_and_sizes(flame, small_files):
    with pytest.raises(ValueError, match=r"exp must have shape \(B, 50\)"):
        flame(torch.zeros(1, 100), torch.zeros(1, 10), torch.zeros(1, 6))
    with pytest.raises(ValueError, match="n_shape must be in 1..300"):
        FLAME.from_files(small_files.model_path, small_files.embedding_path, small_files.template_obj_path, n_shape=301)


def test_small_synthetic_flame_runs(small_files):
    flame = FLAME.from_files(small_files.model_path, small_files.embedding_path, small_files.template_obj_path,
                             n_shape=10, n_exp=5)
    z = flame.zeros(3)
    out = flame(z["shape"], z["exp"], z["pose"])
    torch.testing.assert_close(out.verts[0], flame.template)
    assert bool(flame.skin_faces.all())  # not the FLAME topology: no eyeball ranges to exclude


def test_load_flame_from_an_assets_folder(small_files, tmp_path):
    flame = load_flame(small_files.model_path.parent, n_shape=20, n_exp=10)
    assert flame.param_sizes["shape"] == 20
    with pytest.raises(AssetMissingError, match="generic_model.pkl"):
        load_flame(tmp_path)


# --------------------------------------------------------------------------- bad files
def test_truncated_model_names_the_file(small_files, tmp_path):
    path = tmp_path / "generic_model.pkl"
    data = small_files.model_path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(PickleLoadError, match=rf"{path}.*truncated"):
        load_flame_model(path)


def test_missing_key_names_the_file_and_key(small_files, tmp_path):
    model = {k: v for k, v in small_files.model.items() if k != "posedirs"}
    path = write_flame_pkl(tmp_path / "generic_model.pkl", model)
    with pytest.raises(FlameFileError, match=rf"{path}.*missing keys \['posedirs'\]"):
        load_flame_model(path)


@pytest.mark.parametrize("key,bad", [
    ("shapedirs", lambda a: a[:, :, :300]),
    ("J_regressor", lambda a: a[:4]),
    ("weights", lambda a: a[:, :4]),
    ("posedirs", lambda a: a[:, :, :27]),
    ("kintree_table", lambda a: a[:, :4]),
])
def test_wrong_shape_names_the_file_and_expected_shape(small_files, tmp_path, key, bad):
    model = {**small_files.model, key: bad(small_files.model[key])}
    path = write_flame_pkl(tmp_path / "generic_model.pkl", model)
    with pytest.raises(FlameFileError, match=rf"{path}: {key} must have shape"):
        load_flame_model(path)


def test_code_in_a_model_file_is_refused(small_files, tmp_path):
    import os

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    path = write_flame_pkl(tmp_path / "generic_model.pkl", {**small_files.model, "bs_style": Evil()})
    with pytest.raises(UnsafePickleError, match="generic_model.pkl"):
        load_flame_model(path)
    assert not marker.exists()


def test_template_with_other_topology_is_rejected(small_files, flame_files):
    if not flame_files.real_topology:
        pytest.skip("needs two topologies")
    with pytest.raises(FlameFileError, match="triangles"):
        FLAME.from_files(small_files.model_path, small_files.embedding_path, flame_files.template_obj_path)


# --------------------------------------------------------------------------- DECA's data files
def test_landmark_embedding_for_another_topology_is_rejected(flame_files):
    from tvface.face_models.flame_data import load_landmark_embedding

    emb = load_landmark_embedding(flame_files.embedding_path)
    assert emb.dynamic_faces_idx.shape == (79, 17) and emb.full_faces_idx.shape == (68,)
    with pytest.raises(FlameFileError, match=r"landmark_embedding\.npy.*triangle"):
        load_landmark_embedding(flame_files.embedding_path, n_faces=int(emb.full_faces_idx.max()))


def test_uv_masks_displacement_and_mean_texture(flame_files, tmp_path):
    from _flame_fixtures import flame_topology_dir

    from tvface.face_models.flame_data import load_fixed_displacement, load_mean_texture, load_uv_mask

    d = flame_topology_dir()
    if d is None:
        pytest.skip("shared FLAME-topology files not available")
    mask = load_uv_mask(d / "uv_face_eye_mask.png")
    assert mask.shape == (256, 256) and mask.dtype == np.float32
    assert mask.min() == 0.0 and mask.max() == 1.0 and 0.2 < mask.mean() < 0.9
    small = load_uv_mask(d / "uv_face_mask.png", size=128)
    np.testing.assert_array_equal(small, load_uv_mask(d / "uv_face_mask.png")[::2, ::2])  # nearest
    assert load_fixed_displacement(d / "fixed_displacement_256.npy").shape == (256, 256)
    tex = load_mean_texture(d / "mean_texture.jpg", size=256)
    assert tex.shape == (256, 256, 3) and 0.0 <= tex.min() and tex.max() <= 1.0
    bad = tmp_path / "uv_face_mask.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(FlameFileError, match=r"uv_face_mask\.png"):
        load_uv_mask(bad)
