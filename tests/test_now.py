"""NoW-style scan-to-mesh evaluation: exact point-to-triangle distances, known-answer scans, bad input."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from tvface.cli import main
from tvface.evaluation.now import (
    closest_point_on_triangles,
    now_errors,
    now_face_crop,
    point_triangle_distance,
)
from tvface.io.exports import write_obj

SEMI_AXES_MM = (70.0, 90.0, 60.0)  # a convex, face-sized ellipsoid with no continuous symmetry


@pytest.fixture(autouse=True)
def one_thread():
    """These meshes are small: one thread is fastest, and on a busy machine a second thread's every
    parallel region waits on the scheduler (seconds over the refinement's few thousand small ops)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------- geometry helpers


def icosphere(levels: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit icosphere (verts, faces), outward winding. The icosahedron in its standard orientation is
    symmetric under each coordinate-plane reflection, and midpoint subdivision keeps that."""
    phi = (1 + 5 ** 0.5) / 2
    v = [(-1, phi, 0), (1, phi, 0), (-1, -phi, 0), (1, -phi, 0), (0, -1, phi), (0, 1, phi),
         (0, -1, -phi), (0, 1, -phi), (phi, 0, -1), (phi, 0, 1), (-phi, 0, -1), (-phi, 0, 1)]
    f = [(0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4), (11, 10, 2),
         (10, 7, 6), (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8), (3, 8, 9), (4, 9, 5),
         (2, 4, 11), (6, 2, 10), (8, 6, 7), (9, 8, 1)]
    verts = [np.array(p, float) / np.linalg.norm(p) for p in v]
    faces = f
    for _ in range(levels):
        mid: dict[tuple[int, int], int] = {}  # edge -> its midpoint's vertex index
        new = []
        for a, b, c in faces:
            ab, bc, ca = (_midpoint(verts, mid, i, j) for i, j in ((a, b), (b, c), (c, a)))
            new += [(a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca)]
        faces = new
    return np.array(verts), np.array(faces, np.int64)


def _midpoint(verts: list, mid: dict, i: int, j: int) -> int:
    key = (min(i, j), max(i, j))
    if key not in mid:
        m = verts[i] + verts[j]
        verts.append(m / np.linalg.norm(m))
        mid[key] = len(verts) - 1
    return mid[key]


def ellipsoid() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(verts mm, faces, 7 landmark vertex indices in NoW order), the face looking along +z."""
    verts, faces = icosphere(3)  # 642 vertices, 1280 triangles
    verts = verts * np.array(SEMI_AXES_MM)
    # NoW order: right eye outer/inner, left eye inner/outer, nose bottom, right/left mouth corner
    # (+x is the subject's left).
    targets = np.array([[-45, 25], [-15, 25], [15, 25], [45, 25], [0, -15], [-25, -40], [25, -40]], float)
    idx = [int(np.argmin(np.linalg.norm(verts[:, :2] - xy, axis=1) - 1e3 * (verts[:, 2] > 0))) for xy in targets]
    assert len(set(idx)) == 7
    return verts, faces, np.array(idx)


def random_similarity(rng: np.random.Generator) -> tuple[float, np.ndarray, np.ndarray]:
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    rot = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                    [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                    [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
    return float(rng.uniform(0.6, 1.6)), rot, rng.normal(size=3) * 0.2


def axis_angle(axis, deg: float) -> np.ndarray:
    k = np.asarray(axis, float) / np.linalg.norm(axis)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    a = math.radians(deg)
    return np.eye(3) + math.sin(a) * kx + (1 - math.cos(a)) * kx @ kx


def write_lmks(path, lmks: np.ndarray) -> None:
    path.write_text("".join(f"{x:.12g} {y:.12g} {z:.12g}\n" for x, y, z in lmks))


def recovered(transform: dict, pred_mm: np.ndarray) -> np.ndarray:
    """The prediction (mm) moved by the JSON's transform."""
    return transform["scale"] * pred_mm @ np.array(transform["rotation"]).T + np.array(transform["translation"])


# --------------------------------------------------------------------------- point to triangle


def test_closest_point_known_answers():
    a, b, c = torch.tensor([[0.0, 0, 0], [2, 0, 0], [0, 2, 0]], dtype=torch.float64)
    h = 0.7
    cases = [  # point, closest point
        ((0.5, 0.5, h), (0.5, 0.5, 0)),  # above the interior: straight down, distance h
        ((0.3, 1.2, -h), (0.3, 1.2, 0)),  # below it
        ((1.5, 1.5, h), (1, 1, 0)),  # beyond the hypotenuse (edge BC)
        ((1, -1, h), (1, 0, 0)),  # beyond edge AB
        ((-1, 1, 0), (0, 1, 0)),  # beyond edge AC
        ((-1, -1, h), (0, 0, 0)),  # vertex A's region
        ((3, -1, 0), (2, 0, 0)),  # vertex B's
        ((-0.5, 3, h), (0, 2, 0)),  # vertex C's
    ]
    p = torch.tensor([x for x, _ in cases], dtype=torch.float64)
    want = torch.tensor([y for _, y in cases], dtype=torch.float64)
    n = len(cases)
    got = closest_point_on_triangles(p, a.expand(n, 3), b.expand(n, 3), c.expand(n, 3))
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    sp = point_triangle_distance(p, torch.stack([a, b, c]), torch.tensor([[0, 1, 2]]))
    want_d = torch.tensor([h, h, math.sqrt(0.5 + h * h), math.sqrt(1 + h * h), 1, math.sqrt(2 + h * h),
                           math.sqrt(2), math.sqrt(0.25 + 1 + h * h)], dtype=torch.float64)
    torch.testing.assert_close(sp.dist, want_d, rtol=0, atol=1e-12)


def test_closest_point_matches_dense_sampling_on_random_and_degenerate_triangles():
    g = torch.Generator().manual_seed(0)
    n_tri, n = 40, 200
    tri = torch.randn(n_tri, 3, 3, generator=g, dtype=torch.float64)
    tri[0, 1] = tri[0, 0]  # two corners the same
    tri[1, 2] = 0.3 * tri[1, 0] + 0.7 * tri[1, 1]  # collinear
    tri[2, 2] = 2.5 * tri[2, 1] - 1.5 * tri[2, 0]  # collinear, the third corner outside the other two
    p = 2 * torch.randn(n_tri, 25, 3, generator=g, dtype=torch.float64)  # (T, P, 3)
    a, b, c = (tri[:, i, None].expand_as(p) for i in range(3))
    q = closest_point_on_triangles(p.reshape(-1, 3), a.reshape(-1, 3), b.reshape(-1, 3), c.reshape(-1, 3))
    exact = (p.reshape(-1, 3) - q).norm(dim=-1).reshape(n_tri, 25)
    # Brute force: the barycentric grid with step 1/n is within (longest edge / n) of every triangle point.
    i, j = torch.meshgrid(torch.arange(n + 1), torch.arange(n + 1), indexing="ij")
    keep = i + j <= n
    u, v = i[keep].double() / n, j[keep].double() / n
    samples = tri[:, 0, None] + u[:, None] * (tri[:, 1] - tri[:, 0])[:, None] + v[:, None] * (tri[:, 2] - tri[:, 0])[:, None]
    sampled = torch.cdist(p, samples, compute_mode="donot_use_mm_for_euclid_dist").amin(-1)  # (T, P), exact
    longest = (tri - tri.roll(1, 1)).norm(dim=-1).amax(1)[:, None]  # (T, 1)
    assert (exact <= sampled + 1e-9).all()  # never farther than a point of the triangle
    assert (sampled - exact <= longest / n + 1e-9).all()
    # and the closest point lies on the triangle: on an actual sample grid point when refined enough
    assert ((sampled - exact) / longest).max() < 1 / n


def test_mesh_distance_equals_all_pairs_minimum_with_small_chunks():
    verts, faces = icosphere(2)
    verts = torch.from_numpy(verts * np.array([1.0, 1.4, 0.8]))
    faces = torch.from_numpy(faces)
    g = torch.Generator().manual_seed(1)
    pts = torch.randn(300, 3, generator=g, dtype=torch.float64) * 1.3
    sp = point_triangle_distance(pts, verts, faces, chunk_pairs=997)  # many chunks, blocks of 62 pairs
    n_p, n_f = len(pts), len(faces)
    tri = verts[faces]
    q = closest_point_on_triangles(pts.repeat_interleave(n_f, 0), tri[:, 0].repeat(n_p, 1),
                                   tri[:, 1].repeat(n_p, 1), tri[:, 2].repeat(n_p, 1))
    d = (pts.repeat_interleave(n_f, 0) - q).norm(dim=-1).reshape(n_p, n_f)
    torch.testing.assert_close(sp.dist, d.amin(1), rtol=0, atol=1e-12)
    torch.testing.assert_close((pts - sp.closest).norm(dim=-1), sp.dist, rtol=0, atol=1e-12)
    torch.testing.assert_close(d[torch.arange(n_p), sp.face], sp.dist, rtol=0, atol=1e-12)


def test_now_face_crop_known_answer():
    lmks = torch.tensor([[-50.0, 0, 0], [-15, 0, 0], [15, 0, 0], [50, 0, 0], [0, -40, 0], [-25, -60, 0], [25, -60, 0]])
    centre, radius = now_face_crop(lmks)
    torch.testing.assert_close(centre, torch.tensor([0.0, -28.0, 0.0]))  # 30 % up from the nose bottom
    assert radius == pytest.approx(1.4 * (100 + 40) / 2)


# --------------------------------------------------------------------------- end to end


def test_cli_offset_scan_gives_the_offset_and_recovers_the_transform(tmp_path, capsys):
    """The scan: each triangle's centroid pushed out along its normal by d. The mesh is convex, so
    every scan point is exactly d from its surface; the prediction is the mesh under a random
    similarity, in metres. (The whole closed, mirror-symmetric surface is kept: on a cropped patch of
    an offset surface a rigid shift towards the scan would legitimately lower the distances.)"""
    d = 1.234
    verts, faces, lmk_idx = ellipsoid()
    tri = verts[faces]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    scan = tri.mean(1) + d * normal / np.linalg.norm(normal, axis=1, keepdims=True)
    rng = np.random.default_rng(3)
    s, rot, t = random_similarity(rng)
    pred_m = s * (verts / 1000) @ rot.T + t
    images, scans = tmp_path / "pred", tmp_path / "scans"
    images.mkdir(), scans.mkdir()
    write_obj(images / "img01.obj", pred_m, faces, decimals=10)
    write_lmks(images / "img01_lmk7.txt", pred_m[lmk_idx])
    write_obj(scans / "img01.obj", scan, np.zeros((0, 3), np.int64), decimals=10)  # a point cloud is enough
    write_lmks(scans / "img01_lmk7.txt", verts[lmk_idx])
    out = tmp_path / "now.json"
    assert main(["evaluate", "now", "--images", str(images), "--scans", str(scans), "--json", str(out),
                 "--crop-radius-mm", "500"]) == 0
    res = json.loads(out.read_text())
    row, summ = res["images"][0], res["summary"]
    assert summ["n_points"] == len(faces) == row["n_points"]
    assert summ["median_mm"] == pytest.approx(d, abs=1e-5)
    assert summ["mean_mm"] == pytest.approx(d, abs=1e-5) and summ["std_mm"] < 1e-5
    np.testing.assert_allclose(recovered(row["transform"], pred_m * 1000), verts, atol=1e-5)
    assert row["scale"] == pytest.approx(1 / s, rel=1e-7)  # mm per predicted mm
    cum = dict(zip(summ["cumulative"]["thresholds_mm"], summ["cumulative"]["fraction"]))
    assert len(cum) == 101 and cum[1.2] == 0 and cum[1.3] == 1 and cum[10.0] == 1
    printed = capsys.readouterr().out
    assert "| **all** | 1280 | **1.234** |" in printed


def test_cli_zero_error_scan_refinement_fixes_off_landmarks(tmp_path, capsys):
    """Scan = the mesh's vertices, NoW's own crop. One prediction's landmarks are off by a 4 degree,
    2 mm rigid motion: the landmark step alone misplaces it, the refinement must bring the error to 0.
    Another takes its landmarks from --pred-lmk-idx; a third has no scan and is skipped."""
    verts, faces, lmk_idx = ellipsoid()
    rng = np.random.default_rng(7)
    images, scans = tmp_path / "pred", tmp_path / "scans"
    images.mkdir(), scans.mkdir()
    preds = {}
    for stem in ("a", "b", "c"):
        s, rot, t = random_similarity(rng)
        preds[stem] = s * (verts / 1000) @ rot.T + t
        write_obj(images / f"{stem}.obj", preds[stem], faces, decimals=10)
    lmk = verts[lmk_idx]
    off = (lmk - lmk.mean(0)) @ axis_angle([1, 2, 0.5], 4.0).T + lmk.mean(0) + np.array([2.0, -1.0, 0.5])
    write_lmks(images / "a_lmk7.txt", _fit(verts, preds["a"])(off))  # the off landmarks, in the prediction's frame
    for stem in ("a", "b"):
        write_obj(scans / f"{stem}.obj", verts, faces, decimals=10)
        write_lmks(scans / f"{stem}_lmk7.txt", lmk)
    out = tmp_path / "now.json"
    argv = ["evaluate", "now", "--images", str(images), "--scans", str(scans), "--json", str(out),
            "--pred-lmk-idx", ",".join(map(str, lmk_idx))]
    assert main(argv) == 0
    res = json.loads(out.read_text())
    printed = capsys.readouterr().out
    assert res["skipped"] == {"no_scan": ["c"], "no_prediction": []}
    assert sum("skipped c:" in ln for ln in printed.splitlines()) == 1
    rows = {r["image"]: r for r in res["images"]}
    assert rows["a"]["landmarks"] == "a_lmk7.txt" and rows["b"]["landmarks"] == "--pred-lmk-idx"
    assert rows["a"]["refine_rms_mm"][0] > 0.5  # after the landmark step alone: misplaced
    assert 0 < rows["a"]["n_points"] < len(verts)  # NoW's crop kept the face side only
    for stem in ("a", "b"):
        assert rows[stem]["median_mm"] < 1e-5 and rows[stem]["mean_mm"] < 1e-5
        np.testing.assert_allclose(recovered(rows[stem]["transform"], preds[stem] * 1000), verts, atol=1e-4)
    assert res["summary"]["median_mm"] < 1e-5


def _fit(src: np.ndarray, dst: np.ndarray):
    """The similarity taking ``src`` onto ``dst`` (exact here), as a function on points."""
    from tvface.evaluation.metrics import umeyama

    s, r, t = (x.numpy() for x in umeyama(torch.from_numpy(src), torch.from_numpy(dst)))
    return lambda x: s * x @ r.T + t


def test_metrical_keeps_the_prediction_size():
    """--metrical fits no scale: a prediction 5 % too big keeps an error; the default fit absorbs it."""
    verts, faces, lmk_idx = ellipsoid()
    v = torch.from_numpy(verts)
    f = torch.from_numpy(faces)
    pred = 1.05 * v @ torch.from_numpy(axis_angle([0, 1, 0], 20.0)).T + 7.0
    free = now_errors(v, v[lmk_idx], pred, f, pred[lmk_idx])
    metrical = now_errors(v, v[lmk_idx], pred, f, pred[lmk_idx], metrical=True)
    assert float(free.dist.median()) < 1e-6 and float(free.alignment.transform.scale) == pytest.approx(1 / 1.05)
    assert float(metrical.alignment.transform.scale) == 1.0 and float(metrical.dist.median()) > 0.5


# --------------------------------------------------------------------------- bad input


def _one_pair(tmp_path):
    verts, faces, lmk_idx = ellipsoid()
    images, scans = tmp_path / "pred", tmp_path / "scans"
    images.mkdir(), scans.mkdir()
    write_obj(images / "x.obj", verts / 1000, faces, decimals=10)
    write_lmks(images / "x_lmk7.txt", verts[lmk_idx] / 1000)
    write_obj(scans / "x.obj", verts, faces, decimals=10)
    write_lmks(scans / "x_lmk7.txt", verts[lmk_idx])
    return images, scans


def _fails_naming(argv, path, capsys) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err, err
    return err


def test_missing_landmarks_and_truncated_obj_are_one_line_errors(tmp_path, capsys):
    images, scans = _one_pair(tmp_path)
    argv = ["evaluate", "now", "--images", str(images), "--scans", str(scans)]
    assert main(argv) == 0  # the pair is fine as written

    (scans / "x_lmk7.txt").rename(scans / "keep.txt")
    err = _fails_naming(argv, scans / "x_lmk7.txt", capsys)
    assert "landmarks not found" in err and "7 lines" in err
    (scans / "keep.txt").rename(scans / "x_lmk7.txt")

    (images / "x_lmk7.txt").unlink()
    err = _fails_naming(argv, images / "x_lmk7.txt", capsys)
    assert "--pred-lmk-idx" in err  # the other way to give them

    write_lmks(images / "x_lmk7.txt", np.zeros((6, 3)))
    assert "expected 7 lines" in _fails_naming(argv, images / "x_lmk7.txt", capsys)
    (images / "x_lmk7.txt").unlink()
    assert "give 7 comma-separated" in _fails_naming(argv + ["--pred-lmk-idx", "1,2,3"], "1,2,3", capsys)

    text = (images / "x.obj").read_text()
    (images / "x.obj").write_text(text[:text.index("\nf ") // 2])  # cut mid-way through the vertices
    _fails_naming(argv + ["--pred-lmk-idx", "0,1,2,3,4,5,6"], images / "x.obj", capsys)
    text = (scans / "x.obj").read_text()
    (images / "x.obj").write_text(text)  # a good prediction again (in mm)
    line = text.index("\nv ", len(text) // 4) + 1
    (scans / "x.obj").write_text(text[:text.index(" ", line + 2) + 3])  # cut in a vertex's second number
    _fails_naming(argv + ["--pred-units", "mm", "--pred-lmk-idx", "0,1,2,3,4,5,6"], scans / "x.obj", capsys)
