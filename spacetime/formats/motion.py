"""Motion modules in diffusers' `MotionAdapter` layout: config.json + the temporal weights only."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from spacetime.errors import CheckpointError, SpacetimeError
from spacetime.formats.weights import (
    load_into,
    read_component,
    read_json,
    read_weights,
    skipping_init,
)
from spacetime.free_init import FreeInit
from spacetime.models.inflate import AnimateDiff, inflate
from spacetime.models.text import TextEncoder
from spacetime.models.unet import UNet2DCondition

# spacetime's text-reading motion modules (AnimateDiff.reads_text) and those that know each pixel's
# place (AnimateDiff.pixel_positions) record themselves under these keys; diffusers' MotionAdapter
# has no such options and cannot load such an adapter.
TEXT_KEY = "spacetime_motion_reads_text"
PIXEL_KEY = "spacetime_motion_pixel_positions"
# How the package's clips are best sampled, when that is FreeInit (spacetime.free_init.FreeInit
# fields): the world motion module records its model card's default here.
FREE_INIT_KEY = "spacetime_free_init"
ADAPTER_KEY = ".motion_modules."


def single_value(cfg: dict, key: str, default):
    """A per-level config value that diffusers allows to differ by level; ours may not."""
    value = cfg.get(key, default)
    if isinstance(value, list | tuple):
        if len(set(value)) != 1:
            raise CheckpointError(f"per-level {key}={value} is not supported")
        value = value[0]
    return value


def spec_from_adapter_config(cfg: dict) -> AnimateDiff:
    """The motion modules' spec from a MotionAdapter config.json."""
    if cfg.get("conv_in_channels") is not None:
        raise CheckpointError(
            "motion adapters with their own conv_in (SparseCtrl-style) are not supported"
        )
    return AnimateDiff(
        heads=single_value(cfg, "motion_num_attention_heads", 8),
        layers=single_value(cfg, "motion_transformer_layers_per_block", 1),
        max_frames=cfg.get("motion_max_seq_length", 32),
        mid_block=bool(cfg.get("use_motion_mid_block", True)),
        reads_text=bool(cfg.get(TEXT_KEY, False)),
        pixel_positions=bool(cfg.get(PIXEL_KEY, False)),
    )


def load_motion_adapter(unet: UNet2DCondition, path: str | os.PathLike) -> UNet2DCondition:
    """`unet` inflated with the motion modules of a MotionAdapter folder, an original AnimateDiff
    file (mm_sd_v15*.safetensors / .ckpt, AnimateLCM's) or a MotionAdapter state dict saved as
    one file (AnimateDiff-Lightning's *_diffusers.safetensors)."""
    folder = Path(path)
    if folder.is_file():
        from spacetime.formats import animatediff

        sd = read_weights(folder)
        if animatediff.is_original_motion_module(sd):
            motion, spec = animatediff.original_to_diffusers(sd)
        elif animatediff.is_diffusers_motion_module(sd):
            motion, spec = sd, animatediff.diffusers_file_spec(sd)
        else:
            raise CheckpointError(f"{folder} is not an AnimateDiff motion module")
    elif folder.is_dir():
        spec = spec_from_adapter_config(read_json(folder / "config.json"))
        motion = read_component(folder, "diffusion_pytorch_model")
    else:
        raise CheckpointError(
            f"motion module not found: expected a MotionAdapter folder or an AnimateDiff file at "
            f"{folder}"
        )
    with skipping_init():  # every temporal weight is assigned below
        video = inflate(unet, spec)
    motion = {k: v for k, v in motion.items() if not k.endswith(".pe")}
    # The adapter holds only temporal weights: complete them with the spatial ones already loaded.
    spatial = {k: v for k, v in video.state_dict().items() if not _in_adapter(k)}
    dtype = next(unet.parameters()).dtype
    return load_into(
        video, {**spatial, **{k: v.to(dtype) for k, v in motion.items()}}, f"motion module {folder}"
    )


def motion_free_init(path: str | os.PathLike) -> FreeInit | None:
    """The FreeInit a MotionAdapter folder asks its clips to be sampled with, if any."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return None  # an original AnimateDiff file carries no sampling defaults
    settings = read_json(config).get(FREE_INIT_KEY)
    if settings is None:
        return None
    try:
        return FreeInit(**settings)
    except (TypeError, SpacetimeError) as e:
        raise CheckpointError(f"{config}: {FREE_INIT_KEY}={settings!r}: {e}") from None


def load_motion_text_encoder(path: str | os.PathLike, tokenizer) -> TextEncoder | None:
    """The text encoder a motion package was trained with (its `text_encoder/`), if it has one.

    spacetime's own motion stage fine-tunes the small world text encoder so that it learns the
    motion words; AnimateDiff and diffusers adapters have none and keep the base model's."""
    folder = Path(path) / "text_encoder"
    if not folder.is_dir():
        return None
    from spacetime.formats.diffusers import build_text_encoder

    return build_text_encoder(
        read_json(folder / "config.json"), read_component(folder, "model"), tokenizer
    )


def save_motion_adapter(
    unet: UNet2DCondition, path: str | os.PathLike, free_init: FreeInit | None = None
) -> Path:
    """Write the motion modules of an inflated U-Net as a MotionAdapter folder diffusers loads,
    with the FreeInit its clips should be sampled with, if any."""
    from spacetime.formats.diffusers import save_component

    spec = unet.inflation
    if not isinstance(spec, AnimateDiff):
        raise CheckpointError("this U-Net has no motion modules to save")
    cfg = unet.config
    config = {
        "_class_name": "MotionAdapter",
        "_diffusers_version": "0.30.0",
        "block_out_channels": list(cfg.block_out_channels),
        "motion_layers_per_block": cfg.layers_per_block,
        "motion_transformer_layers_per_block": spec.layers,
        "motion_mid_block_layers_per_block": 1,
        "motion_transformer_layers_per_mid_block": spec.layers,
        "motion_num_attention_heads": spec.heads,
        "motion_norm_num_groups": cfg.norm_num_groups,
        "motion_max_seq_length": spec.max_frames,
        "use_motion_mid_block": spec.mid_block,
        "conv_in_channels": None,
    }
    if spec.reads_text:
        config[TEXT_KEY] = True
    if spec.pixel_positions:
        config[PIXEL_KEY] = True
    if free_init is not None:
        config[FREE_INIT_KEY] = dataclasses.asdict(free_init)
    weights = {k: v for k, v in unet.state_dict().items() if _in_adapter(k)}
    save_component(Path(path), config, weights, "diffusion_pytorch_model")
    return Path(path)


def _in_adapter(name: str) -> bool:
    return ADAPTER_KEY in name
