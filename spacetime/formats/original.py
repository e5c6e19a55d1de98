"""Original single-file Stable Diffusion checkpoints (CompVis/LDM layout) <-> diffusers key names.

A single file holds three networks under fixed prefixes: the U-Net (``model.diffusion_model.``),
the KL autoencoder (``first_stage_model.``) and the CLIP text encoder
(``cond_stage_model.transformer.``). spacetime's own networks use diffusers' key names, so this
module is a pure renaming (plus the VAE's 1x1-conv <-> linear attention weights) driven by tables
that are built from the block structure, and the same tables run backwards for saving.
Reading never runs pickled code: ``.ckpt`` files go through ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from spacetime.errors import CheckpointError
from spacetime.formats.weights import atomic_write
from spacetime.formats.weights import read_weights_file as read_single_file  # noqa: F401 (re-export)

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_ENCODER_PREFIX = "cond_stage_model.transformer."
OPEN_CLIP_PREFIX = "cond_stage_model.model."  # SD 2.x text encoder, not supported
CONFIGS_METADATA_KEY = "spacetime_configs"

_POSITION_IDS = "text_model.embeddings.position_ids"
_TEXT_MODEL = "text_model."


# --- key tables -------------------------------------------------------------------------------
# A table maps a dotted original prefix to (diffusers prefix, is_conv1x1); a key is renamed by
# its longest prefix in the table and keeps the rest. Blocks are "slots" (original prefix,
# diffusers prefix, parts); parts name the sub-modules whose names differ between the layouts.


@dataclass(frozen=True)
class _Part:
    original: str
    diffusers: str
    conv1x1: bool = False  # original 1x1 conv weight == diffusers linear weight


_WHOLE = (_Part("", ""),)  # the block's inner names are the same in both layouts
_UNET_RESNET = (
    _Part("in_layers.0", "norm1"),
    _Part("in_layers.2", "conv1"),
    _Part("emb_layers.1", "time_emb_proj"),
    _Part("out_layers.0", "norm2"),
    _Part("out_layers.3", "conv2"),
    _Part("skip_connection", "conv_shortcut"),
)
_VAE_RESNET = (
    _Part("norm1", "norm1"),
    _Part("conv1", "conv1"),
    _Part("norm2", "norm2"),
    _Part("conv2", "conv2"),
    _Part("nin_shortcut", "conv_shortcut"),
)
_VAE_ATTENTION = (
    _Part("norm", "group_norm"),
    _Part("q", "to_q", conv1x1=True),
    _Part("k", "to_k", conv1x1=True),
    _Part("v", "to_v", conv1x1=True),
    _Part("proj_out", "to_out.0", conv1x1=True),
)

_Slot = tuple[str, str, tuple[_Part, ...]]
_Table = dict[str, tuple[str, bool]]


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}." if name else f"{prefix}."


def _table(slots: Iterable[_Slot]) -> _Table:
    table: _Table = {}
    for original, diffusers, parts in slots:
        for part in parts:
            table[_join(original, part.original)] = (_join(diffusers, part.diffusers), part.conv1x1)
    assert len({new for new, _ in table.values()}) == len(table), "tables must be one-to-one"
    return table


def _inverse(table: _Table) -> _Table:
    return {new: (old, conv1x1) for old, (new, conv1x1) in table.items()}


def _rename_key(key: str, table: _Table) -> tuple[str, bool] | None:
    """(new key, whether it is a 1x1-conv weight) by the key's longest table prefix, or None."""
    parts = key.split(".")
    for n in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:n]) + "."
        if prefix in table:
            new_prefix, conv1x1 = table[prefix]
            return new_prefix + key[len(prefix) :], conv1x1 and parts[n:] == ["weight"]
    return None


