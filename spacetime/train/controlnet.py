"""ControlNet training (Zhang et al. 2023): the frozen image model, a trainable copy of its U-Net's
encoder, the ε loss. Control images are made from each step's training images by a shipped
preprocessor, so the world (silhouettes) and your own pictures (edges) train the same way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from torch import Tensor, nn

from spacetime.formats.controlnet import save_controlnet
from spacetime.models.controlnet import ControlNet
from spacetime.preprocess import preprocessor
from spacetime.sampling import NoiseSchedule, add_noise
from spacetime.train.common import (
    DenoisingLoss,
    TrainingData,
    drop_captions,
    rank_slice,
    step_generator,
)
from spacetime.train.config import ControlNetTraining
from spacetime.train.lora import frozen_model


class ControlLoss(DenoisingLoss):
    """The frozen U-Net's ε loss with the ControlNet's residuals added; only the ControlNet
    trains (the gradient reaches it through the frozen U-Net)."""

    def __init__(self, unet: nn.Module, text_model: nn.Module, controlnet: ControlNet,
                 alphas_cumprod: Tensor):  # fmt: skip
        super().__init__(unet, text_model, alphas_cumprod)
        self.controlnet = controlnet

    def forward(self, ids: Tensor, x0: Tensor, t: Tensor, noise: Tensor, condition: Tensor):
        x_t = add_noise(x0, noise, self.alphas_cumprod[t])
        context = self.text_model(ids)
        control = self.controlnet(x_t, t, context, condition)
        return self.loss(self.unet(x_t, t, context, control=control), noise, t)


def conditions(pixels: Tensor, name: str) -> Tensor:
    """Control images (b, 3, h, w) in [0, 1] made by preprocessor `name` from pixels in [-1, 1]."""
    run = preprocessor(name)
    images = ((pixels.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    made = [run(image) for image in rearrange(images, "b c h w -> b h w c").cpu().numpy()]
    return rearrange(torch.from_numpy(np.stack(made)).float() / 255, "b h w c -> b c h w")


class ControlNetTask:
    """A ControlNet for `base`, from the world's scenes or your own images."""

    def __init__(self, cfg: ControlNetTraining):
        self.cfg = cfg
        self.components = frozen_model(cfg.base)
        self.data = TrainingData(cfg, self.components.vae)

    def frozen(self) -> list[nn.Module]:
        return [self.components.vae]

    def build(self) -> nn.Module:
        c = self.components
        net = ControlNet.from_unet(c.unet, c.vae.config.downscale)
        return ControlLoss(
            c.unet, c.text_encoder.model, net, NoiseSchedule().alphas_cumprod.float()
        )

    @torch.no_grad()
    def batch(self, step: int, rank: int, world_size: int) -> dict[str, Tensor]:
        cfg = self.cfg
        x, captions = self.data.images(step)
        g = step_generator(cfg.seed, step)
        ids = self.components.text_encoder.tokenize(drop_captions(captions, cfg.caption_dropout, g))
        condition = conditions(x, cfg.condition)
        x0 = self.data.encode(x, generator=g)
        t = torch.randint(0, 1000, (len(captions),), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        batch = {"ids": ids, "x0": x0, "t": t, "noise": noise, "condition": condition}
        return {k: rank_slice(v, rank, world_size) for k, v in batch.items()}

    def export(self, module: nn.Module, folder: Path) -> dict:
        save_controlnet(module.controlnet.float().eval(), folder, overwrite=True)
        parameters = sum(p.numel() for p in module.controlnet.parameters())
        return {"controlnet_parameters": parameters, **self.data.summary()}
