"""The world's shapes, colours, motions and their fixed RGB palette."""

from __future__ import annotations

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
SOLIDS: tuple[str, ...] = ("sphere", "cube", "cylinder", "cone", "torus")
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")

# Saturated and spread out in RGB so that a nearest-colour read survives blur, noise and the
# colour drift of a small diffusion model: the closest pair (orange/yellow) is ~100 apart.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (235, 20, 20),
    "green": (20, 190, 40),
    "blue": (30, 60, 240),
    "yellow": (250, 230, 20),
    "purple": (140, 30, 210),
    "orange": (250, 130, 0),
    "white": (245, 245, 245),
    "cyan": (20, 220, 230),
}

# A named background is any object colour or black; a caption without one gets DEFAULT_BACKGROUND.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {**COLOURS, "black": (0, 0, 0)}
DEFAULT_BACKGROUND: tuple[int, int, int] = (20, 20, 20)


def background_rgb(background: str | None) -> tuple[int, int, int]:
    """RGB of a named background, or of the default dark one for None."""
    return DEFAULT_BACKGROUND if background is None else BACKGROUNDS[background]