def _rename(
    sd: Mapping[str, torch.Tensor], table: _Table, what: str, to_diffusers: bool
) -> dict[str, torch.Tensor]:
    """Renames every key by its longest table prefix; a key no prefix matches is an error."""
    out = {}
    for key, tensor in sd.items():
        renamed = _rename_key(key, table)
        if renamed is None:
            raise CheckpointError(
                f"{what}: unexpected key {key!r} (not part of a Stable Diffusion 1.x/2.x {what})"
            )
        new_key, conv1x1 = renamed
        if conv1x1:
            convert = _conv1x1_to_linear if to_diffusers else _linear_to_conv1x1
            tensor = convert(tensor, key)
        out[new_key] = tensor
    return out


def _conv1x1_to_linear(tensor: torch.Tensor, key: str) -> torch.Tensor:
    if tensor.ndim != 4 or tuple(tensor.shape[2:]) != (1, 1):
        raise CheckpointError(f"{key}: expected a 1x1 conv weight, got shape {tuple(tensor.shape)}")
    return tensor[:, :, 0, 0]


def _linear_to_conv1x1(tensor: torch.Tensor, key: str) -> torch.Tensor:
    if tensor.ndim != 2:
        raise CheckpointError(f"{key}: expected a linear weight, got shape {tuple(tensor.shape)}")
    return tensor[:, :, None, None]


def _block_ids(keys: Iterable[str], pattern: str) -> set[int]:
    regex = re.compile(pattern)
    return {int(m.group(1)) for key in keys if (m := regex.match(key))}


def _has_prefix(keys: Iterable[str], prefix: str) -> bool:
    return any(key.startswith(prefix) for key in keys)


# --- U-Net ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _UNetLayout:
    levels: int
    layers_per_block: int
    down_attention: tuple[bool, ...]
    up_attention: tuple[bool, ...] | None  # None: the encoder half alone (a ControlNet)

    @classmethod
    def from_original(cls, keys: list[str]) -> _UNetLayout:
        levels = len(_block_ids(keys, r"input_blocks\.(\d+)\.0\.op\.")) + 1
        outputs = len(_block_ids(keys, r"output_blocks\.(\d+)\."))
        if outputs == 0 and not _has_prefix(keys, "out."):  # a ControlNet's encoder half
            inputs = len(_block_ids(keys, r"input_blocks\.(\d+)\."))
            layers, rest = divmod(inputs - levels, levels)  # conv_in + resnets + downsamplers
            if layers < 1 or rest:
                raise CheckpointError(
                    f"U-Net encoder: {inputs} input blocks do not fit {levels} resolution levels"
                )
            down = tuple(
                _has_prefix(keys, f"input_blocks.{1 + lv * (layers + 1)}.1.")
                for lv in range(levels)
            )
            return cls(levels, layers, down, None)
        if outputs == 0 or outputs % levels:
            raise CheckpointError(
                f"U-Net: {outputs} output blocks do not fit {levels} resolution levels "
                "(expected levels x (layers_per_block + 1))"
            )
        per = outputs // levels
        if per < 2:
            raise CheckpointError(f"U-Net: {outputs} output blocks for {levels} levels is too few")
        return cls(
            levels,
            per - 1,
            tuple(_has_prefix(keys, f"input_blocks.{1 + lv * per}.1.") for lv in range(levels)),
            tuple(_has_prefix(keys, f"output_blocks.{lv * per}.1.") for lv in range(levels)),
        )

    @classmethod
    def from_diffusers(cls, keys: list[str]) -> _UNetLayout:
        levels = len(_block_ids(keys, r"down_blocks\.(\d+)\."))
        layers = len(_block_ids(keys, r"down_blocks\.0\.resnets\.(\d+)\."))
        if levels == 0 or layers == 0:
            raise CheckpointError("U-Net: no down_blocks.*.resnets.* weights found")
        decoder = _has_prefix(keys, "up_blocks.")
        return cls(
            levels,
            layers,
            tuple(_has_prefix(keys, f"down_blocks.{lv}.attentions.") for lv in range(levels)),
            tuple(_has_prefix(keys, f"up_blocks.{lv}.attentions.") for lv in range(levels))
            if decoder
            else None,
        )

    def slots(self) -> list[_Slot]:
        per = self.layers_per_block + 1  # original blocks per level: resnets + down/upsampler
        last = self.levels - 1
        slots: list[_Slot] = [
            ("time_embed.0", "time_embedding.linear_1", _WHOLE),
            ("time_embed.2", "time_embedding.linear_2", _WHOLE),
            ("input_blocks.0.0", "conv_in", _WHOLE),
            ("middle_block.0", "mid_block.resnets.0", _UNET_RESNET),
            ("middle_block.1", "mid_block.attentions.0", _WHOLE),
            ("middle_block.2", "mid_block.resnets.1", _UNET_RESNET),
        ]
        sides = [("down", 1, self.layers_per_block, self.down_attention)]
        if self.up_attention is not None:
            slots += [("out.0", "conv_norm_out", _WHOLE), ("out.2", "conv_out", _WHOLE)]
            sides.append(("up", 0, per, self.up_attention))
        for side, first, count, attention in sides:
            original = "input_blocks" if side == "down" else "output_blocks"
            for level in range(self.levels):
                block = f"{side}_blocks.{level}"
                for j in range(count):
                    i = first + level * per + j
                    slots.append((f"{original}.{i}.0", f"{block}.resnets.{j}", _UNET_RESNET))
                    if attention[level]:
                        slots.append((f"{original}.{i}.1", f"{block}.attentions.{j}", _WHOLE))
                if level != last:
                    i = first + level * per + per - 1
                    # the resampler follows the level's last resnet (and its attention, if any)
                    where = "0.op" if side == "down" else f"{1 + attention[level]}.conv"
                    sampler = "downsamplers" if side == "down" else "upsamplers"
                    slots.append((f"{original}.{i}.{where}", f"{block}.{sampler}.0.conv", _WHOLE))
        return slots


