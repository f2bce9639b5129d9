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
# # Qualitative results
#
# The report's figures, made by the library: Fig. 3 (keypoints, coarse and detail shape) and Fig. 4
# (per-frame vs temporal reconstructions, a dark scene among them), on synthetic sequences with
# their ground truth beside the predictions and on real TV frames (`../shared/media/tv-patches`,
# collected by `tvface collect`), with the models of the book's study (chapter "Temporal encoder
# training"; trained here if that chapter has not run). At the end, an explorer: a frame slider, the
# encoder and expression sliders on the predicted face (interactive in Jupyter, a static figure in the
# built site). What `tvface reconstruct` writes for a clip is described in the README.

# %% tags=["parameters"]
profile = "cpu-demo"
assets_dir = ""
shared_dir = ""
work_dir = ""
seed = 0
overrides = []  # config overrides as `--set` takes them; `tvface book batch` sets them per grid cell

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

if assets_dir:
    os.environ["TVFACE_ASSETS"] = assets_dir
from tvface.config import load_config
from tvface.data import layout
from tvface.data.collect.pipeline import collect
from tvface.evaluation.benchmark import heldout_sequences, load_sequence
from tvface.evaluation.study import book_study, load_run, run_study, split_tuning
from tvface.synthetic.writer import dataset_roots, generate, load_ground_truth
from tvface.viz import reconstruction_panels, shape_over

base = Path(work_dir or "/tmp/tvface-notebooks")
settings, study_out = book_study(profile, base / "07_temporal_training", seed,  # the study of chapter 07
                                 extra_overrides=overrides)
cfg = load_config(profile, list(settings.overrides))
generate(cfg, progress=False)
run_study(profile, study_out, settings)  # cached when chapter 07 ran
models = {name: load_run(profile, study_out, enc, seed, settings.overrides)
          for name, enc in (("per-frame", "resnet"), ("temporal", "temporal"))}
work = base / "08_qualitative"
print({k: type(m.encoder).__name__ for k, m in models.items()}, f"{cfg.model.image_size}^2")

# %% [markdown]
# ## Sources
# Held-out synthetic test sequences (one per condition, ground truth kept apart) and real TV patches.

# %%
root, gt_root = dataset_roots(cfg)
_, test = split_tuning(heldout_sequences(root, gt_root, cfg.data.val_fraction, cfg.data.split_seed),
                       settings.tune_fraction, settings.tune_seed)
synthetic = {}
for s in test:
    synthetic.setdefault(s.condition, s)
shared = Path(shared_dir or os.environ.get("TVFACE_SHARED") or "/nonexistent")
real = []
patches = [shared / "media" / "tv-patches" / n for n in ("id_2", "id_8")]
patches = [p for p in patches if p.is_dir()][: 1 if cfg.name == "smoke" else 2]
if patches:
    collect(patches, cfg.data, work / "tv-dataset", work / "tv-work", flow=False)
    real = layout.list_sequences(work / "tv-dataset")
print(f"synthetic conditions: {sorted(synthetic)}; real TV sequences: {[s.name for s in real]}")

# %% [markdown]
# ## Fig. 3: keypoints, coarse and detail shape
# Per row: input, detected landmarks (green), predicted landmarks (red), coarse shape, detail shape,
# rendered image, and for synthetic frames the ground-truth shape (its mesh through its own camera).

# %%
model = models["temporal"]
rows = []
for cond, s in synthetic.items():
    seq = load_sequence(s.seq_dir)
    p = reconstruction_panels(model, seq["image"][:3], seq["landmark"][:3])
    gt, _ = load_ground_truth(s.gt_dir)
    from tvface.synthetic.writer import ground_truth_mesh

    verts = ground_truth_mesh(model.face_model, gt)[:3]
    p["ground truth"] = shape_over(model, verts, torch.as_tensor(gt["deca_cam"][:3]), seq["image"][:3])
    rows.append((cond, {k: v[1] for k, v in p.items()}))
for s in real[:2]:
    seq = load_sequence(s)
    p = reconstruction_panels(model, seq["image"][:3], seq["landmark"][:3])
    rows.append((f"TV {s.parent.name}", {k: v[1] for k, v in p.items()}))
cols = list(dict.fromkeys(k for _, r in rows for k in r))
fig, axes = plt.subplots(len(rows), len(cols), figsize=(1.7 * len(cols), 1.7 * len(rows)), squeeze=False)
for i, (name, r) in enumerate(rows):
    for j, c in enumerate(cols):
        axes[i, j].axis("off")
        if c in r:
            axes[i, j].imshow(r[c])
        if i == 0:
            axes[i, j].set_title(c, fontsize=7)
    axes[i, 0].text(-0.1, 0.5, name, transform=axes[i, 0].transAxes, ha="right", va="center", fontsize=7)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Fig. 4: per-frame vs temporal over consecutive frames
