import hashlib
import http.server
import math
import threading
import urllib.error
from functools import partial

import numpy as np
import pytest
import torch
from _ict_fixtures import fake_obj, tar_bytes, write_tree, zip_bytes

from tvface.face_models.base import FaceModel
from tvface.face_models.ict import (
    EXPRESSIONS,
    N_KEEP_VERTS,
    build_ict_model,
    jaw_pose_to_blendshapes,
    load_ict_arrays,
    rasterize_uv_mask,
    to_raw_units,
)
from tvface.face_models.ict_download import (
    IctDownloadError,
    IctSourceError,
    download_ict_source,
    iter_model_files,
    read_model_file,
)
from tvface.face_models.obj import read_obj

# ---------------------------------------------------------------------------------------------------
# OBJ reader
# ---------------------------------------------------------------------------------------------------

OBJ_TEXT = b"""# two polygons
v 0 0 0
v 1 0 0
v 1 1 0
v 0 1 0
v 2 0 0
vt 0 0
vt 1 0
vt 1 1
vt 0 1
usemtl A
f 1/1 2/2 3/3 4/4
usemtl B
f 2/2 5/1 3/3
"""


def test_read_obj_and_triangulate_quads():
    mesh = read_obj(OBJ_TEXT)
    assert mesh.verts.shape == (5, 3) and mesh.uvs.shape == (4, 2)
    assert mesh.poly_sizes.tolist() == [4, 3]
    assert mesh.materials == ("A", "B") and mesh.poly_material.tolist() == [0, 1]
    faces, uv_faces, tri_poly = mesh.triangulate()
    assert faces.tolist() == [[0, 1, 2], [0, 2, 3], [1, 4, 2]]
    assert uv_faces.tolist() == [[0, 1, 2], [0, 2, 3], [1, 0, 2]]
    assert tri_poly.tolist() == [0, 0, 1]


def test_read_obj_normal_only_corners_and_bad_index():
    mesh = read_obj(b"v 0 0 0\nv 1 0 0\nv 0 1 0\nvn 0 0 1\nf 1//1 2//1 3//1\n")
    assert mesh.poly_verts.tolist() == [0, 1, 2] and (mesh.poly_uvs == -1).all()
    with pytest.raises(ValueError, match="truncated"):
        read_obj(b"v 0 0 0\nf 1 2 3\n", name="x.obj")


# ---------------------------------------------------------------------------------------------------
# Sources: folder, zip, tarball alike; clear errors
# ---------------------------------------------------------------------------------------------------

SMALL = {"generic_neutral_mesh.obj": OBJ_TEXT, "jawOpen.obj": b"v 1 2 3\n", "vertex_indices.json": b"{}"}


@pytest.mark.parametrize("kind", ["folder", "zip", "tar.xz", "tar.gz", "folder_with_archive"])
def test_sources_read_alike(tmp_path, kind):
    if kind == "folder":
        src = write_tree(tmp_path, SMALL)
    elif kind == "zip":
        src = tmp_path / "ict.zip"
        src.write_bytes(zip_bytes(SMALL))
    elif kind == "tar.gz":
        src = tmp_path / "ict.tar.gz"
        src.write_bytes(tar_bytes(SMALL, mode="w:gz"))
    else:
        (tmp_path / "holder").mkdir()
        src = tmp_path / ("holder" if kind == "folder_with_archive" else "") / "ICT-FaceKit-subset.tar.xz"
        src.write_bytes(tar_bytes(SMALL))
        src = src.parent if kind == "folder_with_archive" else src
    assert dict(iter_model_files(src)) == SMALL
    assert read_model_file(src, "jawOpen.obj") == b"v 1 2 3\n"


