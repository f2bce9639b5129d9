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
# # Face models
#
# Every part of tvface (renderer, encoders, losses, synthetic data) talks to a face model through one
# interface: shape (identity), expression and pose parameters in, vertices and 68 landmarks out
# (`tvface.face_models.base.FaceModel`). Two models implement it:
#
# - **ICT-FaceKit** (MIT, the offline default): built by `tvface assets build-ict` from the raw OBJs into
#   a compact file, converted to FLAME's units (metres) and axes. Identity coefficients are standard
#   normal; expressions are ICT's 53 blendshapes; the jaw pose drives ICT's jaw blendshapes.
# - **FLAME** as DECA uses it (100 shape, 50 expression, 6 pose numbers), loaded from the user's
#   `generic_model.pkl` through a restricted unpickler.
#
# This chapter loads the model the profile names and looks at identities, expressions and landmarks.

# %% tags=["parameters"]
profile = "cpu-demo"
assets_dir = ""
shared_dir = ""
work_dir = ""

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from tvface import assets
from tvface.config import load_config
from tvface.face_models.factory import load_face_model
from tvface.viz import plot_mesh

cfg = load_config(profile)
root = Path(assets_dir) if assets_dir else None
model = load_face_model(cfg.face_model, root)
print(f"{model.name}: {model.n_verts} vertices, {model.faces.shape[0]} triangles, parameter blocks {model.param_sizes}")

# %% [markdown]
# ## What is in the assets folder
# The table `tvface assets` prints: what was found, what each file enables, and how to get the rest.

# %%
print(assets.format_table(root))

# %% [markdown]
# ## Identities
# The mean face and random identities drawn from the standard-normal identity space (neutral
# expression, frontal pose). Red dots are the 68 landmarks.

# %%
n_show = 3 if profile == "smoke" else 6
gen = torch.Generator().manual_seed(0)
shape = torch.randn(n_show, model.n_shape, generator=gen)
shape[0] = 0
params = model.zeros(n_show)
with torch.no_grad():
    out = model(shape, params["exp"], params["pose"])
fig, axes = plt.subplots(1, n_show, figsize=(2.2 * n_show, 2.6))
for i, ax in enumerate(axes):
    plot_mesh(ax, out.verts[i], model.faces, lmks=out.lmks_3d[i],
              title="mean" if i == 0 else f"identity {i}")
plt.show()

# %% [markdown]
# ## Expressions and jaw
# Single expression coefficients (ICT: blendshape weights in [0, 1]) and the jaw pose, on the mean face.

# %%
names = getattr(model, "expression_names", None) or [f"exp {i}" for i in range(model.n_exp)]
wanted = ["jawOpen", "mouthSmile_L", "eyeBlink_L", "browInnerUp_L", "mouthPucker"]
picks = [names.index(n) for n in wanted if n in names] or list(range(min(5, model.n_exp)))
if profile == "smoke":
    picks = picks[:2]
exp = torch.zeros(len(picks) + 1, model.n_exp)
for row, k in enumerate(picks):
    exp[row, k] = 1.0 if model.name == "ict" else 2.0
pose = torch.zeros(len(picks) + 1, 6)
pose[-1, 3] = 0.25  # jaw opening, radians about x
with torch.no_grad():
    out = model(torch.zeros(len(picks) + 1, model.n_shape), exp, pose)
titles = [names[k] for k in picks] + ["jaw 0.25 rad"]
fig, axes = plt.subplots(1, len(titles), figsize=(2.2 * len(titles), 2.6))
for i, ax in enumerate(axes):
    plot_mesh(ax, out.verts[i], model.faces, title=titles[i])
plt.show()

# %% [markdown]
# ## Landmarks follow the silhouette
# `lmks_3d` are fixed vertices; in `lmks_2d` the 17 jaw-contour points slide along the jaw with the head
# yaw, as a 2D detector labels them (FLAME's dynamic contour; for ICT, built from its extended jawline).

# %%
yaws = [0.0, 0.5, 0.9]
pose = torch.zeros(len(yaws), 6)
pose[:, 1] = torch.tensor(yaws)
with torch.no_grad():
    out = model(torch.zeros(len(yaws), model.n_shape), torch.zeros(len(yaws), model.n_exp), pose)
fig, axes = plt.subplots(1, len(yaws), figsize=(2.6 * len(yaws), 2.8))
for i, ax in enumerate(axes):
    plot_mesh(ax, out.verts[i], model.faces, title=f"yaw {yaws[i]:.1f} rad")
    ax.scatter(out.lmks_3d[i, :17, 0], out.lmks_3d[i, :17, 1], s=6, c="tab:blue", label="3D (fixed)")
    ax.scatter(out.lmks_2d[i, :17, 0], out.lmks_2d[i, :17, 1], s=6, c="tab:red", label="2D (contour)")
axes[0].legend(loc="lower left", fontsize=6)
plt.show()
