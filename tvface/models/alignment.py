"""Second-order flow-guided deformable alignment (BasicVSR++, Chan et al. CVPR 2022, Sec. 3.2).

Frame i's propagated feature in a branch is aligned from the branch's features of its two previous
frames in the branch's direction (n1 = i∓1, n2 = i∓2). Both neighbours are first warped by the flow
(:func:`tvface.ops.flow_warp.flow_warp`); from [warped n1, current, warped n2, flow_n1, flow_n2] a
small CNN predicts residual offsets, bounded by ``max_residue * tanh`` (BasicVSR++: 10), and a
modulation mask (sigmoid). The flows are added to the residual offsets and a DCNv2
(:func:`tvface.ops.deform_conv.deform_conv2d`) samples the *unwarped* neighbours; the first half of
the deformable groups reads n1's channels, the second half n2's. Missing neighbours are zeros.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from tvface.ops.deform_conv import deform_conv2d
from tvface.ops.flow_warp import flow_warp

__all__ = ["flow_guided_deform_align", "SecondOrderDeformableAlignment"]

MAX_RESIDUE_MAGNITUDE = 10.0  # BasicVSR++: offsets may deviate at most 10 px from the flow


def flow_guided_deform_align(feat_n1: Tensor, feat_n2: Tensor, flow_n1: Tensor, flow_n2: Tensor,
                             offset_residual: Tensor, mask: Tensor, weight: Tensor,
                             bias: Tensor | None, deform_groups: int) -> Tensor:
    """Flow-guided modulated deformable convolution of two neighbours.

    Args:
        feat_n1, feat_n2: (B, C, h, w) neighbour features (unwarped).
        flow_n1, flow_n2: (B, 2, h, w) flows current -> neighbour, (dx, dy) pixels.
        offset_residual: (B, 2 * G * 9, h, w) bounded residual offsets, (Δy, Δx) per tap; the first
            G/2 groups apply to feat_n1, the rest to feat_n2.
        mask: (B, G * 9, h, w) modulation in [0, 1].
        weight: (C_out, 2C, 3, 3); bias: (C_out,) or None.
    Returns:
        (B, C_out, h, w) aligned feature.
    """
    off_1, off_2 = offset_residual.chunk(2, dim=1)
    # Flow channels (dx, dy) -> offset order (Δy, Δx), repeated for every tap and group.
    off_1 = off_1 + flow_n1.flip(1).repeat(1, off_1.shape[1] // 2, 1, 1)
    off_2 = off_2 + flow_n2.flip(1).repeat(1, off_2.shape[1] // 2, 1, 1)
    return deform_conv2d(torch.cat([feat_n1, feat_n2], 1), torch.cat([off_1, off_2], 1), weight, bias,
                         padding=1, mask=mask)


class SecondOrderDeformableAlignment(nn.Module):
    """BasicVSR++'s alignment module with our DCNv2.

    Args:
        channels: feature channels C (the DCN maps 2C -> C).
        deform_groups: G (16 in BasicVSR++; split evenly between the two neighbours).
        offset_channels: width of the offset-predicting CNN (BasicVSR++: C).
        max_residue: bound of the residual offsets (BasicVSR++: 10).
    """

    def __init__(self, channels: int, deform_groups: int = 16, offset_channels: int | None = None,
                 max_residue: float = MAX_RESIDUE_MAGNITUDE) -> None:
        super().__init__()
        if deform_groups % 2 or (2 * channels) % deform_groups:
            raise ValueError(f"deform_groups={deform_groups} must be even and divide 2*channels={2 * channels}")
        oc = offset_channels or channels
        self.deform_groups, self.max_residue = deform_groups, max_residue
        k = 9
        self.conv_offset = nn.Sequential(
            nn.Conv2d(3 * channels + 4, oc, 3, 1, 1), nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(oc, oc, 3, 1, 1), nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(oc, oc, 3, 1, 1), nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(oc, 3 * deform_groups * k, 3, 1, 1))
        # BasicVSR++ starts from zero residual offsets and mask 0.5.
        nn.init.zeros_(self.conv_offset[-1].weight)
        nn.init.zeros_(self.conv_offset[-1].bias)
        self.weight = nn.Parameter(torch.empty(channels, 2 * channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(channels))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def predict_offsets(self, feat_cur: Tensor, feat_n1: Tensor, feat_n2: Tensor, flow_n1: Tensor,
                        flow_n2: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """-> (bounded residual offsets (B, 2*G*9, h, w), mask (B, G*9, h, w), warped n1, warped n2)."""
        cond_n1 = flow_warp(feat_n1, flow_n1)
        cond_n2 = flow_warp(feat_n2, flow_n2)
        out = self.conv_offset(torch.cat([cond_n1, feat_cur, cond_n2, flow_n1, flow_n2], 1))
        o1, o2, mask = out.chunk(3, dim=1)
        # Eq. of BasicVSR++ Sec. 3.2: bound the residual so the DCN stays near the flow.
        offset = self.max_residue * torch.tanh(torch.cat([o1, o2], 1))
        return offset, torch.sigmoid(mask), cond_n1, cond_n2

    def forward(self, feat_cur: Tensor, feat_n1: Tensor, feat_n2: Tensor, flow_n1: Tensor,
                flow_n2: Tensor) -> Tensor:
        """All (B, ·, h, w); flows current -> neighbour. Returns the aligned (B, C, h, w) feature."""
        offset, mask, _, _ = self.predict_offsets(feat_cur, feat_n1, feat_n2, flow_n1, flow_n2)
        return flow_guided_deform_align(feat_n1, feat_n2, flow_n1, flow_n2, offset, mask, self.weight,
                                        self.bias, self.deform_groups)