def test_truncated_archive_is_one_clear_error(tmp_path):
    big = {"generic_neutral_mesh.obj": bytes(np.random.default_rng(0).integers(0, 255, 200_000, dtype=np.uint8))}
    for name, data in (("cut.tar.xz", tar_bytes(big)), ("cut.zip", zip_bytes(big))):
        path = tmp_path / name
        path.write_bytes(data[: len(data) // 2])
        with pytest.raises(IctSourceError, match="truncated or corrupt") as err:
            build_ict_model(path, tmp_path / "out.npz")
        assert name in str(err.value)
    assert not (tmp_path / "out.npz").exists()


def test_missing_source_and_missing_files(tmp_path):
    with pytest.raises(IctSourceError, match="does not exist"):
        build_ict_model(tmp_path / "nowhere", tmp_path / "out.npz")
    src = write_tree(tmp_path, {"generic_neutral_mesh.obj": fake_obj(), "identity000.obj": fake_obj()})
    with pytest.raises(IctSourceError, match="lacks FaceXModel/") as err:
        build_ict_model(src, tmp_path / "out.npz")
    assert "jawOpen.obj" in str(err.value) and "browDown_L.obj" in str(err.value)


def test_wrong_vertex_count_names_the_file(tmp_path):
    files = {"generic_neutral_mesh.obj": fake_obj(), "identity000.obj": fake_obj(n_verts=10)}
    src = write_tree(tmp_path, files)
    with pytest.raises(IctSourceError, match=r"identity000\.obj has 10 vertices, expected 26719"):
        build_ict_model(src, tmp_path / "out.npz")


# ---------------------------------------------------------------------------------------------------
# Download (local http.server on 127.0.0.1; no external network)
# ---------------------------------------------------------------------------------------------------

@pytest.fixture()
def http_root(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = partial(Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_download_checks_sha256(http_root, tmp_path):
    root, base = http_root
    data = zip_bytes(SMALL)
    (root / "ict.zip").write_bytes(data)
    out = download_ict_source(tmp_path / "assets", url=f"{base}/ict.zip", sha256=hashlib.sha256(data).hexdigest())
    assert out.read_bytes() == data
    assert read_model_file(out, "jawOpen.obj") == b"v 1 2 3\n"
    with pytest.raises(IctDownloadError, match="expected 00"):
        download_ict_source(tmp_path / "other", url=f"{base}/ict.zip", sha256="00" * 32)
    assert not (tmp_path / "other").exists() or not any((tmp_path / "other").iterdir())


def test_download_checks_content_when_unpinned(tmp_path):
    with pytest.raises(IctDownloadError, match="generic_neutral_mesh.obj"):
        download_ict_source(tmp_path, sha256=None, fetch=lambda url: zip_bytes({"jawOpen.obj": b"v 0 0 0\n"}))


def test_no_network_gives_the_fix(tmp_path):
    def offline(url):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    with pytest.raises(IctDownloadError, match="TVFACE_ICT_SOURCE"):
        download_ict_source(tmp_path, fetch=offline)
    with pytest.raises(IctDownloadError, match="TVFACE_ICT_SOURCE"):  # a real refused connection
        download_ict_source(tmp_path, url="http://127.0.0.1:9/ict.zip")


# ---------------------------------------------------------------------------------------------------
# The real model (built once per session from the shared archive)
# ---------------------------------------------------------------------------------------------------

def test_build_summary(ict_build):
    print(f"ICT build: {ict_build['seconds']:.1f} s, {ict_build['bytes'] / 1e6:.1f} MB")
    assert ict_build["n_identity"] == 30 and ict_build["n_verts"] == N_KEEP_VERTS


def test_round_trip_neutral_plus_mode_is_the_obj(ict_archive, ict_model_file):
    arrays = load_ict_arrays(ict_model_file)
    wanted = {"identity005.obj": ("identity_deltas", 5), "jawOpen.obj": ("expression_deltas", EXPRESSIONS.index("jawOpen")),
              "eyeBlink_L.obj": ("expression_deltas", EXPRESSIONS.index("eyeBlink_L"))}
    for name, data in iter_model_files(ict_archive, wanted=lambda n: n in wanted):
        key, k = wanted[name]
        obj = read_obj(data, vertices_only=True).verts[:N_KEEP_VERTS]
        rebuilt = to_raw_units(arrays["template"].astype(np.float64) + 1.0 * arrays[key][k], arrays)
        err = np.abs(rebuilt - obj).max()
        print(f"{name}: max abs error {err:.2e} (raw units, cm)")
        assert err < 1e-4
        assert np.abs(arrays[key][k]).max() > 1e-3  # the mode is not empty


def test_units_axes_origin(ict_model):
    verts = ict_model.template
    skin = verts[: 11248]
    width = (skin[:, 0].max() - skin[:, 0].min()).item()
    assert 0.18 < width < 0.3  # metres: the head with ears
    lm = verts[ict_model.lmk_idx]
    assert 0.08 < (lm[45] - lm[36]).norm().item() < 0.1  # outer eye corners
    assert lm[30, 2] > lm[0, 2] and lm[19, 1] > lm[8, 1]  # nose towards +z, brows above chin
    centre = (skin.max(0).values + skin.min(0).values) / 2
    assert centre[[0, 2]].abs().max().item() < 0.01  # origin at the head's centre in x and depth
    assert -0.04 < centre[1].item() < 0.01  # and near the jaw hinge's height


def test_landmarks_land_on_features(ict_model):
    lm = ict_model(**ict_model.zeros(1)).lmks_3d[0]
    eye_x = lm[36:48, 0]
    assert eye_x.min() < lm[30, 0] < eye_x.max()
    assert abs(lm[30, 0].item()) < 1e-3  # nose tip on the midline
    assert lm[8, 1] == lm[:17, 1].min()  # chin lowest jaw point
    assert lm[36:48, 1].min() > lm[48:68, 1].max()  # eyes above mouth
    assert lm[36, 0] < 0 < lm[45, 0]  # 36 is the subject's right (image left), FLAME's -x
    mirror = lm[[16, 15, 14, 45, 42, 54, 48]] * torch.tensor([-1.0, 1, 1])
    assert (mirror - lm[[0, 1, 2, 36, 39, 48, 54]]).abs().max() < 2e-3  # left/right symmetry


def test_contour_follows_silhouette_with_yaw(ict_model):
    params = ict_model.zeros(2)
    params["pose"][1, 1] = math.pi / 4  # yaw: the face turns towards +x, its left side (9-16) goes away
    out = ict_model(**params)
    frontal_shift = (out.lmks_2d[0, :17] - out.lmks_3d[0, :17]).norm(dim=-1)
    yaw_shift = (out.lmks_2d[1, :17] - out.lmks_3d[1, :17]).norm(dim=-1)
    print("contour shift frontal/yaw (mm):", (frontal_shift * 1e3).round().tolist(), (yaw_shift * 1e3).round().tolist())
    assert (yaw_shift[11:17] > 0.01).all()  # far side slides >1 cm towards the cheek silhouette
    assert (out.lmks_2d[1, 11:17, 0] >= out.lmks_3d[1, 11:17, 0] - 1e-6).all()  # and outward in x
    assert (out.lmks_2d[1, 0:6, 0] <= out.lmks_3d[1, 0:6, 0] + 1e-6).all()  # near side: on its outer edge
    assert torch.equal(out.lmks_2d[:, 17:], out.lmks_3d[:, 17:])
    assert torch.equal(out.lmks_2d[:, 6:11], out.lmks_3d[:, 6:11])


def test_jaw_pose_opens_mouth_and_moves_only_lower_face(ict_model):
    rest = ict_model(**ict_model.zeros(1))
    params = ict_model.zeros(1)
    params["pose"][0, 3] = ict_model.jaw_open_angle  # one full jawOpen
    opened = ict_model(**params)
    def lips(out):
        return (out.lmks_3d[0, 62] - out.lmks_3d[0, 66]).norm().item()
    assert lips(opened) > lips(rest) + 0.02  # lips part by > 2 cm
    move = (opened.verts - rest.verts)[0].norm(dim=-1)
    skin_y = rest.verts[0, : 11248, 1]
    eyes_y = rest.lmks_3d[0, 36:48, 1].min()
    assert move[: 11248][skin_y > eyes_y].max() < 2e-3  # above the eyes: < 2 mm
    assert move[: 11248][skin_y < rest.lmks_3d[0, 57, 1]].max() > 0.02  # the chin moves > 2 cm
    exp = ict_model.zeros(1)
    exp["exp"][0, EXPRESSIONS.index("jawOpen")] = 1.0
    assert torch.allclose(ict_model(**exp).verts, opened.verts, atol=1e-6)  # pose = blendshape weight


def test_jaw_angles_measured_from_mesh(ict_model):
    assert 0.35 < ict_model.jaw_open_angle < 0.55  # jawOpen rotates the lower teeth ~25 deg
    assert 0.03 < ict_model.jaw_yaw_angle < 0.2
    w = jaw_pose_to_blendshapes(torch.tensor([[0.1, -0.05, 0.0]]), 0.5, 0.1)
    assert torch.allclose(w, torch.tensor([[0.2, 0.0, 0.5]]))
    yaw = torch.zeros(1, 3, requires_grad=True)
    jaw_pose_to_blendshapes(yaw, 0.5, 0.1).sum().backward()
    assert yaw.grad[0, 1] != 0  # differentiable at rest


def test_shape_is_one_sigma_and_gradients_flow(ict_model):
    assert isinstance(ict_model, FaceModel) and ict_model.param_sizes == {"shape": 30, "exp": 53, "pose": 6}
    params = {k: v.requires_grad_() for k, v in ict_model.zeros(1).items()}
    with torch.no_grad():
        params["shape"][0, 0] = 1.0
    out = ict_model(**params)
    assert torch.allclose(out.verts[0], ict_model.template + ict_model.identity_basis[0], atol=1e-6)
    (out.lmks_2d.sum() + out.verts[0, 0].sum()).backward()
    assert all(params[k].grad.abs().sum() > 0 for k in ("shape", "exp", "pose"))
    with pytest.raises(ValueError, match=r"\(B, 30\)"):
        ict_model(torch.zeros(1, 29), params["exp"], params["pose"])


def test_buffers_and_regions(ict_model):
    faces = ict_model.faces
    assert faces.shape[1] == 3 and faces.max() < ict_model.n_verts
    assert ict_model.uv_faces.shape == faces.shape and ict_model.uv_faces.max() < ict_model.uv_coords.shape[0]
    uv = ict_model.uv_coords
    assert uv.min() >= 0 and uv.max() <= 1
    assert ict_model.skin_faces.dtype == torch.bool and 0 < ict_model.skin_faces.float().mean() < 1
    assert not (ict_model.skin_faces & (ict_model.eyeball_faces | ict_model.mouth_faces)).any()
    names = ict_model.part_names
    assert ict_model.eyeball_faces.sum() == sum((ict_model.face_part == names.index(n)).sum() for n in names if "eyeball" in n)
    assert ict_model.mouth_faces.any() and ict_model.part_names[0] == "face"


def test_uv_masks(ict_model):
    face = ict_model.uv_face_mask(256)
    face_eye = ict_model.uv_face_eye_mask((256, 256))
    assert face.shape == (256, 256) and face.dtype == np.float32 and set(np.unique(face)) <= {0.0, 1.0}
    assert (face <= face_eye).all() and face_eye.sum() > face.sum()
    # The narrow face lives in the face tile of the atlas (u < 0.75, v > 0.25 -> rows < 0.75 H).
    assert face[:, 192:].sum() == 0 and face[192:, :].sum() == 0
    assert 0.15 < face.mean() < 0.5


def test_rasterize_uv_mask_known_triangle():
    uv = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    mask = rasterize_uv_mask(uv, np.array([[0, 1, 2]]), 8)
    expected = (np.add.outer(np.arange(8)[::-1], np.arange(8)) <= 7).astype(np.float32)  # lower-left half
    assert np.abs(mask - expected).sum() <= 8  # the diagonal may go either way


def test_zeros_follow_the_models_dtype_and_device(ict_model):
    import copy

    model = copy.deepcopy(ict_model).double()
    params = model.zeros(2)
    assert all(p.dtype == torch.float64 and p.device == model.template.device for p in params.values())
    out = model(**params)
    assert out.verts.dtype == torch.float64
    torch.testing.assert_close(out.verts[0], model.template)  # zero parameters: the template
