"""Landmark accuracy of the collection's landmark backends: NME against ground truth, flags apart.

NME = mean point-to-point error / inter-ocular distance (outer eye corners, iBUG points 37 and 46,
1-based), in percent: the convention of the shared stills' README. Every backend is measured on the
same detections; a face the backend **flagged** is counted apart (its NME is still reported, but it
is not in the "unflagged" summaries), and a still whose annotated face was not detected is **missed**
(no NME: the points would belong to another face).

Ground truth read here: iBUG ``.pts`` (1-based, converted) and AFLW2000-3D ``.mat`` (``pt3d_68`` x, y
as given; ``Pose_Para`` pitch, yaw, roll in radians). Yaw bins use the annotation's yaw where it has
one (AFLW2000-3D), else the head pose fitted to the ground-truth points
(:func:`tvface.data.collect.headpose.fit_head_pose`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tvface.config import DataConfig
from tvface.data import layout
from tvface.data.collect.detect import detect_faces
from tvface.data.collect.headpose import fit_head_pose
from tvface.data.collect.landmarks import locate_landmarks
from tvface.data.collect.sources import read_image

OUTER_EYE_CORNERS = (36, 45)  # 0-based indices of iBUG points 37 and 46
YAW_BINS = ((0, 30), (30, 45), (45, 60), (60, 90))  # |yaw| in degrees
PASS_NME = 12.0  # % : the bar for a usable landmark set
MIN_OVERLAP = 0.3  # a detection covering less of the annotated face's extent is another face
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".ppm", ".bmp")
# What `auto` means here: the configured data.landmarks with every backend measured beside it.
STILL_BACKENDS = ("dlib", "mediapipe", "auto")


def read_pts(path: Path) -> np.ndarray:
    """(N, 2) landmarks from an iBUG .pts file, converted from 1-based to 0-based pixel centres."""
    path = Path(path)
    lines = path.read_text().splitlines()
    try:
        start = next(i for i, l in enumerate(lines) if l.strip() == "{") + 1
        end = next(i for i, l in enumerate(lines) if l.strip() == "}")
        return np.array([[float(v) for v in l.split()[:2]] for l in lines[start:end]]) - 1.0
    except (StopIteration, ValueError) as exc:
        raise ValueError(f"{path}: not an iBUG .pts file (expected '{{', one 'x y' line per point, '}}')") from exc


def read_ground_truth(folder: Path) -> tuple[Path, np.ndarray, float | None]:
    """(image, (68, 2) landmarks, annotated yaw in degrees or None) of one stills folder."""
    folder = Path(folder)
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    pts, mats = sorted(folder.glob("*.pts")), sorted(folder.glob("*.mat"))
    if not images or not (pts or mats):
        raise ValueError(f"{folder}: expected an image and a .pts or .mat annotation")
    if pts:
        return images[0], read_pts(pts[0]), None
    import scipy.io

    m = scipy.io.loadmat(mats[0])
    if "pt3d_68" not in m:
        raise ValueError(f"{mats[0]}: no pt3d_68 (not an AFLW2000-3D annotation)")
    yaw = float(np.degrees(m["Pose_Para"].ravel()[1])) if "Pose_Para" in m else None
    return images[0], np.asarray(m["pt3d_68"][:2].T, np.float64), yaw


def nme(pred: np.ndarray, gt: np.ndarray) -> float:
    """Normalised mean error in percent (inter-ocular, outer corners)."""
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if pred.shape != gt.shape or pred.shape[-2:] != (68, 2):
        raise ValueError(f"expected two (68, 2) landmark arrays, got {pred.shape} and {gt.shape}")
    iod = np.linalg.norm(gt[OUTER_EYE_CORNERS[0]] - gt[OUTER_EYE_CORNERS[1]])
    return float(np.linalg.norm(pred - gt, axis=-1).mean() / iod * 100)


def yaw_bin(yaw: float) -> str:
    a = min(abs(yaw), 90.0)
    lo, hi = next(b for b in YAW_BINS if a < b[1] or b[1] == 90)
    return f"{lo}-{hi}"


def annotated_face(image: np.ndarray, gt: np.ndarray, cfg: DataConfig):
    """The configured detector's detection of the annotated face (None: missed), the one covering the
    ground truth's extent most, if it covers at least :data:`MIN_OVERLAP` of it."""
    dets = detect_faces([image], cfg)[0]
    lo, hi = gt.min(0), gt.max(0)
    area = max(float(np.prod(hi - lo)), 1e-6)

    def overlap(d) -> float:
        x0, y0 = max(lo[0], d.box[0]), max(lo[1], d.box[1])
        x1, y1 = min(hi[0], d.box[2]), min(hi[1], d.box[3])
        return max(0.0, x1 - x0) * max(0.0, y1 - y0) / area

    det = max(dets, key=overlap, default=None)
    return det if det is not None and overlap(det) >= MIN_OVERLAP else None


