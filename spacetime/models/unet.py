"""The Stable Diffusion U-Net (Rombach et al. 2022, LDM) with diffusers' parameter names.

Parameter names equal diffusers' `UNet2DConditionModel`, so a diffusers `unet/` folder loads without
renaming and temporal layers added by inflation leave every spatial key where it was. The forward
takes images `(b, c, h, w)` or clips `(b, c, t, h, w)`: frames fold into the batch for the spatial
layers, so an image is simply a one-frame clip, and a multi-view set (MVDream) is a clip whose
frames are views, with one camera per view.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
from einops import rearrange
from torch import Tensor, nn

from spacetime.models.layers import (
    Downsample,
    Layout2d,
    ResnetBlock,
    SpatialTransformer,
    TimestepEmbedding,
    Upsample,
    timestep_embedding,
)
from spacetime.models.temporal import to_mvdream_frame


@dataclass(frozen=True)
class UNetConfig:
    """Sizes of an SD 1.x/2.x U-Net; `heads` and `attention` are per resolution level."""

    in_channels: int = 4
    out_channels: int = 4
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    attention: tuple[bool, ...] = (True, True, True, False)
    heads: tuple[int, ...] = (8, 8, 8, 8)
    layers_per_block: int = 2
    transformer_depth: int = 1
    cross_attention_dim: int = 768
    use_linear_projection: bool = False
    mid_block: bool = True
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    flip_sin_to_cos: bool = True
    freq_shift: int = 0
    upcast_attention: bool = False
    sample_size: int = 64

    def __post_init__(self):
        levels = len(self.block_out_channels)
        for name in ("attention", "heads"):
            if len(getattr(self, name)) != levels:
                raise ValueError(
                    f"UNetConfig.{name} needs one entry per level ({levels}), got {getattr(self, name)}"
                )
        for ch, h in zip(self.block_out_channels, self.heads, strict=True):
            if ch % h:
                raise ValueError(f"UNetConfig: {ch} channels do not split into {h} heads")

    # -- diffusers config.json -------------------------------------------------------------------
    @classmethod
    def from_diffusers(cls, cfg: dict) -> UNetConfig:
        """Read a diffusers `UNet2DConditionModel` config.json, refusing features we don't model."""
        cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
        unknown = set(cfg) - _DIFFUSERS_KEYS
        if unknown:
            raise ValueError(f"unsupported U-Net config keys: {', '.join(sorted(unknown))}")
        for key, default in _DIFFUSERS_DEFAULT_ONLY.items():
            if (
                key in cfg
                and cfg[key] != default
                and not (isinstance(default, list | tuple) and list(cfg[key]) == list(default))
            ):
                raise ValueError(f"unsupported U-Net config: {key}={cfg[key]!r} (only {default!r})")
        channels = tuple(cfg.get("block_out_channels", cls.block_out_channels))
        levels = len(channels)
        down = cfg.get(
            "down_block_types", ["CrossAttnDownBlock2D"] * (levels - 1) + ["DownBlock2D"]
        )
        attention = tuple(_block_has_attention(t, "Down") for t in down)
        up = cfg.get("up_block_types")
        if up is not None:
            expected = [t.replace("Down", "Up") for t in reversed(down)]
            if list(up) != expected:
                raise ValueError(f"up_block_types {up} do not mirror down_block_types {down}")
        heads = cfg.get("num_attention_heads") or cfg.get("attention_head_dim", 8)
        heads = tuple(heads) if isinstance(heads, list | tuple) else (heads,) * levels
        mid = cfg.get("mid_block_type", "UNetMidBlock2DCrossAttn")
        if mid not in ("UNetMidBlock2DCrossAttn", None):
            raise ValueError(f"unsupported mid_block_type {mid!r}")
        for key in ("layers_per_block", "transformer_layers_per_block", "cross_attention_dim"):
            if isinstance(cfg.get(key), list | tuple) and len(set(cfg[key])) > 1:
                raise ValueError(f"per-level {key}={cfg[key]} is not supported")
            if isinstance(cfg.get(key), list | tuple):
                cfg[key] = cfg[key][0]
        return cls(
            in_channels=cfg.get("in_channels", 4),
            out_channels=cfg.get("out_channels", 4),
            block_out_channels=channels,
            attention=attention,
            heads=heads,
            layers_per_block=cfg.get("layers_per_block", 2),
            transformer_depth=cfg.get("transformer_layers_per_block", 1),
            cross_attention_dim=cfg.get("cross_attention_dim", 1280),
            use_linear_projection=cfg.get("use_linear_projection", False),
            mid_block=mid is not None,
            norm_num_groups=cfg.get("norm_num_groups", 32),
            norm_eps=cfg.get("norm_eps", 1e-5),
            flip_sin_to_cos=cfg.get("flip_sin_to_cos", True),
            freq_shift=cfg.get("freq_shift", 0),
            upcast_attention=cfg.get("upcast_attention", False),
            sample_size=cfg.get("sample_size") or 64,
        )

    def to_diffusers(self) -> dict:
        """A config.json that diffusers' `UNet2DConditionModel` loads."""
        down = ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in self.attention]
        return {
            "_class_name": "UNet2DConditionModel",
            "_diffusers_version": "0.30.0",
            "sample_size": self.sample_size,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "down_block_types": down,
            "mid_block_type": "UNetMidBlock2DCrossAttn" if self.mid_block else None,
            "up_block_types": [t.replace("Down", "Up") for t in reversed(down)],
            "block_out_channels": list(self.block_out_channels),
            "layers_per_block": self.layers_per_block,
            "transformer_layers_per_block": self.transformer_depth,
            "attention_head_dim": list(self.heads),
            "cross_attention_dim": self.cross_attention_dim,
            "use_linear_projection": self.use_linear_projection,
            "norm_num_groups": self.norm_num_groups,
            "norm_eps": self.norm_eps,
            "flip_sin_to_cos": self.flip_sin_to_cos,
            "freq_shift": self.freq_shift,
            "upcast_attention": self.upcast_attention,
            "act_fn": "silu",
            "center_input_sample": False,
            "downsample_padding": 1,
            "mid_block_scale_factor": 1,
        }

    def to_dict(self) -> dict:
        return asdict(self)


