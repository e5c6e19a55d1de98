"""Reads colour and solid back from views of the world's 3D primitives at known cameras.

The 2D oracle fits flat templates (circle, square, triangle); a solid's silhouette and shading
change with the camera. So this reader works by analysis by synthesis: every colour × solid is
rendered by the world's own renderer at the view's camera, and the view reads as the candidate with
the least mean RGB error over the pixels where either shows an object (the union of the two
masks, so a candidate can win neither by covering too little nor by spilling over).
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from spacetime.eval.oracle import BORDER, _as_batch
from spacetime.world.captions import PrimitiveSpec
from spacetime.world.palette import COLOURS, DEFAULT_BACKGROUND, SOLIDS
from spacetime.world.primitives import Camera, Primitive, render_primitive

# RGB distance from the background above which a pixel shows an object. The darkest shaded object
# pixel of the world (blue at ambient light) is ~60 from the default background.
OBJECT_CONTRAST = 30.0
CANDIDATES: tuple[tuple[str, str], ...] = tuple((c, s) for c in COLOURS for s in SOLIDS)
CHUNK = 16  # views per vectorised comparison against all 40 candidates, bounding memory


@dataclass(frozen=True)
class PrimitiveReading:
    """The best-matching colour × solid of one view, and its mean RGB error (0-255) over the
    object pixels: ~0-5 for a clean render, tens for a blurred or malformed one."""

    colour: str
    shape: str
    error: float


@dataclass(frozen=True)
class ViewSetReading:
    """Per-view readings of a multi-view set, their most common values, and whether all agree."""

    views: tuple[PrimitiveReading, ...]
    colour: str
    shape: str
    consistent: bool  # every view reads the same colour and solid


@functools.lru_cache(maxsize=32)
def references(camera: Camera, resolution: int) -> Tensor:
    """Every candidate rendered at `camera`: float (40, 3, h, w), 0-255, in CANDIDATES order.

    One sample per pixel: a quarter of the antialiased renders' cost and, by not being the very
    images the world renders, no flattery for clean inputs."""
    renders = np.stack(
        [
            render_primitive(Primitive(shape, colour), camera, resolution=resolution, supersample=1)
            for colour, shape in CANDIDATES
        ]
    )
    return torch.from_numpy(renders).float().permute(0, 3, 1, 2).contiguous()


def _background(x: Tensor) -> Tensor:
    """Per-view background colour (n, 3): the median of the border ring, as the 2D oracle's."""
    res = x.shape[-1]
    i = torch.arange(res)
    edge = torch.minimum(i, res - 1 - i)
    ring = torch.minimum(edge[:, None], edge[None, :]) < BORDER
    return x[:, :, ring].median(dim=2).values


def _errors(x: Tensor, refs: Tensor) -> Tensor:
    """Mean absolute RGB error over the union of object masks: views (n, 3, h, w) × candidates
    (k, 3, h, w) → (n, k)."""
    background = torch.tensor(DEFAULT_BACKGROUND, dtype=torch.float32)[None, :, None, None]
    ref_mask = (refs - background).norm(dim=1) > OBJECT_CONTRAST  # (k, h, w)
    view_mask = (x - _background(x)[:, :, None, None]).norm(dim=1) > OBJECT_CONTRAST  # (n, h, w)
    union = view_mask[:, None] | ref_mask[None]  # (n, k, h, w)
    diff = (x[:, None] - refs[None]).abs().mean(dim=2)  # (n, k, h, w)
    return (diff * union).sum((2, 3)) / union.sum((2, 3)).clamp(min=1)


def read_primitives(
    images: np.ndarray | Tensor, cameras: Sequence[Camera]
) -> list[PrimitiveReading]:
    """Read views, uint8 (n, h, w, 3) or float in [0, 1], view i seen from cameras[i]."""
    x = _as_batch(images)
    if len(cameras) != len(x):
        raise ValueError(f"{len(x)} views but {len(cameras)} cameras")
    readings: list[PrimitiveReading | None] = [None] * len(x)
    by_camera: dict[Camera, list[int]] = {}
    for i, camera in enumerate(cameras):
        by_camera.setdefault(camera, []).append(i)
    for camera, indices in by_camera.items():
        refs = references(camera, x.shape[-1])
        for start in range(0, len(indices), CHUNK):
            chunk = indices[start : start + CHUNK]
            errors = _errors(x[chunk], refs)
            best = errors.argmin(dim=1)
            for i, k, e in zip(
                chunk, best.tolist(), errors.min(dim=1).values.tolist(), strict=True
            ):
                colour, shape = CANDIDATES[k]
                readings[i] = PrimitiveReading(colour, shape, round(e, 2))
    return readings


def read_view_set(views: np.ndarray | Tensor, cameras: Sequence[Camera]) -> ViewSetReading:
    """Read one multi-view set, (v, h, w, 3), view k seen from cameras[k]."""
    return _set_reading(read_primitives(views, cameras))


def read_view_sets(sets: np.ndarray, cameras: Sequence[Camera]) -> list[ViewSetReading]:
    """Read sets (n, v, h, w, 3) that share the cameras (v of them), in one pass."""
    n, v = sets.shape[:2]
    readings = read_primitives(sets.reshape(n * v, *sets.shape[2:]), list(cameras) * n)
    return [_set_reading(readings[i * v : (i + 1) * v]) for i in range(n)]


def _set_reading(readings: list[PrimitiveReading]) -> ViewSetReading:
    pairs = [(r.colour, r.shape) for r in readings]
    colour = Counter(c for c, _ in pairs).most_common(1)[0][0]
    shape = Counter(s for _, s in pairs).most_common(1)[0][0]
    return ViewSetReading(tuple(readings), colour, shape, len(set(pairs)) == 1)


def score(readings: Sequence[ViewSetReading], specs: Sequence[PrimitiveSpec]) -> dict[str, float]:
    """Accuracy of sets (most common reading) and of single views, per attribute and for both at
    once, and the share of sets whose views all agree."""
    if len(readings) != len(specs):
        raise ValueError(f"{len(readings)} readings but {len(specs)} specs")
    if not specs:
        raise ValueError("nothing to score: no readings")
    views = [(v, s) for r, s in zip(readings, specs, strict=True) for v in r.views]
    sets = list(zip(readings, specs, strict=True))
    return {
        "colour": float(np.mean([r.colour == s.colour for r, s in sets])),
        "shape": float(np.mean([r.shape == s.shape for r, s in sets])),
        "all": float(np.mean([(r.colour, r.shape) == (s.colour, s.shape) for r, s in sets])),
        "view_colour": float(np.mean([v.colour == s.colour for v, s in views])),
        "view_shape": float(np.mean([v.shape == s.shape for v, s in views])),
        "view_all": float(np.mean([(v.colour, v.shape) == (s.colour, s.shape) for v, s in views])),
        "consistent": float(np.mean([r.consistent for r in readings])),
    }
