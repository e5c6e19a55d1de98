"""A mesh against the world's ground-truth primitive: volume IoU and Chamfer distance, plus world-
shaded renders of the mesh at any cameras for the 3D oracle."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import trimesh

from spacetime.threed.export import marching_cubes
from spacetime.threed.field import lattice_points
from spacetime.threed.rasterise import box_candidates, render_mesh
from spacetime.world.primitives import Camera, Primitive

__all__ = ["MeshMetrics", "chamfer", "compare", "inside_mesh", "render_views", "volume_iou"]


def cell_centres(resolution: int) -> np.ndarray:
    """Centres of a resolution^3 grid of cells over [-1, 1], one axis (resolution,)."""
    return -1 + (np.arange(resolution) + 0.5) * 2 / resolution


def inside_mesh(mesh: trimesh.Trimesh, resolution: int) -> np.ndarray:
    """Bool (x, y, z): which cell centres of a resolution^3 grid over [-1, 1]^3 the closed mesh
    contains, by the parity of its crossings along a +z ray through each column."""
    v = np.asarray(mesh.vertices, np.float64)
    faces = np.asarray(mesh.faces, np.int64)
    n = resolution
    # Shift the columns off the lattice by an irrational hair, so that no ray meets a vertex or
    # an edge of a marching-cubes mesh exactly (which would count one crossing twice).
    jitter = np.array([np.sqrt(2), np.sqrt(3)]) * 1e-6
    ij = (v[:, :2] + 1) * n / 2 - 0.5 - jitter  # column index units; column k's centre at k
    face, cx, cy = box_candidates(ij[faces, 1], ij[faces, 0], n, n)  # "rows" are x, "cols" y
    corners = v[faces[face]]  # (k, 3, 3)
    px = cell_centres(n)[cx] + jitter[0]
    py = cell_centres(n)[cy] + jitter[1]
    # Barycentric coordinates of the column's (x, y) in the triangle's projection on z = 0.
    a, b, c = corners[:, 0], corners[:, 1], corners[:, 2]
    det = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])
    ok = np.abs(det) > 1e-15  # triangles seen edge-on along z cannot be crossed
    det = np.where(ok, det, 1.0)
    u = ((px - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (py - a[:, 1])) / det
    w = ((b[:, 0] - a[:, 0]) * (py - a[:, 1]) - (px - a[:, 0]) * (b[:, 1] - a[:, 1])) / det
    hit = ok & (u >= 0) & (w >= 0) & (u + w <= 1)
    z = (a[:, 2] + u * (b[:, 2] - a[:, 2]) + w * (c[:, 2] - a[:, 2]))[hit]
    column = (cx * n + cy)[hit]
    # Cells above a crossing have it below them: count crossings per (column, first cell above).
    first_above = np.clip(np.ceil((z + 1) * n / 2 - 0.5), 0, n).astype(np.int64)
    counts = np.zeros((n * n, n + 1), np.int64)
    np.add.at(counts, (column, first_above), 1)
    below = np.cumsum(counts[:, :n], axis=1)
    return (below % 2 == 1).reshape(n, n, n)


def volume_iou(mesh: trimesh.Trimesh, primitive: Primitive, resolution: int = 64) -> float:
    """Intersection over union of the mesh's and the primitive's solids on a grid of cells."""
    c = torch.from_numpy(cell_centres(resolution)).float()
    x, y, z = torch.meshgrid(c, c, c, indexing="ij")
    truth = (primitive.sdf(torch.stack([x, y, z], -1)) < 0).numpy()
    ours = inside_mesh(mesh, resolution)
    union = (truth | ours).sum()
    return float((truth & ours).sum() / union) if union else 1.0


def surface_points(primitive: Primitive, count: int, seed: int = 0) -> np.ndarray:
    """(count, 3) points spread uniformly over the primitive's surface (via a fine mesh of it)."""
    sdf = primitive.sdf(lattice_points(160)).permute(2, 1, 0).numpy()  # (z, y, x) → (x, y, z)
    vertices, faces = marching_cubes(sdf, 0.0, inside="below")
    points, _ = trimesh.sample.sample_surface(trimesh.Trimesh(vertices, faces), count, seed=seed)
    return np.asarray(points)


def _nearest(a: np.ndarray, b: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Distance from each point of a to its nearest point of b."""
    tb = torch.from_numpy(b).float()
    return torch.cat(
        [
            torch.cdist(torch.from_numpy(p).float(), tb).amin(1)
            for p in np.array_split(a, max(1, len(a) // chunk))
        ]
    ).numpy()


def chamfer(
    mesh: trimesh.Trimesh, primitive: Primitive, count: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """(accuracy, completeness): mean distance from mesh surface samples to the primitive's
    surface (exact, from its SDF), and from the primitive's surface samples to the mesh's."""
    ours, _ = trimesh.sample.sample_surface(mesh, count, seed=seed)
    accuracy = primitive.sdf(torch.from_numpy(np.asarray(ours)).float()).abs().mean()
    completeness = _nearest(surface_points(primitive, count, seed), np.asarray(ours)).mean()
    return float(accuracy), float(completeness)


@dataclass(frozen=True)
class MeshMetrics:
    """Volume IoU in [0, 1]; Chamfer distance (world units) = mean of accuracy and completeness."""

    iou: float
    chamfer: float
    accuracy: float
    completeness: float


def compare(mesh: trimesh.Trimesh, primitive: Primitive, resolution: int = 64) -> MeshMetrics:
    """How well `mesh` reproduces `primitive` (which sits at the origin at its own scale)."""
    if len(mesh.faces) == 0:
        return MeshMetrics(0.0, float("inf"), float("inf"), float("inf"))
    accuracy, completeness = chamfer(mesh, primitive)
    return MeshMetrics(
        volume_iou(mesh, primitive, resolution),
        (accuracy + completeness) / 2,
        accuracy,
        completeness,
    )


def render_views(
    mesh: trimesh.Trimesh,
    cameras: list[Camera],
    background: str | None = None,
    resolution: int = 64,
) -> np.ndarray:
    """uint8 (v, h, w, 3): the mesh at each camera, shaded as the world renders its primitives
    (what the 3D oracle reads)."""
    return np.stack([render_mesh(mesh, c, background, resolution) for c in cameras])
