"""Tiny random-weight Stable Diffusion models built with diffusers in-process (no downloads)."""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch

SPECIALS = ["<|startoftext|>", "<|endoftext|>"]


def write_tokenizer_files(folder: Path) -> Path:
    """A character-level CLIP BPE vocabulary: every printable char, with and without </w>."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = sorted(set(string.ascii_lowercase + string.digits + ".,!?'-"))
    tokens = chars + [c + "</w>" for c in chars] + ["ed</w>", "re", "red</w>"] + SPECIALS
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\ne d</w>\nr e\nre d</w>\n")
    return folder


def tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    write_tokenizer_files(folder)
    return CLIPTokenizer(
        str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77
    )


# Two U-Net families: SD1-like (conv proj_in, attention in the first levels, int heads) and
# SD2-like (linear proj_in, per-level head counts, attention in the lower levels).
UNET_CONFIGS = {
    "sd1": dict(
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=4,
        norm_num_groups=8,
        layers_per_block=2,
        sample_size=8,
    ),
    "sd2": dict(
        block_out_channels=(32, 64, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=[2, 4, 8],
        use_linear_projection=True,
        norm_num_groups=8,
        layers_per_block=1,
        sample_size=8,
    ),
}

VAE_CONFIGS = {
    "f4": dict(
        block_out_channels=(16, 32, 32),
        down_block_types=["DownEncoderBlock2D"] * 3,
        up_block_types=["UpDecoderBlock2D"] * 3,
        latent_channels=4,
        norm_num_groups=8,
        layers_per_block=1,
        sample_size=32,
    ),
    "f8-shift": dict(
        block_out_channels=(16, 16, 32, 32),
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=4,
        norm_num_groups=8,
        layers_per_block=2,
        scaling_factor=0.3,
        shift_factor=0.05,
        sample_size=64,
    ),
}


def randomize(module: torch.nn.Module, seed: int, scale: float = 0.05) -> torch.nn.Module:
    """Perturb every parameter so zero-initialised layers cannot hide a wiring bug."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return module.eval()


def unet(name: str = "sd1", seed: int = 0):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return randomize(UNet2DConditionModel(**UNET_CONFIGS[name]), seed)


def vae(name: str = "f4", seed: int = 1):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return randomize(AutoencoderKL(**VAE_CONFIGS[name]), seed, 0.02)


def text_encoder(seed: int = 2, hidden: int = 32, vocab: int = 100):
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    cfg = CLIPTextConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=vocab - 2,
        eos_token_id=vocab - 1,
        pad_token_id=vocab - 1,
    )
    return CLIPTextModel(cfg).eval()


def sd_pipeline(
    folder: Path, unet_name: str = "sd1", vae_name: str = "f4", scheduler: str = "ddim"
):
    """Save a tiny diffusers StableDiffusionPipeline to `folder` and return it."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    sched = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        clip_sample=False, set_alpha_to_one=False, steps_offset=1,
    )  # fmt: skip
    tok = tokenizer(folder.parent / f"{folder.name}-tok")
    pipe = StableDiffusionPipeline(
        unet=unet(unet_name), vae=vae(vae_name), text_encoder=text_encoder(vocab=len(tok)),
        tokenizer=tok, scheduler=sched, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(str(folder))
    return pipe


def motion_adapter(folder: Path, heads: int = 2, seed: int = 5):
    """A MotionAdapter for the tiny U-Net, every weight perturbed (diffusers leaves proj_out
    random), saved to `folder`; returns it."""
    from diffusers import MotionAdapter

    torch.manual_seed(0)
    adapter = MotionAdapter(
        block_out_channels=(32, 64), motion_layers_per_block=2, motion_norm_num_groups=8,
        motion_num_attention_heads=heads, motion_max_seq_length=32, use_motion_mid_block=True,
    )  # fmt: skip
    randomize(adapter, seed, 0.05)
    adapter.save_pretrained(str(folder))
    return adapter


def animatediff(root: Path, heads: int = 2) -> Path:
    """A tiny SD folder (root/sd) and a random MotionAdapter for it (root/motion); returns root."""
    sd_pipeline(root / "sd")
    motion_adapter(root / "motion", heads)
    return root
