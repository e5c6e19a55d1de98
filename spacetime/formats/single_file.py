"""Original single-file Stable Diffusion checkpoints (CompVis layout) ↔ `Components`; MVDream's
published files (the same layout plus a camera MLP) load through spacetime.formats.mvdream.

Real SD 1.x files carry only weights: configs are inferred from tensor shapes, the tokenizer is
OpenAI CLIP's (shipped in the package) and the noise schedule is SD's. Files written by spacetime
also carry their exact configs, scheduler and tokenizer in the safetensors metadata, so a tiny custom
model round-trips through one file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from spacetime.errors import CheckpointError
from spacetime.formats import mvdream
from spacetime.formats.clip_tokenizer import Tokenizer
from spacetime.formats.diffusers import Components, build_text_encoder, build_unet, build_vae
from spacetime.formats.original import (
    infer_configs,
    original_to_diffusers,
    read_single_file,
    write_single_file,
)
from spacetime.formats.tokenizer import clip_tokenizer
from spacetime.models.unet import UNetConfig
from spacetime.models.vae import VAEConfig
from spacetime.sampling import NoiseSchedule

SCHEDULER_KEY = "spacetime_scheduler"
TOKENIZER_KEY = "spacetime_tokenizer"


def _tokenizer(metadata: dict[str, str]):
    files = metadata.get(TOKENIZER_KEY)
    if files is None:
        return Tokenizer.wrap(clip_tokenizer(None))
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in json.loads(files).items():
            (Path(tmp) / Path(name).name).write_text(text)
        return Tokenizer.from_folder(tmp)


def load_single_file(path: str | os.PathLike) -> Components:
    """Components from one .safetensors/.ckpt file in the original layout."""
    try:
        return _load(path)
    except CheckpointError as e:
        if str(path) in str(e):
            raise
        raise CheckpointError(f"{path}: {e}") from None


def _load(path: str | os.PathLike) -> Components:
    sd, metadata = read_single_file(path)
    if mvdream.is_original(sd):  # MVDream's published file: SD plus a camera MLP
        return mvdream.components_from_original(sd)
    parts = original_to_diffusers(sd)
    configs = infer_configs(sd, metadata)
    try:
        unet_cfg = UNetConfig.from_diffusers(configs["unet"])
        vae_cfg = VAEConfig.from_diffusers(configs["vae"])
        schedule = NoiseSchedule.from_diffusers_config(
            json.loads(metadata.get(SCHEDULER_KEY, "{}"))
        )
    except ValueError as e:
        raise CheckpointError(str(e)) from None
    tokenizer = _tokenizer(metadata)
    if len(tokenizer) > configs["text_encoder"]["vocab_size"]:
        raise CheckpointError(
            f"tokenizer has {len(tokenizer)} tokens but the text encoder only "
            f"{configs['text_encoder']['vocab_size']}"
        )
    return Components(
        build_unet(unet_cfg, parts["unet"]).eval(),
        build_vae(vae_cfg, parts["vae"]).eval(),
        build_text_encoder(configs["text_encoder"], parts["text_encoder"], tokenizer),
        schedule,
    )


def save_single_file(components: Components, path: str | os.PathLike) -> Path:
    """One original-layout .safetensors holding weights, configs, scheduler and tokenizer."""
    c = components
    with tempfile.TemporaryDirectory() as tmp:
        c.text_encoder.tokenizer.save_pretrained(tmp)
        tokenizer_files = {p.name: p.read_text() for p in Path(tmp).iterdir() if p.is_file()}
    text_config = c.text_encoder.model.config.to_dict()
    write_single_file(
        path,
        c.unet.state_dict(),
        c.vae.state_dict(),
        c.text_encoder.model.state_dict(),
        {
            "unet": c.unet.config.to_diffusers(),
            "vae": c.vae.config.to_diffusers(),
            "text_encoder": text_config,
        },
        {
            SCHEDULER_KEY: json.dumps(c.schedule.to_diffusers_config()),
            TOKENIZER_KEY: json.dumps(tokenizer_files),
        },
    )
    return Path(path)
