# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Data collection
#
# The report trains on TV face sequences (sections 4.1–4.2): runs of at least 10 frames in which
# exactly one character is visible and moves continuously within one shot, cropped to 224×224, with
# 68 landmarks (2D-FAN) and face masks (BiSeNet: skin, brows, eyes, nose, mouth, lips).
# `tvface.data.collect` builds them from video files, frame folders or face-patch folders. Without
# the FAN and BiSeNet weights (see `tvface assets`), landmarks come per face from dlib's 68-point
# predictor or MediaPipe's face mesh inside MTCNN's boxes (see "Landmarks that hold on TV poses"
# below) and masks from the landmarks refined by skin colour; every file records its backend, and
# every frame its head pose, landmark confidence and whether it was flagged.

# %% tags=["parameters"]
profile = "cpu-demo"
shared_dir = ""
work_dir = ""

# %%
import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt

from tvface.config import load_config
from tvface.data.collect.pipeline import collect
from tvface.data.collect.synthetic_episode import episode_frames, make_episode
from tvface.data.dataset import SequenceDataset, denormalize_landmarks

cfg = load_config(profile).data
work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="tvface-collect-"))
shared = Path(shared_dir or os.environ.get("TVFACE_SHARED", "") or "/nonexistent")
print(f"profile {profile}: {cfg.demo_frames_per_shot} frames per demo shot; work in {work}")

# %% [markdown]
# ## The embedded episode
#
# A short synthetic episode built from two real portraits that ship with scikit-image and matplotlib:
# a camera move with a lighting ramp, a cut, a zoom-out on a second person, a shot with both faces
# (which the rule must reject), a shot too short to keep, and a grey card.

