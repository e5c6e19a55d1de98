"""Inflate an image U-Net into a spatio-temporal or multi-view one (AnimateDiff, ModelScope,
Make-A-Video, MVDream).

Temporal and cross-view layers are added next to the spatial ones, never instead of them: every
2D parameter keeps its name (2D checkpoints still load) and every new layer starts as the identity,
so at initialisation the inflated U-Net applied to a clip (or a set of views with cameras) equals
the 2D U-Net applied frame by frame. The one exception is the layout of MVDream's published
weights (`MVDream.published()`), which widens SD's own self-attention to all views instead of
adding layers: it equals the 2D U-Net for one view without cameras.

One small typed spec per family says which layers to add and their sizes; what an inflated U-Net
can do (take cameras, how many frame positions it knows) is read off its spec in one place,
`UNet2DCondition.takes_cameras` / `frame_positions`.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from spacetime.models.temporal import (
    CameraEmbedding,
    CrossViewTransformer,
    TemporalConv,
    TemporalTransformer,
)
from spacetime.models.unet import UNet2DCondition, UNetBlock, UNetEncoder

# Parameter-name fragments of the layers `inflate` adds (diffusers' names for the temporal ones,
# MVDream's `camera_embed`, spacetime's `view_attentions`).
TEMPORAL_KEYS = (".temp_convs.", ".temp_attentions.", ".motion_modules.", "transformer_in.")
VIEW_KEYS = (".view_attentions.", "camera_embed.")


@dataclass(frozen=True)
class AnimateDiff:
    """AnimateDiff's motion modules (Guo et al. 2023; diffusers' `MotionAdapter`): a temporal
    transformer after each resnet+attention pair, and in v2 one in the mid block too."""

    family: ClassVar[str] = "animatediff"
    takes_cameras: ClassVar[bool] = False

    heads: int = 8
    layers: int = 1  # transformer blocks per motion module
    max_frames: int = 32  # frame positions the modules know: 24 in v1, 32 in v2
    mid_block: bool = True  # v2: a motion module in the mid block
    # spacetime's world motion module: the second attention reads the prompt instead of the
    # frames, and each pixel's frame sequence knows its place in the frame (Fourier features)
    reads_text: bool = False
    pixel_positions: bool = False
    # attentions per temporal block: 2 in motion modules, 1 in SparseCtrl's ("Temporal_Self")
    attention_blocks: int = 2

    def __post_init__(self):
        if self.attention_blocks not in (1, 2):
            raise ValueError(f"attention_blocks must be 1 or 2, got {self.attention_blocks}")

    @property
    def frame_positions(self) -> int:
        return self.max_frames

    @classmethod
    def v1(cls) -> AnimateDiff:
        """mm_sd_v14 / mm_sd_v15: 24 frame positions, no mid-block module."""
        return cls(max_frames=24, mid_block=False)

    @classmethod
    def v2(cls) -> AnimateDiff:
        """mm_sd_v15_v2: 32 frame positions and a mid-block module."""
        return cls()


@dataclass(frozen=True)
class ModelScope:
    """ModelScope T2V (Wang et al. 2023; diffusers' `UNet3DConditionModel`): a temporal conv after
    each resnet, a temporal attention after each spatial one, and `transformer_in` after conv_in.
    Attentions are sized by head width: temporal ones get channels // head_dim heads,
    transformer_in is heads · head_dim wide."""

    family: ClassVar[str] = "modelscope"
    takes_cameras: ClassVar[bool] = False
    frame_positions: ClassVar[None] = None  # no frame positions: any clip length

    head_dim: int = 64
    heads: int = 8  # transformer_in's
    layers: int = 1


CAMERA_FRAMES = ("world", "mvdream")


@dataclass(frozen=True)
class MVDream:
    """MVDream's multi-view model (Shi et al. 2023): camera-to-world 4x4 -> MLP added to each
    view's timestep embedding, and attention across the views of a set.

    Two layouts. spacetime's own (the shipped world model) adds a zero-initialised cross-view
    attention beside each spatial attention, sized by heads, head_dim and layers. MVDream's
    published weights (`MVDream.published()`) add no attention layer: SD's own self-attention
    spans the tokens of all views, `(b v) n c -> b (v n) c` (`views_in_self_attention`), and
    the cameras are embedded in the frame MVDream was trained in (`camera_frame`).
    """

    family: ClassVar[str] = "mvdream"
    takes_cameras: ClassVar[bool] = True
    frame_positions: ClassVar[None] = None  # views are told apart by their cameras
    # Left out of config.json at their defaults: configs saved before they existed stay equal.
    recorded_if_set: ClassVar[tuple[str, ...]] = ("views_in_self_attention", "camera_frame")

    heads: int = 8
    head_dim: int | None = None  # None: channels // heads, the spatial attention's width
    camera_hidden: int | None = None  # camera MLP width; None: the timestep embedding's
    layers: int = 1
    # True: no cross-view layers; each spatial self-attention runs over all views' tokens
    views_in_self_attention: bool = False
    # "world": cameras embedded as given (spacetime's OpenGL world, +y up); "mvdream": first
    # moved to MVDream's training frame (+z up, camera centre on the unit sphere)
    camera_frame: str = "world"

    def __post_init__(self):
        if self.camera_frame not in CAMERA_FRAMES:
            raise ValueError(
                f"camera_frame must be one of {', '.join(CAMERA_FRAMES)}, got {self.camera_frame!r}"
            )
        separate = (self.heads, self.head_dim, self.layers)
        if self.views_in_self_attention and separate != (8, None, 1):
            raise ValueError(
                "heads, head_dim and layers size the separate cross-view layers; with "
                f"views_in_self_attention there are none, got {separate}"
            )

    @classmethod
    def published(cls) -> MVDream:
        """The layout of MVDream's released weights (sd-v2.1-base-4view, sd-v1.5-4view)."""
        return cls(views_in_self_attention=True, camera_frame="mvdream")


InflationSpec = AnimateDiff | ModelScope | MVDream
FAMILIES = {spec.family: spec for spec in (AnimateDiff, ModelScope, MVDream)}


def spec_to_dict(spec: InflationSpec) -> dict:
    """Plain JSON values, as recorded in a saved U-Net's config.json."""
    values = dataclasses.asdict(spec)
    defaults = {f.name: f.default for f in dataclasses.fields(spec)}
    for name in getattr(spec, "recorded_if_set", ()):
        if values[name] == defaults[name]:
            del values[name]
    return {"family": spec.family, **values}


def spec_from_dict(values: dict) -> InflationSpec:
    """The inverse of `spec_to_dict`; a ValueError names an unknown family or key."""
    values = dict(values)
    family = values.pop("family", None)
    if family not in FAMILIES:
        raise ValueError(f"inflation family must be one of {', '.join(FAMILIES)}, got {family!r}")
    cls = FAMILIES[family]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(
            f"unknown {family} inflation keys: {', '.join(unknown)} "
            f"(known: {', '.join(sorted(known))})"
        )
    return cls(**values)


def inflate(unet: UNetEncoder, spec: InflationSpec) -> UNetEncoder:
    """A copy of `unet` (a U-Net, or a ControlNet: SparseCtrl) with the temporal, cross-view and
    camera layers `spec` asks for added; the original is left untouched."""
    video = copy.deepcopy(unet)
    blocks = [*video.down_blocks, *getattr(video, "up_blocks", [])]
    if video.mid_block is not None:
        blocks.append(video.mid_block)
    for block in blocks:
        _inflate_block(block, spec, unet, mid=block is video.mid_block)
    groups, device = unet.config.norm_num_groups, unet.conv_in.weight.device
    if isinstance(spec, ModelScope):
        video.transformer_in = TemporalTransformer(
            unet.config.block_out_channels[0], spec.heads, groups, spec.layers,
            max_frames=None, head_dim=spec.head_dim,
        ).to(device)  # fmt: skip
    if isinstance(spec, MVDream):
        temb = video.time_embedding.linear_2.out_features
        video.camera_embed = CameraEmbedding(temb, spec.camera_hidden or temb).to(device)
    video.inflation = spec
    return video


def _inflate_block(block: UNetBlock, spec: InflationSpec, unet: UNetEncoder, mid: bool):
    """Add one block's temporal or cross-view layers, one per resnet or per spatial attention."""
    channels = block.resnets[0].conv2.out_channels
    groups, device = unet.config.norm_num_groups, unet.conv_in.weight.device
    if isinstance(spec, AnimateDiff) and (not mid or spec.mid_block):
        context = unet.config.cross_attention_dim if spec.reads_text else None
        block.motion_modules = nn.ModuleList(
            TemporalTransformer(
                channels,
                spec.heads,
                groups,
                spec.layers,
                spec.max_frames,
                context_dim=context,
                pixel_positions=spec.pixel_positions,
                attentions=spec.attention_blocks,
            )  # fmt: skip
            for _ in range(len(block.attentions) if mid else len(block.resnets))
        ).to(device)
    if isinstance(spec, ModelScope):
        block.temp_convs = nn.ModuleList(TemporalConv(channels, groups) for _ in block.resnets)
        block.temp_convs.to(device)
        if block.attentions and channels % spec.head_dim:
            raise ValueError(f"{channels} channels do not split into heads of {spec.head_dim}")
        block.temp_attentions = nn.ModuleList(
            TemporalTransformer(
                channels, channels // spec.head_dim, groups, spec.layers, max_frames=None
            )
            for _ in block.attentions
        ).to(device)
    if isinstance(spec, MVDream) and block.attentions and spec.views_in_self_attention:
        block.views_in_self_attention = True
    elif isinstance(spec, MVDream) and block.attentions:
        if spec.head_dim is None and channels % spec.heads:
            raise ValueError(f"{channels} channels do not split into {spec.heads} heads")
        head_dim = spec.head_dim or channels // spec.heads
        block.view_attentions = nn.ModuleList(
            CrossViewTransformer(channels, spec.heads, head_dim, groups, spec.layers)
            for _ in block.attentions
        ).to(device)


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
