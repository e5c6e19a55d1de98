"""Outlined scenes: the world's shapes drawn as a ring of the object's colour, hollow inside.

A style the image model never saw; the outline LoRA recipe (configs/world_outline_lora.yaml)
teaches it to the U-Net's spatial layers, with the scenes' own captions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from spacetime.world.palette import COLOURS, SHAPES, background_rgb
from spacetime.world.raster import compose, coverage
from spacetime.world.scenes import Scene

WIDTH = 3.0  # px of line, measured inwards from the shape's edge


def render_outlined(scenes: Sequence[Scene]) -> np.ndarray:
    """Scenes with each shape hollowed out to a WIDTH-px outline -> uint8 (n, 64, 64, 3)."""
    shape = torch.tensor([SHAPES.index(s.shape) for s in scenes])
    centre = torch.tensor([s.centre for s in scenes], dtype=torch.float32)
    size = torch.tensor([s.size for s in scenes], dtype=torch.float32)
    alpha = coverage(shape, centre, size) - coverage(shape, centre, (size - WIDTH).clamp(min=0))
    colour = torch.tensor([COLOURS[s.colour] for s in scenes])
    background = torch.tensor([background_rgb(s.background) for s in scenes])
    return compose(alpha.clamp(0, 1), colour, background)
