"""Pieces every training task shares: per-step randomness, world batches, the ε loss."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from spacetime import world
from spacetime.formats.diffusers import build_vae
from spacetime.formats.weights import read_component, read_json
from spacetime.models.unet import UNet2DCondition
from spacetime.models.vae import AutoencoderKL, VAEConfig
from spacetime.sampling import add_noise


def rank_slice(global_batch: Tensor, rank: int, world_size: int) -> Tensor:
    """This process's share of a global batch (the batch size must divide evenly)."""
    per = global_batch.shape[0] // world_size
    return global_batch[rank * per : (rank + 1) * per]


def step_generator(seed: int, step: int) -> torch.Generator:
    """Noise for a global step: a pure function of (seed, step), identical on every rank."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def world_images(
    seed: int, step: int, batch_size: int, split: str = "train"
) -> tuple[Tensor, list[str]]:
    """The global batch of scenes for a step: images in [-1, 1] (b, 3, 64, 64) and captions."""
    scenes = world.sample_scenes(np.random.default_rng([seed, step]), batch_size, split)
    return world.images_to_tensor(world.render_scenes(scenes)), [s.caption() for s in scenes]


def world_clips(
    seed: int, step: int, batch_size: int, frames: int, split: str = "train"
) -> tuple[Tensor, list[str]]:
    """The global batch of motion clips for a step, in [-1, 1] (b, 3, t, 64, 64), and captions."""
    clips = world.sample_clips(np.random.default_rng([seed, step]), batch_size, split, frames)
    return world.clips_to_tensor(world.render_clips(clips)), [c.caption() for c in clips]


class Cached(NamedTuple):
    """A step's latents still as the cache's posterior moments (b, t, 2c, h, w): sampled by
    TrainingData.encode with the step's generator, where the pixels would be encoded."""

    moments: Tensor
    image: bool  # (b, c, h, w) latents rather than clips


class TrainingData:
    """Where a task's images and clips come from: real media when the config names `media`
    (spacetime.train.media_data), through a latent cache when it names `latent_cache`
    (spacetime.train.latent_cache), else the world. All draw a step's global batch from
    (seed, step) alone, so runs resume and split over processes alike."""

    def __init__(self, cfg, vae: nn.Module | None = None):
        self.cfg, self.vae, self.media, self._cache = cfg, vae, None, None
        if cfg.media:
            from spacetime.train.media_data import MediaData

            self.media = MediaData(cfg.media, cfg.media_size, cfg.frame_stride)

    @property
    def cache(self):
        """The latent cache, built on first use (it needs the VAE), or None."""
        if self._cache is None and self.cfg.latent_cache:
            from spacetime.train.latent_cache import LatentCache

            self._cache = LatentCache(self.cfg.latent_cache, self.media, self.vae)
        return self._cache

    def images(self, step: int) -> tuple[Tensor | Cached, list[str]]:
        """Pixels (b, 3, h, w) in [-1, 1], or cached moments, and captions."""
        if self.media is None:
            return world_images(self.cfg.seed, step, self.cfg.batch_size)
        return self._from_media(step, frames=1, image=True)

    def clips(self, step: int, frames: int) -> tuple[Tensor | Cached, list[str]]:
        """Pixels (b, 3, t, h, w) in [-1, 1], or cached moments, and captions."""
        if self.media is None:
            return world_clips(self.cfg.seed, step, self.cfg.batch_size, frames)
        return self._from_media(step, frames, image=False)

    def _from_media(self, step: int, frames: int, image: bool):
        cfg = self.cfg
        if self.cache is not None:
            moments, captions = self.cache.draw(cfg.seed, step, cfg.batch_size, frames)
            return Cached(moments, image), captions
        if image:
            return self.media.images(cfg.seed, step, cfg.batch_size)
        return self.media.clips(cfg.seed, step, cfg.batch_size, frames)

    def encode(self, x: Tensor | Cached, generator: torch.Generator) -> Tensor:
        """Scaled latents of a step's pixels (the VAE's posterior, sampled), or of its cached
        moments, sampled the same way."""
        if isinstance(x, Cached):
            z = self.cache.sample(x.moments, generator)
            return z[:, :, 0] if x.image else z
        return self.vae.encode(on_device_of(self.vae, x), generator=generator)

    def summary(self) -> dict:
        """For the export's record: how many media files there were and how many were skipped."""
        if self.media is None:
            return {}
        summary = self.media.summary()
        print(
            f"media: {summary['media_files']} files, {summary['media_skipped']} skipped as "
            "unreadable or too short",
            file=sys.stderr,
        )
        return summary


def drop_captions(captions: list[str], rate: float, generator: torch.Generator) -> list[str]:
    """Each caption emptied with probability `rate`: the empty captions teach the unconditional
    model that classifier-free guidance needs."""
    drop = torch.rand(len(captions), generator=generator) < rate
    return ["" if d else c for c, d in zip(captions, drop.tolist(), strict=True)]


def on_device_of(module: nn.Module, x: Tensor) -> Tensor:
    """x moved to where a frozen module lives (the loop places them on the training device, so
    a GPU encodes batches instead of the host's CPU)."""
    return x.to(next(module.parameters()).device)


def load_vae(folder: str | Path) -> AutoencoderKL:
    """A VAE from a folder holding config.json + weights (or its parent with a vae/ inside)."""
    folder = Path(folder)
    if (folder / "vae").is_dir():
        folder = folder / "vae"
    cfg = VAEConfig.from_diffusers(read_json(folder / "config.json"))
    return build_vae(cfg, read_component(folder, "diffusion_pytorch_model")).eval()


def x0_loss_weights(abar: Tensor, cap: float) -> Tensor:
    """Per-sample weights clamp(1/SNR, 1, cap) on the ε loss, SNR = ᾱ/(1−ᾱ): the ε error is
    √SNR times the x0 error, so at high noise, where only the prompt can say which way the object
    moves, the plain ε loss hardly sees the clip; 1/SNR makes it an x0 loss there. cap 0: all 1."""
    if cap <= 0:
        return torch.ones_like(abar)
    return ((1 - abar) / abar).clamp(1.0, cap)


class DenoisingLoss(nn.Module):
    """ε-prediction loss ‖ε − ε̂(√ᾱ x0 + √(1−ᾱ) ε, t, text)‖² (DDPM, Ho et al. 2020), text encoder
    trained jointly; further batch entries (a multi-view set's `cameras`) go to the U-Net."""

    def __init__(
        self,
        unet: UNet2DCondition,
        text_model: nn.Module,
        alphas_cumprod: Tensor,
        x0_weight_cap: float = 0.0,
    ):
        super().__init__()
        self.unet = unet
        self.text_model = text_model
        self.x0_weight_cap = x0_weight_cap
        self.register_buffer("alphas_cumprod", alphas_cumprod, persistent=False)

    def forward(self, ids: Tensor, x0: Tensor, t: Tensor, noise: Tensor, **conditioning) -> Tensor:
        x_t = add_noise(x0, noise, self.alphas_cumprod[t])
        return self.loss(self.unet(x_t, t, self.text_model(ids), **conditioning), noise, t)

    def loss(self, prediction: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """Mean squared ε error, each sample weighted by x0_loss_weights (all 1 by default)."""
        error = (prediction.float() - noise).pow(2).flatten(1).mean(1)
        return (x0_loss_weights(self.alphas_cumprod[t], self.x0_weight_cap) * error).mean()
