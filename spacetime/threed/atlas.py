"""A UV atlas for a mesh: box-projection charts, cut where they overlap themselves, packed by
xatlas (J. Young's atlas generator, grown from thekla_atlas).

xatlas's own chart segmentation and parametrisation takes ~35 s on a 70k-face mesh on a 2-core
CPU and minutes on larger ones; its packer takes under a second. So the charts are cut here, as box (cube) mapping
does: every face goes to the axis its smoothed normal points along most, connected faces with the
same axis form a chart, and a chart's UVs are its vertices projected along that axis. An axis
within ~70 degrees of every face's normal keeps each triangle's orientation; a chart that still
covers a texel twice (where the surface has a handle or a spiral over itself) is split between
two of the overlapping faces, by their nearest faces along the surface, until none does.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import trimesh

from spacetime.threed.texels import Texels, cross, texels, uv_corners

# The six projection axes, and for each an in-plane basis (e1, e2) with e1 x e2 = axis: a triangle
# facing the axis keeps its counter-clockwise winding in UV.
AXES = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], float)
BASES = np.array(
    [
        [[0, 1, 0], [0, 0, 1]],
        [[0, 0, 1], [0, 1, 0]],
        [[0, 0, 1], [1, 0, 0]],
        [[1, 0, 0], [0, 0, 1]],
        [[1, 0, 0], [0, 1, 0]],
        [[0, 1, 0], [1, 0, 0]],
    ],
    float,
)
MIN_COSINE = 0.35  # a face joins an axis's chart only while it faces it within ~70 degrees
SMOOTHING = 4  # rounds of normal averaging over face neighbours: fewer, rounder charts
SLIVER = 1e-8  # of the total area: a smaller face is a sliver (~0.01 texel at 1024^2)
CHECK_SIZE = 1024  # the finest grid that the charts as projected are checked for overlaps on
MAX_ROUNDS = 64  # of splitting self-overlapping charts (each round splits every one of them)


@dataclass(frozen=True)
class Atlas:
    """A mesh cut along chart seams: atlas vertex i is source vertex `vertex[i]` at `uv[i]`."""

    vertex: np.ndarray  # (n,) int64: the source mesh's vertex under each atlas vertex
    faces: np.ndarray  # (m, 3) int64: the source's faces, in order, over atlas vertices
    uv: np.ndarray  # (n, 2) float64 in [0, 1], origin at the image's bottom left (OpenGL, OBJ)
    charts: int
    covered: Texels  # the texel centres inside the UV triangles, at the size packed for


def unwrap(mesh: trimesh.Trimesh, size: int, padding: int) -> Atlas:
    """Charts for `mesh` packed into a `size` x `size` texture with `padding` texels between them."""
    vertices = np.asarray(mesh.vertices, np.float64)
    faces = np.asarray(mesh.faces, np.int64)
    adjacency = np.asarray(mesh.face_adjacency, np.int64).reshape(-1, 2)
    axis = face_axes(np.asarray(mesh.face_normals, np.float64), adjacency)
    area = np.asarray(mesh.area_faces, np.float64)
    # Slivers (far under a texel) each make a chart of their own and go to a point in UV: they
    # cover no texel, and xatlas drops faces of no area, leaving unplaced what only they hold.
    sliver = area <= SLIVER * area.sum()
    chart = charts_of(adjacency, axis, np.where(sliver, -1 - np.arange(len(faces)), 0))
    unchecked = np.ones(len(faces), bool)  # faces of charts not yet known free of overlaps
    for _ in range(MAX_ROUNDS):
        source, chart_faces, local = project(vertices, faces, chart, axis, min(size, CHECK_SIZE))
        # Overlaps are found on the charts as projected (at about the packed scale, up to
        # CHECK_SIZE), and again once packed, where a sliver of overlap may first cover a texel.
        covered = local_texels(local, chart_faces, chart, np.flatnonzero(unchecked))
        clashes = self_overlaps(chart_faces, chart, covered)
        if not len(clashes):
            uv, count = pack(local, chart_faces, chart, source, sliver, size, padding)
            covered = texels(uv_corners(uv, chart_faces, size), size, size)
            clashes = self_overlaps(chart_faces, chart, covered)
            if not len(clashes):
                return Atlas(source, chart_faces, uv, count, covered)
        chart, unchecked = split(vertices, faces, adjacency, chart, clashes)
    raise RuntimeError(f"charts still overlap themselves after {MAX_ROUNDS} rounds of splitting")


def face_axes(normals: np.ndarray, adjacency: np.ndarray) -> np.ndarray:
    """(m,) index into AXES per face: the axis its neighbourhood's normals point along most,
    among the axes that its own normal is within MIN_COSINE of."""
    from scipy import sparse

    m = len(normals)
    rows = np.concatenate([adjacency[:, 0], adjacency[:, 1], np.arange(m)])
    cols = np.concatenate([adjacency[:, 1], adjacency[:, 0], np.arange(m)])
    neighbours = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(m, m))
    smooth = normals
    for _ in range(SMOOTHING):
        smooth = neighbours @ smooth
    own = normals @ AXES.T
    score = np.where(own >= MIN_COSINE, smooth @ AXES.T, -np.inf)
    # A unit normal is within MIN_COSINE of at least one axis (the best is >= 0.577); a
    # degenerate face (normal 0) takes the first, and covers no texel anyway.
    return score.argmax(1)


def charts_of(adjacency: np.ndarray, axis: np.ndarray, group: np.ndarray) -> np.ndarray:
    """(m,) chart per face: connected faces with the same axis and group form one chart."""
    from scipy import sparse
    from scipy.sparse.csgraph import connected_components

    a, b = adjacency[:, 0], adjacency[:, 1]
    same = (axis[a] == axis[b]) & (group[a] == group[b])
    m = len(axis)
    graph = sparse.coo_matrix((np.ones(same.sum()), (a[same], b[same])), shape=(m, m))
    return connected_components(graph, directed=False)[1].astype(np.int64)


def project(
    vertices: np.ndarray, faces: np.ndarray, chart: np.ndarray, axis: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Charts cut apart and projected along their axes: (source vertex per chart vertex,
    faces over chart vertices, UVs (n, 2) scaled so the charts' total area is size^2)."""
    # One chart vertex per (chart, source vertex): charts part along their seams.
    key = chart[:, None] * len(vertices) + faces
    unique, chart_faces = np.unique(key, return_inverse=True)
    chart_faces = chart_faces.reshape(-1, 3)
    source = unique % len(vertices)
    chart_axis = np.empty(chart.max() + 1, np.int64)
    chart_axis[chart] = axis
    local = np.einsum("nij,nj->ni", BASES[chart_axis[unique // len(vertices)]], vertices[source])
    area = np.abs(triangle_areas(local[chart_faces])).sum()
    return source, chart_faces, local * size / np.sqrt(max(area, 1e-30))


def triangle_areas(corners: np.ndarray) -> np.ndarray:
    """(m,) signed areas of 2D triangles (m, 3, 2)."""
    return cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]) / 2


def local_texels(
    local: np.ndarray, faces: np.ndarray, chart: np.ndarray, which: np.ndarray
) -> Texels:
    """The texels that faces `which` cover in their charts as projected, on a grid per chart
    (texel ids repeat between charts: compare them within a chart only)."""
    corners = local[faces[which]]
    low = np.full((chart.max() + 1, 2), np.inf)
    np.minimum.at(low, chart[which], corners.min(1))
    corners = corners - low[chart[which]][:, None]
    extent = np.ceil(corners.max((0, 1), initial=0)).astype(np.int64) + 1
    found = texels(corners, *extent)
    return replace(found, face=which[found.face])


def self_overlaps(faces: np.ndarray, chart: np.ndarray, covered: Texels) -> np.ndarray:
    """(k, 2) pairs of faces of one chart that share no vertex and cover one texel centre."""
    order = np.lexsort((covered.texel, chart[covered.face]))
    texel, face = covered.texel[order], covered.face[order]
    a, b = face[:-1], face[1:]
    same = (texel[1:] == texel[:-1]) & (chart[a] == chart[b])
    a, b = a[same], b[same]
    shared = (faces[a][:, :, None] == faces[b][:, None, :]).any((1, 2))
    return np.stack([a[~shared], b[~shared]], 1)


def split(
    vertices: np.ndarray,
    faces: np.ndarray,
    adjacency: np.ndarray,
    chart: np.ndarray,
    clashes: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(New charts, which faces moved): each chart with a clash split between the two faces of
    its first clash, every face going to the one nearer along the surface (paths through face
    centres)."""
    from scipy import sparse
    from scipy.sparse.csgraph import dijkstra

    _, first = np.unique(chart[clashes[:, 0]], return_index=True)
    seeds = clashes[first].ravel()
    a, b = adjacency[:, 0], adjacency[:, 1]
    inside = chart[a] == chart[b]
    centres = vertices[faces].mean(1)
    length = np.linalg.norm(centres[a] - centres[b], axis=1)[inside] + 1e-12
    m = len(faces)
    graph = sparse.coo_matrix((length, (a[inside], b[inside])), shape=(m, m)).tocsr()
    _, _, nearest = dijkstra(
        graph, directed=False, indices=seeds, return_predecessors=True, min_only=True
    )
    # Faces no seed reaches (charts without a clash) keep their chart; the rest take their seed.
    moved = nearest >= 0
    group = np.where(moved, m + nearest, chart)
    return charts_of(adjacency, np.zeros(m, np.int64), group), moved


def pack(
    local: np.ndarray,
    faces: np.ndarray,
    chart: np.ndarray,
    source: np.ndarray,
    sliver: np.ndarray,
    size: int,
    padding: int,
) -> tuple[np.ndarray, int]:
    """xatlas's packing of the projected charts into one `size` atlas: (UVs in [0, 1], charts).
    A sliver goes to a point: where its first corner lies in a packed chart."""
    import xatlas

    packer = xatlas.Atlas()
    # xatlas floods charts across colocal UVs; a material per chart keeps ours apart.
    packer.add_uv_mesh(
        local.astype(np.float32),
        faces[~sliver].astype(np.uint32),
        chart[~sliver, None].astype(np.uint32),
    )
    options = xatlas.PackOptions()
    options.resolution, options.padding, options.bilinear = size, padding, True
    packer.generate(pack_options=options)
    if packer.atlas_count != 1:
        raise RuntimeError(f"xatlas packed the charts into {packer.atlas_count} atlases, not 1")
    mapping, packed, uv = packer[0]
    if not (
        np.array_equal(mapping, np.arange(len(local))) and np.array_equal(packed, faces[~sliver])
    ):
        raise RuntimeError("xatlas reordered the vertices or faces of a UV mesh")
    uv = np.clip(uv.astype(np.float64), 0, 1)
    # Where each source vertex lies in some packed chart (any, if on a seam); else the origin.
    packed_uv = np.zeros((source.max() + 1, 2))
    held = np.unique(faces[~sliver])
    packed_uv[source[held]] = uv[held]
    corners = faces[sliver]
    uv[corners] = packed_uv[source[corners[:, :1]]]
    return uv, packer.chart_count
