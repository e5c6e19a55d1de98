"""Which texels each triangle of a UV layout covers: a bounding-box rasteriser with edge functions
(Pineda 1988) that tests every texel centre in each triangle's box against its barycentric planes,
vectorised over faces; optionally also the texels just outside, at the triangle's nearest point
(conservative rasterisation, for baking the rim of a chart)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Texels:
    """Texels near triangles: texel `texel` (row-major from the image's top left) has its centre
    `distance` texels from face `face`, whose nearest point to it has barycentric coordinates
    `bary`. A texel near several faces is listed once per face."""

    texel: np.ndarray  # (k,) int64
    face: np.ndarray  # (k,) int64
    bary: np.ndarray  # (k, 3) float64, each row in [0, 1] summing to 1
    distance: np.ndarray  # (k,) float64, 0 inside the face


def uv_corners(uv: np.ndarray, faces: np.ndarray, size: int) -> np.ndarray:
    """(m, 3, 2) texel coordinates (column, row from the top) of each face's corners in a
    `size` x `size` image of UVs with their origin at its bottom left; texel (r, c) has its
    centre at (c + 0.5, r + 0.5)."""
    return np.stack([uv[:, 0], 1 - uv[:, 1]], -1)[faces] * size


def texels(
    corners: np.ndarray, width: int, height: int, margin: float = 0.0, chunk: int = 1 << 20
) -> Texels:
    """Every texel of a `width` x `height` image whose centre lies in a triangle (`corners`
    (m, 3, 2) in texel coordinates) or within `margin` texels of it, about `chunk` candidate
    texels at a time."""
    lo = np.clip(np.ceil(corners.min(1) - 0.5 - margin), 0, None).astype(np.int64)
    hi = np.floor(corners.max(1) - 0.5 + margin).astype(np.int64)
    hi = np.minimum(hi, [width - 1, height - 1])
    span = np.maximum(hi - lo + 1, 0)  # (m, 2) texels across and down each bounding box
    count = span[:, 0] * span[:, 1]
    planes = barycentric_planes(corners)
    ends = np.cumsum(count)
    found = [(np.zeros(0, np.int64),) * 3 + (np.zeros((0, 3)), np.zeros(0))]
    start = 0
    while start < len(corners):
        # Faces [start, stop) whose boxes hold about `chunk` candidates together.
        base = ends[start - 1] if start else 0
        stop = max(int(np.searchsorted(ends, base + chunk, side="right")), start + 1)
        found.append(_near(corners, planes, lo, span, count, start, stop, margin))
        start = stop
    x, y, face, bary, distance = (np.concatenate(parts) for parts in zip(*found, strict=True))
    return Texels(y * width + x, face, bary, distance)


def barycentric_planes(corners: np.ndarray) -> np.ndarray:
    """(m, 3, 3): barycentric weight i of a point (x, y) in triangle f is
    planes[f, i, 0] * x + planes[f, i, 1] * y + planes[f, i, 2]; NaN for triangles of no area."""
    a, b, c = corners[:, 0], corners[:, 1], corners[:, 2]
    area = cross(b - a, c - a)
    area = np.where(np.abs(area) > 1e-12, area, np.nan)
    planes = []
    # A corner's weight: the edge function of the opposite edge (p → q) over the signed area.
    for p, q in ((b, c), (c, a), (a, b)):
        edge = q - p
        planes.append(np.stack([-edge[:, 1], edge[:, 0], cross(edge, -p)], 1) / area[:, None])
    return np.stack(planes, 1)


def _near(corners, planes, lo, span, count, start, stop, margin):
    """(x, y, face, bary, distance) of the candidates of faces [start, stop) within `margin`."""
    n = count[start:stop]
    face = np.repeat(np.arange(start, stop), n)
    offset = np.arange(len(face)) - np.repeat(np.cumsum(n) - n, n)
    width = np.maximum(span[face, 0], 1)
    x = lo[face, 0] + offset % width
    y = lo[face, 1] + offset // width
    plane = planes[face]  # (k, 3, 3)
    bary = plane[:, :, 0] * (x + 0.5)[:, None] + plane[:, :, 1] * (y + 0.5)[:, None]
    bary += plane[:, :, 2]
    inside = (bary >= 0).all(1)  # False for NaN: a triangle of no area covers nothing
    distance = np.where(inside, 0.0, np.inf)
    if margin > 0:
        # Outside: the nearest point of the nearest edge (corner i → corner j) as weights.
        out = np.flatnonzero(~inside & np.isfinite(plane).all((1, 2)))
        p = np.stack([x[out], y[out]], 1) + 0.5
        tri = corners[face[out]]
        for i in range(3):
            j = (i + 1) % 3
            edge = tri[:, j] - tri[:, i]
            t = ((p - tri[:, i]) * edge).sum(1) / np.maximum((edge * edge).sum(1), 1e-24)
            t = np.clip(t, 0, 1)
            d = np.linalg.norm(tri[:, i] + t[:, None] * edge - p, axis=1)
            closer = d < distance[out]
            rows = out[closer]
            distance[rows] = d[closer]
            bary[rows] = 0
            bary[rows, i], bary[rows, j] = 1 - t[closer], t[closer]
    keep = distance <= margin
    return x[keep], y[keep], face[keep], bary[keep], distance[keep]


def cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The z of the cross product of 2D vectors (..., 2)."""
    return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]
