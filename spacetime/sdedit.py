"""SDEdit (Meng et al. 2022): image-to-image and video-to-video by sampling from a noised input.

The input is encoded (a posterior sample), noised to the timestep that `strength` picks from the
sampler's plan, and the plan's remaining steps denoise it: strength 1 starts from (almost) pure
noise, small strengths keep the input's layout and colours. As diffusers' img2img and
AnimateDiffVideoToVideo pipelines do it: of n steps, the last int(n · strength) run; the VAE's
posterior sample and then the noise are drawn from the one seeded generator, in that order, the
noise of a clip in (b, t, c, h, w) order.
"""

from __future__ import annotations

import numpy as np
import torch
from einops import rearrange
from torch import Tensor

from spacetime.errors import ArgumentTypeError, ArgumentValueError

ENCODE_CHUNK = 16  # frames per VAE encode call, as diffusers' decode_chunk_size: bounded memory


def first_step(steps: int, strength: float) -> int:
    """Index of the plan's first step that runs: steps - int(steps · strength)."""
    run = min(int(steps * strength), steps)
    if run < 1:
        raise ArgumentValueError(
            f"strength {strength} of {steps} steps runs no step: raise --strength or --steps "
            f"(at least {1 / steps:.3g})"
        )
    return steps - run


def to_pixels(frames, height: int, width: int) -> Tensor:
    """uint8 (h, w, 3) image or (t, h, w, 3) clip -> float (1, 3[, t], h, w) in [-1, 1], resized
    to height x width (Lanczos, as diffusers' image processor resizes PIL images) when it is not
    that size already."""
    clip = resized(frames, height, width)
    x = torch.from_numpy(clip).float() / 127.5 - 1
    x = rearrange(x, "t h w c -> 1 c t h w")
    return x[:, :, 0] if np.ndim(frames) == 3 else x


def as_frames(frames) -> np.ndarray:
    """uint8 (h, w, 3) image or (t, h, w, 3) clip -> (t, h, w, 3), checked."""
    array = np.asarray(frames)
    if array.dtype != np.uint8 or array.ndim not in (3, 4) or array.shape[-1] != 3:
        raise ArgumentTypeError(
            "expected uint8 RGB pixels, (h, w, 3) for an image or (t, h, w, 3) for a clip, got "
            f"{array.dtype} {tuple(array.shape)}"
        )
    clip = array[None] if array.ndim == 3 else array
    if clip.shape[0] == 0:
        raise ArgumentValueError("the input clip has no frames")
    return clip


def resized(frames, height: int, width: int) -> np.ndarray:
    """uint8 (h, w, 3) image or (t, h, w, 3) clip -> a writable uint8 (t, h, w, 3) clip at
    height x width (Lanczos, as diffusers' image processor resizes PIL images)."""
    clip = as_frames(frames)
    if clip.shape[1:3] != (height, width):
        from PIL import Image

        size = (width, height)
        clip = np.stack([np.asarray(Image.fromarray(f).resize(size, Image.LANCZOS)) for f in clip])
    return np.array(clip, copy=True)  # PIL arrays are read-only


def encode(vae, pixels: Tensor, generator: torch.Generator) -> Tensor:
    """Scaled latents of (1, 3[, t], h, w) pixels, a posterior sample; clips in chunks of
    ENCODE_CHUNK frames, each chunk's noise drawn in turn (diffusers' order)."""
    if pixels.ndim == 4:
        return vae.encode(pixels, generator=generator)
    chunks = [
        vae.encode(pixels[:, :, i : i + ENCODE_CHUNK], generator=generator)
        for i in range(0, pixels.shape[2], ENCODE_CHUNK)
    ]
    return torch.cat(chunks, dim=2)


def noise_like(latents: Tensor, generator: torch.Generator) -> Tensor:
    """N(0, I) of the latents' shape, a clip's drawn frame-major (b, t, c, h, w) as diffusers'
    video-to-video pipeline draws it."""
    if latents.ndim == 4:
        return torch.randn(latents.shape, generator=generator)
    b, c, t, h, w = latents.shape
    return rearrange(torch.randn((b, t, c, h, w), generator=generator), "b t c h w -> b c t h w")