def _block_has_attention(block_type: str, direction: str) -> bool:
    if block_type == f"CrossAttn{direction}Block2D":
        return True
    if block_type == f"{direction}Block2D":
        return False
    raise ValueError(f"unsupported block type {block_type!r}")


# Keys of diffusers' config.json that we read; the second table lists those that must keep their
# default because the feature they switch on is not modelled (a silent mismatch would give wrong
# images, so we refuse instead).
_DIFFUSERS_KEYS = {
    "sample_size", "in_channels", "out_channels", "center_input_sample", "flip_sin_to_cos",
    "freq_shift", "down_block_types", "mid_block_type", "up_block_types", "only_cross_attention",
    "block_out_channels", "layers_per_block", "downsample_padding", "mid_block_scale_factor",
    "dropout", "act_fn", "norm_num_groups", "norm_eps", "cross_attention_dim",
    "transformer_layers_per_block", "reverse_transformer_layers_per_block", "encoder_hid_dim",
    "encoder_hid_dim_type", "attention_head_dim", "num_attention_heads", "dual_cross_attention",
    "use_linear_projection", "class_embed_type", "addition_embed_type", "addition_time_embed_dim",
    "num_class_embeds", "upcast_attention", "resnet_time_scale_shift", "resnet_skip_time_act",
    "resnet_out_scale_factor", "time_embedding_type", "time_embedding_dim", "time_embedding_act_fn",
    "timestep_post_act", "time_cond_proj_dim", "conv_in_kernel", "conv_out_kernel",
    "projection_class_embeddings_input_dim", "attention_type", "class_embeddings_concat",
    "mid_block_only_cross_attention", "cross_attention_norm", "addition_embed_type_num_heads",
}  # fmt: skip
_DIFFUSERS_DEFAULT_ONLY = {
    "center_input_sample": False, "only_cross_attention": False, "downsample_padding": 1,
    "mid_block_scale_factor": 1, "act_fn": "silu", "reverse_transformer_layers_per_block": None,
    "encoder_hid_dim": None, "encoder_hid_dim_type": None, "dual_cross_attention": False,
    "class_embed_type": None, "addition_embed_type": None, "num_class_embeds": None,
    "resnet_time_scale_shift": "default", "resnet_skip_time_act": False,
    "resnet_out_scale_factor": 1.0, "time_embedding_type": "positional",
    "time_embedding_dim": None, "time_embedding_act_fn": None, "timestep_post_act": None,
    "time_cond_proj_dim": None, "conv_in_kernel": 3, "conv_out_kernel": 3,
    "attention_type": "default", "class_embeddings_concat": False,
    "mid_block_only_cross_attention": None, "cross_attention_norm": None,
}  # fmt: skip