def unet_original_to_diffusers(
    sd: Mapping[str, torch.Tensor], prefix: str = UNET_PREFIX
) -> dict[str, torch.Tensor]:
    """The U-Net of an original checkpoint (keys under ``model.diffusion_model.``), diffusers keys.
    A ControlNet's encoder half (``control_model.``) converts with the same table."""
    unet = _strip(sd, prefix, "U-Net") if prefix else dict(sd)
    table = _table(_UNetLayout.from_original(list(unet)).slots())
    return _rename(unet, table, "U-Net", to_diffusers=True)


def unet_diffusers_to_original(
    unet: Mapping[str, torch.Tensor], prefix: str = UNET_PREFIX
) -> dict[str, torch.Tensor]:
    """Inverse of `unet_original_to_diffusers` (adds the ``model.diffusion_model.`` prefix)."""
    table = _inverse(_table(_UNetLayout.from_diffusers(list(unet)).slots()))
    return _add(_rename(unet, table, "U-Net", to_diffusers=False), prefix)


def unet_original_names(names: Iterable[str]) -> dict[str, str]:
    """{diffusers name: original name} for the U-Net's layers (module names, not parameters)
    that the original layout has; layers `inflate` added have none and are left out. LoRA files
    in the original layout name their layers this way."""
    names = list(names)
    table = _inverse(_table(_UNetLayout.from_diffusers(names).slots()))
    # the table renames dotted prefixes of parameter keys: give each layer a parameter's suffix
    out = {}
    for name in names:
        renamed = _rename_key(f"{name}.weight", table)
        if renamed is not None:
            out[name] = renamed[0].removesuffix(".weight")
    return out


