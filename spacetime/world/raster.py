"""Batched, antialiased rasterisation of the 2D shapes by analytic pixel coverage (torch)."""

from __future__ import annotations

import math

import numpy as np
import torch
from einops import rearrange
from torch import Tensor

from spacetime.world.palette import SHAPES

RESOLUTION = 64


def coverage(shape: Tensor, centre: Tensor, size: Tensor, resolution: int = RESOLUTION) -> Tensor:
    """Pixel coverage: (n,) indices into SHAPES, (n, 2) centres, (n,) sizes -> (n, h, w)."""
    # Pixel (row i, column j) spans [j, j+1] x [i, i+1]: x grows right, y grows down, the frame is
    # [0, resolution]^2. `size` is the circle's radius and the half-extent of the square and of the
    # triangle's bounding box (an upright isosceles triangle, apex up, base = height = 2 * size).
    # clamp(0.5 - signed distance) per edge is the box-filtered coverage of a straight edge (exact
    # when axis-aligned, close when slanted): clean antialiased edges without supersampling.
    centres = torch.arange(resolution, dtype=torch.float32) + 0.5
    dx = centres[None, None, :] - centre[:, 0, None, None].float()  # (n, 1, w)
    dy = centres[None, :, None] - centre[:, 1, None, None].float()  # (n, h, 1)
    s = size[:, None, None].float()
    out = torch.empty(len(shape), resolution, resolution)
    for index, name in enumerate(SHAPES):
        pick = shape == index
        if not bool(pick.any()):
            continue
        x, y, r = dx[pick], dy[pick], s[pick]
        if name == "circle":
            alpha = (r + 0.5 - torch.sqrt(x * x + y * y)).clamp(0, 1)
        elif name == "square":
            alpha = (r + 0.5 - x.abs()).clamp(0, 1) * (r + 0.5 - y.abs()).clamp(0, 1)
        else:
            # The slanted sides satisfy 2|x| - y = r; dividing by sqrt(5) makes it a distance.
            sides = 0.5 - (2 * x.abs() - y - r) / math.sqrt(5)
            # The sides alone would bleed past the sharp apex; a cap there keeps it in the box.
            box = (r + 0.5 - y).clamp(0, 1) * (r + 0.5 + y).clamp(0, 1)
            alpha = torch.minimum(sides.clamp(0, 1), box)
        out[pick] = alpha
    return out


def compose(alpha: Tensor, colour: Tensor, background: Tensor) -> np.ndarray:
    """Blend (n, 3) colours over (n, 3) backgrounds by (n, h, w) coverage -> uint8 (n, h, w, 3)."""
    colour, background = colour.float()[:, :, None, None], background.float()[:, :, None, None]
    # Channels-first keeps the blend one fused, contiguous op; channels-last is ~3x slower.
    image = torch.addcmul(background, alpha[:, None], colour - background)  # (n, c, h, w)
    return rearrange(image.round_().to(torch.uint8), "n c h w -> n h w c").contiguous().numpy()


def images_to_tensor(images: np.ndarray) -> Tensor:
    """uint8 (b, h, w, c) images -> float (b, c, h, w) in [-1, 1], the diffusion models' range."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float() / 127.5 - 1
    return rearrange(x, "b h w c -> b c h w")


def clips_to_tensor(clips: np.ndarray) -> Tensor:
    """uint8 (b, t, h, w, c) clips -> float (b, c, t, h, w) in [-1, 1], the video tensor layout."""
    x = torch.from_numpy(np.ascontiguousarray(clips)).float() / 127.5 - 1
    return rearrange(x, "b t h w c -> b c t h w")
