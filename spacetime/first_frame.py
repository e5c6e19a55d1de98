"""A clip that starts from an image: the image's latent is the clip's first frame, given clean at
timestep 0 while the other frames are denoised around it (per-frame noise levels, as in Diffusion
Forcing, Chen et al. 2024; an image-latent conditioning of the motion model).

Motion modules learn to continue a clip from such a frame with a first-frame motion LoRA
(`task: lora`, `data: first-frame`; the world's ships as spacetime/assets/lora/first-frame).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from einops import repeat
from torch import Tensor

Net = Callable[[Tensor, Tensor, Tensor], Tensor]


def conditioned(net: Net, latent: Tensor) -> Net:
    """`net` over clips whose first frame is `latent` (1, c, h, w), clean, at timestep 0: every
    call replaces frame 0 of its input and calls the U-Net with per-frame timesteps (b, t)."""

    def run(x_t: Tensor, timestep: Tensor, context: Tensor) -> Tensor:
        b, _, frames = x_t.shape[:3]
        first = repeat(latent.to(x_t), "1 c h w -> b c 1 h w", b=b)
        x_t = torch.cat([first, x_t[:, :, 1:]], dim=2)
        levels = torch.as_tensor(timestep, device=x_t.device).reshape(-1)
        levels = levels.expand(b).float()[:, None].repeat(1, frames)
        levels[:, 0] = 0
        return net(x_t, levels, context)

    return run


def place(latents: Tensor, latent: Tensor) -> Tensor:
    """The sampled clip (b, c, t, h, w) with its first frame exactly the image's latent."""
    first = repeat(latent.to(latents), "1 c h w -> b c 1 h w", b=latents.shape[0])
    return torch.cat([first, latents[:, :, 1:]], dim=2)
