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
# # Differentiable renderer
#
# Everything self-supervised in DECA (eq. 4-5) compares a rendered face with the input frame, so the
# renderer (`tvface.rendering`) must be correct, differentiable and fast. This page renders the
# ICT-FaceKit model under a few spherical-harmonics lights, then adds a displacement map (eq. 3)
# and compares DECA's grey coarse and detail shape images.

# %% tags=["parameters"]
profile = "cpu-demo"
assets_dir = ""

# %%
import os

import matplotlib.pyplot as plt
import torch

if assets_dir:
    os.environ["TVFACE_ASSETS"] = assets_dir

from tvface import settings
from tvface.rendering import MeshRenderer, orth_to_screen
from tvface.rendering.procedural import head_like_mesh

image_size = 96 if profile == "smoke" else 224
uv_size = 128 if profile == "smoke" else 256

# %% [markdown]
# The face model gives vertices in metres (+y up, +z towards the camera). DECA's weak-perspective
# camera `(scale, tx, ty)` maps them to screen space; the renderer caches everything that depends
# only on the mesh (faces, UVs, the UV-space rasterisation).

# %%
model_path = settings.assets_dir() / "ict_facekit_model.npz"
if model_path.is_file():
    from tvface.face_models.ict import load_ict_model

    model = load_ict_model(model_path)
    verts = model(**model.zeros(1)).verts
    faces, uv_coords, uv_faces = model.faces, model.uv_coords, model.uv_faces
    mesh_name = "ICT-FaceKit neutral face"
    uv_mask = torch.as_tensor(model.uv_face_eye_mask(uv_size), dtype=torch.float32).reshape(1, 1, uv_size, uv_size)
else:
    v, faces, uv_coords = head_like_mesh()
    verts, uv_faces = v[None], faces
    mesh_name = f"procedural head (no ICT model at {model_path})"
    uv_mask = None
renderer = MeshRenderer(faces, uv_coords, uv_faces, image_size=image_size, uv_size=uv_size)
scale = 1.7 / float(verts[0, :, 1].max() - verts[0, :, 1].min())
cam = torch.tensor([[scale, 0.0, 0.0]])
screen = orth_to_screen(verts, cam)
print(mesh_name, tuple(verts.shape), "faces", tuple(faces.shape))

# %% [markdown]
# ## SH lights
# A light is 9 SH coefficients per colour channel, `(B, 9, 3)`, with DECA's constants. A constant
# band-0 term gives flat ambient light; band-1 terms (x, y, z) tilt it to one side.

# %%
lights = torch.zeros(4, 9, 3)
lights[:, 0] = 2.5  # ambient
lights[1, 1] = 1.0  # from the image right (+x)
lights[2, 2] = 1.0  # from above (+y)
lights[3, 3] = 1.2  # from the camera (+z)
lights[3, 8] = -0.4
titles = ["ambient", "from the right", "from above", "frontal"]
albedo = torch.full((4, 3, uv_size, uv_size), 0.7)
albedo[:, 0] = 0.8  # a skin-like tint
batch_verts, batch_screen = verts.expand(4, -1, -1), screen.expand(4, -1, -1)
out = renderer(batch_verts, batch_screen, albedo, lights)
fig, axes = plt.subplots(1, 4, figsize=(12, 3.2))
for ax, img, title in zip(axes, out.images, titles):
    ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy())
    ax.set_title(title)
    ax.axis("off")
plt.show()

# %% [markdown]
# ## Displacement and detail normals
# A UV displacement map `D` moves the UV position map along the coarse normals,
# `M'_uv = M_uv + D * N_uv` (eq. 3); detail normals are the normals of the displaced map
# (DECA's `displacement2normal`), inside the face/eye UV mask. Here `D` is horizontal wrinkles, 1.5 mm deep.

# %%
ys = torch.linspace(1, 0, uv_size)[:, None].expand(uv_size, uv_size)
uv_disp = (1.5e-3 * torch.sin(ys * 150.0))[None, None]
out = renderer(verts, screen, albedo[:1], lights[3:4], uv_disp=uv_disp, uv_mask=uv_mask, with_shape=True)
fig, axes = plt.subplots(1, 3, figsize=(10, 3.4))
panels = [(uv_disp[0, 0], "displacement D (UV)", "RdBu"), (out.shape_images[0, 0], "coarse shape", "gray"),
          (out.shape_detail_images[0, 0], "detail shape", "gray")]
for ax, (img, title, cmap) in zip(axes, panels):
    ax.imshow(img.numpy(), cmap=cmap)
    ax.set_title(title)
    ax.axis("off")
plt.show()
