"""Inflate an image U-Net into a spatio-temporal one (AnimateDiff, ModelScope, Make-A-Video).

Temporal layers are added next to the spatial ones, never instead of them: every 2D parameter
keeps its name (2D checkpoints still load) and every new layer starts as the identity, so at
initialisation the inflated U-Net applied to a clip equals the 2D U-Net applied frame by frame.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from torch import nn

from spacetime.models.temporal import TemporalConv, TemporalTransformer
from spacetime.models.unet import UNet2DCondition


@dataclass(frozen=True)
class InflationSpec:
    """Which temporal layers to add, and their sizes."""

    motion_modules: bool = True  # AnimateDiff: temporal attention after each resnet+attention pair
    mid_block_motion: bool = True  # AnimateDiff v2+: one in the mid block too
    temporal_convs: bool = False  # ModelScope / Make-A-Video: temporal conv after each resnet
    heads: int = 8
    layers: int = 1  # transformer blocks per motion module
    max_frames: int = 32  # frame positions the motion modules know (24 in AnimateDiff v1)

    def __post_init__(self):
        if not (self.motion_modules or self.temporal_convs):
            raise ValueError("InflationSpec adds nothing: enable motion_modules or temporal_convs")


def inflate(unet: UNet2DCondition, spec: InflationSpec = InflationSpec()) -> UNet2DCondition:
    """A copy of `unet` with temporal layers added; the original is left untouched."""
    video = copy.deepcopy(unet)
    groups = unet.config.norm_num_groups
    device = unet.conv_in.weight.device
    blocks = [*video.down_blocks, *video.up_blocks]
    if video.mid_block is not None:
        blocks.append(video.mid_block)
    for block in blocks:
        channels = block.resnets[0].conv2.out_channels
        mid = block is video.mid_block
        if spec.temporal_convs:
            block.temp_convs = nn.ModuleList(
                TemporalConv(channels, groups) for _ in block.resnets
            ).to(device)
        if spec.motion_modules and (not mid or spec.mid_block_motion):
            count = len(block.attentions) if mid else len(block.resnets)
            block.motion_modules = nn.ModuleList(
                TemporalTransformer(channels, spec.heads, groups, spec.layers, spec.max_frames)
                for _ in range(count)
            ).to(device)
    video.inflation = spec
    return video


def freeze_spatial(unet: UNet2DCondition) -> list[nn.Parameter]:
    """Freeze every parameter but the temporal layers' (motion training); returns the trainable."""
    trainable = []
    for name, p in unet.named_parameters():
        temporal = ".temp_convs." in name or ".motion_modules." in name
        p.requires_grad_(temporal)
        if temporal:
            trainable.append(p)
    return trainable
