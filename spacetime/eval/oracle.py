"""The world's oracle: reads colour, shape, background, position and size back from images.

Analysis by synthesis: estimate the background from the border and the object's colour from the
pixels that stand out, turn every pixel into a coverage alpha (its position on the line from the
background colour to the object colour), then fit each shape's template, rendered by the world's
own rasteriser at the size and centre implied by the alpha mass and centroid, and keep the best.
Alpha mass and centroid are unchanged by a symmetric blur and average out pixel noise, so the
readings hold up on the soft, noisy images a small diffusion model produces.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from spacetime.world.captions import ClipSpec, SceneSpec
from spacetime.world.clips import Clip
from spacetime.world.palette import BACKGROUNDS, COLOURS, DEFAULT_BACKGROUND, SHAPES
from spacetime.world.raster import coverage
from spacetime.world.scenes import Scene

BORDER = 2  # px ring read as background; the world keeps objects 1 px clear of the edge
# Below this RGB distance from the background nothing counts as an object; the world's closest
# object/background pair (orange on yellow) is ~100 apart.
MIN_CONTRAST = 40.0
# Area of each shape per unit size^2 (size = radius / half-extent), in SHAPES order.
UNIT_AREAS = torch.tensor([math.pi, 4.0, 2.0])
MIN_SPEED = 0.25  # px per frame below which a clip reads as not moving
POSITION_TOLERANCE = 2.0  # px, for score()
CHUNK = 1024  # images per vectorised pass, bounding memory

_BACKGROUND_NAMES: tuple[str | None, ...] = (*BACKGROUNDS, None)
_BACKGROUND_RGB = torch.tensor([*BACKGROUNDS.values(), DEFAULT_BACKGROUND], dtype=torch.float32)
_COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)
_COLOUR_RGB = torch.tensor(list(COLOURS.values()), dtype=torch.float32)


@dataclass(frozen=True)
class Reading:
    """What the oracle sees; background None is the default dark one, shape None is no object."""

    colour: str | None
    shape: str | None
    background: str | None
    centre: tuple[float, float] | None  # (x, y) px, the bounding-box centre as in Scene.centre
    size: float | None  # radius / half-extent, as in Scene.size
    # Overlap in [0, 1] of the object's coverage with the chosen shape's template: ~1 for a clean
    # world render, low for a malformed shape.
    fit: float


@dataclass(frozen=True)
class ClipReading:
    """Per-frame readings, their most common values, and the motion of the object's centre."""

    frames: tuple[Reading, ...]
    colour: str | None
    shape: str | None
    background: str | None
    direction: str | None  # None when the object does not move
    speed: float  # px per frame along the direction
    colour_constant: bool
    shape_constant: bool
    # The object's size in the last frame over the first, from a least-squares fit of log size over
    # frame index (robust to per-frame jitter): 1 for a still camera, > 1 zooming in.
    zoom: float = 1.0


def _as_batch(images: np.ndarray | Tensor) -> Tensor:
    """uint8 in [0, 255] or float in [0, 1], HWC or CHW, one or many -> float (n, 3, h, w) 0-255."""
    x = images.detach().cpu() if isinstance(images, Tensor) else torch.tensor(np.asarray(images))
    if x.dtype == torch.uint8:
        x = x.float()
    else:
        x = x.float()
        # A little overshoot is normal for decoded images; far outside [0, 1] is another range.
        if x.numel() and (x.min() < -0.25 or x.max() > 1.25):
            raise ValueError(
                f"expected float images in [0, 1], got values in [{x.min():.2f}, {x.max():.2f}]; "
                "map [-1, 1] model outputs with (x + 1) / 2"
            )
        x = x * 255
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or 3 not in (x.shape[1], x.shape[3]):
        raise ValueError(
            f"expected RGB image(s) (h, w, 3) or (n, h, w, 3), got shape {tuple(x.shape)}"
        )
    # Channels first internally: reductions over a trailing axis of 3 are slow in torch on CPU.
    if x.shape[1] != 3:
        x = rearrange(x, "n h w c -> n c h w")
    if x.shape[2] != x.shape[3]:
        raise ValueError(f"expected square images, got {x.shape[2]}x{x.shape[3]}")
    return x.clamp(0, 255).contiguous()


def _nearest(rgb: Tensor, table: Tensor) -> Tensor:
    """Index of the nearest table colour for each (n, 3) RGB."""
    return torch.cdist(rgb, table).argmin(dim=1)


def _dilate(x: Tensor) -> Tensor:
    """3x3 maximum filter on the last two axes; separable shifted maxima beat max_pool2d on CPU."""
    p = F.pad(x, (1, 1, 1, 1))
    rows = torch.maximum(torch.maximum(p[..., :-2], p[..., 1:-1]), p[..., 2:])
    return torch.maximum(torch.maximum(rows[..., :-2, :], rows[..., 1:-1, :]), rows[..., 2:, :])


