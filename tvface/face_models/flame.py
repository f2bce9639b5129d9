"""FLAME (Li et al. 2017) in DECA's configuration (yfeng95/DECA ``decalib/models/FLAME.py``).

* shape: the first ``n_shape`` (DECA: 100) of FLAME's 300 identity components;
* expression: the first ``n_exp`` (DECA: 50) of the 100 expression components
  (``shapedirs[:, :, 300:300 + n_exp]``);
* pose: 6 numbers, global rotation (3) + jaw (3); neck and eyes stay at rest, so the full pose
  is ``[global, neck=0, jaw, eyes=0]`` (15 numbers for 5 joints);
* ``lmks_2d``: 17 jaw-contour landmarks chosen by the head's yaw (79 one-degree bins,
  DECA's ``_find_dynamic_lmk_idx_and_bcoords``) followed by 51 static ones = iBUG 68 order;
* ``lmks_3d``: the 68 fixed landmarks (``full_lmk_faces_idx``), DECA's ``landmarks3d``.

Units (metres) and axes are the pickle's, untouched, so a DECA checkpoint's codes give DECA's faces.

``skin_faces`` excludes the two eyeballs (vertices 3931-5022 of the 5023-vertex FLAME topology,
two separate closed meshes); on any other topology every triangle counts as skin. FLAME's mouth
interior is part of the head surface and is kept.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from tvface import assets
from tvface.face_models.base import FaceModel, FaceModelOutput, batch_rodrigues, rot_mat_to_euler_y
from tvface.face_models.flame_data import (
    FLAME_N_EXP_TOTAL,
    FLAME_N_JOINTS,
    FLAME_N_SHAPE_TOTAL,
    FlameModelData,
    LandmarkEmbedding,
    TemplateUV,
    align_uv_faces,
    eyeball_vertex_mask,
    load_flame_model,
    load_landmark_embedding,
    load_template_uvs,
)
from tvface.face_models.lbs import lbs, vertices_to_landmarks

PathLike = str | os.PathLike

NECK_IDX = 1  # joint whose kinematic chain (neck -> global) sets the contour's yaw
JAW_IDX = 2
MAX_CONTOUR_YAW_DEG = 39  # DECA's table covers |yaw| <= 39 degrees, one bin per degree


def contour_bin_index(yaw_deg: Tensor) -> Tensor:
    """Row of DECA's dynamic-contour table for a yaw angle in degrees.

    DECA: ``y = round(clamp(yaw, max=39))``; bins 0..39 hold yaw 0..39, bins 40..78 hold yaw
    -1..-39 (``39 - y``), and any yaw below -39 uses bin 78.

    Args:
        yaw_deg: (B,) yaw in degrees.
    Returns:
        (B,) long in [0, 78].
    """
    y = torch.round(torch.clamp(yaw_deg, max=MAX_CONTOUR_YAW_DEG)).long()
    last_bin = 2 * MAX_CONTOUR_YAW_DEG  # 78: yaw -39 and beyond
    neg_idx = torch.where(y < -MAX_CONTOUR_YAW_DEG, torch.full_like(y, last_bin), MAX_CONTOUR_YAW_DEG - y)
    return torch.where(y < 0, neg_idx, y)


def neck_chain_yaw(full_pose: Tensor, neck_kin_chain: Tensor) -> Tensor:
    """Yaw (radians) of the neck's world rotation ``R_global @ R_neck`` (DECA's ``rel_rot_mat``).

    Sign as DECA's ``FLAME._find_dynamic_lmk_idx_and_bcoords`` (the one its forward pass calls),
    not the negated yaw of the unused ``lbs.find_dynamic_lmk_idx_and_bcoords``.

    Args:
        full_pose: (B, J * 3) axis-angle of every joint.
        neck_kin_chain: (K,) long, the neck then its ancestors up to the root.
    Returns:
        (B,) yaw.
    """
    batch = full_pose.shape[0]
    aa = full_pose.view(batch, -1, 3)[:, neck_kin_chain]  # (B, K, 3)
    rot_mats = batch_rodrigues(aa.reshape(-1, 3)).view(batch, -1, 3, 3)  # (B, K, 3, 3)
    rel = torch.eye(3, dtype=full_pose.dtype, device=full_pose.device).expand(batch, 3, 3)
    for k in range(rot_mats.shape[1]):
        rel = rot_mats[:, k] @ rel  # ancestors multiply on the left
    return rot_mat_to_euler_y(rel)


def dynamic_contour(full_pose: Tensor, dynamic_faces_idx: Tensor, dynamic_bary_coords: Tensor,
                    neck_kin_chain: Tensor) -> tuple[Tensor, Tensor]:
    """Triangles and barycentric weights of the 17 contour landmarks for the current yaw.

    Args:
        full_pose: (B, J * 3).
        dynamic_faces_idx: (79, 17) long.
        dynamic_bary_coords: (79, 17, 3).
        neck_kin_chain: (K,) long.
    Returns:
        (B, 17) long face ids and (B, 17, 3) barycentric weights.
    """
    yaw_deg = neck_chain_yaw(full_pose, neck_kin_chain) * (180.0 / math.pi)  # (B,)
    bins = contour_bin_index(yaw_deg)  # (B,)
    return dynamic_faces_idx[bins], dynamic_bary_coords[bins]


class FLAME(FaceModel):
    """FLAME with DECA's parameter blocks; see the module docstring.

    Construct from loaded data (:meth:`from_files`, :func:`load_flame`)::

        flame = load_flame(n_shape=100, n_exp=50)   # files from the assets folder
        out = flame(shape, exp, pose)               # (B, 100), (B, 50), (B, 6)
    """

    name = "flame"

    def __init__(self, model: FlameModelData, embedding: LandmarkEmbedding, template: TemplateUV,
                 n_shape: int = 100, n_exp: int = 50, source: str = "FLAME") -> None:
        if not 0 < n_shape <= FLAME_N_SHAPE_TOTAL:
            raise ValueError(f"FLAME: n_shape must be in 1..{FLAME_N_SHAPE_TOTAL}, got {n_shape}")
        if not 0 < n_exp <= FLAME_N_EXP_TOTAL:
            raise ValueError(f"FLAME: n_exp must be in 1..{FLAME_N_EXP_TOTAL}, got {n_exp}")
        super().__init__(n_shape, n_exp)
        f32 = torch.float32
        n_verts = model.n_verts

        shapedirs = np.concatenate([model.shapedirs[:, :, :n_shape],
                                    model.shapedirs[:, :, FLAME_N_SHAPE_TOTAL:FLAME_N_SHAPE_TOTAL + n_exp]], axis=2)
        # (V, 3, P) -> (P, V * 3), DECA's layout: pose_feature (B, P) @ posedirs -> (B, V * 3).
        posedirs = model.posedirs.reshape(-1, model.posedirs.shape[-1]).T
        self.register_buffer("template", torch.tensor(model.v_template, dtype=f32))  # (V, 3)
        self.register_buffer("shapedirs", torch.tensor(shapedirs, dtype=f32))  # (V, 3, n_shape + n_exp)
        self.register_buffer("posedirs", torch.tensor(posedirs, dtype=f32))  # (36, V * 3)
        self.register_buffer("J_regressor", torch.tensor(model.J_regressor, dtype=f32))  # (5, V)
        self.register_buffer("parents", torch.tensor(model.parents, dtype=torch.long))  # (5,)
        self._parent_ids = tuple(int(p) for p in model.parents)  # host copy for lbs (no device sync)
        self.register_buffer("lbs_weights", torch.tensor(model.lbs_weights, dtype=f32))  # (V, 5)

        faces = torch.tensor(model.faces, dtype=torch.long)
        self.register_buffer("faces", faces)  # (F, 3)
        uv_faces = align_uv_faces(model.faces, template, source)
        self.register_buffer("uv_coords", torch.tensor(template.uv_coords, dtype=f32))  # (Vt, 2)
        self.register_buffer("uv_faces", torch.tensor(uv_faces, dtype=torch.long))  # (F, 3)
        eyeball = torch.from_numpy(eyeball_vertex_mask(n_verts))
        self.register_buffer("skin_faces", ~eyeball[faces].any(dim=1))  # (F,)

        self.register_buffer("lmk_faces_idx", torch.tensor(embedding.static_faces_idx))  # (51,)
        self.register_buffer("lmk_bary_coords", torch.tensor(embedding.static_bary_coords, dtype=f32))
        self.register_buffer("dynamic_lmk_faces_idx", torch.tensor(embedding.dynamic_faces_idx))  # (79, 17)
        self.register_buffer("dynamic_lmk_bary_coords", torch.tensor(embedding.dynamic_bary_coords, dtype=f32))
        self.register_buffer("full_lmk_faces_idx", torch.tensor(embedding.full_faces_idx))  # (68,)
        self.register_buffer("full_lmk_bary_coords", torch.tensor(embedding.full_bary_coords, dtype=f32))

        chain, j = [], NECK_IDX
        while j != -1:
            chain.append(j)
            j = int(model.parents[j])
        self.register_buffer("neck_kin_chain", torch.tensor(chain, dtype=torch.long))  # (2,): neck, global

    @classmethod
    def from_files(cls, model_path: PathLike, embedding_path: PathLike, template_obj_path: PathLike,
                   n_shape: int = 100, n_exp: int = 50) -> FLAME:
        """Load ``generic_model.pkl``, ``landmark_embedding.npy`` and ``head_template.obj``."""
        model = load_flame_model(model_path)
        embedding = load_landmark_embedding(embedding_path, n_faces=len(model.faces))
        template = load_template_uvs(template_obj_path)
        return cls(model, embedding, template, n_shape=n_shape, n_exp=n_exp,
                   source=f"{template_obj_path} vs {model_path}")

    def full_pose(self, pose: Tensor, eye_pose: Tensor | None = None) -> Tensor:
        """(B, 6) DECA pose -> (B, 15) ``[global, neck = 0, jaw, eyes]`` axis-angle."""
        batch = pose.shape[0]
        neck = pose.new_zeros(batch, 3)
        eyes = pose.new_zeros(batch, 6) if eye_pose is None else eye_pose
        return torch.cat([pose[:, :3], neck, pose[:, 3:], eyes], dim=1)

    def forward(self, shape: Tensor, exp: Tensor, pose: Tensor, eye_pose: Tensor | None = None) -> FaceModelOutput:
        """Vertices and landmarks.

        Args:
            shape: (B, n_shape).
            exp: (B, n_exp).
            pose: (B, 6) global rotation then jaw, axis-angle.
            eye_pose: optional (B, 6) left then right eyeball rotation; at rest when None (DECA).
        Returns:
            :class:`FaceModelOutput` with verts (B, V, 3), lmks_2d (B, 68, 3), lmks_3d (B, 68, 3).
        """
        batch = self.check_params(shape, exp, pose)
        if eye_pose is not None and tuple(eye_pose.shape) != (batch, 6):
            raise ValueError(f"FLAME: eye_pose must have shape ({batch}, 6), got {tuple(eye_pose.shape)}")
        full_pose = self.full_pose(pose, eye_pose)  # (B, 15)
        betas = torch.cat([shape, exp], dim=1)  # (B, n_shape + n_exp)
        out = lbs(betas, full_pose, self.template, self.shapedirs, self.posedirs, self.J_regressor,
                  self._parent_ids, self.lbs_weights)
        verts = out.verts  # (B, V, 3)

        dyn_faces, dyn_bary = dynamic_contour(full_pose, self.dynamic_lmk_faces_idx,
                                              self.dynamic_lmk_bary_coords, self.neck_kin_chain)
        lmk_faces = torch.cat([dyn_faces, self.lmk_faces_idx.expand(batch, -1)], dim=1)  # (B, 68)
        lmk_bary = torch.cat([dyn_bary, self.lmk_bary_coords.expand(batch, -1, -1)], dim=1)  # (B, 68, 3)
        lmks_2d = vertices_to_landmarks(verts, self.faces, lmk_faces, lmk_bary)  # (B, 68, 3)
        lmks_3d = vertices_to_landmarks(verts, self.faces, self.full_lmk_faces_idx, self.full_lmk_bary_coords)
        return FaceModelOutput(verts=verts, lmks_2d=lmks_2d, lmks_3d=lmks_3d)


def load_flame(assets_root: Path | None = None, n_shape: int = 100, n_exp: int = 50,
               model_path: PathLike | None = None) -> FLAME:
    """FLAME from the assets folder (``generic_model.pkl``, ``landmark_embedding.npy``, ``head_template.obj``).

    Args:
        assets_root: the assets folder; ``$TVFACE_ASSETS`` (see :mod:`tvface.assets`) when None.
        n_shape, n_exp: DECA's 100 and 50 by default.
        model_path: an explicit ``generic_model.pkl`` (the config's ``face_model.model_path``).
    Raises:
        tvface.assets.AssetMissingError: a file is missing, with how to get it.
    """
    if model_path:
        model_path = Path(model_path)
        if not model_path.is_file():
            raise FileNotFoundError(f"FLAME model not found at {model_path} (face_model.model_path). "
                                    f"Download FLAME 2020's generic_model.pkl and set that key.")
    else:
        model_path = assets.require("flame_model", assets_root)
    embedding_path = assets.require("flame_landmarks", assets_root)
    template_path = assets.require("flame_template", assets_root)
    return FLAME.from_files(model_path, embedding_path, template_path, n_shape=n_shape, n_exp=n_exp)


__all__ = ["FLAME", "FLAME_N_JOINTS", "contour_bin_index", "dynamic_contour", "load_flame", "neck_chain_yaw"]
