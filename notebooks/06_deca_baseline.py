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
# # DECA baseline
#
# The per-frame baseline of the report: DECA's coarse encoder E_c (ResNet50 -> shape, albedo,
# expression, pose, camera, light) and detail encoder E_d + decoder D (UV displacement), trained
# self-supervised through the differentiable renderer in three stages: `pretrain` (landmarks only),
# `coarse` (eq. 9: landmarks, eye/lip closure, photometric, identity, shape consistency,
# regularisers) and `detail` (eq. 10, E_c frozen). Everything here is `tvface.training` and
# `tvface.evaluation`; the notebook only calls them. On the `cpu-demo` profile it trains on the
# synthetic TV sequences (ICT-FaceKit faces, ground truth kept apart) and measures on held-out
# identities, beside the mean face and a per-frame landmark fit.

# %% tags=["parameters"]
profile = "cpu-demo"
assets_dir = ""
shared_dir = ""
work_dir = ""
overrides = []  # config overrides as `--set` takes them; `tvface book batch` sets them per grid cell

# %%
import json
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display

if assets_dir:
    os.environ["TVFACE_ASSETS"] = assets_dir
from tvface import book
from tvface.config import load_config
from tvface.data import layout
from tvface.data.collect.pipeline import collect
from tvface.evaluation.benchmark import heldout_sequences, load_sequence, to_markdown, write_results
from tvface.evaluation.run import load_trained, run_benchmark
from tvface.synthetic.writer import dataset_roots, generate
from tvface.training.trainer import open_run
from tvface.viz import reconstruction_panels

work = Path(work_dir or "/tmp/tvface-notebooks") / "06_deca_baseline"
smoke = Path(str(profile)).stem == "smoke"
over = {}
if smoke:  # a tiny set in the work folder: seconds, not minutes
    root = work / "synth"
    over = {"synth.root": str(root), "synth.gt_root": str(work / "synth-gt"), "data.root": str(root),
            "synth.n_sequences": 6, "synth.n_frames": 8, "synth.image_size": 64, "data.image_size": 64,
            "data.n_frames": 3, "data.val_fraction": 0.5, "render.uv_size": 32}
over.update(book.override_items(overrides))
cfg = load_config(profile, over)
run_dir = work / "run"
print(f"profile {cfg.name}: encoder {cfg.model.encoder} at {cfg.model.image_size}^2, "
      f"steps pretrain/coarse/detail = {cfg.train.pretrain_steps}/{cfg.train.coarse_steps}/{cfg.train.detail_steps}, "
      f"batch {cfg.train.batch_size} x {cfg.data.n_frames} frames, lr {cfg.train.lr}")

# %% [markdown]
# ## Data
# The synthetic sequences (chapter "Synthetic TV sequences"); generation is resumable, so a second
# run of the book finds them.

# %%
summary = generate(cfg, progress=False)
print({k: summary[k] for k in ("root", "n_sequences", "n_frames", "skipped", "written", "seconds")})

# %% [markdown]
# ## Training
# `open_run` continues `run/last.pt` when the book is executed again (a run made for another config is
# moved aside to `run.stale-N`); the run's manifest
# records the precision chosen for this CPU and which loss terms were on (a term whose network file
# is absent, VGGFace2 or VGG19, is off with the reason).

# %%
trainer = open_run(cfg, run_dir)  # continues run/ (a run made for another config is moved aside)
trainer.run(["pretrain", "coarse", "detail"])
manifest = json.loads((run_dir / "manifest.json").read_text())
print("precision:", manifest["precision"])
print("loss terms off:", {k: v["reason"] for k, v in manifest["losses"].items() if not v["on"]})
print("stages:", manifest["stages_done"])

# %%
rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
rows = [r for r in rows if "total" in r]
fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
for ax, stage in zip(axes, ("pretrain", "coarse", "detail")):
    rs = [r for r in rows if r["stage"] == stage]
    if not rs:
        continue
    terms = [k for k in rs[0] if k not in ("stage", "step", "stage_step", "it_s")]
    for k in terms:
        ax.plot([r["step"] for r in rs], [r.get(k, np.nan) for r in rs], label=k, lw=1.5 if k == "total" else 0.8)
    ax.set_title(stage)
    ax.set_xlabel("step")
    ax.set_yscale("log")
    ax.legend(fontsize=6)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Evaluation on held-out identities
