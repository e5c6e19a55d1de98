"""Inflate an image U-Net into a spatio-temporal or multi-view one (AnimateDiff, ModelScope,
Make-A-Video, MVDream).

Temporal and cross-view layers are added next to the spatial ones, never instead of them: every
2D parameter keeps its name (2D checkpoints still load) and every new layer starts as the identity,
so at initialisation the inflated U-Net applied to a clip (or a set of views with cameras) equals
the 2D U-Net applied frame by frame.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

from torch import nn

from spacetime.models.temporal import (
    CameraEmbedding,
    CrossViewTransformer,
    TemporalConv,
    TemporalTransformer,
)
from spacetime.models.unet import UNet2DCondition

# Parameter-name fragments of the layers `inflate` adds (diffusers' names for the temporal ones,
# MVDream's `camera_embed`, spacetime's `view_attentions`).
TEMPORAL_KEYS = (".temp_convs.", ".temp_attentions.", ".motion_modules.", "transformer_in.")
VIEW_KEYS = (".view_attentions.", "camera_embed.")


@dataclass(frozen=True)
class InflationSpec:
    """Which temporal, cross-view and camera layers to add, and their sizes."""

    motion_modules: bool = True  # AnimateDiff: temporal attention after each resnet+attention pair
    mid_block_motion: bool = True  # AnimateDiff v2+: one in the mid block too
    temporal_convs: bool = False  # ModelScope / Make-A-Video: temporal conv after each resnet
    temporal_attentions: bool = False  # ModelScope: temporal attention after each spatial one
    transformer_in: bool = False  # ModelScope: temporal attention right after conv_in
    heads: int = 8  # head count of motion modules and of transformer_in (ModelScope: 8)
    # ModelScope sizes attention by head width: temporal attentions get channels // head_dim heads,
    # transformer_in is heads · head_dim wide.
    head_dim: int = 64
    layers: int = 1  # transformer blocks per motion module / temporal or cross-view attention
    max_frames: int = 32  # frame positions the motion modules know (24 in AnimateDiff v1)
    # spacetime: the motion modules' second attention reads the prompt instead of the frames
    motion_text: bool = False
    # spacetime: the motion modules know each pixel's place in the frame (Fourier features)
    motion_pixel_positions: bool = False
    # MVDream (multi-view sets: the frame axis is a view axis)
    cameras: bool = False  # camera-to-world 4x4 -> MLP -> added to each view's timestep embedding
    view_attention: bool = False  # cross-view self-attention beside each spatial attention
    view_heads: int = 8
    view_head_dim: int | None = None  # None: channels // view_heads, the spatial attention's width
    camera_hidden: int | None = None  # camera MLP width; None: the timestep embedding's (MVDream)
    # spacetime: frame positions for the cross-view attention, which makes it a joint (t h w)
    # space-time attention for video; 0 (MVDream): none, the cameras tell views apart
    view_frames: int = 0
    # spacetime: share of the noise variance common to all frames that the modules were trained
    # with (PYoCo's mixed noise, spacetime.sampling.clip_noise); pipelines sample with the same
    shared_noise: float = 0.0

    def __post_init__(self):
        if not 0 <= self.shared_noise < 1:
            raise ValueError(f"shared_noise must be in [0, 1), got {self.shared_noise}")
        if not (
            self.motion_modules
            or self.temporal_convs
            or self.temporal_attentions
            or self.transformer_in
            or self.cameras
            or self.view_attention
        ):
            raise ValueError(
                "InflationSpec adds nothing: enable motion_modules, temporal_convs, "
                "temporal_attentions, transformer_in, cameras or view_attention"
            )

    def to_dict(self) -> dict:
        """Plain JSON values, as recorded in a saved U-Net's config.json."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> InflationSpec:
        """The inverse of `to_dict`; a ValueError names any key that is not a field."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise ValueError(
                f"unknown inflation keys: {', '.join(unknown)} (known: {', '.join(sorted(fields))})"
            )
        return cls(**values)

    @classmethod
    def modelscope(cls, head_dim: int = 64) -> InflationSpec:
        """ModelScope T2V's layout (diffusers' `UNet3DConditionModel`)."""
        return cls(
            motion_modules=False, temporal_convs=True, temporal_attentions=True,
            transformer_in=True, heads=8, head_dim=head_dim,
        )  # fmt: skip

    @classmethod
    def mvdream(
        cls,
        view_heads: int = 8,
        view_head_dim: int | None = None,
        camera_hidden: int | None = None,
    ) -> InflationSpec:
        """MVDream's multi-view model (Shi et al. 2023): cameras and cross-view attention only."""
        return cls(
            motion_modules=False, cameras=True, view_attention=True, view_heads=view_heads,
            view_head_dim=view_head_dim, camera_hidden=camera_hidden,
        )  # fmt: skip


def inflate(unet: UNet2DCondition, spec: InflationSpec = InflationSpec()) -> UNet2DCondition:
    """A copy of `unet` with the temporal, cross-view and camera layers `spec` asks for added; the
    original is left untouched."""
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
        if spec.temporal_attentions and block.attentions:
            if channels % spec.head_dim:
                raise ValueError(f"{channels} channels do not split into heads of {spec.head_dim}")
            block.temp_attentions = nn.ModuleList(
                TemporalTransformer(
                    channels, channels // spec.head_dim, groups, spec.layers, max_frames=None
                )
                for _ in block.attentions
            ).to(device)
        if spec.view_attention and block.attentions:
            if spec.view_head_dim is None and channels % spec.view_heads:
                raise ValueError(f"{channels} channels do not split into {spec.view_heads} heads")
            head_dim = spec.view_head_dim or channels // spec.view_heads
            block.view_attentions = nn.ModuleList(
                CrossViewTransformer(
                    channels, spec.view_heads, head_dim, groups, spec.layers, spec.view_frames
                )
                for _ in block.attentions
            ).to(device)
        if spec.motion_modules and (not mid or spec.mid_block_motion):
            count = len(block.attentions) if mid else len(block.resnets)
            block.motion_modules = nn.ModuleList(
                TemporalTransformer(
                    channels,
                    spec.heads,
                    groups,
                    spec.layers,
                    spec.max_frames,
                    context_dim=unet.config.cross_attention_dim if spec.motion_text else None,
                    pixel_positions=spec.motion_pixel_positions,
                )  # fmt: skip
                for _ in range(count)
            ).to(device)
    if spec.transformer_in:
        video.transformer_in = TemporalTransformer(
            unet.config.block_out_channels[0], spec.heads, groups, spec.layers,
            max_frames=None, head_dim=spec.head_dim,
        ).to(device)  # fmt: skip
    if spec.cameras:
        temb = video.time_embedding.linear_2.out_features
        video.camera_embed = CameraEmbedding(temb, spec.camera_hidden or temb).to(device)
    video.inflation = spec
    return video


def is_temporal(name: str) -> bool:
    """Whether a parameter name belongs to a layer `inflate` adds."""
    return any(key in name for key in (*TEMPORAL_KEYS, *VIEW_KEYS))


def freeze_spatial(unet: UNet2DCondition) -> list[nn.Parameter]:
    """Freeze every parameter but the added layers' (motion training); returns the trainable."""
    trainable = []
    for name, p in unet.named_parameters():
        temporal = is_temporal(name)
        p.requires_grad_(temporal)
        if temporal:
            trainable.append(p)
    return trainable