# -- blocks ----------------------------------------------------------------------------------------


class UNetBlock(nn.Module):
    """One resolution level: resnets (each optionally followed by a spatial transformer), then a
    resampler. Down, mid and up levels differ only in channel plumbing, so one class serves all.
    """

    def __init__(
        self,
        in_channels: list[int],
        out_channels: int,
        temb_channels: int,
        attention_heads: int | None,
        cfg: UNetConfig,
        resample: str | None = None,
    ):
        super().__init__()
        groups, eps = cfg.norm_num_groups, cfg.norm_eps
        self.resnets = nn.ModuleList(
            [ResnetBlock(c, out_channels, temb_channels, groups, eps) for c in in_channels]
        )
        n_attn = len(in_channels) if resample != "mid" else len(in_channels) - 1
        self.attentions = nn.ModuleList(
            [
                SpatialTransformer(
                    out_channels,
                    attention_heads,
                    cfg.cross_attention_dim,
                    cfg.transformer_depth,
                    groups,
                    cfg.use_linear_projection,
                )
                for _ in range(n_attn if attention_heads else 0)
            ]
        )
        if resample == "down":
            self.downsamplers = nn.ModuleList([Downsample(out_channels)])
        elif resample == "up":
            self.upsamplers = nn.ModuleList([Upsample(out_channels)])
        # Filled by `inflate` (spacetime.models.inflate); empty in an image U-Net, so they add no
        # parameters and no keys. Names follow ModelScope's (temp_convs, temp_attentions) and
        # AnimateDiff's (motion_modules) diffusers layouts; view_attentions (MVDream's cross-view
        # attention, one per spatial attention) is spacetime's own.
        self.temp_convs = nn.ModuleList()
        self.view_attentions = nn.ModuleList()
        self.temp_attentions = nn.ModuleList()
        self.motion_modules = nn.ModuleList()
        # Set by `inflate` for MVDream's published layout: the spatial self-attentions span all
        # views of a set instead of cross-view layers being added.
        self.views_in_self_attention = False

    def _spatial(self, j: int, h: Tensor, context: Tensor | None, frames: int) -> Tensor:
        """Spatial transformer j, its self-attention over all views when the block asks for it."""
        return self.attentions[j](h, context, frames if self.views_in_self_attention else 1)

    def _temporal(self, modules: nn.ModuleList, j: int, h: Tensor, frames: int) -> Tensor:
        return modules[j](h, frames) if j < len(modules) else h

    def _after_attention(self, j: int, h: Tensor, frames: int, context: Tensor | None) -> Tensor:
        h = self._temporal(self.view_attentions, j, h, frames)
        h = self._temporal(self.temp_attentions, j, h, frames)
        if j < len(self.motion_modules):  # a text-reading motion module needs the prompt
            h = self.motion_modules[j](h, frames, context)
        return h

    def layer(self, j: int, h: Tensor, temb: Tensor, context: Tensor | None, frames: int) -> Tensor:
        """Resnet j, its temporal conv, its spatial transformer, its cross-view attention, temporal
        attention and motion module (those present): diffusers' 2D, ModelScope 3D, AnimateDiff and
        MVDream blocks in one order."""
        h = self._temporal(self.temp_convs, j, self.resnets[j](h, temb), frames)
        if j < len(self.attentions):
            h = self._spatial(j, h, context, frames)
        return self._after_attention(j, h, frames, context)

    def mid(self, h: Tensor, temb: Tensor, context: Tensor | None, frames: int) -> Tensor:
        """resnet → (attention → temporal attention → motion module → resnet)*, each resnet
        followed by its temporal conv (diffusers' `UNetMidBlock3DCrossAttn` order)."""
        h = self._temporal(self.temp_convs, 0, self.resnets[0](h, temb), frames)
        for j in range(len(self.attentions)):
            h = self._after_attention(j, self._spatial(j, h, context, frames), frames, context)
            h = self._temporal(self.temp_convs, j + 1, self.resnets[j + 1](h, temb), frames)
        return h


