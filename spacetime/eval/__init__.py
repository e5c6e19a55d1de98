"""Evaluation against the procedural world: the oracle that reads generated images and clips."""

from spacetime.eval.oracle import (
    ClipReading,
    Reading,
    read_clip,
    read_clips,
    read_image,
    read_images,
    score,
)

__all__ = [
    "ClipReading",
    "Reading",
    "read_clip",
    "read_clips",
    "read_image",
    "read_images",
    "score",
]
