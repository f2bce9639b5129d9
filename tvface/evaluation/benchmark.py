"""The synthetic benchmark: every method on the held-out identities, per condition, against ground truth.

Protocol:

* Sequences: those of the identities in the validation side of
  :func:`tvface.data.dataset.split_identities` (the split the training loader uses: by identity,
  never by frame), each paired with its ground truth ``<gt_root>/<identity>/<sequence>/``
  (:mod:`tvface.synthetic.writer`); the condition comes from its ``gt.json``.
* Inputs: what a method may see, the dataset's files only: the JPEG crops and the detected
  landmarks (``kpt/*.npy``), never the ground truth.
* Vertex error (mm): mean distance over the face region (:func:`face_region_vertices`) after a
  similarity alignment of the prediction onto the ground-truth mesh (recomputed from the stored
  parameters with the face model) on that region. Pose, camera and global scale do not count: it
  measures shape, expression and jaw only.
* Landmark NME (%): the 68 projected landmarks against the ground truth's ``lmks_2d_px``,
  normalised by the ground truth's outer-eye-corner distance (:func:`landmark_nme`).
* Acceleration error and jitter (mm/frame^2, :mod:`tvface.evaluation.metrics`): second differences
  of the face region over each sequence's frames, against the ground truth's (after the same
  per-frame alignment) and of the prediction alone (each frame aligned onto the first); averaged
  over the interior frames of every sequence.
* Cost (ms/frame): wall time of ``predict`` over the number of frames, on whatever device the
  method runs.

Statistics are over frames (a condition's mean weights every frame equally); "all" pools every
frame. A method is anything with a ``name`` and ``predict(batch) -> {"verts", "lmks_px"}``
(:class:`Method`); :class:`CallableMethod` wraps a function, e.g. a trained reconstructor.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, NamedTuple, Protocol, Sequence

import cv2
import numpy as np
import torch
from torch import Tensor

from tvface.data import layout
from tvface.data.dataset import normalize_landmarks, split_identities
from tvface.evaluation.fit import DEFAULT_ITERS, DEFAULT_RIGID_ITERS, fit_landmarks, fit_rigid
from tvface.evaluation.metrics import (
    acceleration_error_mm,
    face_region_vertices,
    jitter_mm,
    landmark_nme,
    vertex_error_mm,
)
from tvface.io.atomic import atomic_write_text
from tvface.rendering.camera import orth_to_screen, pixels_to_screen, screen_to_pixels
from tvface.synthetic.sequences import CONDITIONS
from tvface.synthetic.writer import GT_FILE, GT_META, ground_truth_mesh, load_ground_truth

ALL = "all"
FORMAT_VERSION = 1


class BenchmarkSequence(NamedTuple):
    seq_dir: Path  # <root>/<identity>/<sequence>: the method's inputs
    gt_dir: Path  # <gt_root>/<identity>/<sequence>: gt.npz + gt.json
    condition: str


class Method(Protocol):
    """What :func:`evaluate` runs. ``predict`` gets one sequence (see :func:`load_sequence`) and returns
    ``verts`` (T, V, 3) posed vertices in model space (the benchmark's face model topology, metres)
    and ``lmks_px`` (T, 68, 2) landmarks in the input crop's pixels (centres at integers)."""

    name: str

    def predict(self, batch: dict) -> dict[str, Tensor]: ...


def heldout_sequences(root: Path, gt_root: Path, val_fraction: float = 0.2, seed: int = 0
                      ) -> list[BenchmarkSequence]:
    """Sequences of the held-out identities, sorted, each with its ground truth and condition.

    Args:
        root, gt_root: the training root and the ground-truth root (:func:`tvface.synthetic.writer.dataset_roots`).
        val_fraction, seed: the split's settings (``data.val_fraction``, ``data.split_seed``).
    """
    root, gt_root = Path(root), Path(gt_root)
    seqs = layout.list_sequences(root)
    if not seqs:
        raise FileNotFoundError(f"no sequences under {root} (expected <identity>/<sequence>/manifest.json); "
                                "generate the benchmark with `tvface synth generate` first")
    _, val = split_identities(sorted({s.parent.name for s in seqs}), val_fraction, seed)
    if not val:
        raise ValueError(f"no held-out identity among the {len({s.parent.name for s in seqs})} under {root} with "
                         f"val_fraction={val_fraction}, seed={seed}; generate more identities or raise val_fraction")
    out = []
    for s in seqs:
        if s.parent.name not in val:
            continue
        gt_dir = gt_root / s.parent.name / s.name
        if not (gt_dir / GT_META).is_file() or not (gt_dir / GT_FILE).is_file():
            raise FileNotFoundError(f"ground truth of {s} not found at {gt_dir} ({GT_FILE} + {GT_META}); is "
                                    f"{gt_root} the ground-truth root of {root}?")
        meta = json.loads((gt_dir / GT_META).read_text())
        out.append(BenchmarkSequence(s, gt_dir, str(meta["condition"])))
    return out


def load_sequence(seq_dir: Path, image_size: int | None = None, with_native: bool = False) -> dict:
    """All frames of one sequence as a method's input.

    Returns:
        ``image`` (T, 3, S, S) float in [0, 1]; ``landmark`` (T, 68, 3) DECA-normalised detected
        landmarks (:func:`tvface.data.dataset.normalize_landmarks`); ``image_size`` S; ``sequence``
        ``<identity>/<sequence>``. With ``image_size`` the crops are resized to it (the normalised
        landmarks do not change); ``with_native`` adds ``native_image``, the crops at their own size
        (decoded once: the same tensor as ``image`` when no resize was needed).
    """
    seq_dir = Path(seq_dir)
    images, kpts = [], []
    for stem in layout.frame_stems(seq_dir):
        path = layout.image_path(seq_dir, stem)
        img = cv2.imread(str(path))
        if img is None:
            raise FileNotFoundError(f"cannot read frame {path}")
        images.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
        kpts.append(np.load(layout.kpt_path(seq_dir, stem)))
    native = images[0].shape[0]
    size = native if image_size is None else int(image_size)

    def to_tensor(ims: list[np.ndarray]) -> Tensor:  # (T, 3, S, S) float in [0, 1]
        return torch.from_numpy(np.stack(ims).transpose(0, 3, 1, 2).astype(np.float32) / 255)

    out = {"landmark": torch.from_numpy(normalize_landmarks(np.stack(kpts), native)), "image_size": size,
           "sequence": f"{seq_dir.parent.name}/{seq_dir.name}"}
    if size != native:
        if with_native:
            out["native_image"] = to_tensor(images)
        interp = cv2.INTER_AREA if size < native else cv2.INTER_LINEAR
        images = [cv2.resize(im, (size, size), interpolation=interp) for im in images]
    out["image"] = to_tensor(images)
    if with_native and size == native:
        out["native_image"] = out["image"]
    return out


def params_to_prediction(model, params: dict[str, Tensor], image_size: int) -> dict[str, Tensor]:
    """A method's output from model parameters and DECA's camera: posed ``verts`` (T, V, 3) and
    ``lmks_px`` (T, 68, 2), the projected ``lmks_2d`` in the crop's pixels."""
    with torch.no_grad():
        out = model(params["shape"], params["exp"], params["pose"])
        screen = orth_to_screen(out.lmks_2d, params["cam"])[..., :2]  # (T, 68, 2)
    return {"verts": out.verts, "lmks_px": screen_to_pixels(screen, image_size)}


def _warm_up(model) -> None:
    """One tiny fit, so that one-off costs (torch.optim imports torch._dynamo, about 2 s on first use)
    are not charged to the first sequence's ms/frame."""
    z = model.zeros(1)
    with torch.no_grad():
        lmks = orth_to_screen(model(z["shape"], z["exp"], z["pose"]).lmks_2d, z["pose"].new_tensor([[5.0, 0, 0]]))
    target = torch.cat([lmks[..., :2], torch.ones_like(lmks[..., :1])], -1)
    fit_landmarks(model, target, iters=1, rigid_iters=1)


class MeanFaceMethod:
    """The neutral mean face (zero shape and expression) posed and placed on the detected landmarks
    (:func:`tvface.evaluation.fit.fit_rigid`): the floor every reconstruction should beat."""

    name = "mean face"
    codes: dict[str, Tensor] | None = None  # fixed shape / expression (None: zeros)

    def __init__(self, model, iters: int = DEFAULT_ITERS, rigid_iters: int = DEFAULT_RIGID_ITERS) -> None:
        self.model, self.iters, self.rigid_iters = model, iters, rigid_iters
        _warm_up(model)

    def predict(self, batch: dict) -> dict[str, Tensor]:
        params = fit_rigid(self.model, batch["landmark"], iters=self.iters, rigid_iters=self.rigid_iters,
                           codes=self.codes)
        return params_to_prediction(self.model, params, batch["image_size"])


def training_mean_codes(root: Path, gt_root: Path, val_fraction: float = 0.2, seed: int = 0) -> dict[str, Tensor]:
    """The average ground-truth ``shape`` (n_shape,) and ``exp`` (n_exp,) over every frame of the
    *training* identities (the other side of :func:`heldout_sequences`' split)."""
    root, gt_root = Path(root), Path(gt_root)
    seqs = layout.list_sequences(root)
    train, _ = split_identities(sorted({s.parent.name for s in seqs}), val_fraction, seed)
    shape, exp = [], []
    for s in seqs:
        if s.parent.name not in train:
            continue
        arrays, _ = load_ground_truth(gt_root / s.parent.name / s.name)
        t = arrays["exp"].shape[0]
        shape.append(np.broadcast_to(arrays["shape"], (t, arrays["shape"].shape[-1])))  # one identity per sequence
        exp.append(arrays["exp"])
    if not exp:
        raise ValueError(f"no training identity under {root} with val_fraction={val_fraction}, seed={seed}: "
                         "the training mean needs the training side of the split")
    return {"shape": torch.from_numpy(np.concatenate(shape).mean(0)).float(),
            "exp": torch.from_numpy(np.concatenate(exp).mean(0)).float()}


class TrainingMeanMethod(MeanFaceMethod):
    """The best constant face: the training identities' average shape and expression
    (:func:`training_mean_codes`, from their ground truth), posed and placed on the detected landmarks.

    A model that scores near it in vertex error has learned the average face, not to follow the
    input; the landmark NME and the acceleration error tell the two apart."""

    name = "training mean"

    def __init__(self, model, codes: dict[str, Tensor], iters: int = DEFAULT_ITERS,
                 rigid_iters: int = DEFAULT_RIGID_ITERS) -> None:
        super().__init__(model, iters, rigid_iters)
        self.codes = codes


class LandmarkFitMethod:
    """Per-frame optimisation of every parameter to the detected landmarks
    (:func:`tvface.evaluation.fit.fit_landmarks`; ``fit_kwargs`` go to it)."""

    name = "landmark fit"

    def __init__(self, model, iters: int = DEFAULT_ITERS, **fit_kwargs) -> None:
        self.model, self.iters, self.fit_kwargs = model, iters, fit_kwargs
        _warm_up(model)

    def predict(self, batch: dict) -> dict[str, Tensor]:
        params = fit_landmarks(self.model, batch["landmark"], iters=self.iters, **self.fit_kwargs)
        return params_to_prediction(self.model, params, batch["image_size"])


class CallableMethod:
    """A method from a function ``fn(batch) -> {"verts", "lmks_px"}`` (e.g. a trained reconstructor:
    run it on ``batch["image"]`` and pass its parameters and camera to :func:`params_to_prediction`)."""

    def __init__(self, name: str, fn: Callable[[dict], dict[str, Tensor]]) -> None:
        self.name, self.fn = name, fn

    def predict(self, batch: dict) -> dict[str, Tensor]:
        return self.fn(batch)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _check_prediction(name: str, pred: dict, n_frames: int, n_verts: int) -> None:
    want = {"verts": (n_frames, n_verts, 3), "lmks_px": (n_frames, 68, 2)}
    for key, shape in want.items():
        if key not in pred or tuple(pred[key].shape) != shape:
            got = tuple(pred[key].shape) if key in pred else "nothing"
            raise ValueError(f"method {name!r} must return {key} of shape {shape}, got {got}")


def _check_model(model, arrays: dict, meta: dict, gt_dir: Path) -> None:
    model_name = str(meta.get("model_id", model.name)).split(":")[0]
    dims = (arrays["shape"].shape[-1], arrays["exp"].shape[-1])
    if model_name != model.name or dims != (model.n_shape, model.n_exp):
        raise ValueError(f"{gt_dir / GT_META}: ground truth of a {model_name} model with (n_shape, n_exp) = {dims}; "
                         f"the benchmark got a {model.name} model with {(model.n_shape, model.n_exp)}. Evaluate "
                         "with the face model the benchmark was generated with (its face_model section).")


def _conditions(present: set[str]) -> list[str]:
    return list(CONDITIONS) + sorted(present - set(CONDITIONS)) + [ALL]


def _mean(parts: list[np.ndarray]) -> float | None:
    x = np.concatenate(parts) if parts else np.zeros(0)
    return float(x.mean()) if x.size else None


def _stats(vertex_mm: list[np.ndarray], nme: list[np.ndarray], seconds: float,
           accel: list[np.ndarray] = (), jitter: list[np.ndarray] = ()) -> dict:
    v = np.concatenate(vertex_mm) if vertex_mm else np.zeros(0)
    e = np.concatenate(nme) if nme else np.zeros(0)
    if v.size == 0:
        return {"n_frames": 0, "vertex_mm_mean": None, "vertex_mm_median": None, "nme_mean": None,
                "accel_mm_mean": None, "jitter_mm_mean": None, "ms_per_frame": None}
    return {"n_frames": int(v.size), "vertex_mm_mean": float(v.mean()), "vertex_mm_median": float(np.median(v)),
            "nme_mean": float(e.mean()), "accel_mm_mean": _mean(list(accel)), "jitter_mm_mean": _mean(list(jitter)),
            "ms_per_frame": float(seconds * 1000 / v.size)}


def evaluate(methods: Sequence[Method], sequences: Sequence[BenchmarkSequence], model,
             image_size: int | None = None) -> dict:
    """Run every method on every sequence and summarise per method and condition (module docstring).

    Args:
        methods: objects with ``name`` and ``predict`` (:class:`Method`); names must be unique.
        sequences: :func:`heldout_sequences` (evaluated in sorted order).
        model: the face model the benchmark was generated with (ground-truth meshes, face region), on
            the CPU (:func:`ground_truth_mesh` feeds it CPU tensors); a method may run its own copy elsewhere.
        image_size: crop size the methods get (None: the stored size). Landmark errors are measured
            in the ground truth's pixels either way.
    Returns:
        JSON-serialisable ``{"results": [row, ...], "per_sequence": [...], "meta": {...}}``; a row is
        ``{method, condition, n_frames, vertex_mm_mean, vertex_mm_median, nme_mean, ms_per_frame}``,
        rows ordered by method (as given), then condition (:data:`CONDITIONS` order, then "all").
        A condition without frames has ``n_frames`` 0 and null statistics.
    """
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise ValueError(f"method names must be unique, got {names}")
    sequences = sorted(sequences, key=lambda s: (str(s.seq_dir), str(s.gt_dir)))
    region = face_region_vertices(model).cpu()
    acc = {(n, s.condition): {"vertex_mm": [], "nme": [], "accel": [], "jitter": [], "seconds": 0.0}
           for n in names for s in sequences}
    per_sequence = []
    total_frames = 0
    for seq in sequences:
        arrays, meta = load_ground_truth(seq.gt_dir)
        _check_model(model, arrays, meta, seq.gt_dir)
        gt_verts = ground_truth_mesh(model, arrays).cpu()  # (T, V, 3)
        gt_px = torch.as_tensor(np.asarray(arrays["lmks_2d_px"], np.float64))  # (T, 68, 2)
        batch = load_sequence(seq.seq_dir, image_size)
        n_frames = batch["image"].shape[0]
        if n_frames != gt_verts.shape[0]:
            raise ValueError(f"{seq.seq_dir} has {n_frames} frames, its ground truth {seq.gt_dir} "
                             f"{gt_verts.shape[0]}")
        total_frames += n_frames
        if "image_size" not in meta:
            raise ValueError(f"{seq.gt_dir / GT_META} lacks image_size (the crop size of lmks_2d_px)")
        gt_size = int(meta["image_size"])
        for method in methods:
            _sync()
            t0 = time.perf_counter()
            pred = method.predict(batch)
            _sync()  # a GPU method's kernels finish inside its own time
            seconds = time.perf_counter() - t0
            _check_prediction(method.name, pred, n_frames, model.n_verts)
            verts = pred["verts"].detach().cpu().double()
            v_mm = vertex_error_mm(verts, gt_verts.double(), region).numpy()
            accel = acceleration_error_mm(verts, gt_verts.double(), region).numpy()
            jitter = jitter_mm(verts, region).numpy()
            lmks = screen_to_pixels(pixels_to_screen(pred["lmks_px"].detach().cpu().double(), batch["image_size"]),
                                    gt_size)  # the method's crop -> the ground truth's pixels
            nme = landmark_nme(lmks, gt_px).numpy()
            a = acc[(method.name, seq.condition)]
            a["vertex_mm"].append(v_mm)
            a["nme"].append(nme)
            a["accel"].append(accel)
            a["jitter"].append(jitter)
            a["seconds"] += seconds
            per_sequence.append({"method": method.name, "sequence": batch["sequence"], "condition": seq.condition,
                                 **_stats([v_mm], [nme], seconds, [accel], [jitter])})
    rows = []
    for name in names:
        for cond in _conditions({s.condition for s in sequences}):
            sel = [a for k, a in acc.items() if k[0] == name and (cond == ALL or k[1] == cond)]
            rows.append({"method": name, "condition": cond,
                         **_stats([x for a in sel for x in a["vertex_mm"]], [x for a in sel for x in a["nme"]],
                                  sum(a["seconds"] for a in sel), [x for a in sel for x in a["accel"]],
                                  [x for a in sel for x in a["jitter"]])})
    meta = {"format_version": FORMAT_VERSION, "face_model": model.name, "n_verts": model.n_verts,
            "face_region_verts": int(region.numel()), "methods": names, "n_sequences": len(sequences),
            "n_frames": total_frames, "image_size": image_size,
            "sequences": [{"sequence": f"{s.seq_dir.parent.name}/{s.seq_dir.name}", "condition": s.condition}
                          for s in sequences],
            "units": {"vertex_mm": "mm, mean per-vertex distance on the face region after similarity alignment "
                                   "(shape + expression + jaw; pose and scale removed)",
                      "nme": "% of the ground truth's outer-eye-corner distance (landmarks 36, 45)",
                      "accel_mm": "mm/frame^2, mean |second difference of the aligned prediction - that of the "
                                  "ground truth| on the face region, interior frames",
                      "jitter_mm": "mm/frame^2, mean |second difference| of the prediction on the face region, "
                                   "each frame aligned onto the sequence's first",
                      "ms_per_frame": "wall time of predict / frames"}}
    return {"results": rows, "per_sequence": per_sequence, "meta": meta}


def _fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def to_markdown(result: dict) -> str:
    """Tables for people: conditions as rows, methods side by side (vertex error, NME, acceleration
    error, jitter), then cost."""
    rows = result["results"]
    names = result["meta"]["methods"]
    conds = list(dict.fromkeys(r["condition"] for r in rows))
    cell = {(r["method"], r["condition"]): r for r in rows}
    head = (["condition", "frames"] + [f"{n}: vertex mm (mean / median)" for n in names]
            + [f"{n}: NME %" for n in names] + [f"{n}: accel / jitter mm/f²" for n in names])
    lines = ["Face-region vertex error in mm (after similarity alignment: shape, expression and jaw only), "
             "landmark NME in % of the outer-eye-corner distance, acceleration error and jitter in mm/frame², "
             "on the held-out identities.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in conds:
        first = cell[(names[0], c)] if names else {"n_frames": 0}
        vals = [f"{_fmt(cell[(n, c)]['vertex_mm_mean'])} / {_fmt(cell[(n, c)]['vertex_mm_median'])}" for n in names]
        vals += [_fmt(cell[(n, c)]["nme_mean"]) for n in names]
        vals += [f"{_fmt(cell[(n, c)].get('accel_mm_mean'), 3)} / {_fmt(cell[(n, c)].get('jitter_mm_mean'), 3)}"
                 for n in names]
        label = f"**{c}**" if c == ALL else c
        lines.append("| " + " | ".join([label, str(first["n_frames"])] + vals) + " |")
    lines += ["", "| method | cost (ms/frame, all frames) |", "|---|---|"]
    lines += [f"| {n} | {_fmt(cell[(n, ALL)]['ms_per_frame'], 1)} |" for n in names]
    return "\n".join(lines) + "\n"


def write_results(result: dict, json_path: Path, md_path: Path | None = None) -> None:
    """Write the result as JSON (and the :func:`to_markdown` tables), each file atomically."""
    atomic_write_text(json_path, json.dumps(result, indent=1) + "\n")
    if md_path is not None:
        atomic_write_text(md_path, to_markdown(result))