def _backend_name(name: str, cfg: DataConfig) -> str | None:
    """``auto`` -> the configured rule; a named backend as itself."""
    from tvface.data.collect.landmarks import landmark_backend

    return landmark_backend(cfg) if name == "auto" else name


def _measure(image: np.ndarray, det, gt: np.ndarray, cfg: DataConfig, backends: tuple[str, ...]) -> dict:
    out = {}
    for name in backends:
        r = locate_landmarks(image, det, cfg, _backend_name(name, cfg))
        out[name] = {"nme": nme(r.points, gt), "flagged": r.flagged, "reason": r.reason, "used": r.backend,
                     "confidence": round(r.confidence, 4), "yaw_estimate": round(r.pose.yaw, 1),
                     "points": np.round(r.points, 2).tolist()}
    return out


def evaluate_still(folder: Path, cfg: DataConfig, backends: tuple[str, ...] = STILL_BACKENDS) -> dict:
    """Per backend: NME, flag and chosen backend on one stills folder (image + annotation)."""
    image_path, gt, yaw = read_ground_truth(folder)
    image, err = read_image(image_path)
    if image is None:
        raise ValueError(f"{image_path}: {err}")
    if yaw is None:
        yaw = fit_head_pose(gt).yaw
    det = annotated_face(image, gt, cfg)
    res = {"image": str(image_path), "detector": cfg.detector, "yaw": round(yaw, 1), "yaw_bin": yaw_bin(yaw),
           "missed": det is None, "backends": {}}
    if det is not None:
        res["backends"] = _measure(image, det, gt, cfg, backends)
    return res


def evaluate_sequence(seq_dir: Path, cfg: DataConfig, backends: tuple[str, ...] = STILL_BACKENDS) -> dict:
    """Per frame and backend, NME against a sequence folder's stored keypoints (e.g. the report's 2D-FAN
    points in ``tv-sample/id1``), detecting on the stored crops."""
    seq_dir = Path(seq_dir)
    frames = []
    for stem in layout.frame_stems(seq_dir):
        image, _ = read_image(layout.image_path(seq_dir, stem))
        gt = np.load(layout.kpt_path(seq_dir, stem))[:, :2].astype(np.float64)
        yaw = fit_head_pose(gt).yaw
        det = annotated_face(image, gt, cfg)
        frames.append({"frame": stem, "yaw": round(yaw, 1), "yaw_bin": yaw_bin(yaw), "missed": det is None,
                       "backends": {} if det is None else _measure(image, det, gt, cfg, backends)})
    return {"sequence": str(seq_dir), "detector": cfg.detector, "frames": frames}


