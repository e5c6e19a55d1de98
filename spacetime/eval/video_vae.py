"""How well a VAE decodes clips: reconstruction PSNR and temporal flicker on held-out world clips."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from spacetime import world

# A pixel the ground truth keeps static between two frames (all channels within 1/255 in [-1, 1]).
STATIC = 2.0 / 255


def heldout_clips(n: int = 64, frames: int = 16, seed: int = 0) -> Tensor:
    """n held-out world clips in [-1, 1], (n, 3, t, 64, 64)."""
    clips = world.sample_clips(np.random.default_rng([seed, 10_007]), n, "heldout", frames)
    return world.clips_to_tensor(world.render_clips(clips))


def flicker(recon: Tensor, truth: Tensor) -> float:
    """Mean absolute frame-to-frame change of `recon`, in 8-bit levels, over the pixels whose
    ground truth does not change between those frames (background the object is not crossing)."""
    static = (truth.diff(dim=2).abs().amax(dim=1, keepdim=True) < STATIC).expand_as(recon[:, :, 1:])
    change = recon.clamp(-1, 1).diff(dim=2).abs() * 127.5  # [-1, 1] → 8-bit levels
    return change[static].mean().item()


def psnr(recon: Tensor, truth: Tensor) -> float:
    """PSNR in dB of clips in [-1, 1]."""
    mse = ((recon.clamp(-1, 1) - truth) / 2).pow(2).mean().item()
    return float(10 * np.log10(1 / max(mse, 1e-12)))


@torch.no_grad()
def evaluate_decoder(
    decode: Callable[[Tensor], Tensor],
    encode: Callable[[Tensor], Tensor],
    clips: Tensor,
    batch: int = 8,
) -> dict:
    """PSNR and flicker of decode(encode(clip)) over `clips`, `batch` clips at a time."""
    recon = torch.cat(
        [decode(encode(clips[i : i + batch])).float() for i in range(0, len(clips), batch)]
    )
    return {
        "psnr_db": round(psnr(recon, clips), 2),
        "flicker_levels": round(flicker(recon, clips), 4),
        "clips": len(clips),
        "frames": clips.shape[2],
    }
