"""ModelScope text-to-video U-Nets (Wang et al. 2023) in diffusers' `UNet3DConditionModel` layout.

A `UNet3DConditionModel` is an SD U-Net inflated with temporal convs, temporal attentions and a
`transformer_in`, under the same parameter names our inflated `UNet2DCondition` uses. So loading is
"config.json → (UNetConfig, ModelScope spec) → build on the meta device → assign the tensors", and an
inflated U-Net of this layout saves back to a config diffusers reads.
"""

from __future__ import annotations

from torch import Tensor

from spacetime.errors import CheckpointError
from spacetime.formats.weights import build_empty, load_into
from spacetime.models.inflate import ModelScope, inflate
from spacetime.models.unet import UNet2DCondition, UNetConfig

CLASS_NAME = "UNet3DConditionModel"
PIPELINE_CLASS_NAME = "TextToVideoSDPipeline"

# The constructor arguments of diffusers' UNet3DConditionModel (0.17-0.3x); those in the second
# table switch on features we don't model and must keep their default (a silent mismatch would
# give wrong clips, so we refuse instead).
_KEYS = {
    "sample_size", "in_channels", "out_channels", "down_block_types", "up_block_types",
    "block_out_channels", "layers_per_block", "downsample_padding", "mid_block_scale_factor",
    "act_fn", "norm_num_groups", "norm_eps", "cross_attention_dim", "attention_head_dim",
    "num_attention_heads", "time_cond_proj_dim",
}  # fmt: skip
_DEFAULT_ONLY = {
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "num_attention_heads": None,
    "time_cond_proj_dim": None,
}
_DOWN = {"CrossAttnDownBlock3D": True, "DownBlock3D": False}


def is_unet3d(config: dict) -> bool:
    """Whether a diffusers `unet/config.json` describes a `UNet3DConditionModel`."""
    return config.get("_class_name") == CLASS_NAME


def configs_from_unet3d(config: dict) -> tuple[UNetConfig, ModelScope]:
    """The U-Net sizes and inflation of a `UNet3DConditionModel` config.json; a ValueError names
    any key whose value we don't model."""
    cfg = {k: v for k, v in config.items() if not k.startswith("_")}
    unknown = set(cfg) - _KEYS
    if unknown:
        raise ValueError(f"unsupported {CLASS_NAME} config keys: {', '.join(sorted(unknown))}")
    for key, default in _DEFAULT_ONLY.items():
        if cfg.get(key, default) != default:
            raise ValueError(
                f"unsupported {CLASS_NAME} config: {key}={cfg[key]!r} (only {default!r})"
            )
    # diffusers maps both names to the same SiLU
    if cfg.get("act_fn", "silu") not in ("silu", "swish"):
        raise ValueError(f"unsupported {CLASS_NAME} config: act_fn={cfg['act_fn']!r} (only 'silu')")
    if "norm_num_groups" in cfg and cfg["norm_num_groups"] is None:
        raise ValueError(f"unsupported {CLASS_NAME} config: norm_num_groups=None (no norms)")
    for key in ("attention_head_dim", "layers_per_block", "cross_attention_dim", "norm_num_groups"):
        if key in cfg and not isinstance(cfg[key], int):
            raise ValueError(f"unsupported {CLASS_NAME} config: {key}={cfg[key]!r} (one integer)")

    channels = tuple(cfg.get("block_out_channels", (320, 640, 1280, 1280)))
    down = list(cfg.get("down_block_types", ["CrossAttnDownBlock3D"] * 3 + ["DownBlock3D"]))
    if len(down) != len(channels) or any(t not in _DOWN for t in down):
        raise ValueError(
            f"unsupported {CLASS_NAME} config: down_block_types={down} (one of "
            f"{', '.join(_DOWN)} per entry of block_out_channels)"
        )
    mirror = [t.replace("Down", "Up") for t in reversed(down)]
    if list(cfg.get("up_block_types", mirror)) != mirror:
        raise ValueError(
            f"unsupported {CLASS_NAME} config: up_block_types={cfg['up_block_types']} do not "
            f"mirror down_block_types {down}"
        )
    attention = tuple(_DOWN[t] for t in down)
    # In a UNet3DConditionModel `attention_head_dim` really is the head width: every spatial and
    # temporal attention of a level has channels // attention_head_dim heads.
    head_dim = cfg.get("attention_head_dim", 64)
    for i, (c, used) in enumerate(zip(channels, attention, strict=True)):
        if (used or i == len(channels) - 1) and c % head_dim:  # the last level sizes the mid block
            raise ValueError(
                f"unsupported {CLASS_NAME} config: attention_head_dim={head_dim} does not divide "
                f"block_out_channels[{i}]={c}"
            )
    heads = tuple(
        c // head_dim if used or i == len(channels) - 1 else 1
        for i, (c, used) in enumerate(zip(channels, attention, strict=True))
    )
    unet = UNetConfig(
        in_channels=cfg.get("in_channels", 4),
        out_channels=cfg.get("out_channels", 4),
        block_out_channels=channels,
        attention=attention,
        heads=heads,
        layers_per_block=cfg.get("layers_per_block", 2),
        transformer_depth=1,
        cross_attention_dim=cfg.get("cross_attention_dim", 1024),
        use_linear_projection=True,  # get_down_block / get_up_block / the mid block default
        mid_block=True,
        norm_num_groups=cfg.get("norm_num_groups", 32),
        norm_eps=cfg.get("norm_eps", 1e-5),
        flip_sin_to_cos=True,
        freq_shift=0,
        upcast_attention=False,
        sample_size=cfg.get("sample_size") or UNetConfig.sample_size,
    )
    return unet, ModelScope(head_dim=head_dim)


