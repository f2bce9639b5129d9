"""Step 5: 68 landmarks (iBUG order) inside the detector's box, with a head pose, a confidence and a flag.

Backends: 2D-FAN through face-alignment when its weights are in the assets folder (the paper's
detector; the boxes are given, so no face detector is constructed or downloaded); dlib's 68-point
predictor from face-recognition-models; MediaPipe's face mesh mapped to the 68 points
(:mod:`tvface.data.collect.mediapipe_mesh`). Landmarks are in source-frame pixels, x right, y down.

``data.landmarks: auto`` chooses per face (:func:`locate_landmarks`):

* with 2D-FAN's weights: 2D-FAN, unless its mirror test fails and the face mesh's passes;
* without: dlib where it is in its element, a near-frontal face (the mesh's head pose within
  ``data.landmark_frontal_yaw``) on which dlib and the mesh agree (their mutual error within
  ``data.landmark_max_error``); the face mesh everywhere else (dlib returns frontal-looking points on
  profiles, confidently wrong).

Every face gets a **confidence**: the detector's score x the backend's own face score (the mesh's
face-presence probability; 1 for dlib and FAN) x ``0.5 ** ((e / data.landmark_max_error) ** 2)``, with
``e`` the estimated landmark error in percent of the face's frontal eye distance (the NME unit): for
2D-FAN and the mesh the **mirror test** (the same network on the mirrored face, mirrored back: a
well-determined face gives the same points; the two runs are averaged, and their disagreement x
:data:`MIRROR_ERROR_SCALE` estimates the error), for dlib its disagreement with the mesh. A face whose
confidence is below ``data.landmark_min_confidence`` is **flagged**: its points are still stored, the
reason is recorded, and training gives its landmark terms weight 0. Head pose (yaw, pitch, roll) comes
from the 68 points and the face model's mean shape (:mod:`tvface.data.collect.headpose`).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tvface import assets
from tvface.config import DataConfig
from tvface.data.collect.headpose import MEAN_FACE_68, MIRROR_68, HeadPose, fit_head_pose

MEAN_EYE_DISTANCE_MM = float(np.linalg.norm(MEAN_FACE_68[36] - MEAN_FACE_68[45]))  # outer corners
BACKENDS = ("fan", "dlib", "mediapipe")
# The mirror test measures how far two runs disagree, not how far either is from the truth. On the
# synthetic benchmark (cpu-demo set, frames 0 and 5 of every sequence: 314 detected faces with ground
# truth; `python benchmarks/calibrate_landmarks.py` re-measures it) the face mesh's true error was
# 2.16x its mirror disagreement (median; quartiles 1.72-2.63): the estimate is the disagreement x 2.2.
# dlib's disagreement with the mesh needs no scale there (true / disagreement median 1.06).
MIRROR_ERROR_SCALE = 2.2

# dlib's predictor was trained on its HOG detector's boxes, which are squares a little smaller than
# MTCNN's and lower. Measured on the two portraits shipped in scikit-image / matplotlib (astronaut,
# grace_hopper): HOG side = 0.92 x the mean MTCNN side, centre 0.03 x MTCNN height lower.
DLIB_BOX_SIDE = 0.92
DLIB_BOX_SHIFT_Y = 0.03


def dlib_box_from(box) -> tuple[int, int, int, int]:
    """A detector box (MTCNN or dlib) as the square dlib's predictor expects."""
    w, h = box[2] - box[0], box[3] - box[1]
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2 + DLIB_BOX_SHIFT_Y * h
    half = DLIB_BOX_SIDE * (w + h) / 4
    return round(cx - half), round(cy - half), round(cx + half), round(cy + half)


def landmarks_dlib(image: np.ndarray, boxes: list) -> np.ndarray:
    """(N, 68, 2) float32 landmarks from dlib's predictor, one set per box, for an RGB uint8 image."""
    from tvface.data.collect.models import dlib_shape_predictor, import_dlib

    dlib = import_dlib()
    predictor = dlib_shape_predictor("landmarks68")
    image = np.ascontiguousarray(image)
    out = np.zeros((len(boxes), 68, 2), np.float32)
    for i, box in enumerate(boxes):
        x0, y0, x1, y1 = dlib_box_from(box)
        shape = predictor(image, dlib.rectangle(x0, y0, x1, y1))
        out[i] = [(p.x, p.y) for p in shape.parts()]
    return out


@functools.lru_cache(maxsize=1)
def _fan():
    import os
    import tempfile

    import torch

    path = assets.require("fan")
    # face-alignment loads its weights through torch.hub's checkpoint folder (<hub>/checkpoints/<file>)
    # and downloads only when the file is missing there: link the asset in, construct, restore.
    hub = path.parent / "torch-hub"
    if not os.access(path.parent, os.W_OK):
        hub = Path(tempfile.mkdtemp(prefix="tvface-hub-"))
    (hub / "checkpoints").mkdir(parents=True, exist_ok=True)
    link = hub / "checkpoints" / path.name
    if link.is_symlink() and not link.exists():  # a dangling link from a moved assets folder
        link.unlink()
    if not link.exists():
        link.symlink_to(path.resolve())
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(hub))
    try:
        import face_alignment

        # The "folder" detector needs no weights (the default SFD downloads its own even when boxes
        # are given); boxes always come from tvface's detector. No torch.compile: one-off CPU runs.
        return face_alignment.FaceAlignment(face_alignment.LandmarksType.TWO_D, device="cpu",
                                            face_detector="folder", flip_input=False, compile=False)
    finally:
        torch.hub.set_dir(previous)