# A dark synthetic sequence (ground truth in the last row) and a real TV sequence.

# %%
def strip(seq, n, gt=None):
    out = {"input": None}
    for name, m in models.items():
        p = reconstruction_panels(m, seq["image"][:n], seq["landmark"][:n])
        out["input"], out[name] = p["input"], p["coarse shape"]
    if gt is not None:
        from tvface.synthetic.writer import ground_truth_mesh

        verts = ground_truth_mesh(models["temporal"].face_model, gt)[:n]
        out["ground truth"] = shape_over(models["temporal"], verts, torch.as_tensor(gt["deca_cam"][:n]),
                                         seq["image"][:n])
    return out


dark = synthetic.get("dark") or next(iter(synthetic.values()))
panels = [(f"synthetic {dark.condition}", strip(load_sequence(dark.seq_dir), 5, load_ground_truth(dark.gt_dir)[0]))]
if real:
    panels.append((f"TV {real[0].parent.name}", strip(load_sequence(real[0]), 5)))
for title, st in panels:
    n = st["input"].shape[0]
    fig, axes = plt.subplots(len(st), n, figsize=(1.6 * n, 1.6 * len(st)), squeeze=False)
    for i, (name, imgs) in enumerate(st.items()):
        for j in range(n):
            axes[i, j].imshow(imgs[j])
            axes[i, j].axis("off")
        axes[i, 0].text(-0.1, 0.5, name, transform=axes[i, 0].transAxes, ha="right", va="center", fontsize=7)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    plt.show()

# %% [markdown]
# ## Explorer
# Pick a frame and an encoder; the sliders move a few of the predicted face's ICT blendshapes
# (ARKit names) away from the prediction. In the built site the widgets are inert: the figure below
# them is the explorer's state when the book was executed.

# %%
import ipywidgets as widgets
from IPython.display import display

explore_seq = load_sequence(dark.seq_dir)
face = models["temporal"].face_model
names = [n for n in ("jawOpen", "eyeBlink_L", "eyeBlink_R", "mouthSmile_L", "mouthSmile_R", "browInnerUp")
         if n in getattr(face, "expression_names", ())]
codes = {}
for name, m in models.items():
    with torch.no_grad():
        codes[name] = m.encode_sequence(explore_seq["image"][None], with_detail=False).flat()


def render(frame: int = 0, encoder: str = "temporal", **deltas) -> np.ndarray:
    m = models[encoder]
    c = {k: v[frame:frame + 1].clone() for k, v in codes[encoder].items()}
    for n, d in deltas.items():
        c["exp"][0, face.expression_names.index(n)] += d
    with torch.no_grad():
        dec = m.decode(c, render=True, with_shape=True)
    frames = explore_seq["image"][frame:frame + 1]
    return shape_over(m, dec.verts, dec.params["cam"], frames)[0]


out = widgets.Output()
frame_w = widgets.IntSlider(0, 0, explore_seq["image"].shape[0] - 1, description="frame")
enc_w = widgets.Dropdown(options=list(models), value="temporal", description="encoder")
sliders = {n: widgets.FloatSlider(0.0, min=-1.0, max=1.0, step=0.05, description=n) for n in names}


def update(_=None):
    img = render(frame_w.value, enc_w.value, **{n: s.value for n, s in sliders.items()})
    with out:
        out.clear_output(wait=True)
        fig, ax = plt.subplots(figsize=(3, 3))
        ax.imshow(img)
        ax.axis("off")
        plt.show()


for w in (frame_w, enc_w, *sliders.values()):
    w.observe(update, names="value")
display(widgets.VBox([frame_w, enc_w, *sliders.values(), out]))
update()

# %% [markdown]
# The static view (what the explorer shows at frame 0 with the jaw opened and a smile), so the built
# site has the picture:

# %%
static = {"prediction": render(0, "temporal")}
if "jawOpen" in names:
    static["jawOpen +0.6"] = render(0, "temporal", jawOpen=0.6)
if "mouthSmile_L" in names:
    static["smile +0.8"] = render(0, "temporal", mouthSmile_L=0.8, mouthSmile_R=0.8)
fig, axes = plt.subplots(1, len(static), figsize=(2.4 * len(static), 2.4), squeeze=False)
for ax, (k, img) in zip(axes[0], static.items()):
    ax.imshow(img)
    ax.set_title(k, fontsize=8)
    ax.axis("off")
fig.tight_layout()
plt.show()
