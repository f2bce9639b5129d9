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
# the FAN and BiSeNet weights (see `tvface assets`), landmarks come from dlib's 68-point predictor
# inside MTCNN's boxes and masks from the landmarks refined by skin colour; every file records its
# backend.

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
# landmarks normalised as DECA expects ((x, y) in [-1, 1], visibility 1) and masks.

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