# --- VAE --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _VAELayout:
    levels: int
    layers_per_block: int

    @classmethod
    def from_original(cls, keys: list[str]) -> _VAELayout:
        return cls(
            len(_block_ids(keys, r"encoder\.down\.(\d+)\.")),
            len(_block_ids(keys, r"encoder\.down\.0\.block\.(\d+)\.")),
        )

    @classmethod
    def from_diffusers(cls, keys: list[str]) -> _VAELayout:
        return cls(
            len(_block_ids(keys, r"encoder\.down_blocks\.(\d+)\.")),
            len(_block_ids(keys, r"encoder\.down_blocks\.0\.resnets\.(\d+)\.")),
        )

    def slots(self) -> list[_Slot]:
        slots: list[_Slot] = [
            ("quant_conv", "quant_conv", _WHOLE),
            ("post_quant_conv", "post_quant_conv", _WHOLE),
        ]
        for coder in ("encoder", "decoder"):
            slots += [
                (f"{coder}.conv_in", f"{coder}.conv_in", _WHOLE),
                (f"{coder}.mid.block_1", f"{coder}.mid_block.resnets.0", _VAE_RESNET),
                (f"{coder}.mid.attn_1", f"{coder}.mid_block.attentions.0", _VAE_ATTENTION),
                (f"{coder}.mid.block_2", f"{coder}.mid_block.resnets.1", _VAE_RESNET),
                (f"{coder}.norm_out", f"{coder}.conv_norm_out", _WHOLE),
                (f"{coder}.conv_out", f"{coder}.conv_out", _WHOLE),
            ]
        last = self.levels - 1
        for level in range(self.levels):
            # the original decoder counts levels from the bottom (deepest) up; diffusers top-down
            up = last - level
            down, dec = f"encoder.down_blocks.{level}", f"decoder.up_blocks.{level}"
            slots += [
                (f"encoder.down.{level}.block.{j}", f"{down}.resnets.{j}", _VAE_RESNET)
                for j in range(self.layers_per_block)
            ]
            slots += [
                (f"decoder.up.{up}.block.{j}", f"{dec}.resnets.{j}", _VAE_RESNET)
                for j in range(self.layers_per_block + 1)
            ]
            if level != last:
                slots.append(
                    (f"encoder.down.{level}.downsample.conv", f"{down}.downsamplers.0.conv", _WHOLE)
                )
                slots.append((f"decoder.up.{up}.upsample.conv", f"{dec}.upsamplers.0.conv", _WHOLE))
        return slots


