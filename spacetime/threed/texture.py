"""Texture baking: a colour function sampled at each texel's point on the surface, through a UV
atlas, into a base-colour image whose empty texels take their nearest chart texel's colour (edge
padding), so bilinear filtering and mipmaps never blend the background into a chart."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import trimesh
from PIL import Image

from spacetime import checks
from spacetime.errors import ArgumentValueError
from spacetime.threed.atlas import Atlas, unwrap
from spacetime.threed.texels import texels, uv_corners

# A colour function: world points (n, 3) float32 → RGB (n, 3) in [0, 1].
Albedo = Callable[[np.ndarray], np.ndarray]
TEXTURE_SIZES = tuple(2**k for k in range(4, 14))  # 16 to 8192: powers of two halve evenly
SQRT_HALF = 0.5**0.5
# The application-specific glTF attribute that holds a textured mesh's vertex colours (as
# COLOR_0 they would multiply the texture): uint8 RGBA, sRGB like the texture.
GLB_COLOURS = "_ALBEDO"


def check_texture_size(size: object) -> None:
    """A texture's side: one of TEXTURE_SIZES."""
    checks.integer("texture_size", size, TEXTURE_SIZES[0], TEXTURE_SIZES[-1])
    if size not in TEXTURE_SIZES:
        raise ArgumentValueError(f"texture_size must be a power of two, got {size}")


def texture_mesh(mesh: trimesh.Trimesh, albedo: Albedo, size: int = 1024) -> trimesh.Trimesh:
    """`mesh` cut into UV charts, its colour baked into a `size` x `size` base-colour image of a
    matte PBR material, and each vertex's colour kept in `visual.vertex_attributes["color"]`
    (where trimesh keeps colours beside a texture)."""
    check_texture_size(size)
    atlas = unwrap(mesh, size, padding(size))
    vertices = np.asarray(mesh.vertices, np.float64)
    material = trimesh.visual.material.PBRMaterial(
        name="albedo",
        baseColorTexture=Image.fromarray(bake(vertices, atlas, albedo, size)),
        metallicFactor=0.0,
        roughnessFactor=1.0,
        doubleSided=False,
    )
    textured = trimesh.Trimesh(
        vertices[atlas.vertex],
        atlas.faces,
        # The source's normals: copies of a vertex along a seam shade alike, so seams don't show.
        vertex_normals=np.asarray(mesh.vertex_normals)[atlas.vertex],
        visual=trimesh.visual.TextureVisuals(uv=atlas.uv, material=material),
        process=False,
    )
    colours = quantise(albedo(vertices.astype(np.float32)))
    textured.visual.vertex_attributes["color"] = rgba(colours)[atlas.vertex]
    return textured


def padding(size: int) -> int:
    """Texels between charts: ~0.4% of the side, at least 2, room for the first mip levels."""
    return max(2, size // 256)


def bake(vertices: np.ndarray, atlas: Atlas, albedo: Albedo, size: int) -> np.ndarray:
    """uint8 (size, size, 3): `albedo` at the surface point under each texel, gutters filled."""
    # Texels whose square the surface touches (centre within half a diagonal) are baked too, at
    # the surface's nearest point: bilinear reads at a chart's rim, and charts under a texel wide.
    rim = rim_faces(atlas.faces)
    near = texels(uv_corners(atlas.uv, atlas.faces[rim], size), size, size, margin=SQRT_HALF)
    texel = np.concatenate([atlas.covered.texel, near.texel])
    face = np.concatenate([atlas.covered.face, rim[near.face]])
    bary = np.concatenate([atlas.covered.bary, near.bary])
    distance = np.concatenate([atlas.covered.distance, near.distance])
    # A texel near several faces (on an edge, or by a rim) takes the nearest one.
    order = np.lexsort((distance, texel))
    texel, first = np.unique(texel[order], return_index=True)
    face, bary = face[order[first]], bary[order[first]]
    points = np.einsum("kc,kcx->kx", bary, vertices[atlas.vertex[atlas.faces[face]]])
    image = np.zeros((size * size, 3), np.uint8)
    image[texel] = quantise(albedo(points.astype(np.float32)))
    covered = np.zeros(size * size, bool)
    covered[texel] = True
    return fill_gutters(image.reshape(size, size, 3), covered.reshape(size, size))


def rim_faces(faces: np.ndarray) -> np.ndarray:
    """Indices of the faces with an edge that no other face shares: those along chart borders."""
    edges = np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    _, inverse, counts = np.unique(edges, axis=0, return_inverse=True, return_counts=True)
    return np.unique(np.flatnonzero(counts[inverse.ravel()] == 1) // 3)


def quantise(colours: np.ndarray) -> np.ndarray:
    """Colours in [0, 1] → uint8."""
    return (np.clip(np.asarray(colours, np.float64), 0, 1) * 255).round().astype(np.uint8)


def rgba(rgb: np.ndarray) -> np.ndarray:
    """uint8 (n, 3) → (n, 4), opaque."""
    return np.concatenate([rgb, np.full_like(rgb[:, :1], 255)], axis=1)


def fill_gutters(image: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """(h, w, c): every texel where `covered` (h, w) is False takes the colour of the nearest
    covered texel (a Euclidean distance transform's nearest-feature map)."""
    from scipy import ndimage

    if not covered.any():
        return image
    rows, cols = ndimage.distance_transform_edt(
        ~covered, return_distances=False, return_indices=True
    )
    return image[rows, cols]


def vertex_colours(mesh: trimesh.Trimesh) -> np.ndarray:
    """uint8 (n, 4) colour per vertex: the vertex colours, or beside a texture those kept in
    `visual.vertex_attributes["color"]` (or read back from a .glb's GLB_COLOURS), else the
    texture read at each vertex's UV."""
    visual = mesh.visual
    if visual.kind != "texture":
        return np.asarray(visual.vertex_colors)
    kept = visual.vertex_attributes.get("color", mesh.vertex_attributes.get(GLB_COLOURS))
    return np.asarray(kept) if kept is not None else np.asarray(visual.to_color().vertex_colors)