def build_unet3d(cfg: UNetConfig, spec: ModelScope, sd: dict[str, Tensor]) -> UNet2DCondition:
    """Our U-Net inflated to `spec`, built on the meta device and filled strictly from `sd`."""
    return load_into(build_empty(lambda: inflate(UNet2DCondition(cfg), spec)), sd, "unet")


def is_modelscope(unet: UNet2DCondition) -> bool:
    """Whether `unet` was inflated with ModelScope's temporal attention (so saves as a 3D U-Net)."""
    return isinstance(unet.inflation, ModelScope)


def unet3d_config(unet: UNet2DCondition) -> dict:
    """A config.json that diffusers' `UNet3DConditionModel` loads our weights into."""
    spec: ModelScope = unet.inflation
    cfg = unet.config
    levels = range(len(cfg.block_out_channels))
    sized = all(
        cfg.heads[i] * spec.head_dim == cfg.block_out_channels[i]
        for i in levels
        if cfg.attention[i] or i == levels[-1]
    )
    requirements = {
        "ModelScope's layers (8 heads in transformer_in, one layer each)": spec
        == ModelScope(head_dim=spec.head_dim),
        "heads = channels // head_dim": sized,
        "use_linear_projection": cfg.use_linear_projection,
        "transformer_depth = 1": cfg.transformer_depth == 1,
        "a mid block": cfg.mid_block,
        "no upcast_attention": not cfg.upcast_attention,
        "flip_sin_to_cos, freq_shift = 0": cfg.flip_sin_to_cos and cfg.freq_shift == 0,
    }
    unmet = [name for name, ok in requirements.items() if not ok]
    if unmet:
        raise CheckpointError(
            f"this U-Net does not fit a {CLASS_NAME}: it lacks {'; '.join(unmet)}"
        )
    down = ["CrossAttnDownBlock3D" if a else "DownBlock3D" for a in cfg.attention]
    return {
        "_class_name": CLASS_NAME,
        "_diffusers_version": "0.30.0",
        "sample_size": cfg.sample_size,
        "in_channels": cfg.in_channels,
        "out_channels": cfg.out_channels,
        "down_block_types": down,
        "up_block_types": [t.replace("Down", "Up") for t in reversed(down)],
        "block_out_channels": list(cfg.block_out_channels),
        "layers_per_block": cfg.layers_per_block,
        "downsample_padding": 1,
        "mid_block_scale_factor": 1,
        "act_fn": "silu",
        "norm_num_groups": cfg.norm_num_groups,
        "norm_eps": cfg.norm_eps,
        "cross_attention_dim": cfg.cross_attention_dim,
        "attention_head_dim": spec.head_dim,
    }