def vae_original_to_diffusers(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The VAE of an original checkpoint (keys under ``first_stage_model.``), diffusers keys."""
    vae = _strip(sd, VAE_PREFIX, "VAE")
    table = _table(_VAELayout.from_original(list(vae)).slots())
    return _rename(vae, table, "VAE", to_diffusers=True)


def vae_diffusers_to_original(vae: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of `vae_original_to_diffusers` (adds the ``first_stage_model.`` prefix)."""
    table = _inverse(_table(_VAELayout.from_diffusers(list(vae)).slots()))
    return _add(_rename(vae, table, "VAE", to_diffusers=False), VAE_PREFIX)


# --- CLIP text encoder ------------------------------------------------------------------------


def text_encoder_original_to_diffusers(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The CLIP text encoder, keyed as transformers' CLIPTextModel files (``text_model.*``).

    The ``position_ids`` buffer is dropped: it is not a weight (always ``arange``).
    """
    if _has_prefix(sd, OPEN_CLIP_PREFIX):
        raise CheckpointError(
            "text encoder: this checkpoint has an OpenCLIP text encoder "
            f"({OPEN_CLIP_PREFIX}*, Stable Diffusion 2.x), which spacetime does not support; "
            "expected OpenAI CLIP keys under " + TEXT_ENCODER_PREFIX
        )
    text = _strip(sd, TEXT_ENCODER_PREFIX, "text encoder")
    stray = [key for key in text if not key.startswith(_TEXT_MODEL)]
    if stray:
        raise CheckpointError(f"text encoder: unexpected key {TEXT_ENCODER_PREFIX + stray[0]!r}")
    return {key: tensor for key, tensor in text.items() if key != _POSITION_IDS}


def text_encoder_diffusers_to_original(text: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of `text_encoder_original_to_diffusers`; also accepts keys without ``text_model.``.

    (transformers >= 5.6 flattened CLIPTextModel, so its ``state_dict()`` has no such prefix.)
    Writes the ``position_ids`` buffer that original checkpoints carry.
    """
    out = {
        TEXT_ENCODER_PREFIX + (key if key.startswith(_TEXT_MODEL) else _TEXT_MODEL + key): tensor
        for key, tensor in text.items()
        if not key.endswith("position_ids")
    }
    position = out.get(f"{TEXT_ENCODER_PREFIX}{_TEXT_MODEL}embeddings.position_embedding.weight")
    if position is None:
        raise CheckpointError("text encoder: no embeddings.position_embedding.weight")
    out[TEXT_ENCODER_PREFIX + _POSITION_IDS] = torch.arange(position.shape[0])[None]
    return out


# --- whole checkpoints ------------------------------------------------------------------------


def original_to_diffusers(sd: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """Splits an original SD 1.x checkpoint into {"unet", "vae", "text_encoder"} diffusers dicts.

    Keys outside the three networks (EMA copies, noise-schedule buffers) are ignored; the
    non-EMA U-Net weights are used, as diffusers does by default.
    """
    return {
        "unet": unet_original_to_diffusers(sd),
        "vae": vae_original_to_diffusers(sd),
        "text_encoder": text_encoder_original_to_diffusers(sd),
    }


def diffusers_to_original(
    unet: Mapping[str, torch.Tensor],
    vae: Mapping[str, torch.Tensor],
    text_encoder: Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Inverse of `original_to_diffusers`: one original-layout state dict."""
    return {
        **unet_diffusers_to_original(unet),
        **vae_diffusers_to_original(vae),
        **text_encoder_diffusers_to_original(text_encoder),
    }


def _strip(sd: Mapping[str, torch.Tensor], prefix: str, what: str) -> dict[str, torch.Tensor]:
    out = {key[len(prefix) :]: tensor for key, tensor in sd.items() if key.startswith(prefix)}
    if not out:
        raise CheckpointError(
            f"{what}: no weights in this checkpoint (no keys start with {prefix!r})"
        )
    return out


def _add(sd: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + key: tensor for key, tensor in sd.items()}


# --- configs from shapes ----------------------------------------------------------------------

# Fields that follow from tensor shapes: a stored config that disagrees with them is stale.
_SHAPE_FIELDS = {
    "unet": (
        "in_channels",
        "out_channels",
        "block_out_channels",
        "layers_per_block",
        "down_block_types",
        "up_block_types",
        "cross_attention_dim",
        "use_linear_projection",
    ),
    "vae": (
        "in_channels",
        "out_channels",
        "block_out_channels",
        "layers_per_block",
        "latent_channels",
    ),
    "text_encoder": (
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "max_position_embeddings",
    ),
}


def _from_shapes(what: str):
    """Reports a tensor that shape inference needs but the checkpoint lacks as a CheckpointError."""

    def wrap(infer):
        @functools.wraps(infer)
        def run(sd: Mapping[str, torch.Tensor], *args) -> dict[str, Any]:
            try:
                return infer(sd, *args)
            except KeyError as e:
                raise CheckpointError(
                    f"{what}: cannot infer the config from shapes: no tensor {e.args[0]!r}"
                ) from None

        return run

    return wrap


@_from_shapes("U-Net")
def infer_unet_config(sd: Mapping[str, torch.Tensor], prefix: str = UNET_PREFIX) -> dict[str, Any]:
    """A diffusers UNet2DConditionModel config from the shapes of an original checkpoint (of a
    ControlNet: its encoder's, without up blocks).

    Heads follow the releases: SD 1.x (768-d text) has 8 heads per level; SD 2.x has 64-d heads.
    """
    unet = _strip(sd, prefix, "U-Net") if prefix else dict(sd)
    layout = _UNetLayout.from_original(list(unet))
    per = layout.layers_per_block + 1
    channels = [
        unet[f"input_blocks.{1 + lv * per}.0.out_layers.3.weight"].shape[0]
        for lv in range(layout.levels)
    ]
    cross_attention_dim = unet["middle_block.1.transformer_blocks.0.attn2.to_k.weight"].shape[1]
    depths = [  # transformer blocks per attention, per level (1 where a level has none)
        len(_block_ids(unet, rf"input_blocks\.{1 + lv * per}\.1\.transformer_blocks\.(\d+)\."))
        if layout.down_attention[lv]
        else 1
        for lv in range(layout.levels)
    ]
    time_dim = unet["time_embed.0.weight"].shape[0]
    config = {
        "_class_name": "UNet2DConditionModel",
        "sample_size": 64 if cross_attention_dim == 768 else 96,  # 512 px SD 1.x, 768 px SD 2.x
        "in_channels": unet["input_blocks.0.0.weight"].shape[1],
        "down_block_types": [
            "CrossAttnDownBlock2D" if attention else "DownBlock2D"
            for attention in layout.down_attention
        ],
        "block_out_channels": channels,
        "layers_per_block": layout.layers_per_block,
        "cross_attention_dim": cross_attention_dim,
        # diffusers' "attention_head_dim" is the number of heads for these U-Nets
        "attention_head_dim": 8
        if cross_attention_dim == 768
        else [max(1, c // 64) for c in channels],
        "use_linear_projection": unet["middle_block.1.proj_in.weight"].ndim == 2,
        "transformer_layers_per_block": depths[0] if len(set(depths)) == 1 else depths,
        "norm_num_groups": 32,
        "time_embedding_dim": None if time_dim == 4 * channels[0] else time_dim,
    }
    if layout.up_attention is not None:
        config["out_channels"] = unet["out.2.weight"].shape[0]
        config["up_block_types"] = [
            "CrossAttnUpBlock2D" if attention else "UpBlock2D" for attention in layout.up_attention
        ]
    return config


@_from_shapes("VAE")
def infer_vae_config(sd: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """A diffusers AutoencoderKL config from the shapes of an original checkpoint."""
    vae = _strip(sd, VAE_PREFIX, "VAE")
    layout = _VAELayout.from_original(list(vae))
    return {
        "_class_name": "AutoencoderKL",
        "in_channels": vae["encoder.conv_in.weight"].shape[1],
        "out_channels": vae["decoder.conv_out.weight"].shape[0],
        "down_block_types": ["DownEncoderBlock2D"] * layout.levels,
        "up_block_types": ["UpDecoderBlock2D"] * layout.levels,
        "block_out_channels": [
            vae[f"encoder.down.{lv}.block.0.conv1.weight"].shape[0] for lv in range(layout.levels)
        ],
        "layers_per_block": layout.layers_per_block,
        "latent_channels": vae["decoder.conv_in.weight"].shape[1],
        "norm_num_groups": 32,
        "sample_size": 512,
        "scaling_factor": 0.18215,  # SD 1.x and 2.x
        "use_quant_conv": "quant_conv.weight" in vae,
        "use_post_quant_conv": "post_quant_conv.weight" in vae,
        "mid_block_add_attention": "encoder.mid.attn_1.q.weight" in vae,
    }


@_from_shapes("text encoder")
def infer_text_encoder_config(sd: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """A transformers CLIPTextConfig dict (as SD 1.x ships it) from the tensor shapes."""
    text = text_encoder_original_to_diffusers(sd)
    tokens = text["text_model.embeddings.token_embedding.weight"]
    hidden = tokens.shape[1]
    return {
        "architectures": ["CLIPTextModel"],
        "model_type": "clip_text_model",
        "vocab_size": tokens.shape[0],
        "hidden_size": hidden,
        "intermediate_size": text["text_model.encoder.layers.0.mlp.fc1.weight"].shape[0],
        "projection_dim": hidden,
        "num_hidden_layers": len(_block_ids(text, r"text_model\.encoder\.layers\.(\d+)\.")),
        "num_attention_heads": max(1, hidden // 64),
        "max_position_embeddings": text["text_model.embeddings.position_embedding.weight"].shape[0],
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
        # SD 1.x's text_encoder/config.json keeps CLIP's original ids (argmax pooling)
        "bos_token_id": 0,
        "eos_token_id": 2,
        "pad_token_id": 1,
    }


_INFER = {
    "unet": infer_unet_config,
    "vae": infer_vae_config,
    "text_encoder": infer_text_encoder_config,
}


def infer_configs(
    sd: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> dict[str, dict[str, Any]]:
    """Configs for {"unet", "vae", "text_encoder"}, inferred from shapes.

    A config stored by `write_single_file` in the metadata replaces the inferred one (so custom
    configs round-trip exactly) after a check that it agrees with the tensor shapes.
    """
    stored = _stored_configs(metadata)
    configs = {}
    for name, infer in _INFER.items():
        own = stored.get(name)
        try:
            inferred = infer(sd)
        except CheckpointError:
            if own is None:
                raise
            inferred = {}  # a structure that shape inference does not know: trust the stored one
        checked = [f for f in _SHAPE_FIELDS[name] if own and f in own and f in inferred]
        for field in checked:
            if _plain(own[field]) != _plain(inferred[field]):
                raise CheckpointError(
                    f"metadata {CONFIGS_METADATA_KEY}: {name}.{field} = {own[field]!r} "
                    f"disagrees with the weights, which have {inferred[field]!r}"
                )
        configs[name] = inferred if own is None else dict(own)
    return configs


def _stored_configs(metadata: Mapping[str, str] | None) -> dict[str, dict[str, Any]]:
    text = (metadata or {}).get(CONFIGS_METADATA_KEY)
    if text is None:
        return {}
    try:
        stored = json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"metadata {CONFIGS_METADATA_KEY} is not valid JSON: {e}") from None
    if not isinstance(stored, dict) or not all(isinstance(v, dict) for v in stored.values()):
        raise CheckpointError(f"metadata {CONFIGS_METADATA_KEY}: expected {{component: config}}")
    unknown = sorted(set(stored) - set(_INFER))
    if unknown:
        raise CheckpointError(f"metadata {CONFIGS_METADATA_KEY}: unknown component {unknown[0]!r}")
    return stored


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value))  # tuples -> lists, as JSON stores them


# --- file I/O ---------------------------------------------------------------------------------


def write_single_file(
    path: str | os.PathLike,
    unet: Mapping[str, torch.Tensor],
    vae: Mapping[str, torch.Tensor],
    text_encoder: Mapping[str, torch.Tensor],
    configs: Mapping[str, Mapping[str, Any]],
    extra_metadata: Mapping[str, str] | None = None,
) -> None:
    """Writes diffusers-keyed weights as one original-layout ``.safetensors``, configs in metadata.

    Atomic: the file appears complete or not at all (temp file in the same folder + os.replace).
    """
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise CheckpointError(f"{path}: single files are written as .safetensors")
    if not path.parent.is_dir():
        raise CheckpointError(f"{path}: folder {path.parent} does not exist")
    try:
        metadata = {"format": "pt", CONFIGS_METADATA_KEY: json.dumps(configs)}
        metadata.update(extra_metadata or {})
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: configs must be JSON-serialisable ({e})") from None
    tensors = _unshared(diffusers_to_original(unet, vae, text_encoder))
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def _unshared(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors, cloning any that share memory (safetensors refuses aliases)."""
    out, seen = {}, set()
    for key, tensor in sd.items():
        tensor = tensor.detach().cpu().contiguous()
        ptr = tensor.untyped_storage().data_ptr()
        if ptr in seen:
            tensor = tensor.clone()
        seen.add(tensor.untyped_storage().data_ptr())
        out[key] = tensor
    return out
