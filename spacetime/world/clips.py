"""Motion clips: a 2D scene whose object moves at constant speed in one direction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from spacetime.world.captions import ClipSpec, clip_caption
from spacetime.world.palette import COLOURS, DIRECTIONS, SHAPES
from spacetime.world.raster import RESOLUTION
from spacetime.world.scenes import (
    MARGIN,
    MAX_SIZE,
    MIN_SIZE,
    Scene,
    Split,
    combination_weights,
    combinations,
    is_heldout,
    render_scenes,
)

FRAMES = 16
MIN_SPEED, MAX_SPEED = 1.0, 2.5  # px per frame: at least 15 px over 16 frames, clearly moving
# Unit steps in image coordinates (x right, y down).
STEPS: dict[str, tuple[int, int]] = {
    "left": (-1, 0),
    "right": (1, 0),
    "up": (0, -1),
    "down": (0, 1),
}


def _heldout_direction(colour: str, shape: str) -> int:
    """-(c + 3s) mod 10 for colour index c and shape index s; below 4, a held-out direction."""
    return -(list(COLOURS).index(colour) + 3 * SHAPES.index(shape)) % 10


# Held out: a colour x shape moving in direction d, on any background, when -(c + 3s) mod 10 = d's
# index in DIRECTIONS. That holds out 10 of the 96 colour x shape x direction triples (10%), each
# direction at least twice, while every colour x direction and shape x direction is still trained.
# A clip whose colour x shape x background is a held-out scene is held out too, so the scene split
# does not leak through video training.
HELDOUT_MOTIONS: frozenset[tuple[str, str, str]] = frozenset(
    (colour, shape, DIRECTIONS[_heldout_direction(colour, shape)])
    for colour in COLOURS
    for shape in SHAPES
    if _heldout_direction(colour, shape) < len(DIRECTIONS)
)


def is_heldout_clip(colour: str, shape: str, direction: str, background: str | None) -> bool:
    """Whether the training sampler never produces this clip combination."""
    return (colour, shape, direction) in HELDOUT_MOTIONS or is_heldout(colour, shape, background)


@dataclass(frozen=True)
class Clip:
    """A shape moving `speed` px per frame from `start` (x, y) for `frames` frames."""

    shape: str
    colour: str
    direction: str
    background: str | None
    start: tuple[float, float]
    size: float
    speed: float
    frames: int = FRAMES

    def __post_init__(self):
        if self.direction not in DIRECTIONS:
            raise ValueError(
                f"unknown direction {self.direction!r}; expected one of {', '.join(DIRECTIONS)}"
            )
        if self.frames < 2:
            raise ValueError(f"a clip needs at least 2 frames, got {self.frames}")
        if self.speed <= 0:
            raise ValueError(f"speed must be positive, got {self.speed}")
        self.scenes()  # validates colour, shape, background and that every frame fits

    @property
    def spec(self) -> ClipSpec:
        """The attributes a caption names."""
        return ClipSpec(self.shape, self.colour, self.direction, self.background)

    def caption(self) -> str:
        """`a red circle moving left`, optionally `on a white background`."""
        return clip_caption(self.spec)

    def centres(self) -> list[tuple[float, float]]:
        """The object's centre (x, y) in every frame."""
        sx, sy = STEPS[self.direction]
        x, y = self.start
        return [(x + sx * self.speed * k, y + sy * self.speed * k) for k in range(self.frames)]

    def scenes(self) -> list[Scene]:
        """The clip as one scene per frame."""
        return [
            Scene(self.shape, self.colour, self.background, centre, self.size)
            for centre in self.centres()
        ]

    def render(self) -> np.ndarray:
        """uint8 (t, 64, 64, 3) frames."""
        return render_clips([self])[0]


def render_clips(clips: Sequence[Clip]) -> np.ndarray:
    """Render clips of one length in one vectorised pass -> uint8 (n, t, 64, 64, 3)."""
    lengths = {clip.frames for clip in clips}
    if len(lengths) != 1:
        raise ValueError(f"clips of different lengths {sorted(lengths)} cannot share a batch")
    frames = render_scenes([scene for clip in clips for scene in clip.scenes()])
    return frames.reshape(len(clips), lengths.pop(), *frames.shape[1:])


def sample_clips(
    rng: np.random.Generator, n: int, split: Split = "train", frames: int = FRAMES
) -> list[Clip]:
    """n clips: combination of the split, then size, speed and a start that keeps it in frame."""
    # The smallest object at the slowest speed must fit its path inside the frame.
    max_size = min(MAX_SIZE, (RESOLUTION - 2 * MARGIN - MIN_SPEED * (frames - 1)) / 2)
    if max_size < MIN_SIZE:
        raise ValueError(f"{frames} frames do not fit in the frame at {MIN_SPEED} px per frame")
    combos = [
        (colour, shape, direction, background)
        for colour, shape, background in combinations("train") + combinations("heldout")
        for direction in DIRECTIONS
        if is_heldout_clip(colour, shape, direction, background) == (split == "heldout")
    ]
    p = combination_weights([background for *_, background in combos], split)
    picks = rng.choice(len(combos), size=n, p=p)
    sizes = rng.uniform(MIN_SIZE, max_size, size=n)
    room = RESOLUTION - 2 * (sizes + MARGIN)  # free span of the centre along each axis
    speeds = rng.uniform(MIN_SPEED, np.minimum(MAX_SPEED, room / (frames - 1)))
    along = rng.uniform(size=n) * (room - speeds * (frames - 1))  # start offset along the path
    across = rng.uniform(size=n) * room
    clips = []
    for i, pick in enumerate(picks):
        colour, shape, direction, background = combos[pick]
        sx, sy = STEPS[direction]
        lo = sizes[i] + MARGIN
        # Moving in the negative direction starts from the far side and travels back.
        a = lo + along[i] if sx + sy > 0 else RESOLUTION - lo - along[i]
        start = (a, lo + across[i]) if sx else (lo + across[i], a)
        centre = (float(start[0]), float(start[1]))
        clips.append(
            Clip(
                shape,
                colour,
                direction,
                background,
                centre,
                float(sizes[i]),
                float(speeds[i]),
                frames,
            )
        )
    return clips


def sample_clip(rng: np.random.Generator, split: Split = "train", frames: int = FRAMES) -> Clip:
    """One clip of the split."""
    return sample_clips(rng, 1, split, frames)[0]


def sample_clip_batch(
    seed: int, n: int, split: Split = "train", frames: int = FRAMES
) -> tuple[np.ndarray, list[str]]:
    """n clips from a seed -> (uint8 (n, t, 64, 64, 3) frames, captions); seed-deterministic."""
    clips = sample_clips(np.random.default_rng(seed), n, split, frames)
    return render_clips(clips), [clip.caption() for clip in clips]


def heldout_clip_prompts() -> list[str]:
    """The captions of every held-out clip combination, sorted."""
    return sorted(
        clip_caption(ClipSpec(shape, colour, direction, background))
        for colour, shape, background in combinations("train") + combinations("heldout")
        for direction in DIRECTIONS
        if is_heldout_clip(colour, shape, direction, background)
    )