def _largest_component(mask: Tensor) -> Tensor:
    """Keep each (n, h, w) mask's largest 8-connected component (Shiloach-Vishkin style)."""
    # Every pixel points (flat index + 1) at a pixel of its own component. Each round takes the
    # neighbourhood maximum, hands it on to the pixel pointed at (hooking), then jumps to that
    # pixel's pointer, so the component's largest index spreads in a handful of rounds instead of
    # one round per pixel of path length.
    n, h, w = mask.shape
    # int32 labels halve the memory traffic of int64; indices are widened only to gather/scatter.
    ids = torch.arange(1, h * w + 1, dtype=torch.int32).reshape(1, h, w)
    zero = torch.zeros((), dtype=torch.int32)
    labels = torch.where(mask, ids, zero).reshape(n, h * w)
    for _ in range(h * w):
        spread = torch.where(mask, _dilate(labels.reshape(n, h, w)), zero).reshape(n, h * w)
        spread = spread.scatter_reduce(1, (labels - 1).clamp_(min=0).long(), spread, "amax")
        spread = torch.where(spread > 0, spread.gather(1, (spread - 1).clamp_(min=0).long()), zero)
        if torch.equal(spread, labels):
            break
        labels = spread
    labels = labels.long()
    offsets = torch.arange(n)[:, None] * (h * w + 1)
    counts = torch.bincount((labels + offsets).flatten(), minlength=n * (h * w + 1))
    counts = counts.reshape(n, h * w + 1)
    counts[:, 0] = 0  # label 0 is the unmasked pixels
    return (labels == counts.argmax(dim=1, keepdim=True)).reshape(n, h, w) & mask


def _masked_median(x: Tensor, mask: Tensor) -> Tensor:
    """Per-image channel medians of (n, 3, h, w) pixels under (n, h, w) masks -> (n, 3)."""
    values = torch.where(mask[:, None], x, torch.nan)
    return torch.nanmedian(rearrange(values, "n c h w -> n c (h w)"), dim=2).values


def _alpha(x: Tensor, background: Tensor, colour: Tensor) -> Tensor:
    """Each pixel's position on the line from background (0) to object colour (1), (n, h, w)."""
    axis = colour - background
    norm = (axis * axis).sum(-1).clamp(min=1.0)
    projection = ((x - background[:, :, None, None]) * axis[:, :, None, None]).sum(1)
    return projection / norm[:, None, None]


def _read_chunk(x: Tensor) -> list[Reading]:
    """Read float (n, 3, h, w) 0-255 images in one vectorised pass."""
    n, res = x.shape[0], x.shape[2]
    i = torch.arange(res)
    edge = torch.minimum(i, res - 1 - i)
    ring = torch.minimum(edge[:, None], edge[None, :]) < BORDER
    background = x[:, :, ring].median(dim=2).values  # (n, 3)
    background_index = _nearest(background, _BACKGROUND_RGB)

    # Pixels well away from the background seed the object colour (their mean); the median of the
    # object's core (alpha > 0.75 against that seed) then drops blended edge pixels and artefacts.
    distance = (x - background[:, :, None, None]).square().sum(1).sqrt()  # (n, h, w)
    # The 99.5th percentile: the object's bright end, not a few outlier pixels.
    peak = distance.flatten(1).topk(math.ceil(0.005 * res * res), dim=1).values[:, -1]
    found = peak > MIN_CONTRAST
    seed = distance > torch.maximum(peak / 2, torch.tensor(MIN_CONTRAST))[:, None, None]
    # Images without an object seed from every pixel, so no mean or median is over nothing.
    seed |= ~found[:, None, None]
    seed_colour = (x * seed[:, None]).sum((2, 3)) / seed.sum((1, 2))[:, None]
    core = seed & (_alpha(x, background, seed_colour) > 0.75)
    colour = _masked_median(x, torch.where(core.flatten(1).any(1)[:, None, None], core, seed))
    colour_index = _nearest(colour, _COLOUR_RGB)

    alpha = _alpha(x, background, colour).clamp(0, 1)
    obj = _largest_component(alpha > 0.5)
    # Keep the blended rim around the object but not stray blobs elsewhere.
    region = _dilate(_dilate(obj.to(torch.uint8))) > 0
    alpha = alpha * region
    area = alpha.sum(dim=(1, 2))
    found &= area > 1
    centres = torch.arange(res, dtype=torch.float32) + 0.5
    mean_x = (alpha.sum(1) * centres).sum(1) / area.clamp(min=1e-6)
    mean_y = (alpha.sum(2) * centres).sum(1) / area.clamp(min=1e-6)

    # One template per shape with the observed area; a triangle's centroid lies size/3 below the
    # centre of its bounding box, which is what Scene.centre means.
    sizes = (area[:, None] / UNIT_AREAS).sqrt()  # (n, shapes)
    errors = []
    for k in range(len(SHAPES)):
        offset = sizes[:, k] / 3 if SHAPES[k] == "triangle" else torch.zeros(n)
        centre = torch.stack([mean_x, mean_y - offset], dim=1)
        template = coverage(torch.full((n,), k), centre, sizes[:, k], res)
        errors.append((alpha - template).abs().sum(dim=(1, 2)))
    errors = torch.stack(errors, dim=1) / area.clamp(min=1e-6)[:, None]
    best = errors.argmin(dim=1)
    fit = (1 - errors.gather(1, best[:, None])[:, 0] / 2).clamp(0, 1)

    readings = []
    for j in range(n):
        background_name = _BACKGROUND_NAMES[int(background_index[j])]
        if not found[j]:
            readings.append(Reading(None, None, background_name, None, None, 0.0))
            continue
        k = int(best[j])
        size = float(sizes[j, k])
        y = float(mean_y[j]) - (size / 3 if SHAPES[k] == "triangle" else 0.0)
        readings.append(
            Reading(
                colour=_COLOUR_NAMES[int(colour_index[j])],
                shape=SHAPES[k],
                background=background_name,
                centre=(float(mean_x[j]), y),
                size=size,
                fit=float(fit[j]),
            )
        )
    return readings


