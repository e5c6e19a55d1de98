"""Field → mesh: marching cubes on the density (Lorensen & Cline 1987, scikit-image), trimesh
cleanup as threestudio does, vertex colours from the albedo; .glb / .obj / .ply written atomically."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import trimesh

from spacetime.errors import SpacetimeError
from spacetime.formats.weights import atomic_write
from spacetime.threed.field import Field

MESH_SUFFIXES = (".glb", ".obj", ".ply")


def marching_cubes(
    volume: np.ndarray, level: float, inside: str = "above"
) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (n, 3) in world units and faces (m, 3) of the `level` set of a lattice (x, y, z)
    spanning [-1, 1]^3; `inside` says whether the solid is where volume is above or below level."""
    from skimage import measure

    if inside not in ("above", "below"):
        raise ValueError(f"inside must be 'above' or 'below', got {inside!r}")
    spacing = 2.0 / (volume.shape[0] - 1)
    vertices, faces, _, _ = measure.marching_cubes(
        volume,
        level,
        spacing=(spacing,) * 3,
        gradient_direction="ascent" if inside == "above" else "descent",
    )
    return vertices - 1.0, faces


def fill_cavities(volume: np.ndarray, level: float, inside: str, close: int = 2) -> np.ndarray:
    """Make solid every empty pocket enclosed by the solid, or reached from outside only through
    gaps narrower than ~`close` voxels. Renders never see inside an opaque shell, so nothing
    shapes a field there: pockets left over from the initial shape would become inner surfaces."""
    from scipy import ndimage

    solid = volume < level if inside == "below" else volume > level
    # A closing (dilate, fill, erode) seals pinholes in the shell before the holes are filled.
    sealed = ndimage.binary_fill_holes(ndimage.binary_dilation(solid, iterations=close))
    pockets = ndimage.binary_erosion(sealed, iterations=close, border_value=1) & ~solid
    # Just past the level, so the pockets' own faces vanish and the outer surface stays put.
    eps = 1e-3 * (np.abs(volume - level).max() + 1)
    return np.where(pockets, level - eps if inside == "below" else level + eps, volume)


def clean(mesh: trimesh.Trimesh, min_component: float = 0.1) -> trimesh.Trimesh:
    """Merge duplicate vertices, drop connected components under `min_component` of the largest
    one's area, and wind every face outward consistently. threestudio drops floaters under 1%
    after 10k steps; a few hundred steps leave floaters of a few percent each."""
    mesh.merge_vertices()
    mesh.remove_unreferenced_vertices()
    parts = mesh.split(only_watertight=False)
    if len(parts) > 1:
        largest = max(p.area for p in parts)
        mesh = trimesh.util.concatenate([p for p in parts if p.area >= min_component * largest])
    trimesh.repair.fix_normals(mesh, multibody=True)
    return mesh


def extract_mesh(
    field: Field, resolution: int = 128, min_component: float = 0.1
) -> trimesh.Trimesh:
    """The field's surface from a `resolution`^3 lattice, cleaned, with each vertex coloured by
    the field's albedo there."""
    if resolution < 8:
        raise SpacetimeError(f"marching cubes resolution must be >= 8, got {resolution}")
    volume, level, inside = field.surface_volume(resolution)
    volume = volume.cpu().numpy()
    solid = volume < level if inside == "below" else volume > level
    if not solid.any() or solid.all():
        raise SpacetimeError(
            f"the field has no surface to extract: it is {'full' if solid.all() else 'empty'} "
            "(train it for more steps)"
        )
    volume = fill_cavities(volume, level, inside)
    vertices, faces = marching_cubes(volume, level, inside)
    mesh = clean(trimesh.Trimesh(vertices, faces, process=False), min_component)
    points = torch.from_numpy(np.asarray(mesh.vertices, np.float32))
    albedo = field.albedo_at(points.to(field.grids[0].device)).cpu().numpy()
    rgba = np.concatenate([albedo, np.ones_like(albedo[:, :1])], axis=1)
    colours = (rgba * 255).round().astype(np.uint8)
    mesh.visual = trimesh.visual.ColorVisuals(mesh, vertex_colors=colours)
    return mesh


def check_mesh_target(path: str | os.PathLike) -> None:
    """Fail before any work if `path` is not a mesh format we write, or cannot be written."""
    from spacetime.media import check_writable

    check_writable(Path(path), MESH_SUFFIXES)


def write_mesh(mesh: trimesh.Trimesh, path: str | os.PathLike) -> None:
    """.glb (binary glTF 2.0: COLOR_0 and NORMAL per vertex), .obj or .ply, by the extension; written
    beside the destination and renamed into place, so nothing is half-written."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in MESH_SUFFIXES:
        raise SpacetimeError(
            f"cannot write {path}: extension must be one of {', '.join(MESH_SUFFIXES)}"
        )
    # Vertex normals let viewers shade the surface smoothly rather than face by face.
    normals = {".glb": "include_normals", ".obj": "include_normals", ".ply": "vertex_normal"}
    data = mesh.export(file_type=suffix[1:], **{normals[suffix]: True})
    payload = data.encode() if isinstance(data, str) else data
    atomic_write(path, lambda tmp: tmp.write_bytes(payload))
