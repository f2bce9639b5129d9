"""``tvface reconstruct``: 3D faces out of a clip, a folder of frames or a collected dataset.

    tvface reconstruct INPUT --checkpoint C --out DIR [--encoder per-frame|temporal] [--detail]

INPUT is a video file or a folder of frames / face patches (run through the collection pipeline:
shots, detection, the one-character rule, tracks, crops, landmarks; see :mod:`tvface.data.collect`),
or a collected dataset / one sequence folder (used as it is). Every track (collected sequence) is
reconstructed on its own: a per-frame encoder frame by frame, a temporal encoder in sliding windows
over the whole track, so every frame gets a result.

Output, per track ``DIR/tracks/<identity>__<sequence>/``, written into ``<name>.partial/`` and renamed
when complete (a killed run leaves no half track; a rerun skips finished tracks and redoes the rest)::

    params.npz          every code block (T, n), cam (T, 3), landmarks in crop pixels (T, 68, 2),
                        frame names, source frame numbers
    meshes/NNNNN.obj    coarse mesh per frame (metres, the face model's topology), or .ply
    meshes_detail/      with --detail: the mesh displaced by the UV displacement along its normals
    blendshapes.csv     ICT-FaceKit: the 53 ARKit-style blendshape weights per frame (tvface.io.exports)
    uv_disp/NNNNN.png   with --detail: 16-bit UV displacement maps
    overlay.mp4         input | landmarks (detected green, predicted red) | shape over the frame,
                        at the source's frame rate
    track.json          frames, source, timings

and ``DIR/manifest.json``: inputs with their hashes, checkpoint (path, sha256), resolved config,
versions, tracks and skipped inputs with the reason.
"""
from __future__ import annotations

import hashlib
import json
import logging
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from tvface.config import ProfileConfig, config_to_dict, load_config, with_legacy_values
from tvface.data import layout
from tvface.io.atomic import atomic_save_npz, atomic_write_text

log = logging.getLogger(__name__)
ENCODER_NAMES = {"per-frame": "resnet", "temporal": "temporal"}
MESH_FORMATS = ("obj", "ply")
DEFAULT_FPS = 25.0
FORMAT_VERSION = 1


class ReconstructError(ValueError):
    """The inputs or the checkpoint cannot be used; the message names the file and the fix."""


@dataclass
class ReconstructSettings:
    checkpoint: Path
    profile: str = "cpu-demo"
    encoder: str | None = None  # "per-frame" | "temporal" | None (the checkpoint's)
    detail: bool = False
    mesh_format: str = "obj"
    overlay: bool = True
    overrides: Sequence[str] = ()

    def __post_init__(self) -> None:
        if self.encoder is not None and self.encoder not in ENCODER_NAMES:
            raise ReconstructError(f"--encoder must be one of {sorted(ENCODER_NAMES)}, got {self.encoder!r}")
        if self.mesh_format not in MESH_FORMATS:
            raise ReconstructError(f"--mesh must be one of {MESH_FORMATS}, got {self.mesh_format!r}")


