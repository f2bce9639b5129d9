"""Linear blend skinning as in FLAME and SMPL, as pure functions.

The model (Loper et al. 2015, SMPL; Li et al. 2017, FLAME, Eq. 1-5)::

    v_shaped = T + B_S(betas)                          # identity + expression blend shapes
    J        = J_regressor @ v_shaped                  # joints regressed from the shaped mesh
    v_posed  = v_shaped + B_P(R(pose))                 # pose correctives, linear in (R - I)
    verts    = sum_j w_j G_j(pose, J) [v_posed; 1]     # skinning with the kinematic chain

The layout of every array follows the FLAME/SMPL pickles (and DECA's ``decalib/models/lbs.py``)
so that a FLAME model loaded from ``generic_model.pkl`` reproduces DECA's vertices.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from tvface.face_models.base import batch_rodrigues


@dataclass(frozen=True)
class LbsOutput:
    verts: Tensor  # (B, V, 3) skinned vertices
    joints: Tensor  # (B, J, 3) posed joint locations


def blend_shapes(betas: Tensor, shapedirs: Tensor) -> Tensor:
    """Per-vertex displacement of linear blend shapes.

    Args:
        betas: (B, K) coefficients.
        shapedirs: (V, 3, K) displacement basis.
    Returns:
        (B, V, 3) displacements ``sum_k betas[b, k] * shapedirs[:, :, k]``.
    """
    return torch.einsum("bk,vck->bvc", betas, shapedirs)


def vertices_to_joints(J_regressor: Tensor, verts: Tensor) -> Tensor:
    """Joint locations as a fixed linear combination of vertices.

    Args:
        J_regressor: (J, V).
        verts: (B, V, 3).
    Returns:
        (B, J, 3).
    """
    return torch.einsum("jv,bvc->bjc", J_regressor, verts)


def pose_feature(rot_mats: Tensor) -> Tensor:
    """Input of the pose correctives: ``R - I`` of every non-root joint, flattened row-major.

    Zero at rest, so the correctives vanish there (FLAME Eq. 4, SMPL Eq. 9).

    Args:
        rot_mats: (B, J, 3, 3) per-joint rotations, root first.
    Returns:
        (B, (J - 1) * 9).
    """
    eye = torch.eye(3, dtype=rot_mats.dtype, device=rot_mats.device)
    return (rot_mats[:, 1:] - eye).flatten(1)


def transform_mat(R: Tensor, t: Tensor) -> Tensor:
    """Rigid 4x4 transforms ``[[R, t], [0, 1]]``.

    Args:
        R: (N, 3, 3) rotations.
        t: (N, 3, 1) translations.
    Returns:
        (N, 4, 4).
    """
    return torch.cat([F.pad(R, [0, 0, 0, 1]), F.pad(t, [0, 0, 0, 1], value=1.0)], dim=2)


def batch_rigid_transform(rot_mats: Tensor, joints: Tensor, parents: Tensor | Sequence[int]) -> tuple[Tensor, Tensor]:
    """Forward kinematics along the kinematic tree.

    Each joint rotates about its own rest location, composed with its parent's transform. The
    returned relative transforms map a rest-pose point to its posed location
    (``G_j @ [v; 1]``): the rest joint location is subtracted so that rotation happens about it.

    Args:
        rot_mats: (B, J, 3, 3) local rotation of every joint.
        joints: (B, J, 3) rest joint locations.
        parents: (J,) long, parent index of each joint; ``parents[0]`` (the root) is ignored.
            Parents must come before their children.
    Returns:
        posed_joints: (B, J, 3).
        rel_transforms: (B, J, 4, 4).
    """
    batch, n_joints = joints.shape[:2]
    # A Python sequence avoids a device -> host copy on every call (FLAME passes its cached tuple).
    parent_ids = [int(p) for p in (parents.tolist() if isinstance(parents, Tensor) else parents)]
    rel_joints = joints.clone()  # (B, J, 3), offset from the parent joint
    rel_joints[:, 1:] = joints[:, 1:] - joints[:, parent_ids[1:]]
    local = transform_mat(rot_mats.reshape(-1, 3, 3), rel_joints.reshape(-1, 3, 1))
    local = local.view(batch, n_joints, 4, 4)

    chain = [local[:, 0]]
    for j in range(1, n_joints):
        chain.append(chain[parent_ids[j]] @ local[:, j])
    transforms = torch.stack(chain, dim=1)  # (B, J, 4, 4), world transform of each joint frame

    posed_joints = transforms[:, :, :3, 3]  # (B, J, 3)
    # G_j [v; 1] must rotate v about the rest joint: subtract G_j [J_j; 0] from the translation.
    moved_rest = transforms[:, :, :3, :3] @ joints.unsqueeze(-1)  # (B, J, 3, 1)
    rel_transforms = transforms - F.pad(moved_rest, [3, 0, 0, 1])  # (B, J, 4, 4)
    return posed_joints, rel_transforms


def skin_vertices(verts: Tensor, lbs_weights: Tensor, transforms: Tensor) -> Tensor:
    """Linear blend skinning of rest-pose vertices.

    Args:
        verts: (B, V, 3) rest-pose (shaped and pose-corrected) vertices.
        lbs_weights: (V, J) skinning weights (rows sum to 1).
        transforms: (B, J, 4, 4) relative joint transforms from :func:`batch_rigid_transform`.
    Returns:
        (B, V, 3) skinned vertices.
    """
    batch, n_joints = transforms.shape[:2]
    T = (lbs_weights @ transforms.reshape(batch, n_joints, 16)).view(batch, -1, 4, 4)  # (B, V, 4, 4)
    return (T[..., :3, :3] @ verts.unsqueeze(-1)).squeeze(-1) + T[..., :3, 3]


def lbs(betas: Tensor, pose: Tensor, v_template: Tensor, shapedirs: Tensor, posedirs: Tensor,
        J_regressor: Tensor, parents: Tensor | Sequence[int], lbs_weights: Tensor) -> LbsOutput:
    """Shape, pose-corrective and skinning: FLAME/SMPL's ``lbs``.

    Args:
        betas: (B, K) blend-shape coefficients (FLAME: shape then expression).
        pose: (B, J * 3) axis-angle rotation of every joint, root first.
        v_template: (V, 3) or (B, V, 3) template vertices.
        shapedirs: (V, 3, K) blend shapes.
        posedirs: (P, V * 3) pose correctives, P = (J - 1) * 9 (the pickle's ``(V, 3, P)`` array
            reshaped to ``(V * 3, P)`` and transposed, as DECA does).
        J_regressor: (J, V).
        parents: (J,) long, ``parents[0] = -1``.
        lbs_weights: (V, J).
    Returns:
        :class:`LbsOutput` with verts (B, V, 3) and posed joints (B, J, 3).
    """
    batch = max(betas.shape[0], pose.shape[0])
    n_joints = J_regressor.shape[0]
    if pose.shape[-1] != n_joints * 3:
        raise ValueError(f"lbs: pose must have shape (B, {n_joints * 3}) for {n_joints} joints, "
                         f"got {tuple(pose.shape)}")
    v_shaped = v_template + blend_shapes(betas, shapedirs)  # (B, V, 3)
    joints = vertices_to_joints(J_regressor, v_shaped)  # (B, J, 3)

    rot_mats = batch_rodrigues(pose.reshape(-1, 3)).view(batch, n_joints, 3, 3)  # (B, J, 3, 3)
    pose_offsets = (pose_feature(rot_mats) @ posedirs).view(batch, -1, 3)  # (B, V, 3)
    v_posed = v_shaped + pose_offsets

    posed_joints, transforms = batch_rigid_transform(rot_mats, joints, parents)
    verts = skin_vertices(v_posed, lbs_weights, transforms)  # (B, V, 3)
    return LbsOutput(verts=verts, joints=posed_joints)


def vertices_to_landmarks(verts: Tensor, faces: Tensor, lmk_faces_idx: Tensor, lmk_bary_coords: Tensor) -> Tensor:
    """Landmarks as barycentric points on mesh triangles.

    Args:
        verts: (B, V, 3).
        faces: (F, 3) long.
        lmk_faces_idx: (L,) or (B, L) long, the triangle of each landmark.
        lmk_bary_coords: (L, 3) or (B, L, 3) barycentric weights.
    Returns:
        (B, L, 3).
    """
    batch = verts.shape[0]
    if lmk_faces_idx.ndim == 1:
        lmk_faces_idx = lmk_faces_idx.expand(batch, -1)
    if lmk_bary_coords.ndim == 2:
        lmk_bary_coords = lmk_bary_coords.expand(batch, -1, -1)
    tri = faces[lmk_faces_idx]  # (B, L, 3) vertex ids
    batch_idx = torch.arange(batch, device=verts.device).view(-1, 1, 1)
    corners = verts[batch_idx, tri]  # (B, L, 3 corners, 3 xyz)
    return torch.einsum("blkc,blk->blc", corners, lmk_bary_coords.to(verts.dtype))
