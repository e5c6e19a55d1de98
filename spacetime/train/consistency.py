"""Latent consistency distillation (Luo et al. 2023, "Latent Consistency Models"; as LCM-LoRA,
Luo et al. 2023b, the student is the frozen model plus a LoRA).

For a clean latent x0 (an image's, or a clip's: the same loss with a frame axis), a timestep t on
the solver's grid t = k·j − 1 (k = T / original_inference_steps) and noise ε:

    x_t      = √ᾱ_t x0 + √(1−ᾱ_t) ε
    student  = c_skip(t) x_t + c_out(t) x̂0(student(x_t, t))
    teacher  = one DDIM step from x_t to t − k with the frozen model under classifier-free
               guidance at `guidance` (the LoRA switched off): x_{t−k}
    target   = c_skip(t−k) x_{t−k} + c_out(t−k) x̂0(student(x_{t−k}, t−k)), without gradient
    loss     = pseudo-Huber(student − target) = √(d² + c²) − c

with LCMScheduler's boundary condition (spacetime.sampling.lcm_boundary), so the student samples
with `--scheduler lcm` at guidance 1: one U-Net call per step. As in diffusers' LCM-LoRA script,
the target network is the online student (no separate EMA target).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from spacetime.models.lora import TrainableLora
from spacetime.sampling import NoiseSchedule, add_noise, lcm_boundary, to_x0
from spacetime.train.common import (
    TrainingData,
    rank_slice,
    step_generator,
)
from spacetime.train.config import ConsistencyTraining
from spacetime.train.lora import export_lora, frozen_model, student

HUBER_C = 0.001  # pseudo-Huber loss sqrt(d² + c²) − c, as diffusers' LCM scripts


class ConsistencyLoss(nn.Module):
    """The distillation loss of one batch; only `lora` trains."""

    def __init__(self, unet: nn.Module, text_model: nn.Module, lora: TrainableLora,
                 cfg: ConsistencyTraining):  # fmt: skip
        super().__init__()
        self.unet, self.text_model, self.lora = unet, text_model, lora
        self.guidance = cfg.guidance
        schedule = NoiseSchedule(original_inference_steps=cfg.original_inference_steps)
        self.scaling = schedule.timestep_scaling
        self.skip = schedule.num_train_timesteps // cfg.original_inference_steps
        self.register_buffer("alphas_cumprod", schedule.alphas_cumprod.float(), persistent=False)

    def x0(self, x_t: Tensor, t: Tensor, context: Tensor) -> Tensor:
        """The U-Net's clean estimate at x_t (an ε model)."""
        abar = self._per_sample(self.alphas_cumprod[t], x_t)
        return to_x0(self.unet(x_t, t, context).float(), x_t, abar, "epsilon")

    def consistency(self, x_t: Tensor, t: Tensor, context: Tensor) -> Tensor:
        """f(x_t, t) = c_skip x_t + c_out x̂0: LCMScheduler's boundary condition."""
        c_skip, c_out = (self._per_sample(c, x_t) for c in lcm_boundary(t.float(), self.scaling))
        return c_skip * x_t + c_out * self.x0(x_t, t, context)

    def forward(self, ids: Tensor, uncond_ids: Tensor, x0: Tensor, t: Tensor, noise: Tensor):
        with torch.no_grad():
            context, uncond = self.text_model(ids), self.text_model(uncond_ids)
        abar = self._per_sample(self.alphas_cumprod[t], x0)
        # torch 2.13 on CPU segfaults in backward when the autograd graph first starts inside the
        # frozen U-Net; rooting it at the input avoids that (as MotionLoss does).
        x_t = add_noise(x0, noise, self.alphas_cumprod[t]).requires_grad_(True)
        prediction = self.consistency(x_t, t, context)
        with torch.no_grad():
            with self.lora.disabled():  # the teacher: the frozen model, guided
                both = self.unet(torch.cat([x_t, x_t]), torch.cat([t, t]),
                                 torch.cat([uncond, context])).float()  # fmt: skip
                eps_uncond, eps_cond = both.chunk(2)
                eps = eps_uncond + self.guidance * (eps_cond - eps_uncond)
            x0_hat = to_x0(eps, x_t, abar, "epsilon")
            t_prev = (t - self.skip).clamp(min=0)  # the first grid step lands on t = 0
            abar_prev = self._per_sample(self.alphas_cumprod[t_prev], x0)
            x_prev = abar_prev.sqrt() * x0_hat + (1 - abar_prev).sqrt() * eps  # DDIM, η = 0
            target = self.consistency(x_prev, t_prev, context)
        d = (prediction - target).float()
        return (torch.sqrt(d.square() + HUBER_C**2) - HUBER_C).mean()

    @staticmethod
    def _per_sample(values: Tensor, like: Tensor) -> Tensor:
        """(b,) values broadcast over an image's or a clip's latent."""
        return values.view(-1, *(1,) * (like.ndim - 1)).to(like)


class ConsistencyTask:
    """A few-step LoRA student of the image model, or of the clip model with `motion`."""

    def __init__(self, cfg: ConsistencyTraining):
        self.cfg = cfg
        self.components = frozen_model(cfg.base, cfg.motion)
        self.data = TrainingData(cfg, self.components.vae)

    def frozen(self) -> list[nn.Module]:
        return [self.components.vae]

    def build(self) -> nn.Module:
        c = self.components
        # the whole U-Net learns to jump: every targeted layer, spatial and temporal alike
        lora = student(self.cfg, c.unet, everywhere=True)
        if self.cfg.init_lora:
            from spacetime.formats.lora import read_lora
            from spacetime.formats.lora_files import find_lora

            layers = {"unet": [name.removeprefix("unet.") for name in lora.names]}
            lora.start_from(read_lora(find_lora(self.cfg.init_lora), layers))
        return ConsistencyLoss(c.unet, c.text_encoder.model, lora, self.cfg)

    @torch.no_grad()
    def batch(self, step: int, rank: int, world_size: int) -> dict[str, Tensor]:
        cfg, c = self.cfg, self.components
        if cfg.motion:
            x, captions = self.data.clips(step, cfg.frames)
        else:
            x, captions = self.data.images(step)
        g = step_generator(cfg.seed, step)
        ids = c.text_encoder.tokenize(captions)
        uncond_ids = c.text_encoder.tokenize([""] * len(captions))
        x0 = self.data.encode(x, generator=g)
        skip = NoiseSchedule().num_train_timesteps // cfg.original_inference_steps
        j = torch.randint(1, cfg.original_inference_steps + 1, (len(captions),), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        batch = {"ids": ids, "uncond_ids": uncond_ids, "x0": x0, "t": j * skip - 1, "noise": noise}
        return {k: rank_slice(v, rank, world_size) for k, v in batch.items()}

    def export(self, module: nn.Module, folder: Path) -> dict:
        return {**export_lora(self.cfg, module.lora, folder), **self.data.summary()}