@dataclass
class Summary:
    tracks: int = 0
    tracks_skipped_done: int = 0
    frames: int = 0
    seconds: float = 0.0
    skipped: list[dict] = field(default_factory=list)  # {"input", "reason"}

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {"tracks": self.tracks, "tracks_already_done": self.tracks_skipped_done, "frames": self.frames,
                "seconds": round(self.seconds, 2), "frames_per_s": round(self.fps, 2), "skipped": self.skipped}


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def input_hash(path: Path) -> str:
    """sha256 of a file, or of a folder's sorted (relative path, size, content hash) list."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        h.update(f"{p.relative_to(path)}:{p.stat().st_size}:{sha256_file(p)}\n".encode())
    return h.hexdigest()


# --------------------------------------------------------------------------- model
def load_model(settings: ReconstructSettings, assets_root=None):
    """(reconstructor in eval mode, its config, a description) from a tvface checkpoint (run folder or
    .pt: its stored config is used) or DECA's ``deca_model.tar`` (the FLAME profile's model)."""
    from tvface.models.reconstructor import build_reconstructor

    path = Path(settings.checkpoint)
    if path.suffix == ".tar":  # DECA's released weights
        cfg = load_config(settings.profile, list(settings.overrides))
        if cfg.face_model.kind != "flame":
            raise ReconstructError(f"{path}: DECA's weights are for FLAME; pass --profile gpu-full (or paper) "
                                   f"with the FLAME assets, not {cfg.name} ({cfg.face_model.kind})")
        if settings.encoder == "temporal":
            raise ReconstructError(f"{path}: DECA's weights are per-frame encoders; use --encoder per-frame")
        from tvface.models.deca_weights import load_deca_weights

        model = build_reconstructor(cfg, assets_root)
        load_deca_weights(model, path)
        return model.eval(), cfg, {"kind": "deca", "path": str(path), "sha256": sha256_file(path)}
    from tvface.training.checkpoint import check_compatible, load_checkpoint
    from tvface.training.trainer import load_trainable_state

    ckpt = load_checkpoint(path)
    file = path / "last.pt" if path.is_dir() else path
    stored = ckpt.get("config")
    if not isinstance(stored, dict):
        raise ReconstructError(f"{file}: the checkpoint carries no config; retrain with this tvface version")
    stored = with_legacy_values(stored)  # e.g. a temporal run saved before temporal.head_stride existed
    cfg = load_config(settings.profile, {**_flatten(stored), **_flatten_overrides(settings.overrides)})
    want = ENCODER_NAMES.get(settings.encoder) if settings.encoder else None
    if want is not None and want != cfg.model.encoder:
        have = {v: k for k, v in ENCODER_NAMES.items()}[cfg.model.encoder]
        raise ReconstructError(f"{file} holds a {have} encoder, not {settings.encoder}: pass a checkpoint trained "
                               f"with model.encoder={want}, or --encoder {have}")
    model = build_reconstructor(cfg, assets_root)
    check_compatible(ckpt, model.describe(), file)
    load_trainable_state(model, ckpt["model"], file)
    return model.eval(), cfg, {"kind": "tvface", "path": str(file), "sha256": sha256_file(file),
                               "global_step": ckpt.get("global_step"), "stages_done": ckpt.get("done")}


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _flatten_overrides(items: Sequence[str]) -> dict:
    from tvface.config import parse_overrides

    return _flatten(parse_overrides(list(items)))


# --------------------------------------------------------------------------- inputs -> tracks
def find_tracks(inputs: Sequence[Path], cfg: ProfileConfig, out: Path) -> tuple[list[Path], list[dict]]:
    """Collected sequences for the inputs (collection runs where needed; resumable in ``out/work``)
    and the inputs (or sources) that gave none, with the reason."""
    from tvface.data.collect.pipeline import collect

    tracks, skipped, to_collect = [], [], []
    for p in map(Path, inputs):
        if not p.exists():
            skipped.append({"input": str(p), "reason": "not found"})
        elif p.is_dir() and layout.list_sequences(p):  # a collected dataset (its root has a manifest too)
            tracks += layout.list_sequences(p)
        elif layout.is_sequence_dir(p):
            tracks.append(p)
        elif p.is_dir() and any(layout.is_sequence_dir(c) for c in p.iterdir()):  # one identity of a dataset
            tracks += sorted(c for c in p.iterdir() if layout.is_sequence_dir(c))
        else:
            to_collect.append(p)
    if to_collect:
        root = out / "collected"
        report = collect(to_collect, cfg.data, root, out / "work")
        tracks += layout.list_sequences(root)
        for src in report.get("sources", []):
            if src.get("n_sequences", 0) == 0:
                reasons = src.get("rejected_frames_by_reason") or {}
                top = max(reasons, key=reasons.get) if reasons else "no sequence kept"
                why = report.get("reasons", {}).get(top, top)
                skipped.append({"input": src.get("source", src.get("name")), "reason": f"no track: {why}"})
    return tracks, skipped


def track_name(seq_dir: Path) -> str:
    return f"{seq_dir.parent.name}__{seq_dir.name}"


def source_fps(seq_dir: Path) -> float:
    """Frame rate of the track's source video (DEFAULT_FPS for frames and patches)."""
    from tvface.data.collect.sources import SourceError, video_info

    src = layout.read_manifest(seq_dir).get("source", {})
    if src.get("kind") == "video" and src.get("path"):
        try:
            fps = video_info(Path(src["path"]))["fps"]
            if fps > 0:
                return float(fps)
        except SourceError:
            pass
    return DEFAULT_FPS


