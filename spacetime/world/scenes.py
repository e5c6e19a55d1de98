"""2D scenes: one antialiased shape on a background, their captions, sampler and held-out split."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from spacetime.world.captions import SceneSpec, scene_caption
from spacetime.world.palette import BACKGROUNDS, COLOURS, SHAPES, background_rgb
from spacetime.world.raster import RESOLUTION, compose, coverage

Split = Literal["train", "heldout"]

MIN_SIZE, MAX_SIZE = 8.0, 20.0
MARGIN = 1.0  # px between the object's bounding box and the frame edge
# Captions without a background are what users type most, so the sampler favours them over the
# uniform 1 in 10 they would otherwise get.
DEFAULT_BACKGROUND_FRACTION = 0.25

# Background choices in a fixed order: the object colours, black, then None (the default).
BACKGROUND_CHOICES: tuple[str | None, ...] = (*BACKGROUNDS, None)


def _heldout_index(colour: str, shape: str) -> int:
    """Index into BACKGROUND_CHOICES of the one background on which a colour x shape is held out."""
    return -(list(COLOURS).index(colour) + 3 * SHAPES.index(shape)) % len(BACKGROUND_CHOICES)


# Held out: each colour x shape pair on exactly one background, BACKGROUND_CHOICES[-(c + 3s) mod 10]
# (c, s the colour's and shape's indices), skipped where that background is the object's own colour.
# That gives 20 of the 216 valid combinations (9%), spread over every colour, shape and background,
# so every colour x shape, colour x background and shape x background pair is still trained on and
# the held-out prompts test composition only. Two of them are plain captions (default background).
HELDOUT: frozenset[tuple[str, str, str | None]] = frozenset(
    (colour, shape, BACKGROUND_CHOICES[_heldout_index(colour, shape)])
    for colour in COLOURS
    for shape in SHAPES
    if BACKGROUND_CHOICES[_heldout_index(colour, shape)] != colour
)


def is_heldout(colour: str, shape: str, background: str | None) -> bool:
    """Whether the training sampler never produces this colour x shape x background."""
    return (colour, shape, background) in HELDOUT


@dataclass(frozen=True)
class Scene:
    """One shape on a background; centre (x, y) in pixels from the top-left, size = half-extent."""

    shape: str
    colour: str
    background: str | None
    centre: tuple[float, float]
    size: float

    def __post_init__(self):
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}; expected one of {', '.join(SHAPES)}")
        if self.colour not in COLOURS:
            raise ValueError(
                f"unknown colour {self.colour!r}; expected one of {', '.join(COLOURS)}"
            )
        if self.background is not None and self.background not in BACKGROUNDS:
            raise ValueError(
                f"unknown background {self.background!r}; "
                f"expected None or one of {', '.join(BACKGROUNDS)}"
            )
        if self.background == self.colour:
            raise ValueError(f"object and background are both {self.colour!r}")
        x, y = self.centre
        if not (self.size > 0 and min(x, y) >= self.size and max(x, y) <= RESOLUTION - self.size):
            raise ValueError(
                f"a {self.shape} of size {self.size} at {self.centre} does not fit inside the "
                f"{RESOLUTION}x{RESOLUTION} frame"
            )

    @property
    def spec(self) -> SceneSpec:
        """The attributes a caption names."""
        return SceneSpec(self.shape, self.colour, self.background)

    def caption(self) -> str:
        """`a red circle`, `an orange square on a white background`."""
        return scene_caption(self.spec)

    def render(self) -> np.ndarray:
        """uint8 (64, 64, 3) image."""
        return render_scenes([self])[0]


def render_scenes(scenes: Sequence[Scene]) -> np.ndarray:
    """Render many scenes in one vectorised pass -> uint8 (n, 64, 64, 3)."""
    alpha = coverage(
        torch.tensor([SHAPES.index(s.shape) for s in scenes]),
        torch.tensor([s.centre for s in scenes], dtype=torch.float32),
        torch.tensor([s.size for s in scenes], dtype=torch.float32),
    )
    colour = torch.tensor([COLOURS[s.colour] for s in scenes])
    background = torch.tensor([background_rgb(s.background) for s in scenes])
    return compose(alpha, colour, background)


def _check_split(split: str) -> None:
    if split not in ("train", "heldout"):
        raise ValueError(f"unknown split {split!r}; expected 'train' or 'heldout'")


def combinations(split: Split) -> list[tuple[str, str, str | None]]:
    """The split's colour x shape x background combinations, in a fixed order."""
    _check_split(split)
    return [
        (colour, shape, background)
        for colour in COLOURS
        for shape in SHAPES
        for background in BACKGROUND_CHOICES
        if background != colour and is_heldout(colour, shape, background) == (split == "heldout")
    ]


def combination_weights(backgrounds: Sequence[str | None], split: Split) -> np.ndarray:
    """Sampling probabilities of combinations with these backgrounds; training favours None."""
    plain = np.array([background is None for background in backgrounds])
    share = DEFAULT_BACKGROUND_FRACTION if split == "train" else plain.mean()
    return np.where(plain, share / max(plain.sum(), 1), (1 - share) / max((~plain).sum(), 1))


def sample_scenes(rng: np.random.Generator, n: int, split: Split = "train") -> list[Scene]:
    """n scenes: a combination of the split, size uniform in [8, 20], position uniform in frame."""
    combos = combinations(split)
    p = combination_weights([background for *_, background in combos], split)
    picks = rng.choice(len(combos), size=n, p=p)
    sizes = rng.uniform(MIN_SIZE, MAX_SIZE, size=n)
    # Uniform in [0, 1) scaled to the room each size leaves, so the object stays inside the frame.
    room = RESOLUTION - 2 * (sizes + MARGIN)
    centres = sizes[:, None] + MARGIN + rng.uniform(size=(n, 2)) * room[:, None]
    return [
        Scene(shape, colour, background, (float(x), float(y)), float(size))
        for (colour, shape, background), (x, y), size in zip(
            (combos[i] for i in picks), centres, sizes, strict=True
        )
    ]


def sample_scene(rng: np.random.Generator, split: Split = "train") -> Scene:
    """One scene of the split."""
    return sample_scenes(rng, 1, split)[0]


def sample_batch(seed: int, n: int, split: Split = "train") -> tuple[np.ndarray, list[str]]:
    """n scenes from a seed -> (uint8 (n, 64, 64, 3) images, captions); seed-deterministic."""
    scenes = sample_scenes(np.random.default_rng(seed), n, split)
    return render_scenes(scenes), [s.caption() for s in scenes]


def heldout_prompts() -> list[str]:
    """The captions of every held-out combination, sorted."""
    return sorted(scene_caption(SceneSpec(s, c, b)) for c, s, b in HELDOUT)
