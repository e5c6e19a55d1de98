"""Overlapping windows over one axis, crossfaded where they meet: what the U-Net's context windows
over a long clip's frames (spacetime.context) and the video VAE's decode windows and spatial tiles
(spacetime.models.video_vae) share."""

from __future__ import annotations

import torch
from torch import Tensor

Span = tuple[int, int]  # [lo, hi) along the axis


def spread(total: int, size: int, overlap: int) -> list[Span]:
    """As few windows of `size` as cover [0, total) with neighbours sharing >= `overlap`, evenly
    spaced from 0 to `total - size` (even spacing spreads any slack over all the overlaps instead
    of piling it into the last one); one window [0, total) when it fits."""
    if total <= size:
        return [(0, total)]
    span, stride = total - size, size - overlap
    gaps = -(-span // stride)  # ceil: every gap <= stride, so overlaps >= `overlap`
    return [(s, s + size) for s in (i * span // gaps for i in range(gaps + 1))]


def pyramid(size: int) -> Tensor:
    """FreeNoise's window weights (1, 2, …, 2, 1): normalised over overlapping windows they make
    a linear crossfade (Qiu et al. 2023)."""
    i = torch.arange(size)
    return torch.minimum(i + 1, size - i).float()


def crossfade(spans: list[Span]) -> list[Tensor]:
    """Per-position weights of overlapping windows that sum to 1: linear ramps across overlaps."""
    return normalise(spans, ramps(spans))


def ramps(spans: list[Span]) -> list[Tensor]:
    """Weights of each window: 1 where it alone covers, complementary linear ramps across the
    overlap with each neighbour (diffusers' tiled VAE blending)."""
    weights = []
    for k, (lo, hi) in enumerate(spans):
        w = torch.ones(hi - lo, dtype=torch.float64)
        if k > 0 and (n := spans[k - 1][1] - lo) > 0:
            w[:n] *= (torch.arange(n, dtype=torch.float64) + 0.5) / n
        if k + 1 < len(spans) and (n := hi - spans[k + 1][0]) > 0:
            w[-n:] *= 1 - (torch.arange(n, dtype=torch.float64) + 0.5) / n
        weights.append(w)
    return weights


def normalise(spans: list[Span], weights: list[Tensor]) -> list[Tensor]:
    """Each window's float32 weights divided by the sum of all windows' weights at each position,
    so the blend of the windows' outputs is a weighted mean everywhere (three or more windows
    may overlap on short axes)."""
    total = torch.zeros(max(hi for _, hi in spans), dtype=torch.float64)
    for (lo, hi), w in zip(spans, weights, strict=True):
        total[lo:hi] += w
    return [(w / total[lo:hi]).float() for (lo, hi), w in zip(spans, weights, strict=True)]