class ControlResiduals(NamedTuple):
    """What a ControlNet adds to a U-Net (Zhang et al. 2023): one tensor per skip connection, in
    the order the down path stores them, and one for the mid block's output; ((b t), c, h, w)."""

    down: tuple[Tensor, ...]
    mid: Tensor

    def __add__(self, other: ControlResiduals) -> ControlResiduals:  # several ControlNets: summed
        down = tuple(a + b for a, b in zip(self.down, other.down, strict=True))
        return ControlResiduals(down, self.mid + other.mid)


class Folded(NamedTuple):
    """A forward's inputs with frames folded into the batch: x ((b t), c, h, w), the timestep
    embedding ((b t), 4·c0) and the context ((b t), n, d) per row."""

    x: Tensor
    temb: Tensor
    context: Tensor | None
    frames: int
    video: bool


class UNetEncoder(Layout2d):
    """The U-Net's input half: conv_in, the timestep embedding, the down blocks and the mid block.

    The U-Net adds the up half; a ControlNet is this half again plus zero convolutions on its
    skips (spacetime.models.controlnet), so both are built by the same code, with the same
    parameter names, and `inflate` adds temporal layers to either.
    """

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.config = cfg
        ch = cfg.block_out_channels
        temb = ch[0] * 4
        self.conv_in = nn.Conv2d(cfg.in_channels, ch[0], 3, padding=1)
        # ModelScope's temporal attention right after conv_in; set by `inflate`, absent (no keys)
        # in an image U-Net.
        self.transformer_in: nn.Module | None = None
        self.time_embedding = TimestepEmbedding(ch[0], temb)
        # MVDream's camera MLP, added to the timestep embedding; set by `inflate` with cameras.
        self.camera_embed: nn.Module | None = None
        # The family spec `inflate` added layers by (spacetime.models.inflate); None: an image U-Net.
        self.inflation = None
        levels = len(ch)
        heads = [h if a else None for h, a in zip(cfg.heads, cfg.attention, strict=True)]

        self.down_blocks = nn.ModuleList()
        for i in range(levels):
            c_in = ch[max(i - 1, 0)]
            ins = [c_in] + [ch[i]] * (cfg.layers_per_block - 1)
            resample = "down" if i < levels - 1 else None
            self.down_blocks.append(UNetBlock(ins, ch[i], temb, heads[i], cfg, resample))

        self.mid_block = (
            UNetBlock([ch[-1], ch[-1]], ch[-1], temb, cfg.heads[-1], cfg, "mid")
            if cfg.mid_block
            else None
        )

    @property
    def takes_cameras(self) -> bool:
        """Whether each view's camera-to-world matrix conditions the U-Net (MVDream)."""
        return self.inflation is not None and self.inflation.takes_cameras

    @property
    def frame_positions(self) -> int | None:
        """How many frame positions the temporal layers know (AnimateDiff's motion modules);
        None: any number of frames (an image, ModelScope or multi-view U-Net)."""
        return None if self.inflation is None else self.inflation.frame_positions

    def skip_channels(self) -> list[int]:
        """Channels of the skips `encode` returns, in order: conv_in's, then each down layer's
        output, then each downsampler's output."""
        ch, levels = self.config.block_out_channels, len(self.config.block_out_channels)
        skips = [ch[0]]
        for i in range(levels):
            skips += [ch[i]] * self.config.layers_per_block + ([ch[i]] if i < levels - 1 else [])
        return skips

    def embed_time(self, timestep: Tensor, batch: int, dtype: torch.dtype) -> Tensor:
        """(b,) or scalar diffusion timestep → (b, 4·c0) embedding."""
        timestep = torch.as_tensor(timestep, device=self.conv_in.weight.device)
        timestep = timestep.reshape(-1).expand(batch) if timestep.numel() == 1 else timestep
        t = timestep_embedding(
            timestep, self.config.block_out_channels[0], self.config.flip_sin_to_cos,
            self.config.freq_shift,
        )  # fmt: skip
        return self.time_embedding(t.to(dtype))

    def embed_cameras(self, cameras: Tensor, batch: int, frames: int) -> Tensor:
        """Camera-to-world matrices (b, v, 4, 4) or ((b v), 4, 4) → ((b v), 4·c0) embeddings."""
        if self.camera_embed is None:
            raise ValueError(
                "this U-Net has no camera conditioning: got cameras, but it was not inflated with "
                "an MVDream spec"
            )
        expected = (batch, frames, 4, 4)
        if cameras.shape not in (expected, (batch * frames, 4, 4)):
            raise ValueError(
                f"cameras must be (b, v, 4, 4) = {expected} or (b·v, 4, 4) = "
                f"{(batch * frames, 4, 4)} camera-to-world matrices, got {tuple(cameras.shape)}"
            )
        cameras = cameras.reshape(batch * frames, 4, 4)
        if self.inflation.camera_frame == "mvdream":
            cameras = to_mvdream_frame(cameras)
        flat = rearrange(cameras, "n i j -> n (i j)")
        return self.camera_embed(flat.to(self.conv_in.weight.device, self.conv_in.weight.dtype))

    def fold(
        self,
        x: Tensor,
        timestep: Tensor | float,
        context: Tensor | None,
        cameras: Tensor | None = None,
    ) -> Folded:
        """Fold frames into the batch and embed the timestep (and cameras) once per row; see
        `UNet2DCondition.forward` for the shapes each input may take."""
        video = x.ndim == 5
        frames = x.shape[2] if video else 1
        if video:
            x = rearrange(x, "b c t h w -> (b t) c h w")
        batch = x.shape[0] // frames
        per_frame = video and torch.is_tensor(timestep) and timestep.ndim == 2
        if per_frame:  # one noise level per frame
            if tuple(timestep.shape) != (batch, frames):
                raise ValueError(
                    f"per-frame timesteps must be (b, t) = {(batch, frames)}, got "
                    f"{tuple(timestep.shape)}"
                )
            temb = self.embed_time(rearrange(timestep, "b t -> (b t)"), batch * frames, x.dtype)
        else:
            temb = self.embed_time(timestep, batch, x.dtype)
        if context is not None and context.ndim == 4:  # one context per frame
            context = rearrange(context, "b t n d -> (b t) n d", t=frames)
        elif context is not None and frames > 1:
            context = context.repeat_interleave(frames, dim=0)
        if frames > 1 and not per_frame:
            temb = temb.repeat_interleave(frames, dim=0)
        if cameras is not None:
            temb = temb + self.embed_cameras(cameras, batch, frames).to(temb.dtype)
        return Folded(x, temb, context, frames, video)

    def encode(
        self, h: Tensor, temb: Tensor, context: Tensor | None, frames: int
    ) -> tuple[Tensor, list[Tensor]]:
        """conv_in's output ((b t), c0, h, w) through the down blocks and the mid block: (the mid
        block's output, the skips in `skip_channels` order)."""
        skips = [h]
        for block in self.down_blocks:
            for j in range(len(block.resnets)):
                h = block.layer(j, h, temb, context, frames)
                skips.append(h)
            if hasattr(block, "downsamplers"):
                h = block.downsamplers[0](h)
                skips.append(h)
        if self.mid_block is not None:
            h = self.mid_block.mid(h, temb, context, frames)
        return h, skips


