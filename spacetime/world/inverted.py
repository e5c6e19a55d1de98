"""Inverted scenes: the world with object and background colours swapped.

A style the image model never saw (a red circle on a white background is drawn white on red); the
inverted-colours LoRA recipe (configs/world_inverted_lora.yaml) teaches it to the U-Net's spatial
layers with the scenes' own captions. Only scenes whose background is an object colour take part,
so the swapped scene is one of the world's colours on another.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from spacetime.world.palette import COLOURS, SHAPES
from spacetime.world.raster import compose, coverage
from spacetime.world.scenes import Scene, Split, sample_scenes


def invertible(scene: Scene) -> bool:
    """Whether the swap stays in the palette: the background is an object colour."""
    return scene.background in COLOURS


def sample_invertible(rng: np.random.Generator, n: int, split: Split = "train") -> list[Scene]:
    """n scenes of the split whose background is an object colour."""
    found: list[Scene] = []
    while len(found) < n:
        found += [s for s in sample_scenes(rng, 2 * n, split) if invertible(s)]
    return found[:n]


def render_inverted(scenes: Sequence[Scene]) -> np.ndarray:
    """The scenes drawn in the background's colour on the object's -> uint8 (n, 64, 64, 3)."""
    if not all(invertible(s) for s in scenes):
        raise ValueError("only scenes on an object-coloured background can be inverted")
    alpha = coverage(
        torch.tensor([SHAPES.index(s.shape) for s in scenes]),
        torch.tensor([s.centre for s in scenes], dtype=torch.float32),
        torch.tensor([s.size for s in scenes], dtype=torch.float32),
    )
    colour = torch.tensor([COLOURS[s.background] for s in scenes])
    background = torch.tensor([COLOURS[s.colour] for s in scenes])
    return compose(alpha, colour, background)
