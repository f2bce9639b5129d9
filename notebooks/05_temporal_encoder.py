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
# # Temporal encoder
#
# The report replaces DECA's per-frame ResNet50 encoders with temporal encoders that see the whole
# sequence (Sec. 4.4, Table 1, eq. 6-8): BasicVSR++-style bidirectional, second-order propagation
# with flow-guided deformable alignment, then ResNet50's layers and two fully connected layers.

# %% tags=["parameters"]
profile = "cpu-demo"
shared_dir = ""
size = 64  # frame side for the live FLOP table (224 in benchmarks/bench_temporal.py)

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from tvface.config import TemporalConfig, load_config
from tvface.models.alignment import SecondOrderDeformableAlignment
from tvface.models.flow import FLOW_SIZE, dis_flow
from tvface.models.diagram import draw_layout, draw_propagation_grid
from tvface.models.temporal import TemporalEncoders
from tvface.ops.flow_warp import flow_warp

torch.manual_seed(0)
cfg = load_config(profile).temporal if profile else TemporalConfig()
cfg

# %% [markdown]
# ## The architecture, drawn from the module
# Both drawings are generated from a built encoder (`tvface.models.diagram`): the stages in data-flow
# order, and the propagation grid with its first- and second-order alignment edges.

# %%
enc = TemporalEncoders(cfg, 236)
fig, axes = plt.subplots(1, 2, figsize=(14, 4.2), gridspec_kw={"width_ratios": [1, 1.2]})
draw_layout(enc, axes[0])
axes[0].set_title(f"{cfg.variant}: stages ({2 * cfg.n_levels} branches, propagation at 1/{cfg.propagation_scale})",
                  fontsize=9)
draw_propagation_grid(enc, n_frames=cfg.n_frames, ax=axes[1])
axes[1].set_title("second-order grid propagation over the frames", fontsize=9)
plt.show()

# %% [markdown]
# The report's exact layout (`paper` profile) for comparison: five residual blocks everywhere,
# 16 deformable groups, and the dense refinement input (g_i plus all earlier branches).

# %%
paper_enc = TemporalEncoders(load_config("paper", ["temporal.flow=dis"]).temporal, 236)  # layout only
fig, ax = plt.subplots(figsize=(8, 4.2))
draw_propagation_grid(paper_enc, n_frames=5, ax=ax)
ax.set_title("paper: grid propagation with dense refinement", fontsize=9)
plt.show()
del paper_enc

# %% [markdown]
# ## Cost
# FLOPs per frame and per encoder, counted live at a reduced frame size (the benchmark script gives
# the 224² numbers and measured times).

# %%
from tvface.models.cost import flop_table

for r in flop_table(size=size, t=3, with_paper=False):
    print(f"{r['model']:45s} {r['params_M']:6.1f} M params {r['gflop_per_frame_per_encoder']:6.2f} GFLOP/frame")

# %% [markdown]
# ## Alignment on a real pair of frames
# Two consecutive TV face crops (`$TVFACE_SHARED/media/tv-patches`); without the shared folder, two
# frames synthesised by shifting a sample image. Flow: OpenCV DIS at 112². The alignment module is
# freshly initialised (zero residual offsets, so offsets equal the flow), features are the frames.

# %%
import cv2

root = Path(shared_dir or os.environ.get("TVFACE_SHARED", "")) / "media" / "tv-patches"
if (shared_dir or os.environ.get("TVFACE_SHARED")) and root.is_dir():
    files = sorted((root / "id_2").glob("patch_*.jpg"))[:2]
    pair = [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files]
    source = f"{files[0].name}, {files[1].name} (id_2)"
else:
    from skimage.data import astronaut
    img = astronaut()[30:330, 100:400]
    pair = [img, np.roll(img, (4, 6), axis=(0, 1))]
    source = "synthetic: skimage astronaut shifted by (4, 6) px (no shared media)"
pair = [cv2.resize(p, (FLOW_SIZE, FLOW_SIZE), interpolation=cv2.INTER_AREA) for p in pair]
grey = [cv2.cvtColor(p, cv2.COLOR_RGB2GRAY) for p in pair]
flow = torch.from_numpy(dis_flow(grey[1], grey[0])).permute(2, 0, 1)[None]  # flow_{1->0}
f0, f1 = (torch.from_numpy(p).permute(2, 0, 1)[None].float() / 255 for p in pair)
warped = flow_warp(f0, flow)

align = SecondOrderDeformableAlignment(channels=3 * 8, deform_groups=8).eval()
feat = lambda x: x.repeat(1, 8, 1, 1)  # noqa: E731  (24 channels so the DCN groups split evenly)
with torch.no_grad():
    offset, mask, cond_n1, _ = align.predict_offsets(feat(f1), feat(f0), torch.zeros(1, 24, *f0.shape[-2:]),
                                                     flow, torch.zeros_like(flow))
    aligned = align(feat(f1), feat(f0), torch.zeros(1, 24, *f0.shape[-2:]), flow, torch.zeros_like(flow))
total_dx = offset[0, 1::2].mean(0) + flow[0, 0]  # residual + flow, mean over taps/groups
fig, axs = plt.subplots(1, 6, figsize=(18, 3.4))
for a, im, t in zip(axs, [f0[0], f1[0], warped[0]], ["frame i-1", "frame i", "frame i-1 warped to i"]):
    a.imshow(im.permute(1, 2, 0).clamp(0, 1)); a.set_title(t); a.axis("off")
axs[3].imshow(flow[0, 0], cmap="coolwarm"); axs[3].set_title("DIS flow dx (px)"); axs[3].axis("off")
axs[4].imshow(total_dx, cmap="coolwarm"); axs[4].set_title("DCN offsets dx (flow + residual)"); axs[4].axis("off")
axs[5].imshow(aligned[0, :3].abs().mean(0), cmap="gray"); axs[5].set_title("aligned feature |ch 0-2|"); axs[5].axis("off")
fig.suptitle(source)
plt.show()
print("mean |frame i - warped i-1| =", float((f1 - warped).abs()[..., 8:-8, 8:-8].mean()),
      " vs unwarped", float((f1 - f0).abs()[..., 8:-8, 8:-8].mean()))
