"""Writing results to disk atomically: nothing half-written on error."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from spacetime.errors import SpacetimeError
from spacetime.formats.weights import atomic_write

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def check_writable(path: Path, suffixes: tuple[str, ...]) -> None:
    """Fail before any work if `path` has the wrong extension or its folder cannot be written."""
    if path.suffix.lower() not in suffixes:
        raise SpacetimeError(f"cannot write {path}: extension must be one of {', '.join(suffixes)}")
    folder = path.parent if str(path.parent) else Path(".")
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK):
        raise SpacetimeError(f"cannot write {path}: {probe} is not a writable folder")


def numbered(path: Path, count: int) -> list[Path]:
    """out.png for one image; out-0.png, out-1.png, … for several."""
    if count == 1:
        return [path]
    return [path.with_name(f"{path.stem}-{i}{path.suffix}") for i in range(count)]


def write_image(path: Path, pixels: np.ndarray) -> None:
    """uint8 (h, w, 3) → an image file, via a temporary sibling renamed into place."""
    from PIL import Image

    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}[path.suffix.lower()]
    atomic_write(path, lambda tmp: Image.fromarray(pixels).save(tmp, format=fmt))
