"""Headless CPU rendering of triangle meshes with the world's shading: each triangle's projected
bounding box proposes pixels, whose exact camera rays are then intersected with it (Möller &
Trumbore 1997), nearest hit wins. No OpenGL, so it runs anywhere numpy does."""

from __future__ import annotations

import numpy as np
import trimesh
from einops import rearrange

from spacetime.threed.texture import vertex_colours
from spacetime.world.palette import background_rgb
from spacetime.world.primitives import AMBIENT, LIGHT, Camera, orbit


def box_candidates(
    cols: np.ndarray, rows: np.ndarray, width: int, height: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(face, row, col) for every pixel centre inside each face's 2D bounding box.

    `cols`, `rows` (m, 3) hold the faces' corners in pixel-index units (pixel j's centre at j).
    Faces are bucketed by box size (powers of two) so each bucket is one dense array op: marching
    cubes triangles cover a few pixels, while a rare large face does not inflate the rest."""
    c0 = np.clip(np.ceil(cols.min(1)), 0, width).astype(np.int64)
    c1 = np.clip(np.floor(cols.max(1)), -1, width - 1).astype(np.int64)
    r0 = np.clip(np.ceil(rows.min(1)), 0, height).astype(np.int64)
    r1 = np.clip(np.floor(rows.max(1)), -1, height - 1).astype(np.int64)
    extent = np.maximum(c1 - c0, r1 - r0) + 1  # <= 0 for boxes with no pixel centre
    out_f, out_r, out_c = [], [], []
    size = 1
    while True:
        smaller = extent <= size // 2 if size > 1 else np.zeros_like(extent, bool)
        faces = np.nonzero((extent > 0) & (extent <= size) & ~smaller)[0]
        if len(faces):
            dr, dc = np.divmod(np.arange(size * size), size)
            r = r0[faces, None] + dr
            c = c0[faces, None] + dc
            keep = (r <= r1[faces, None]) & (c <= c1[faces, None])
            out_f.append(np.broadcast_to(faces[:, None], r.shape)[keep])
            out_r.append(r[keep])
            out_c.append(c[keep])
        if size >= extent.max(initial=0):
            break
        size *= 2
    if not out_f:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    return np.concatenate(out_f), np.concatenate(out_r), np.concatenate(out_c)


def ray_triangle(
    origins: np.ndarray, directions: np.ndarray, triangles: np.ndarray, eps: float = 1e-9
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Möller-Trumbore, row by row: (hit, t, u, v) for rays (k, 3) against triangles (k, 3, 3),
    with barycentrics u (weight of corner 1) and v (corner 2). Edges count as inside, by a hair, so
    that neighbouring triangles leave no cracks."""
    v0, v1, v2 = triangles[:, 0], triangles[:, 1], triangles[:, 2]
    e1, e2 = v1 - v0, v2 - v0
    p = np.cross(directions, e2)
    det = (e1 * p).sum(-1)
    ok = np.abs(det) > 1e-12
    inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
    s = origins - v0
    u = (s * p).sum(-1) * inv
    q = np.cross(s, e1)
    v = (directions * q).sum(-1) * inv
    t = (e2 * q).sum(-1) * inv
    hit = ok & (u >= -eps) & (v >= -eps) & (u + v <= 1 + eps) & (t > 0)
    return hit, t, u, v


def render_mesh(
    mesh: trimesh.Trimesh,
    camera: Camera,
    background: str | None = None,
    resolution: int = 64,
    supersample: int = 2,
) -> np.ndarray:
    """uint8 (h, w, 3) view of a mesh shaded as world.primitives.render_primitive shades a solid:
    (AMBIENT + (1 - AMBIENT) max(0, n . LIGHT)) x vertex colour, over the world's background, so a
    perfect mesh of a primitive looks like the primitive's own render."""
    size = resolution * supersample
    image = np.empty((size, size, 3))
    image[:] = background_rgb(background)
    vertices = np.asarray(mesh.vertices, np.float64)
    faces = np.asarray(mesh.faces, np.int64)
    if len(faces):
        pose = camera.camera_to_world()
        rotation, eye = pose[:3, :3], pose[:3, 3]
        local = (vertices - eye) @ rotation  # camera coordinates: x right, y up, looking down -z
        depth = -local[:, 2]
        f = camera.focal(size)
        # Pixel (i, j) looks along ((j + 0.5 - w/2) / f, -(i + 0.5 - h/2) / f, -1) (Camera.rays).
        with np.errstate(divide="ignore", invalid="ignore"):
            cols = size / 2 + f * local[:, 0] / depth - 0.5
            rows = size / 2 - f * local[:, 1] / depth - 0.5
        in_front = (depth[faces] > 1e-6).all(1)
        faces_in = np.nonzero(in_front)[0]
        face, row, col = box_candidates(cols[faces[faces_in]], rows[faces[faces_in]], size, size)
        face = faces_in[face]
        directions = np.stack(
            [(col + 0.5 - size / 2) / f, -(row + 0.5 - size / 2) / f, -np.ones(len(col))], -1
        )
        directions = directions @ rotation.T
        directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
        triangles = vertices[faces[face]]
        hit, t, u, v = ray_triangle(np.broadcast_to(eye, directions.shape), directions, triangles)
        face, row, col, t, u, v, directions = (
            a[hit] for a in (face, row, col, t, u, v, directions)
        )
        # z-buffer: sort by pixel, then depth; the first entry of each pixel is the nearest hit.
        pixel = row * size + col
        order = np.lexsort((t, pixel))
        _, first = np.unique(pixel[order], return_index=True)
        pick = order[first]
        face, row, col, u, v, directions = (a[pick] for a in (face, row, col, u, v, directions))
        bary = np.stack([1 - u - v, u, v], -1)[..., None]  # (k, 3, 1)
        corners = faces[face]
        colours = vertex_colours(mesh)[:, :3].astype(np.float64)
        colour = (bary * colours[corners]).sum(1)
        normal = (bary * np.asarray(mesh.vertex_normals)[corners]).sum(1)
        normal /= np.maximum(np.linalg.norm(normal, axis=-1, keepdims=True), 1e-12)
        # Two-sided: a normal seen from behind (an open or inverted patch) is turned to the eye.
        normal *= -np.sign((normal * directions).sum(-1, keepdims=True) + 1e-12)
        light = LIGHT.numpy().astype(np.float64)
        shade = AMBIENT + (1 - AMBIENT) * np.clip(normal @ light, 0, None)
        image[row, col] = shade[:, None] * colour
    image = rearrange(image, "(h a) (w b) c -> h w c (a b)", a=supersample, b=supersample)
    return np.clip(image.mean(-1).round(), 0, 255).astype(np.uint8)


def turntable(
    mesh: trimesh.Trimesh, frames: int = 48, elevation: float = 20.0, resolution: int = 128
) -> np.ndarray:
    """uint8 (t, h, w, 3): the mesh from `frames` cameras once around the world's orbit."""
    return np.stack([render_mesh(mesh, c, resolution=resolution) for c in orbit(frames, elevation)])
