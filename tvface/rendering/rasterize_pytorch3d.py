"""Optional rasteriser backend: pytorch3d's ``rasterize_meshes`` (CUDA kernels, coarse-to-fine bins).

pytorch3d is not on PyPI for every torch/CUDA pair; on GPU nodes install it with conda
(``conda install -c pytorch3d pytorch3d``) or from source
(``pip install "git+https://github.com/facebookresearch/pytorch3d.git@stable"``, needs nvcc).
It is used when importable and ``backend`` is "auto" or "pytorch3d"; results match the ``torch``
backend up to tie-breaks on shared edges.
"""
from __future__ import annotations

import torch
from torch import Tensor

from tvface.rendering.rasterize import Fragments, ndc_to_pixel

# DECA moves meshes to z > 0 before calling pytorch3d ("near 0 far 100").
_Z_OFFSET = 10.0


def pytorch3d_available() -> bool:
    try:
        import pytorch3d.renderer.mesh  # noqa: F401
    except ImportError:
        return False
    return True


def rasterize_pytorch3d(screen_verts: Tensor, faces: Tensor, height: int, width: int | None = None,
                        cull_backfaces: bool = True) -> Fragments:
    """Same contract as :func:`tvface.rendering.rasterize.rasterize`, square images only."""
    from pytorch3d.renderer.mesh import rasterize_meshes
    from pytorch3d.structures import Meshes

    width = height if width is None else width
    if width != height:
        raise ValueError(f"the pytorch3d backend renders square images only, got {height}x{width}")
    with torch.autocast(device_type=screen_verts.device.type, enabled=False):
        sv = screen_verts.float()
        # pytorch3d's NDC has +x left, +y up (DECA's Pytorch3dRasterizer flips both).
        fixed = torch.cat([-sv[..., :2], sv[..., 2:] + _Z_OFFSET], dim=-1)
        if cull_backfaces:  # cull with our own orientation test so both backends agree by construction
            pix = ndc_to_pixel(sv[..., :2], height, width)[:, faces]  # (B, F, 3, 2)
            e1, e2 = pix[:, :, 1] - pix[:, :, 0], pix[:, :, 2] - pix[:, :, 0]
            keep = [torch.nonzero(m).squeeze(1) for m in (e1[..., 0] * e2[..., 1] - e1[..., 1] * e2[..., 0]) < 0]
        else:
            keep = [torch.arange(faces.shape[0], device=faces.device)] * sv.shape[0]
        meshes = Meshes(verts=list(fixed), faces=[faces[k] for k in keep])
        pix_to_face, zbuf, bary, _ = rasterize_meshes(meshes, image_size=height, blur_radius=0.0,
                                                      faces_per_pixel=1, perspective_correct=False)
        p2f = pix_to_face[..., 0].reshape(-1)
        pix_idx = torch.nonzero(p2f >= 0).squeeze(1)
        face_idx = torch.cat(keep)[p2f[pix_idx]]
        bary = bary[..., 0, :].reshape(-1, 3)[pix_idx]
        depth = zbuf[..., 0].reshape(-1)[pix_idx] - _Z_OFFSET
    return Fragments(pix_idx, face_idx, bary, depth, sv.shape[0], height, width)
