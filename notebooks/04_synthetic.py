# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Synthetic TV sequences
#
# The paper reports no numbers because TV footage has no 3D ground truth. Here we render face
# sequences from the face model with known parameters, under the conditions the paper says hurt
# DECA (motion blur, dark scenes, profile views, occlusions, low resolution), and keep every
# parameter as ground truth. The training inputs (landmarks, masks) come from the same offline
# detectors as real video; the ground truth is written to a separate root.

# %% tags=["parameters"]
profile = "cpu-demo"
assets_dir = ""
shared_dir = ""
work_dir = ""

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

if assets_dir:
    os.environ["TVFACE_ASSETS"] = assets_dir
from tvface.config import load_config
from tvface.synthetic.sequences import CONDITIONS, render_sequence, sample_sequence
from tvface.synthetic.trajectories import yaw_from_axis_angle
from tvface.synthetic.writer import build_context, generate, load_ground_truth

work = Path(work_dir or "/tmp/tvface-notebooks") / "04_synthetic"
cfg = load_config(profile, {"synth.root": str(work / "synth"), "synth.n_sequences": 2, "synth.n_frames": 4})
ctx = build_context(cfg)
print(cfg.synth)

# %% [markdown]
# ## One contact sheet per condition
# Each row is one sequence drawn under a condition (frames 0, 1, ...). Every frame carries its
# recorded degradation strengths; `tvface.synthetic.estimate` recovers them from the pixels (tests).

# %%
n_show = 4
fig, axes = plt.subplots(len(CONDITIONS), n_show, figsize=(1.8 * n_show, 1.9 * len(CONDITIONS)), squeeze=False)
for row, cond in enumerate(CONDITIONS):
    spec = sample_sequence(np.random.default_rng(row), cfg.synth, ctx.model, ctx.albedo.n_tex,
                           condition=cond, center=ctx.center)
    maps = ctx.albedo(torch.as_tensor(spec.tex, dtype=torch.float32)[None])
    out = render_sequence(ctx.model, ctx.renderer, maps, spec)
    for col in range(n_show):
        ax = axes[row, col]
        ax.imshow(out.frames[col])
        vis = out.visibility[col]
        ax.scatter(*out.lmks_2d_px[col][vis].T, s=1, c="lime")
        d = out.degradations[col]
        ax.set_title(f"{cond}: blur {d.blur_length:.1f}px\nnoise {d.noise_sigma:.1f} x{d.downsample:.1f} "
                     f"q{d.jpeg_quality}", fontsize=6)
        ax.axis("off")
fig.tight_layout()

# %% [markdown]
# ## Distribution of poses and expressions
# Sampling a spec costs no rendering, so we look at many: yaw reaches +-70 deg (profiles),
# the jaw follows syllable-rate talking, and blinks, smiles and brow raises are events.

# %%
yaw, jaw, blink, smile, conds = [], [], [], [], []
names = ctx.model.expression_names
for i in range(120):
    s = sample_sequence(np.random.default_rng(1000 + i), cfg.synth, ctx.model, ctx.albedo.n_tex, center=ctx.center)
    yaw.append(yaw_from_axis_angle(s.pose[:, :3]))
    jaw.append(s.pose[:, 3])
    blink.append(s.exp[:, names.index("eyeBlink_L")])
    smile.append(s.exp[:, names.index("mouthSmile_L")])
    conds.append(s.condition)
fig, axes = plt.subplots(1, 4, figsize=(12, 2.6))
axes[0].hist(np.concatenate(yaw), bins=30)
axes[0].set_title("yaw (deg)")
axes[1].hist(np.rad2deg(np.concatenate(jaw)), bins=30)
axes[1].set_title("jaw opening (deg)")
axes[2].hist(np.concatenate(blink), bins=30)
axes[2].set_title("eyeBlink_L weight")
axes[3].hist(np.concatenate(smile), bins=30)
axes[3].set_title("mouthSmile_L weight")
fig.tight_layout()
print({c: conds.count(c) for c in CONDITIONS})

# %% [markdown]
# ## Written like real data
# `generate` writes the collected-data layout (`jpg/`, `kpt/`, `seg/masks/`, manifests) with the
# offline detectors' landmarks and masks, and the ground truth under a separate root.

# %%
summary = generate(cfg, workers=1, progress=False)
print(summary)
gt_dirs = sorted(Path(summary["gt_root"]).glob("*/*"))
arrays, meta = load_ground_truth(gt_dirs[0])
print({k: v.shape for k, v in arrays.items()})
print(meta["condition"], meta["model_id"], meta["degradations"][0])