def landmarks_fan(image: np.ndarray, boxes: list) -> np.ndarray:
    """(N, 68, 2) float32 landmarks from 2D-FAN for the given boxes."""
    if not boxes:
        return np.zeros((0, 68, 2), np.float32)
    fa = _fan()
    preds = fa.get_landmarks_from_image(image, detected_faces=[list(b) + [1.0] for b in boxes])
    return np.asarray([np.asarray(p)[:, :2] for p in preds], np.float32).reshape(len(boxes), 68, 2)


def landmark_backend(cfg: DataConfig) -> str:
    """What ``cfg.landmarks`` resolves to here: "fan", "dlib", "mediapipe" or "dlib+mediapipe" (auto
    without 2D-FAN's weights: chosen per face); "auto" with the weights is "fan+mediapipe"."""
    if cfg.landmarks == "auto":
        return "fan+mediapipe" if assets.find("fan") is not None else "dlib+mediapipe"
    if cfg.landmarks == "mediapipe":
        return "mediapipe"
    return assets.resolve_backend("data.landmarks", cfg.landmarks, "fan", "fan", ("dlib",))


def landmark_thresholds(cfg: DataConfig) -> dict:
    """The settings that decide flags and choices (recorded in manifests, part of the rerun signature)."""
    return {"max_error": cfg.landmark_max_error, "min_confidence": cfg.landmark_min_confidence,
            "frontal_yaw": cfg.landmark_frontal_yaw}


def detect_landmarks(image: np.ndarray, boxes: list, backend: str) -> np.ndarray:
    """(N, 68, 2) landmarks for ``boxes`` in an RGB uint8 image with one backend ("fan" | "dlib" |
    "mediapipe"), no confidence: :func:`locate_landmarks` is what collection runs."""
    if backend == "fan":
        return landmarks_fan(image, boxes)
    if backend == "dlib":
        return landmarks_dlib(image, [tuple(map(float, b)) for b in boxes])
    if backend == "mediapipe":
        from tvface.data.collect.mediapipe_mesh import landmarks_mediapipe

        return landmarks_mediapipe(image, boxes)[0]
    raise ValueError(f"unknown landmark backend {backend!r}; one of {BACKENDS}")


@dataclass(frozen=True)
class FaceLandmarks:
    """One face's 68 landmarks (source pixels) with where they came from and how far to trust them."""

    points: np.ndarray  # (68, 2) float32
    backend: str  # the backend that produced ``points``
    pose: HeadPose
    confidence: float  # in [0, 1]
    error: float  # estimated landmark error, % of the frontal eye distance (see the module docstring)
    det_score: float
    face_score: float  # the backend's own face score (mesh face presence; 1 for dlib and FAN)
    flagged: bool
    reason: str | None = None
    others: dict = field(default_factory=dict)  # per other backend tried: error / agreement numbers

    def to_dict(self) -> dict:
        return {"backend": self.backend, "confidence": round(self.confidence, 4), "error": round(self.error, 2),
                "det_score": round(self.det_score, 4), "face_score": round(self.face_score, 4),
                "flagged": self.flagged, "reason": self.reason, **self.pose.to_dict(),
                **{k: round(v, 2) for k, v in self.others.items()}}


def eye_distance_px(pose: HeadPose) -> float:
    """The face's frontal outer-eye-corner distance in pixels (pose scale x the mean face's), the NME
    normaliser that does not shrink with yaw."""
    return pose.scale * MEAN_EYE_DISTANCE_MM


def mean_error(a: np.ndarray, b: np.ndarray, pose: HeadPose) -> float:
    """Mean point distance of two (68, 2) sets in % of the frontal eye distance."""
    return float(np.linalg.norm(np.asarray(a, np.float64) - b, axis=-1).mean() / max(eye_distance_px(pose), 1e-6) * 100)


def _mirrored_run(fn, image: np.ndarray, det) -> np.ndarray:
    """``fn(image, det) -> (68, 2)`` run on the mirrored picture around the face, mapped back."""
    from tvface.data.collect.detect import Detection

    x0, y0, x1, y1 = det.box
    m = 0.5 * max(x1 - x0, y1 - y0)  # half a box side around the face is all dlib and FAN look at
    a0, b0 = int(max(0, np.floor(x0 - m))), int(max(0, np.floor(y0 - m)))
    a1, b1 = int(min(image.shape[1], np.ceil(x1 + m) + 1)), int(min(image.shape[0], np.ceil(y1 + m) + 1))
    region = np.ascontiguousarray(image[b0:b1, a0:a1][:, ::-1])
    w = a1 - a0

    def mx(x: float) -> float:  # x in the source -> x in the mirrored region (pixel centres at integers)
        return w - 1 - (x - a0)

    pts = None
    if det.points is not None:  # MTCNN's eyes, nose, mouth corners, image-left first: mirrored, re-ordered
        pts = tuple((mx(det.points[k][0]), det.points[k][1] - b0) for k in (1, 0, 2, 4, 3))
    mdet = Detection((mx(x1), y0 - b0, mx(x0), y1 - b0), det.score, pts)
    out = np.asarray(fn(region, mdet), np.float64)[MIRROR_68]
    return np.stack([w - 1 - out[:, 0] + a0, out[:, 1] + b0], 1)


