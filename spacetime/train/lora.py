"""LoRA training (Hu et al. 2021): fresh low-rank factors on a frozen model, on the ε loss.

On the motion modules of a motion package (a camera move, as AnimateDiff's motion LoRAs) or on an
image model's U-Net (a concept or style). The model stays as loaded, with the text encoder a
motion package ships; only the factors train, and the export is one PEFT/diffusers file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from einops import repeat
from torch import Tensor, nn

from spacetime import world
from spacetime.formats.lora import save_lora
from spacetime.formats.lora_files import LORA_FILE
from spacetime.formats.motion import ADAPTER_KEY
from spacetime.models.lora import TrainableLora, target_layers
from spacetime.sampling import NoiseSchedule, add_noise
from spacetime.train.common import (
    DenoisingLoss,
    TrainingData,
    drop_captions,
    rank_slice,
    step_generator,
)
from spacetime.train.config import LoRAStudent, LoRATraining
from spacetime.train.motion import MotionLoss


class FirstFrameLoss(MotionLoss):
    """The ε loss of a clip whose first frame is given clean, at timestep 0, while the others sit
    at t (per-frame noise levels, as in Diffusion Forcing, Chen et al. 2024): only the others
    count, so the modules learn to continue the clip from its first frame."""

    def forward(self, ids: Tensor, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        context = self.text_model(ids)
        x_t = add_noise(x0, noise, self.alphas_cumprod[t])
        x_t = torch.cat([x0[:, :, :1], x_t[:, :, 1:]], dim=2).requires_grad_(True)  # see MotionLoss
        levels = repeat(t, "b -> b f", f=x0.shape[2]).clone()
        levels[:, 0] = 0
        prediction = self.unet(x_t, levels, context)
        return self.loss(prediction[:, :, 1:], noise[:, :, 1:], t)


def lora_data(cfg: LoRATraining, step: int) -> tuple[Tensor, list[str]]:
    """The global batch of a step in [-1, 1]: clips (b, 3, t, 64, 64) or images (b, 3, 64, 64),
    and their captions."""
    rng = np.random.default_rng([cfg.seed, step])
    if cfg.data == "first-frame":
        clips = world.sample_clips(rng, cfg.batch_size, "train", cfg.frames)
        return world.clips_to_tensor(world.render_clips(clips)), [c.caption() for c in clips]
    if cfg.data == "zoom-in":
        from spacetime.world.zoom import render_zoom_clips, sample_zoom_clips

        clips = sample_zoom_clips(rng, cfg.batch_size, "train", cfg.frames)
        return world.clips_to_tensor(render_zoom_clips(clips)), [c.caption() for c in clips]
    from spacetime.world.inverted import render_inverted, sample_invertible

    scenes = sample_invertible(rng, cfg.batch_size, "train")
    return world.images_to_tensor(render_inverted(scenes)), [s.caption() for s in scenes]


def frozen_model(base: str, motion: str = ""):
    """`base`'s components, with the motion modules of `motion` and the text encoder its package
    ships, when given: the model as the pipelines sample it, in float32, frozen."""
    from spacetime.formats.load import load_components

    c = load_components(base)
    if motion:
        from spacetime.formats.motion import load_motion_adapter, load_motion_text_encoder

        c.unet = load_motion_adapter(c.unet, motion)
        c.text_encoder = load_motion_text_encoder(motion, c.text_encoder.tokenizer) or (
            c.text_encoder
        )
    for module in (c.unet, c.text_encoder.model, c.vae):
        module.float().eval().requires_grad_(False)
    return c


def student(cfg: LoRAStudent, unet: nn.Module, everywhere: bool = False) -> TrainableLora:
    """Fresh factors on the targeted layers: the motion modules' with `motion`, else the
    spatial U-Net's; `everywhere`: all of them, spatial and temporal."""
    inside, outside = (ADAPTER_KEY, None) if cfg.motion else (None, ADAPTER_KEY)
    if everywhere:
        inside = outside = None
    layers = target_layers(unet, cfg.targets, within=inside, outside=outside)
    return TrainableLora({f"unet.{n}": m for n, m in layers.items()}, cfg.rank, cfg.alpha)


def export_lora(cfg: LoRAStudent, lora: TrainableLora, folder: Path) -> dict:
    """folder/pytorch_lora_weights.safetensors, where diffusers' load_lora_weights looks."""
    save_lora(folder / LORA_FILE, lora.factors(), cfg.alpha)
    return {
        "lora_layers": len(lora.names),
        "lora_parameters": sum(p.numel() for p in lora.parameters()),
    }


class LoRATask:
    """A LoRA on `base` (image data) or on the motion modules of `motion` (clip data)."""

    def __init__(self, cfg: LoRATraining):
        self.cfg = cfg
        self.components = frozen_model(cfg.base, cfg.motion)
        self.data = TrainingData(cfg, self.components.vae)

    def frozen(self) -> list[nn.Module]:
        return [self.components.vae]

    def build(self) -> nn.Module:
        c, cfg = self.components, self.cfg
        schedule = NoiseSchedule().alphas_cumprod.float()
        # MotionLoss roots the autograd graph at the input, which the frozen U-Net needs on CPU
        kind = FirstFrameLoss if cfg.data == "first-frame" else MotionLoss
        loss = (kind if cfg.motion else DenoisingLoss)(c.unet, c.text_encoder.model, schedule)
        loss.lora = student(cfg, c.unet)
        return loss

    @torch.no_grad()
    def batch(self, step: int, rank: int, world_size: int) -> dict[str, Tensor]:
        cfg, c = self.cfg, self.components
        if cfg.media:  # your own clips (with `motion`) or images
            x, captions = (
                self.data.clips(step, cfg.frames) if cfg.motion else self.data.images(step)
            )
        else:
            x, captions = lora_data(cfg, step)
        g = step_generator(cfg.seed, step)
        ids = c.text_encoder.tokenize(drop_captions(captions, cfg.caption_dropout, g))
        x0 = self.data.encode(x, generator=g)
        t = torch.randint(0, 1000, (len(captions),), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        batch = {"ids": ids, "x0": x0, "t": t, "noise": noise}
        return {k: rank_slice(v, rank, world_size) for k, v in batch.items()}

    def export(self, module: nn.Module, folder: Path) -> dict:
        return {**export_lora(self.cfg, module.lora, folder), **self.data.summary()}