# Face-region vertex error after a similarity alignment (shape, expression and jaw; pose and scale
# removed) and landmark NME against the ground truth, by condition. The **mean face** (zero shape
# and expression, pose and camera fitted to the detected landmarks), the **training mean** (the
# training identities' average shape and expression, placed the same way: the best *constant*
# answer, which a model that ignores its input would approach) and the **landmark fit** (per-frame
# optimisation of shape, expression, pose and camera to the detected landmarks) are the non-learned
# references. `tvface evaluate` prints the same table.

# %%
result = run_benchmark(cfg, run_dir / "last.pt", fit_iters=30 if smoke else 100)
write_results(result, work / "evaluation.json", work / "evaluation.md")
display(Markdown(to_markdown(result)))

# %% [markdown]
# Read the trained row against the mean face, condition by condition. On `cpu-demo` the encoders
# start from random weights (DECA starts from ImageNet; nothing is downloaded here) and see about
# 6000 training frames, so expect them near the mean face: the verdict below is computed, not written.

# %%
cell = {(r["method"], r["condition"]): r["vertex_mm_mean"] for r in result["results"]}
book.record(vertex_mm={f"{m}/{c}": v for (m, c), v in cell.items()},
            nme={f"{r['method']}/{r['condition']}": r["nme_mean"] for r in result["results"]})
for cond in dict.fromkeys(r["condition"] for r in result["results"]):
    m, t = cell.get(("mean face", cond)), cell.get(("trained", cond))
    if m is not None and t is not None:
        print(f"{cond:>10}: trained {t:.2f} mm vs mean face {m:.2f} mm ({100 * (t - m) / m:+.0f} %)")

# %% [markdown]
# ## Reconstructions (the report's Fig. 3)
# Held-out synthetic frames of several conditions, then real TV frames (the report's sample
# `tv-sample/id1`, with its 2D-FAN landmarks), which the model never saw: input, detected
# landmarks, predicted landmarks, coarse shape, detail shape and the rendered image.

# %%
model = load_trained(cfg, run_dir / "last.pt")
root, gt_root = dataset_roots(cfg)
seqs = heldout_sequences(root, gt_root, cfg.data.val_fraction, cfg.data.split_seed)
picked, seen = [], set()
for s in seqs:
    if s.condition not in seen:
        seen.add(s.condition)
        picked.append(s)
sources = [(f"{s.condition}", load_sequence(s.seq_dir)) for s in picked[:4 if smoke else 6]]
shared = Path(shared_dir or os.environ.get("TVFACE_SHARED") or "/nonexistent")
if (shared / "media" / "tv-sample" / "id1" / "jpg").is_dir():
    sources.append(("TV (tv-sample/id1)", load_sequence(shared / "media" / "tv-sample" / "id1")))
if (shared / "media" / "tv-patches" / "id_2").is_dir():  # crops, 2D landmarks, masks by `tvface collect`
    collect([shared / "media" / "tv-patches" / "id_2"], cfg.data, work / "tv-dataset", work / "tv-work", flow=False)
    tv_seqs = layout.list_sequences(work / "tv-dataset")
    sources += [(f"TV (tv-patches/id_2 {s.name})", load_sequence(s)) for s in tv_seqs[:1 if smoke else 2]]


def show(sources):
    rows = []
    for name, seq in sources:
        p = reconstruction_panels(model, seq["image"][:1], seq["landmark"][:1])
        rows.append((name, p))
    cols = list(rows[0][1])
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(1.9 * len(cols), 1.9 * len(rows)), squeeze=False)
    for i, (name, p) in enumerate(rows):
        for j, c in enumerate(cols):
            axes[i, j].imshow(p[c][0])
            axes[i, j].axis("off")
            if i == 0:
                axes[i, j].set_title(c, fontsize=8)
        axes[i, 0].text(-0.1, 0.5, name, transform=axes[i, 0].transAxes, ha="right", va="center", fontsize=8)
    fig.tight_layout()
    plt.show()


show(sources)