def read_images(images: np.ndarray | Tensor) -> list[Reading]:
    """Read a batch: uint8 (n, h, w, 3) or float in [0, 1], channels last or first."""
    x = _as_batch(images)
    return [r for start in range(0, len(x), CHUNK) for r in _read_chunk(x[start : start + CHUNK])]


def read_image(image: np.ndarray | Tensor) -> Reading:
    """Read one image: uint8 (h, w, 3) or float in [0, 1], channels last or first."""
    x = _as_batch(image)
    if len(x) != 1:
        raise ValueError(f"read_image takes one image, got a batch of {len(x)}; use read_images")
    return _read_chunk(x)[0]


def _most_common(values: Sequence[str | None]) -> str | None:
    return Counter(values).most_common(1)[0][0]


def _clip_reading(readings: list[Reading]) -> ClipReading:
    """Combine one clip's per-frame readings: most common values and the centre's velocity."""
    track = [(k, r.centre) for k, r in enumerate(readings) if r.centre is not None]
    direction, speed = None, 0.0
    if len(track) >= 2:
        # Least-squares velocity of the centre over frame index, robust to per-frame jitter.
        k = np.array([k for k, _ in track], dtype=np.float64)
        xy = np.array([c for _, c in track], dtype=np.float64)
        velocity = np.polyfit(k, xy, 1)[0]  # (2,) px per frame, x right, y down
        axis = int(np.abs(velocity).argmax())
        if abs(velocity[axis]) >= MIN_SPEED:
            direction = (("left", "right"), ("up", "down"))[axis][int(velocity[axis] > 0)]
            speed = float(abs(velocity[axis]))
    zoom = 1.0
    sized = [(k, r.size) for k, r in enumerate(readings) if r.size]
    if len(sized) >= 2:
        k = np.array([k for k, _ in sized], dtype=np.float64)
        growth = np.polyfit(k, np.log([s for _, s in sized]), 1)[0]  # log size per frame
        zoom = float(np.exp(growth * (len(readings) - 1)))
    colours = [r.colour for r in readings]
    shapes = [r.shape for r in readings]
    return ClipReading(
        frames=tuple(readings),
        colour=_most_common(colours),
        shape=_most_common(shapes),
        background=_most_common([r.background for r in readings]),
        direction=direction,
        speed=speed,
        colour_constant=len(set(colours)) == 1,
        shape_constant=len(set(shapes)) == 1,
        zoom=zoom,
    )


def read_clip(frames: np.ndarray | Tensor) -> ClipReading:
    """Read a clip, uint8 (t, h, w, 3) or float in [0, 1]: per frame, then the centre's track."""
    return _clip_reading(read_images(frames))


def read_clips(clips: np.ndarray | Tensor) -> list[ClipReading]:
    """Read a batch of clips, (n, t, h, w, 3), in one vectorised pass over all their frames."""
    n, t = clips.shape[:2]
    readings = read_images(clips.reshape(n * t, *clips.shape[2:]))
    return [_clip_reading(readings[i * t : (i + 1) * t]) for i in range(n)]


def score(
    readings: Sequence[Reading | ClipReading],
    specs: Sequence[SceneSpec | ClipSpec | Scene | Clip],
) -> dict[str, float]:
    """Accuracy per attribute and for `all` at once; clips add direction, Scenes position (2 px)."""
    if len(readings) != len(specs):
        raise ValueError(f"{len(readings)} readings but {len(specs)} specs")
    if not specs:
        raise ValueError("nothing to score: no readings")
    asked = [s.spec if isinstance(s, Scene | Clip) else s for s in specs]
    attributes = ["colour", "shape", "background"]
    if all(isinstance(a, ClipSpec) for a in asked):
        attributes.append("direction")
    hits = {
        a: [getattr(r, a) == getattr(s, a) for r, s in zip(readings, asked, strict=True)]
        for a in attributes
    }
    result = {a: float(np.mean(h)) for a, h in hits.items()}
    result["all"] = float(np.mean([all(h) for h in zip(*hits.values(), strict=True)]))
    if all(isinstance(s, Scene) for s in specs):
        result["position"] = float(
            np.mean(
                [
                    r.centre is not None and math.dist(r.centre, s.centre) <= POSITION_TOLERANCE
                    for r, s in zip(readings, specs, strict=True)
                ]
            )
        )
    return result