def _run(backend: str, image: np.ndarray, det, mirror: bool = False) -> tuple[np.ndarray, float, np.ndarray | None]:
    """(68, 2) points, the backend's face score and (``mirror``) the points of the mirrored face mapped
    back, for one detection."""
    if backend == "mediapipe":
        from tvface.data.collect.mediapipe_mesh import landmarks_mediapipe

        eyes = None if det.points is None else [det.points[:2]]
        r = landmarks_mediapipe(image, [det.box], eyes, mirror=mirror)
        return r[0][0], float(r[1][0]), r[2][0] if mirror else None
    pts = detect_landmarks(image, [det.box], backend)[0]
    back = _mirrored_run(lambda im, d: detect_landmarks(im, [d.box], backend)[0], image, det) if mirror else None
    return pts, 1.0, back


def locate_landmarks(image: np.ndarray, det, cfg: DataConfig, backend: str | None = None) -> FaceLandmarks:
    """Landmarks, head pose, confidence and flag for one :class:`~tvface.data.collect.detect.Detection`
    (``backend`` defaults to :func:`landmark_backend`; see the module docstring for the rule)."""
    backend = backend or landmark_backend(cfg)
    names = backend.split("+")
    if any(n not in BACKENDS for n in names):
        raise ValueError(f"unknown landmark backend {backend!r}; one of {BACKENDS} or 'dlib+mediapipe'/'fan+mediapipe'")
    res: dict[str, dict] = {}

    def consider(name: str, mirror: bool) -> dict:
        pts, score, back = _run(name, image, det, mirror)
        if mirror:  # the mirrored run is averaged in (test-time mirroring) and estimates the error
            pts = (np.asarray(pts, np.float64) + back) / 2
        r = {"points": pts, "face_score": score, "pose": fit_head_pose(pts)}
        if mirror:  # |direct - mirrored| = 2 |direct - average|
            r["error"] = MIRROR_ERROR_SCALE * 2 * mean_error(back, pts, r["pose"])
        res[name] = r
        return r

    if names == ["dlib"]:
        # dlib alone: no second opinion, no mirror test worth the name (its shape prior returns the same
        # frontal-looking points either way): trusted as far as the detector and a pose fit go.
        r = consider("dlib", mirror=False)
        r["error"] = 0.0
        chosen = "dlib"
    elif names == ["dlib", "mediapipe"]:
        mesh, dl = consider("mediapipe", mirror=True), consider("dlib", mirror=False)
        agreement = mean_error(dl["points"], mesh["points"], mesh["pose"])
        dl["error"] = agreement
        frontal = abs(mesh["pose"].yaw) <= cfg.landmark_frontal_yaw
        chosen = "dlib" if frontal and agreement <= cfg.landmark_max_error else "mediapipe"
    else:  # fan, mediapipe, fan+mediapipe: the first whose mirror test passes, else the most consistent
        for name in names:
            if consider(name, mirror=True)["error"] <= cfg.landmark_max_error:
                break
        passing = [n for n in names if res[n]["error"] <= cfg.landmark_max_error]
        chosen = passing[0] if passing else min(res, key=lambda n: res[n]["error"])
    r = res[chosen]
    det_score = float(det.score)
    fit = 0.5 ** ((r["error"] / cfg.landmark_max_error) ** 2)
    confidence = float(np.clip(det_score * r["face_score"] * fit, 0.0, 1.0))
    reason = None
    if confidence < cfg.landmark_min_confidence:
        parts = []
        if r["error"] > cfg.landmark_max_error:
            how = "disagrees with the face mesh" if chosen == "dlib" else "mirror test"
            parts.append(f"estimated error {r['error']:.1f}% > data.landmark_max_error {cfg.landmark_max_error:g}% "
                         f"of the eye distance ({chosen} {how})")
        if r["face_score"] < 0.9:
            parts.append(f"{chosen} face score {r['face_score']:.2f}")
        if det_score < 0.9:
            parts.append(f"detector score {det_score:.2f}")
        reason = (f"confidence {confidence:.2f} < data.landmark_min_confidence {cfg.landmark_min_confidence:g}: "
                  + ("; ".join(parts) or "several small doubts"))
    others = {f"{n}_error": v["error"] for n, v in res.items() if n != chosen and "error" in v}
    return FaceLandmarks(np.asarray(r["points"], np.float32), chosen, r["pose"], confidence, float(r["error"]),
                         det_score, float(r["face_score"]), reason is not None, reason, others)