# --------------------------------------------------------------------------- one track
def vertex_uv_index(model) -> torch.Tensor:
    """(V,) one UV coordinate index per vertex (the face corners' uv_faces; seams: any one of them)."""
    r = model.renderer
    idx = torch.zeros(model.face_model.n_verts, dtype=torch.long)
    idx[r.faces.reshape(-1).cpu()] = r.uv_faces.reshape(-1).cpu()
    return idx


def displaced_vertices(model, verts: torch.Tensor, uv_disp: torch.Tensor) -> torch.Tensor:
    """(N, V, 3) vertices moved along their normals by the UV displacement sampled at their UV
    coordinate (DECA's eq. 3 per vertex; the detail region mask and fixed displacement applied)."""
    from tvface.rendering.mesh import vertex_normals

    disp = uv_disp
    if model.uv_mask is not None:
        disp = disp * F.interpolate(model.uv_mask.to(disp), size=disp.shape[-2:], mode="nearest")
    if model.fixed_disp is not None:
        disp = disp + F.interpolate(model.fixed_disp[None, None].to(disp), size=disp.shape[-2:], mode="bilinear",
                                    align_corners=False)
    uv = model.renderer.uv_coords[vertex_uv_index(model)].to(disp)  # (V, 2), origin bottom-left
    grid = torch.stack([uv[:, 0] * 2 - 1, 1 - uv[:, 1] * 2], -1)[None, None].expand(len(disp), 1, -1, 2)
    d = F.grid_sample(disp, grid, mode="bilinear", align_corners=False)[:, 0, 0]  # (N, V)
    return verts + d[..., None] * vertex_normals(verts, model.renderer.faces)


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    """(T, 3, H, W) float in [0, 1] -> (T, H, W, 3) uint8 (round half up)."""
    return (images.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def _draw_points(img: np.ndarray, points_screen: torch.Tensor, color: tuple[int, int, int], radius: int = 1) -> None:
    """Draw (T, K, 2) screen points ([-1, 1]) as (2r+1)^2 squares into (T, H, W, 3) uint8 images, in place."""
    from tvface.rendering.camera import screen_to_pixels

    t, h, w = img.shape[:3]
    px = screen_to_pixels(points_screen.float(), h, w).round().long().numpy()  # (T, K, 2), centres at integers
    b = np.broadcast_to(np.arange(t)[:, None], px.shape[:2])
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            img[b, np.clip(px[..., 1] + dy, 0, h - 1), np.clip(px[..., 0] + dx, 0, w - 1)] = color


def _shape_renderer(model, size: int):
    """The model's renderer at ``size`` pixels (the overlay is drawn at the crops' own resolution, not
    at the encoder's input size): screen coordinates do not depend on it. Built once per size."""
    if size == model.renderer.image_size:
        return model.renderer
    cache = model.__dict__.setdefault("_overlay_renderers", {})
    if size not in cache:
        from tvface.rendering import MeshRenderer

        fm = model.face_model
        cache[size] = MeshRenderer(fm.faces, fm.uv_coords, fm.uv_faces, size, 8, backend=model.renderer.backend)
    return cache[size]


def _overlay_frames(model, dec, frames: torch.Tensor, detected: torch.Tensor) -> np.ndarray:
    """(T, H, 3W, 3) uint8 RGB: input | detected (green) + predicted (red) landmarks | shape over the frame,
    at the size of ``frames``.

    The shape is DECA's grey render shaded per triangle
    (:meth:`tvface.rendering.renderer.MeshRenderer.render_shape_flat`: no vertex normals or barycentrics),
    written into the covered pixels of a uint8 copy of the frame: the overlay costs a fraction of the
    encoder (``benchmarks/bench_reconstruct.py``).
    """
    pix_idx, grey = _shape_renderer(model, frames.shape[-1]).render_shape_flat(dec.verts, dec.screen_verts)
    inp = _to_uint8(frames)
    over = inp.copy()
    over.reshape(-1, 3)[pix_idx.numpy()] = (grey.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()[:, None]
    lm = inp.copy()
    _draw_points(lm, detected[..., :2], (0, 255, 0))
    _draw_points(lm, dec.lmks_2d, (255, 0, 0))
    return np.concatenate([inp, lm, over], axis=2)


def write_video(path: Path, frames_rgb: np.ndarray, fps: float) -> None:
    """(T, H, W, 3) uint8 RGB -> MP4 (mp4v) at ``fps``, written beside and renamed (atomic)."""
    import cv2

    tmp = path.with_name(path.name + ".tmp.mp4")
    h, w = frames_rgb.shape[1:3]
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
    if not writer.isOpened():
        raise OSError(f"{path}: OpenCV cannot write MP4 here (no mp4v encoder)")
    try:
        for f in frames_rgb:
            writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    tmp.replace(path)


def reconstruct_track(model, seq_dir: Path, out_dir: Path, settings: ReconstructSettings, key: str) -> int:
    """Reconstruct one track into ``out_dir`` (via ``out_dir.partial``); returns its frame count."""
    from tvface.evaluation.benchmark import load_sequence
    from tvface.io.exports import write_blendshape_csv, write_displacement_png, write_obj, write_ply
    from tvface.rendering.camera import screen_to_pixels

    t0 = time.perf_counter()
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    batch = load_sequence(seq_dir, model.image_size, with_native=settings.overlay)  # the overlay: crops' own size
    manifest = layout.read_manifest(seq_dir)
    names = layout.frame_stems(seq_dir)
    src_frames = [f.get("source_frame") for f in manifest.get("frames", [])] or [None] * len(names)
    frames = batch["image"]  # (T, 3, S, S)
    with torch.no_grad():
        codes = model.encode_sequence(frames[None], with_detail=settings.detail)
        dec = model.decode(codes, render=False)  # geometry; the overlay renders the shape alone
    flat = codes.flat()
    t = frames.shape[0]
    params = {k: v.numpy() for k, v in flat.items()}
    params.update(cam=dec.params["cam"].numpy(), lmks_px=screen_to_pixels(dec.lmks_2d, batch["image_size"]).numpy(),
                  frames=np.array(names), source_frames=np.array([-1 if s is None else s for s in src_frames]))
    atomic_save_npz(tmp / "params.npz", **params)
    faces = model.face_model.faces.cpu().numpy()
    write = write_obj if settings.mesh_format == "obj" else write_ply
    (tmp / "meshes").mkdir()
    verts = dec.verts.numpy()
    for name, v in zip(names, verts):
        write(tmp / "meshes" / f"{name}.{settings.mesh_format}", v, faces)
    if settings.detail:
        (tmp / "meshes_detail").mkdir()
        (tmp / "uv_disp").mkdir()
        with torch.no_grad():  # the UV displacement (eq. 3) of every frame
            uv_disp = model.displacement(dec.params)
            detailed = displaced_vertices(model, dec.verts, uv_disp).numpy()
        scale = model.detail_decoder.out_scale
        for name, v, d in zip(names, detailed, uv_disp[:, 0].numpy()):
            write(tmp / "meshes_detail" / f"{name}.{settings.mesh_format}", v, faces)
            write_displacement_png(tmp / "uv_disp" / f"{name}.png", d, scale)
    if hasattr(model.face_model, "expression_weights"):  # ICT: the weights that drive the mesh
        with torch.no_grad():
            w = model.face_model.expression_weights(flat["exp"], flat["pose"]).numpy()
        write_blendshape_csv(tmp / "blendshapes.csv", w, model.face_model.expression_names, names, src_frames)
    fps = source_fps(seq_dir)
    if settings.overlay:  # at the crops' own size (the encoder may see them smaller)
        with torch.no_grad():
            strip = _overlay_frames(model, dec, batch["native_image"], batch["landmark"])
        write_video(tmp / "overlay.mp4", strip, fps)
    atomic_write_text(tmp / "track.json", json.dumps({
        "key": key, "sequence": str(seq_dir), "frames": t, "fps": fps, "source": manifest.get("source"),
        "encoder": type(model.encoder).__name__, "detail": settings.detail, "mesh_format": settings.mesh_format,
        "seconds": round(time.perf_counter() - t0, 3)}, indent=1) + "\n")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.replace(out_dir)
    return t


def _done(out_dir: Path, key: str) -> bool:
    meta = out_dir / "track.json"
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text()).get("key") == key
    except (OSError, json.JSONDecodeError):
        return False


def reconstruct(inputs: Sequence[Path], out: Path, settings: ReconstructSettings, progress: bool = True,
                assets_root=None) -> Summary:
    """Everything ``tvface reconstruct`` does; returns the summary (also in ``out/manifest.json``)."""
    from tqdm.auto import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model, cfg, ckpt_info = load_model(settings, assets_root)
    t_start = time.perf_counter()
    tracks, skipped = find_tracks(inputs, cfg, out)
    # What makes a finished track reusable: the checkpoint and every output setting.
    key = hashlib.sha256(json.dumps({"ckpt": ckpt_info["sha256"], "detail": settings.detail,
                                     "mesh": settings.mesh_format, "overlay": settings.overlay,
                                     "overrides": list(settings.overrides)}, sort_keys=True).encode()).hexdigest()[:16]
    summary = Summary(skipped=skipped)
    done_tracks = []
    bar = tqdm(tracks, desc="reconstruct", unit="track", disable=not progress, dynamic_ncols=True)
    for seq_dir in bar:
        dest = out / "tracks" / track_name(seq_dir)
        if _done(dest, key):
            summary.tracks_skipped_done += 1
            done_tracks.append({"track": dest.name, "sequence": str(seq_dir), "reused": True})
            continue
        t0 = time.perf_counter()
        try:
            n = reconstruct_track(model, seq_dir, dest, settings, key)
        except (OSError, ValueError) as exc:  # one bad track: say why, go on with the others
            shutil.rmtree(dest.with_name(dest.name + ".partial"), ignore_errors=True)
            summary.skipped.append({"input": str(seq_dir), "reason": f"{type(exc).__name__}: {exc}"})
            continue
        summary.seconds += time.perf_counter() - t0
        summary.tracks += 1
        summary.frames += n
        done_tracks.append({"track": dest.name, "sequence": str(seq_dir), "frames": n})
        bar.set_postfix(fps=f"{summary.fps:.1f}")
    import tvface

    atomic_write_text(out / "manifest.json", json.dumps({
        "format_version": FORMAT_VERSION,
        "inputs": [{"path": str(p), "sha256": input_hash(Path(p)) if Path(p).exists() else None} for p in inputs],
        "checkpoint": ckpt_info, "settings": {"encoder": type(model.encoder).__name__, "detail": settings.detail,
                                              "mesh_format": settings.mesh_format, "overlay": settings.overlay},
        "config": config_to_dict(cfg), "versions": {"tvface": getattr(tvface, "__version__", "dev"),
                                                    "torch": torch.__version__, "python": platform.python_version()},
        "tracks": done_tracks, "summary": summary.to_dict(),
        "wall_s": round(time.perf_counter() - t_start, 2)}, indent=1) + "\n")
    return summary


def _cmd_reconstruct(args) -> int:
    logging.basicConfig(level=logging.WARNING, format="tvface: %(message)s")
    settings = ReconstructSettings(checkpoint=Path(args.checkpoint), profile=args.profile, encoder=args.encoder,
                                   detail=args.detail, mesh_format=args.mesh, overlay=not args.no_overlay,
                                   overrides=tuple(args.set))
    s = reconstruct([Path(p) for p in args.inputs], Path(args.out), settings, progress=not args.quiet)
    print(f"tracks: {s.tracks} reconstructed, {s.tracks_skipped_done} already done; frames: {s.frames}; "
          f"{s.fps:.1f} frames/s (reconstruction, after collection)")
    for sk in s.skipped:
        print(f"skipped {sk['input']}: {sk['reason']}")
    print(f"outputs: {Path(args.out) / 'tracks'}; manifest: {Path(args.out) / 'manifest.json'}")
    return 0


def add_reconstruct_parser(subparsers) -> None:
    p = subparsers.add_parser("reconstruct", help="3D faces from a video, a folder of frames or a collected dataset")
    p.add_argument("inputs", nargs="+", help="video files, frame/patch folders, collected datasets or sequences")
    p.add_argument("--checkpoint", required=True, help="tvface run folder or .pt, or DECA's deca_model.tar")
    p.add_argument("--out", required=True, help="output folder (tracks/, manifest.json); reruns skip finished tracks")
    p.add_argument("--encoder", choices=sorted(ENCODER_NAMES), default=None,
                   help="check the checkpoint holds this encoder (default: whichever it holds)")
    p.add_argument("--detail", action="store_true", help="also detail meshes and UV displacement maps")
    p.add_argument("--mesh", choices=MESH_FORMATS, default="obj")
    p.add_argument("--no-overlay", action="store_true", help="skip the overlay MP4")
    p.add_argument("--profile", default="cpu-demo", help="base profile (data collection settings; FLAME for DECA)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_reconstruct)