def summarise(items: list[dict], backends: tuple[str, ...]) -> dict:
    """Per backend: counts (faces, missed, flagged, unflagged above the pass mark), median and mean NME
    over every detected face and over the unflagged ones, and the same by yaw bin."""
    def stats(rows: list[dict], name: str) -> dict:
        got = [r["backends"][name] for r in rows if not r["missed"]]
        all_nme = [g["nme"] for g in got]
        ok = [g["nme"] for g in got if not g["flagged"]]
        return {"n": len(rows), "missed": sum(r["missed"] for r in rows), "flagged": sum(g["flagged"] for g in got),
                "unflagged_over_pass": sum(v > PASS_NME for v in ok),
                "median": float(np.median(all_nme)) if all_nme else None,
                "median_unflagged": float(np.median(ok)) if ok else None,
                "mean_unflagged": float(np.mean(ok)) if ok else None}

    out = {}
    for name in backends:
        s = stats(items, name)
        s["by_yaw"] = {f"{lo}-{hi}": stats([r for r in items if r["yaw_bin"] == f"{lo}-{hi}"], name)
                       for lo, hi in YAW_BINS}
        out[name] = s
    return out


def evaluate_landmarks(media: Path, cfg: DataConfig, backends: tuple[str, ...] = STILL_BACKENDS) -> dict:
    """Every stills folder under ``<media>/stills`` and ``<media>/tv-sample/id1``, per backend, with
    summaries (the issue's numbers)."""
    media = Path(media)
    stills_dir = media / "stills"
    if not stills_dir.is_dir():
        raise FileNotFoundError(f"{stills_dir}: no stills folder (expected the shared media folder, holding "
                                "stills/<name>/<image + .pts|.mat> and tv-sample/id1)")
    stills = {d.name: evaluate_still(d, cfg, backends) for d in sorted(stills_dir.iterdir()) if d.is_dir()}
    res = {"detector": cfg.detector, "backends": list(backends), "auto_rule": _backend_name("auto", cfg),
           "pass_nme": PASS_NME, "stills": stills, "stills_summary": summarise(list(stills.values()), backends)}
    seq = media / "tv-sample" / "id1"
    if seq.is_dir():
        res["tv_sample_id1"] = evaluate_sequence(seq, cfg, backends)
        res["tv_sample_summary"] = summarise(res["tv_sample_id1"]["frames"], backends)
    return res


def _f(v, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def markdown_report(res: dict) -> str:
    """Tables for people: NME per still and backend (F = flagged, the backend ``auto`` used in brackets),
    then the summaries overall and by yaw bin."""
    names = res["backends"]
    lines = [f"Detector {res['detector']}; auto = {res['auto_rule']}; F = flagged (counted apart); "
             f"pass mark {res['pass_nme']:g} % NME.", "",
             "| still | yaw | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for name, r in res["stills"].items():
        cells = []
        for b in names:
            if r["missed"]:
                cells.append("missed")
                continue
            g = r["backends"][b]
            used = f" ({g['used']})" if b == "auto" else ""
            cells.append(f"{g['nme']:.1f}{' F' if g['flagged'] else ''}{used}")
        lines.append(f"| {name} | {r['yaw']:.0f} | " + " | ".join(cells) + " |")
    for title, key in (("stills", "stills_summary"), ("tv-sample/id1 (vs the report's 2D-FAN)", "tv_sample_summary")):
        if key not in res:
            continue
        lines += ["", f"Summary, {title}:", "",
                  "| backend | faces | missed | flagged | unflagged > pass | median | median unflagged | "
                  + " | ".join(f"{lo}-{hi} deg (unflagged/n)" for lo, hi in YAW_BINS) + " |",
                  "|---|---|---|---|---|---|---|" + "---|" * len(YAW_BINS)]
        for b, s in res[key].items():
            bins = [f"{_f(v['median_unflagged'])} ({v['n'] - v['missed'] - v['flagged']}/{v['n']})"
                    for v in s["by_yaw"].values()]
            lines.append(f"| {b} | {s['n']} | {s['missed']} | {s['flagged']} | {s['unflagged_over_pass']} | "
                         f"{_f(s['median'])} | {_f(s['median_unflagged'])} | " + " | ".join(bins) + " |")
    return "\n".join(lines)
