"""Zoom-in clips: a still scene filmed by a camera that zooms in on the frame's centre.

A camera move the world's motion clips never have (their camera is still and the object moves),
so the default motion module cannot make it; the shipped zoom-in motion LoRA learns it from these.
The magnification grows geometrically, as a steady zoom does: frame k shows the scene at
zoom^(k/(t-1) - 1) of its final scale, so the object's size and its offset from the centre grow by
the same factor every frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from spacetime.world.captions import SceneSpec, scene_caption
from spacetime.world.clips import FRAMES
from spacetime.world.raster import RESOLUTION
from spacetime.world.scenes import (
    MARGIN,
    Scene,
    Split,
    combination_weights,
    combinations,
    render_scenes,
)

MIN_ZOOM, MAX_ZOOM = 1.5, 2.0  # the object's size, last frame over first
# The object's size in the last frame: the first is 1/zoom of it, 7-16 px, the scenes' range.
MIN_END_SIZE, MAX_END_SIZE = 14.0, 24.0
CENTRE = RESOLUTION / 2


@dataclass(frozen=True)
class ZoomClip:
    """A still scene whose last frame shows the object at `end_centre` with size `end_size`,
    the camera zooming in by `zoom` over `frames` frames."""

    shape: str
    colour: str
    background: str | None
    end_centre: tuple[float, float]
    end_size: float
    zoom: float
    frames: int = FRAMES

    def __post_init__(self):
        if self.frames < 2:
            raise ValueError(f"a clip needs at least 2 frames, got {self.frames}")
        if self.zoom < 1:
            raise ValueError(f"a zoom in magnifies: zoom must be >= 1, got {self.zoom}")
        self.scenes()  # validates colour, shape, background and that every frame fits

    @property
    def spec(self) -> SceneSpec:
        return SceneSpec(self.shape, self.colour, self.background)

    def caption(self) -> str:
        """The scene's caption, `a red circle [on a white background]`: the move is the LoRA's."""
        return scene_caption(self.spec)

    def scales(self) -> list[float]:
        """Each frame's magnification relative to the last, from 1/zoom up to 1."""
        return [self.zoom ** (k / (self.frames - 1) - 1) for k in range(self.frames)]

    def scenes(self) -> list[Scene]:
        x, y = self.end_centre
        return [
            Scene(
                self.shape,
                self.colour,
                self.background,
                (CENTRE + s * (x - CENTRE), CENTRE + s * (y - CENTRE)),
                s * self.end_size,
            )
            for s in self.scales()
        ]


def render_zoom_clips(clips: Sequence[ZoomClip]) -> np.ndarray:
    """uint8 (n, t, 64, 64, 3) frames of clips of one length."""
    lengths = {clip.frames for clip in clips}
    if len(lengths) != 1:
        raise ValueError(f"clips of different lengths {sorted(lengths)} cannot share a batch")
    frames = render_scenes([scene for clip in clips for scene in clip.scenes()])
    return frames.reshape(len(clips), lengths.pop(), *frames.shape[1:])


def sample_zoom_clips(
    rng: np.random.Generator, n: int, split: Split = "train", frames: int = FRAMES
) -> list[ZoomClip]:
    """n zoom-in clips over the split's scene combinations (the scenes' held-out split)."""
    combos = combinations(split)
    p = combination_weights([background for *_, background in combos], split)
    picks = rng.choice(len(combos), size=n, p=p)
    zooms = rng.uniform(MIN_ZOOM, MAX_ZOOM, size=n)
    sizes = rng.uniform(MIN_END_SIZE, MAX_END_SIZE, size=n)
    # Anywhere the last frame still holds the whole object; earlier frames are nearer the centre.
    reach = CENTRE - sizes - MARGIN
    offsets = (2 * rng.uniform(size=(n, 2)) - 1) * reach[:, None]
    return [
        ZoomClip(
            shape,
            colour,
            background,
            (float(CENTRE + dx), float(CENTRE + dy)),
            float(size),
            float(zoom),
            frames,
        )  # fmt: skip
        for (colour, shape, background), (dx, dy), size, zoom in zip(
            (combos[i] for i in picks), offsets, sizes, zooms, strict=True
        )
    ]
