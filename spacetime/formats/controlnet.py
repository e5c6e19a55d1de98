"""ControlNet and SparseCtrl checkpoints: diffusers folders (`ControlNetModel`,
`SparseControlNetModel`), the original single files (lllyasviel's `control_v11p_sd15_*.pth` /
`.safetensors`, CompVis keys, optionally under `control_model.`) and AnimateDiff's SparseCtrl files
(`v3_sd15_sparsectrl_{rgb,scribble}.ckpt`, diffusers-like keys with AnimateDiff's motion-module
names, under `controlnet`). Everything becomes one `ControlNet` with diffusers' parameter names.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

from torch import Tensor

from spacetime.errors import CheckpointError
from spacetime.formats import animatediff
from spacetime.formats.diffusers import save_component
from spacetime.formats.motion import single_value
from spacetime.formats.original import infer_unet_config, unet_original_to_diffusers
from spacetime.formats.weights import (
    atomic_folder,
    build_empty,
    load_into,
    read_component,
    read_json,
    read_weights,
)
from spacetime.models.controlnet import EMBEDDING_CHANNELS, ControlNet, ControlNetConfig
from spacetime.models.inflate import AnimateDiff, inflate
from spacetime.models.unet import UNetConfig

STEM = "diffusion_pytorch_model"
# config.json keys of diffusers' ControlNetModel / SparseControlNetModel that are not a U-Net's
_CONTROL_KEYS = (
    "conditioning_channels", "controlnet_conditioning_channel_order",
    "conditioning_embedding_out_channels", "global_pool_conditions", "motion_max_seq_length",
    "motion_num_attention_heads", "concat_conditioning_mask", "use_simplified_condition_embedding",
    "transformer_layers_per_mid_block", "temporal_transformer_layers_per_block",
)  # fmt: skip
_MOTION_BLOCKS = {
    "CrossAttnDownBlockMotion": "CrossAttnDownBlock2D",
    "DownBlockMotion": "DownBlock2D",
}


def config_from_diffusers(config: dict) -> tuple[ControlNetConfig, AnimateDiff | None]:
    """A diffusers ControlNetModel / SparseControlNetModel config.json → (config, the temporal
    layers' spec for SparseCtrl, else None)."""
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    control = {k: config.pop(k) for k in _CONTROL_KEYS if k in config}
    down = config.get("down_block_types")
    sparse = down is not None and any(t in _MOTION_BLOCKS for t in down)
    if sparse:
        config["down_block_types"] = [_MOTION_BLOCKS.get(t, t) for t in down]
    order = control.get("controlnet_conditioning_channel_order", "rgb")
    if order not in ("rgb", "bgr"):
        raise ValueError(f"controlnet_conditioning_channel_order must be rgb or bgr, got {order!r}")
    mid_depth = control.get("transformer_layers_per_mid_block")
    if mid_depth not in (None, config.get("transformer_layers_per_block", 1)):
        raise ValueError(f"transformer_layers_per_mid_block={mid_depth} is not supported")
    unet = UNetConfig.from_diffusers(config)
    simplified = sparse and control.get("use_simplified_condition_embedding", True)
    channels = control.get("conditioning_channels", 4 if sparse else 3)
    if sparse and not control.get("concat_conditioning_mask", True):
        raise ValueError("SparseCtrl without its mask channel is not supported")
    cfg = ControlNetConfig(
        unet=unet,
        conditioning_channels=channels,
        embedding_channels=()
        if simplified
        else tuple(control.get("conditioning_embedding_out_channels") or EMBEDDING_CHANNELS),
        bgr=order == "bgr",
        global_pool=bool(control.get("global_pool_conditions", False)),
        sparse=sparse,
    )
    if not sparse:
        return cfg, None
    depth, heads = (
        single_value(control, "temporal_transformer_layers_per_block", 1),
        single_value(control, "motion_num_attention_heads", 8),
    )
    spec = AnimateDiff(
        heads=heads,
        layers=depth,
        max_frames=control.get("motion_max_seq_length", 32),
        mid_block=False,
        attention_blocks=1,
    )
    return cfg, spec


def config_to_diffusers(cfg: ControlNetConfig) -> dict:
    """A config.json that diffusers' ControlNetModel loads (a plain ControlNet)."""
    if cfg.sparse:
        raise ValueError("saving SparseCtrl is not supported; spacetime ships plain ControlNets")
    unet = cfg.unet.to_diffusers()
    for key in ("sample_size", "out_channels", "up_block_types", "center_input_sample"):
        unet.pop(key)
    return {
        **unet,
        "_class_name": "ControlNetModel",
        "conditioning_channels": cfg.conditioning_channels,
        "conditioning_embedding_out_channels": list(cfg.embedding_channels),
        "controlnet_conditioning_channel_order": "bgr" if cfg.bgr else "rgb",
        "global_pool_conditions": cfg.global_pool,
    }


def build(cfg: ControlNetConfig, spec: AnimateDiff | None, sd: dict[str, Tensor]) -> ControlNet:
    """A ControlNet built on the meta device and filled strictly (position codes are rebuilt)."""
    sd = {k: v for k, v in sd.items() if not k.endswith(".pos_embed.pe")}
    factory = (lambda: ControlNet(cfg)) if spec is None else (
        lambda: inflate(ControlNet(cfg), spec)
    )  # fmt: skip
    return load_into(build_empty(factory), sd, "controlnet").eval()


def load_controlnet(path: str | os.PathLike, unet: UNetConfig | None = None) -> ControlNet:
    """A ControlNet or SparseCtrl from a diffusers folder or an original single file.

    Single files do not record attention heads or GroupNorm groups: they are those of the `unet`
    the network runs beside (its encoder mirrors that U-Net's), else SD's (8 heads, or 64-wide
    for SD 2.x; 32 groups)."""
    path = Path(path)
    if path.is_dir():
        try:
            cfg, spec = config_from_diffusers(read_json(path / "config.json"))
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{path / 'config.json'}: {e}") from None
        return build(cfg, spec, read_component(path, STEM))
    sd = read_weights(path)
    if any(animatediff.is_original_key(k) for k in sd):
        cfg, spec, sd = sparsectrl_original_to_diffusers(sd)
        return build(_like(cfg, unet), spec, sd)
    if any(k.startswith("controlnet_cond_embedding") for k in sd):
        raise CheckpointError(
            f"{path}: a ControlNet in diffusers' names without its config.json: pass the folder "
            "holding both"
        )
    cfg, sd = original_to_diffusers(sd)
    return build(_like(cfg, unet), None, sd)


def _like(cfg: ControlNetConfig, unet: UNetConfig | None) -> ControlNetConfig:
    """`cfg` with the sizes a file's shapes do not tell (heads, GroupNorm groups) taken from the
    U-Net it runs beside, where that U-Net has its widths."""
    if unet is None or unet.block_out_channels != cfg.unet.block_out_channels:
        return cfg
    sizes = dict(heads=unet.heads, norm_num_groups=unet.norm_num_groups, norm_eps=unet.norm_eps)
    return dataclasses.replace(cfg, unet=dataclasses.replace(cfg.unet, **sizes))


def save_controlnet(net: ControlNet, folder: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write a diffusers ControlNetModel folder (config.json + safetensors), atomically."""
    config = config_to_diffusers(net.control_config)
    sd = net.state_dict()
    return atomic_folder(
        Path(folder), lambda tmp: save_component(tmp, config, sd, STEM), overwrite=overwrite
    )


# -- lllyasviel's original layout ------------------------------------------------------------------


def original_to_diffusers(sd: dict[str, Tensor]) -> tuple[ControlNetConfig, dict[str, Tensor]]:
    """An original ControlNet state dict (cldm's `ControlNet`: the U-Net encoder's CompVis keys,
    `input_hint_block.*`, `zero_convs.*`, `middle_block_out.0`, optionally under
    `control_model.`) → (config from the shapes, diffusers' keys)."""
    prefix = "control_model." if any(k.startswith("control_model.") for k in sd) else ""
    sd = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
    hint: dict[int, dict[str, Tensor]] = {}  # the i-th conv of input_hint_block: weight, bias
    extras: dict[str, Tensor] = {}
    encoder: dict[str, Tensor] = {}
    for key, value in sd.items():
        if m := re.match(r"input_hint_block\.(\d+)\.(weight|bias)$", key):
            # convs sit at even indices, SiLUs between them
            hint.setdefault(int(m.group(1)) // 2, {})[m.group(2)] = value
        elif m := re.match(r"zero_convs\.(\d+)\.0\.(weight|bias)$", key):
            extras[f"controlnet_down_blocks.{m.group(1)}.{m.group(2)}"] = value
        elif m := re.match(r"middle_block_out\.0\.(weight|bias)$", key):
            extras[f"controlnet_mid_block.{m.group(1)}"] = value
        else:
            encoder[key] = value
    if len(hint) < 2 or sorted(hint) != list(range(len(hint))):
        raise CheckpointError(
            "not a ControlNet: no input_hint_block.* convs (original layout) or "
            "controlnet_cond_embedding.* (diffusers' layout)"
        )
    last = len(hint) - 1
    names = {0: "conv_in", last: "conv_out"} | {i: f"blocks.{i - 1}" for i in range(1, last)}
    for i, conv in hint.items():
        for kind, value in conv.items():
            extras[f"controlnet_cond_embedding.{names[i]}.{kind}"] = value
    # the embedding's widths: conv_in's, then each strided block's (blocks 1, 3, ...)
    widths = [hint[0]["weight"].shape[0]] + [hint[i]["weight"].shape[0] for i in range(2, last, 2)]
    cfg = ControlNetConfig(
        unet=UNetConfig.from_diffusers(infer_unet_config(encoder, "")),
        conditioning_channels=hint[0]["weight"].shape[1],
        embedding_channels=tuple(widths),
    )
    return cfg, {**unet_original_to_diffusers(encoder, ""), **extras}


# -- AnimateDiff's SparseCtrl files ----------------------------------------------------------------


def sparsectrl_original_to_diffusers(
    sd: dict[str, Tensor],
) -> tuple[ControlNetConfig, AnimateDiff, dict[str, Tensor]]:
    """AnimateDiff v3's SparseCtrl (keys as its `SparseControlNetModel`, motion modules nested
    under `temporal_transformer.`) → (config, temporal spec, diffusers' keys). The RGB file reads
    4 latent channels through one conv, the scribble file 3 pixel channels through the paper's
    encoder; each adds the mask channel. Sizes follow the shapes; heads are SD 1.5's (8)."""
    positions = 32
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        if key.endswith("pos_encoder.pe"):  # (1, max_frames, c): rebuilt, not loaded
            positions = value.shape[1]
            continue
        out[animatediff.rename_key(key) if animatediff.is_original_key(key) else key] = value

    def ids(pattern: str) -> list[int]:
        return sorted({int(m.group(1)) for k in out if (m := re.match(pattern, k))})

    simplified = "controlnet_cond_embedding.weight" in out
    try:
        first = out["controlnet_cond_embedding." + ("weight" if simplified else "conv_in.weight")]
        levels = ids(r"down_blocks\.(\d+)\.")
        channels = tuple(out[f"down_blocks.{i}.resnets.0.conv1.weight"].shape[0] for i in levels)
        mid_attention = "mid_block.attentions.0."
        cross = out[mid_attention + "transformer_blocks.0.attn2.to_k.weight"].shape[1]
        linear = out[mid_attention + "proj_in.weight"].ndim == 2
        widths = () if simplified else (
            first.shape[0],
            *(out[f"controlnet_cond_embedding.blocks.{i}.weight"].shape[0]
              for i in ids(r"controlnet_cond_embedding\.blocks\.(\d+)\.")[1::2]),
        )  # fmt: skip
    except KeyError as e:
        raise CheckpointError(f"SparseCtrl: no tensor {e.args[0]!r}") from None
    unet = UNetConfig(
        block_out_channels=channels,
        attention=tuple(
            any(k.startswith(f"down_blocks.{i}.attentions.") for k in out) for i in levels
        ),
        heads=(8,) * len(channels),
        layers_per_block=len(ids(r"down_blocks\.0\.resnets\.(\d+)\.")),
        cross_attention_dim=cross,
        use_linear_projection=linear,
    )
    cfg = ControlNetConfig(
        unet=unet, conditioning_channels=first.shape[1] - 1, embedding_channels=widths, sparse=True
    )
    depth = len(ids(r"down_blocks\.0\.motion_modules\.0\.transformer_blocks\.(\d+)\."))
    spec = AnimateDiff(
        heads=8, layers=depth, max_frames=positions, mid_block=False, attention_blocks=1
    )
    return cfg, spec, out