# %%
frames, shots = episode_frames(cfg.demo_frames_per_shot)
fig, axes = plt.subplots(1, len(shots), figsize=(3 * len(shots), 2.4))
for ax, s in zip(axes, shots):
    ax.imshow(frames[(s.first + s.last) // 2])
    ax.set_title(f"{s.kind}: {s.first}-{s.last}\nexpect {s.expect}", fontsize=8)
    ax.axis("off")
plt.show()

# %%
video, _ = make_episode(work / "input", cfg.demo_frames_per_shot)
report = collect([video], cfg, work / "dataset", work / "work")
print((work / "dataset" / "qc" / "report.md").read_text())

# %% [markdown]
# The QC contact sheet: the middle frame of every kept sequence with its landmarks (green) and the
# outline of its mask.

# %%
plt.figure(figsize=(8, 3))
plt.imshow(plt.imread(report["contact_sheet"]))
plt.axis("off")
plt.show()

# %% [markdown]
# ## What training reads
#
# `SequenceDataset` yields T = 5 consecutive frames from a random start inside a sequence, with
# landmarks normalised as DECA expects ((x, y) in [-1, 1], weight 1; 0 on frames whose landmarks were
# flagged) and masks.

# %%
ds = SequenceDataset(work / "dataset", n_frames=cfg.n_frames)
item = ds[0]
print({k: tuple(v.shape) if hasattr(v, "shape") else v for k, v in item.items()})
fig, axes = plt.subplots(1, cfg.n_frames, figsize=(2.2 * cfg.n_frames, 2.4))
for t, ax in enumerate(axes):
    ax.imshow(item["image"][t].permute(1, 2, 0).numpy())
    ax.imshow(item["mask"][t].numpy(), alpha=0.25, cmap="Blues")
    xy = denormalize_landmarks(item["landmark"][t].numpy(), 224)
    ax.scatter(xy[:, 0], xy[:, 1], s=2, c="lime")
    ax.axis("off")
plt.show()

# %% [markdown]
# ## Shared TV media
#
# When a shared media folder is given (`shared_dir` or `$TVFACE_SHARED`), the same pipeline runs on
# the TV face patches and the real clips. The "smoke" profile caps the frames decoded per source.

# %%
media = shared / "media"
if cfg.use_shared_media and (media / "tv-patches").is_dir():
    patches = media / "tv-patches"
    smoke = cfg.max_frames_per_source > 0 or Path(str(profile)).stem == "smoke"  # one identity, no clips
    inputs = [patches / "id_2"] if smoke else [patches, media / "videos"]
    shared_report = collect(inputs, cfg, work / "shared-dataset", work / "shared-work")
    for s in shared_report["sources"]:
        print(f"{s['name']:>20}: {s['n_frames']} frames, {s['n_sequences']} sequences "
              f"({s['frames_kept']} frames kept), rejected: {s['rejected_frames_by_reason']}")
    plt.figure(figsize=(10, 5))
    plt.imshow(plt.imread(shared_report["contact_sheet"]))
    plt.axis("off")
    plt.show()
else:
    print("no shared media: set shared_dir or $TVFACE_SHARED to run on the TV patches and clips")

# %% [markdown]
# ## Landmarks that hold on TV poses
#
# Landmarks are the main training signal, and TV is full of frames where a frontal-face landmark
# model returns confident garbage (profiles, pitch, a second face). Every face therefore gets a head
# pose (yaw, pitch, roll fitted to its 68 points with the face model's mean shape), a **confidence**
# and, below `data.landmark_min_confidence`, a **flag**: the frame is kept, the reason recorded, and
# training gives its landmark terms weight 0. With `data.landmarks: auto` and no 2D-FAN weights the
# backend is chosen per face: dlib where it is in its element (a near-frontal face, by the mesh's
# pose, on which it agrees with the mesh), MediaPipe's face mesh (mapped to the 68 iBUG points) everywhere
# else. The confidence rests on second opinions, not on how face-like the points are (a shape prior makes
# them face-like anywhere): the mesh's **mirror test** (the same network on the mirrored face; its
# disagreement, scaled to the true error on the synthetic benchmark, estimates the error) and dlib's
# agreement with the mesh. NME below is `tvface collect evaluate`'s: point error over the outer-eye-corner
# distance, per still and backend; flagged faces are counted apart, and a still whose annotated face the
# detector missed gets no NME at all (its points would belong to another face).

# %%
from tvface.data.evaluate import evaluate_landmarks, markdown_report, read_ground_truth  # noqa: E402

if (media / "stills").is_dir():
    lm_res = evaluate_landmarks(media, cfg)
    print(markdown_report(lm_res))
else:
    lm_res = None
    print("no shared media: set shared_dir or $TVFACE_SHARED to measure the landmark backends on the stills")

# %% [markdown]
# The stills with their chosen landmarks (green: dlib, orange: face mesh; red: flagged) beside the
# ground truth (white), hardest poses last.

# %%
if lm_res is not None:
    import numpy as np

    from tvface.data.collect.sources import read_image

    names = sorted(lm_res["stills"], key=lambda n: abs(lm_res["stills"][n]["yaw"]))
    fig, axes = plt.subplots(2, (len(names) + 1) // 2, figsize=(2.1 * ((len(names) + 1) // 2), 5))
    for ax, name in zip(axes.ravel(), names):
        image_path, gt, _ = read_ground_truth(media / "stills" / name)
        image, _ = read_image(image_path)
        lo, hi = gt.min(0), gt.max(0)
        pad = 0.35 * (hi - lo).max()
        ax.imshow(image, cmap="gray")
        ax.scatter(gt[:, 0], gt[:, 1], s=2, c="white")
        title = f"{name}\nmissed by the detector"
        if not lm_res["stills"][name]["missed"]:
            r = lm_res["stills"][name]["backends"]["auto"]
            colour = "red" if r["flagged"] else ("lime" if r["used"] == "dlib" else "orange")
            pts = np.asarray(r["points"])
            ax.scatter(pts[:, 0], pts[:, 1], s=2, c=colour)
            title = f"{name}\n{r['nme']:.1f}% {r['used']}{' flagged' if r['flagged'] else ''}"
        ax.set_xlim(lo[0] - pad, hi[0] + pad)
        ax.set_ylim(hi[1] + pad, lo[1] - pad)
        ax.set_title(title, fontsize=7)
        ax.axis("off")
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    plt.tight_layout()
    plt.show()

# %% [markdown]
# On the collected TV patches the same rule runs inside the pipeline: the QC report above counts the
# kept frames whose landmarks were flagged, and each frame's manifest entry says which backend produced
# its points, its pose and why it was flagged. `python benchmarks/bench_collect.py --media <shared>/media`
# times the collection per backend in one run; `python benchmarks/calibrate_landmarks.py` re-measures the
# mirror test's calibration and the flag's separation on the synthetic benchmark (ground truth known).

# %%
if cfg.use_shared_media and (media / "tv-patches").is_dir():
    from collections import Counter

    from tvface.data import layout

    recs = [f.get("landmarks") or {} for q in layout.list_sequences(work / "shared-dataset")
            for f in layout.read_manifest(q)["frames"]]
    print(f"{len(recs)} kept frames: backends {dict(Counter(r.get('backend') for r in recs))}, "
          f"{sum(bool(r.get('flagged')) for r in recs)} flagged")
    kept_yaw = [abs(r["yaw"]) for r in recs if "yaw" in r and not r.get("flagged")]
    flagged_yaw = [abs(r["yaw"]) for r in recs if "yaw" in r and r.get("flagged")]
    if kept_yaw or flagged_yaw:
        plt.figure(figsize=(5, 2.2))
        plt.hist([kept_yaw, flagged_yaw], bins=range(0, 91, 5), stacked=True, label=["kept", "flagged"],
                 color=["tab:green", "tab:red"])
        plt.xlabel("|yaw| (degrees, fitted to the landmarks)")
        plt.ylabel("frames")
        plt.legend()
        plt.show()

