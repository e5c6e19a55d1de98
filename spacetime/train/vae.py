"""The world autoencoder: f = 8, 4 latent channels, as SD's (LDM's KL-regularised VAE)."""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spacetime.formats.diffusers import save_component
from spacetime.models.presets import PRESETS
from spacetime.models.vae import AutoencoderKL
from spacetime.train.common import rank_slice, step_generator, world_images
from spacetime.train.config import VAETraining


def psnr(a: Tensor, b: Tensor) -> float:
    """Peak signal-to-noise ratio of images in [-1, 1], in dB."""
    mse = F.mse_loss(a.clamp(-1, 1), b.clamp(-1, 1)).item() / 4  # on a [0, 1] scale
    return 10 * math.log10(1 / max(mse, 1e-12))


@torch.no_grad()
def heldout_psnr(vae: AutoencoderKL, seed: int = 0, n: int = 512) -> float:
    """Reconstruction PSNR (posterior mean) on n held-out scenes, in dB."""
    held = world_images(seed + 7, 1, n, split="heldout")[0].to(next(vae.parameters()).device)
    return round(psnr(vae.decode(vae.encode(held, sample=False)), held), 2)


class VAELoss(nn.Module):
    """Reconstruction (MSE + L1, L1 keeps edges sharp) plus a small KL, as the LDM autoencoder."""

    def __init__(self, vae: AutoencoderKL, kl_weight: float):
        super().__init__()
        self.vae = vae
        self.kl_weight = kl_weight

    def forward(self, x: Tensor, noise: Tensor) -> Tensor:
        q = self.vae.posterior(x)
        z = q.mean + torch.exp(0.5 * q.logvar) * noise  # reparameterised sample
        rec = self.vae.decoder(self.vae.post_quant_conv(z)).float()
        rec_loss = F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x)
        return rec_loss + self.kl_weight * q.kl().mean()


class VAETask:
    def __init__(self, cfg: VAETraining):
        self.cfg = cfg
        self.vae_config = PRESETS[cfg.preset][0]

    def frozen(self) -> list[nn.Module]:
        return []

    def build(self) -> nn.Module:
        return VAELoss(AutoencoderKL(self.vae_config), self.cfg.kl_weight)

    def batch(self, step: int, rank: int, world_size: int) -> dict[str, Tensor]:
        x, _ = world_images(self.cfg.seed, step, self.cfg.batch_size)
        c, f = self.vae_config.latent_channels, self.vae_config.downscale
        g = step_generator(self.cfg.seed, step)
        noise = torch.randn((x.shape[0], c, 64 // f, 64 // f), generator=g)
        return {"x": rank_slice(x, rank, world_size), "noise": rank_slice(noise, rank, world_size)}

    @torch.no_grad()
    def export(self, module: nn.Module, folder: Path) -> dict:
        """Save vae/ with a scaling factor giving unit-variance latents; report held-out PSNR."""
        import dataclasses

        vae = module.vae.float().eval()
        device = next(vae.parameters()).device
        x = world_images(self.cfg.seed + 7, 0, 512)[0].to(device)
        std = vae.posterior(x).mean.std().item()
        vae.config = dataclasses.replace(vae.config, scaling_factor=round(1.0 / std, 5))
        save_component(
            folder / "vae", vae.config.to_diffusers(), vae.state_dict(), "diffusion_pytorch_model"
        )
        return {"psnr_heldout_db": heldout_psnr(vae, self.cfg.seed),
                "scaling_factor": vae.config.scaling_factor}  # fmt: skip