class UNet2DCondition(UNetEncoder):
    """Text-conditioned denoising U-Net (LDM); predicts ε, v or x0 as its scheduler says."""

    def __init__(self, cfg: UNetConfig):
        super().__init__(cfg)
        ch = cfg.block_out_channels
        temb = ch[0] * 4
        levels = len(ch)
        heads = [h if a else None for h, a in zip(cfg.heads, cfg.attention, strict=True)]
        # The up path pops the skips in reverse.
        skips = self.skip_channels()
        self.up_blocks = nn.ModuleList()
        prev = ch[-1]
        for i in reversed(range(levels)):
            ins = []
            for _ in range(cfg.layers_per_block + 1):
                ins.append(prev + skips.pop())
                prev = ch[i]
            resample = "up" if i > 0 else None
            self.up_blocks.append(UNetBlock(ins, ch[i], temb, heads[i], cfg, resample))

        self.conv_norm_out = nn.GroupNorm(cfg.norm_num_groups, ch[0], eps=cfg.norm_eps)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(ch[0], cfg.out_channels, 3, padding=1)

    def forward(
        self,
        x: Tensor,
        timestep: Tensor | float,
        context: Tensor | None,
        cameras: Tensor | None = None,
        control: ControlResiduals | None = None,
    ) -> Tensor:
        """x (b, c, h, w) or (b, c, t, h, w); timestep scalar or (b,), or (b, t) for a clip whose
        frames sit at their own noise levels (a clean first frame the rest continues from);
        context (b, n, d), or (b, t, n, d) for a clip whose frames each have their own (prompt
        travel).

        cameras: camera-to-world 4×4s (OpenGL convention, spacetime.world.Camera), (b, v, 4, 4) or
        ((b v), 4, 4), one per frame of a multi-view set (v = t; an image is one view). Only a
        U-Net inflated with cameras takes them; one that has them runs without (no camera term).
        A U-Net with MVDream's published weights moves them to its training frame itself.

        control: ControlNet residuals, added to the skips and to the mid block's output (as
        diffusers' `down_block_additional_residuals` / `mid_block_additional_residual`).
        """
        x, temb, context, frames, video = self.fold(x, timestep, context, cameras)
        # (b t) c h w from here on
        h = self.conv_in(x)
        if self.transformer_in is not None:
            h = self.transformer_in(h, frames)
        h, skips = self.encode(h, temb, context, frames)
        if control is not None:
            skips = [s + r for s, r in zip(skips, control.down, strict=True)]
            h = h + control.mid

        for block in self.up_blocks:
            for j in range(len(block.resnets)):
                h = block.layer(j, torch.cat([h, skips.pop()], dim=1), temb, context, frames)
            if hasattr(block, "upsamplers"):
                h = block.upsamplers[0](h, size=skips[-1].shape[-2:])

        h = self.conv_out(self.conv_act(self.conv_norm_out(h)))
        if video:
            h = rearrange(h, "(b t) c h w -> b c t h w", t=frames)
        return h
