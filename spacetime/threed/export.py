"""Field → mesh: marching cubes on the density (Lorensen & Cline 1987, scikit-image), trimesh
cleanup as threestudio does, vertex colours from the albedo and optionally the albedo baked into a
UV texture (spacetime.threed.texture); .glb / .obj (+ .mtl + .png) / .ply written atomically."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import numpy as np
import torch
import trimesh

from spacetime.errors import SpacetimeError
from spacetime.formats.weights import atomic_write
from spacetime.tempfiles import write_together
from spacetime.threed.field import Field
from spacetime.threed.texture import (
    GLB_COLOURS,
    Albedo,
    quantise,
    rgba,
    texture_mesh,
    vertex_colours,
)

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


def clean(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """Merge duplicate vertices, keep the largest connected piece only, and wind every face
    outward consistently: one solid, as a 3D user keeps it. threestudio drops floaters under 1%
    of the whole; a field distilled for a few hundred steps leaves floaters of a few percent
    each, and the world's objects are single solids."""
    mesh.merge_vertices()
    mesh.remove_unreferenced_vertices()
    parts = mesh.split(only_watertight=False)
    if len(parts) > 1:
        mesh = max(parts, key=lambda p: p.area)
    trimesh.repair.fix_normals(mesh, multibody=False)
    return mesh


def smooth(mesh: trimesh.Trimesh, steps: int) -> trimesh.Trimesh:
    """`mesh` after `steps` of umbrella Laplacian smoothing (lambda 0.5), rescaled about its
    centroid after each to its volume before, as Desbrun et al. 1999 keep volume: bumps go
    without the shrinking that plain Laplacian smoothing (and a Gaussian blur of the field) brings.
    Vertices move, the connectivity does not: a watertight mesh stays so. The post-hoc stand-in
    for the normal-consistency and Laplacian terms of threestudio's mesh refinement stage.
    (Taubin's lambda|mu filter keeps volume too but leaves the guidance's wrinkles: 40 passes
    took the mean angle between neighbouring faces from 4.4 to 2.7 deg, these 20 steps to 1.5.)"""
    trimesh.smoothing.filter_laplacian(mesh, lamb=0.5, iterations=steps, volume_constraint=True)
    return mesh


def decimate(mesh: trimesh.Trimesh, faces: int) -> trimesh.Trimesh:
    """`mesh` with about `faces` faces, for viewers, by quadric edge collapse (Garland & Heckbert
    1997, fast-simplification through trimesh): flat sides keep few triangles, curved ones their
    shape. Collapse can fold the surface into fins (a face and its reverse), which are dropped
    with any crumbs; where so few faces would still break the solid (the thin test torus at 16
    faces tears; a tiny tunnel can pinch into an edge of four faces), the count is doubled until
    it holds: one watertight, consistently wound piece of the same genus (Euler number). A mesh
    already that small is returned as it is."""
    target, euler = faces, mesh.euler_number
    while target < len(mesh.faces):
        decimated = without_fins(mesh.simplify_quadric_decimation(face_count=target))
        area = decimated.area
        out = clean(decimated)
        if (
            out.is_watertight
            and out.is_winding_consistent
            and out.euler_number == euler
            and out.area > 0.99 * area  # crumbs dropped, not a torn-off part
        ):
            return out
        target *= 2
    return mesh


def without_fins(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """`mesh` less every face that occurs twice (in either winding): back to back, such a pair
    encloses nothing and makes its three edges non-manifold."""
    corners = np.sort(mesh.faces, axis=1)
    _, inverse, counts = np.unique(corners, axis=0, return_inverse=True, return_counts=True)
    once = counts[inverse.ravel()] == 1
    return trimesh.Trimesh(mesh.vertices, mesh.faces[once], process=False)


def extract_mesh(
    field: Field, resolution: int = 128, texture_size: int = 0, faces: int = 0, smoothing: int = 0
) -> trimesh.Trimesh:
    """The field's surface from a `resolution`^3 lattice, its largest piece only (`clean`),
    after `smoothing` steps of volume-keeping Laplacian smoothing (`smooth`), decimated to about
    `faces` faces if given (`decimate`), each vertex coloured by the field's albedo there; with a
    `texture_size` (a power of two), also cut into UV charts with the albedo baked into a
    texture of that side (`texture_mesh`)."""
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
    vertices, triangles = marching_cubes(volume, level, inside)
    mesh = clean(trimesh.Trimesh(vertices, triangles, process=False))
    if smoothing:
        mesh = smooth(mesh, smoothing)
    if faces:
        mesh = decimate(mesh, faces)
    albedo = albedo_of(field)
    if texture_size:
        return texture_mesh(mesh, albedo, texture_size)
    colours = rgba(quantise(albedo(np.asarray(mesh.vertices, np.float32))))
    mesh.visual = trimesh.visual.ColorVisuals(mesh, vertex_colors=colours)
    return mesh


def albedo_of(field: Field) -> Albedo:
    """The field's albedo as a colour function of world points (numpy in and out)."""

    def albedo(points: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            where = torch.from_numpy(points).to(field.grids[0].device)
            return field.albedo_at(where).cpu().numpy()

    return albedo


def check_mesh_target(path: str | os.PathLike) -> None:
    """Fail before any work if `path` is not a mesh format we write, or cannot be written (nor,
    for an .obj, the material and texture beside it)."""
    from spacetime.media import check_writable

    path = Path(path)
    check_writable(path, MESH_SUFFIXES)
    if path.suffix.lower() == ".obj":
        for companion in obj_companions(path):
            if os.path.isdir(companion):
                raise SpacetimeError(f"cannot write {companion} beside {path}: it is a folder")


def obj_companions(path: Path) -> tuple[Path, Path]:
    """The material library and texture that a textured NAME.obj names: NAME.mtl and
    NAME_albedo.png, beside it."""
    return path.with_suffix(".mtl"), path.with_name(f"{path.stem}_albedo.png")


def write_mesh(mesh: trimesh.Trimesh, path: str | os.PathLike) -> None:
    """.glb (binary glTF 2.0), .obj or .ply, by the extension, with vertex normals (smooth shading
    in viewers); written beside the destination and renamed into place, so nothing is
    half-written.

    A textured mesh (`texture_mesh`) goes to .glb with TEXCOORD_0 and a matte PBR material whose
    baseColorTexture is the PNG, its vertex colours in the application-specific attribute _ALBEDO
    (glTF makes COLOR_0 a multiplier of the base colour: it would darken the texture); to .obj
    with NAME.mtl and NAME_albedo.png beside it, the three renamed into place together; to .ply
    as vertex colours. A vertex-coloured mesh goes to .glb with COLOR_0 (linear, as glTF defines
    it) and a matte material, to .obj and .ply with vertex colours (sRGB bytes)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in MESH_SUFFIXES:
        raise SpacetimeError(
            f"cannot write {path}: extension must be one of {', '.join(MESH_SUFFIXES)}"
        )
    textured = texture_image(mesh) is not None
    if suffix == ".obj" and textured:
        write_together(obj_files(mesh, path))
        return
    if suffix == ".ply":
        data = vertex_coloured(mesh).export(file_type="ply", vertex_normal=True)
    elif suffix == ".glb":
        data = (glb_mesh(mesh) if textured else glb_vertex_coloured(mesh)).export(
            file_type="glb", include_normals=True, tree_postprocessor=complete_gltf
        )
    else:
        data = mesh.export(file_type="obj", include_normals=True)
    payload = data.encode() if isinstance(data, str) else data
    atomic_write(path, lambda tmp: tmp.write_bytes(payload))


def texture_image(mesh: trimesh.Trimesh):
    """The PIL image of a textured mesh's base colour (a PBR or a simple material), else None."""
    if mesh.visual.kind != "texture":
        return None
    material = mesh.visual.material
    return getattr(material, "baseColorTexture", None) or getattr(material, "image", None)


def glb_mesh(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """A textured mesh as trimesh's glTF exporter should see it: the vertex colours out of the
    visual (where they would become COLOR_0) into the vertex attribute GLB_COLOURS."""
    visual = trimesh.visual.TextureVisuals(uv=mesh.visual.uv, material=mesh.visual.material)
    out = trimesh.Trimesh(
        mesh.vertices, mesh.faces, vertex_normals=mesh.vertex_normals, visual=visual, process=False
    )
    out.vertex_attributes[GLB_COLOURS] = vertex_colours(mesh)
    return out


def glb_vertex_coloured(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """A vertex-coloured mesh as trimesh's glTF exporter should see it: its colours linear, in
    float, under LINEAR_COLOURS (complete_gltf names them COLOR_0). trimesh would write the sRGB
    bytes themselves as COLOR_0, which glTF reads as linear: every colour would show too light."""
    out = trimesh.Trimesh(
        mesh.vertices, mesh.faces, vertex_normals=mesh.vertex_normals, process=False
    )
    out.vertex_attributes[LINEAR_COLOURS] = srgb_to_linear(vertex_colours(mesh)[:, :3])
    return out


def srgb_to_linear(colours: np.ndarray) -> np.ndarray:
    """uint8 sRGB → float32 linear in [0, 1] (IEC 61966-2-1's transfer function)."""
    c = np.asarray(colours, np.float64) / 255
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


# glTF's WebGL enums: buffer targets, texture filters and wrapping
ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963
LINEAR, LINEAR_MIPMAP_LINEAR, CLAMP_TO_EDGE = 9729, 9987, 33071
# The attribute glb_vertex_coloured writes the linear colours to; complete_gltf renames it.
LINEAR_COLOURS = "_COLOR_LINEAR"
# glTF's default material is fully metallic: a mesh with only vertex colours would show dark.
MATTE = {
    "name": "vertex colours",
    "pbrMetallicRoughness": {"metallicFactor": 0.0, "roughnessFactor": 1.0},
}


def complete_gltf(tree: dict) -> None:
    """Add what trimesh's glTF exporter leaves out: each bufferView's target, vertex or index
    data (the Khronos validator's only hints); for a vertex-coloured mesh, its linear colours
    as COLOR_0 and a matte material; and a sampler that filters trilinearly and clamps at the
    texture's edges (the default repeats, so bilinear reads there would wrap around)."""
    for mesh in tree.get("meshes", []):
        for primitive in mesh["primitives"]:
            attributes = primitive["attributes"]
            if LINEAR_COLOURS in attributes:
                attributes["COLOR_0"] = attributes.pop(LINEAR_COLOURS)
            if "material" not in primitive:
                tree.setdefault("materials", []).append(dict(MATTE))
                primitive["material"] = len(tree["materials"]) - 1
            for accessor in primitive["attributes"].values():
                view = tree["accessors"][accessor]["bufferView"]
                tree["bufferViews"][view]["target"] = ARRAY_BUFFER
            if "indices" in primitive:
                view = tree["accessors"][primitive["indices"]]["bufferView"]
                tree["bufferViews"][view]["target"] = ELEMENT_ARRAY_BUFFER
    if tree.get("textures"):
        tree["samplers"] = [
            {
                "magFilter": LINEAR,
                "minFilter": LINEAR_MIPMAP_LINEAR,
                "wrapS": CLAMP_TO_EDGE,
                "wrapT": CLAMP_TO_EDGE,
            }
        ]
        for texture in tree["textures"]:
            texture["sampler"] = 0


def vertex_coloured(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """`mesh` with vertex colours; a textured one welded back along its UV seams."""
    if mesh.visual.kind != "texture":
        return mesh
    out = trimesh.Trimesh(
        mesh.vertices,
        mesh.faces,
        vertex_colors=vertex_colours(mesh),
        vertex_normals=mesh.vertex_normals,
        process=False,
    )
    out.merge_vertices(merge_tex=True, merge_norm=True)  # seam copies share position and colour
    return out


def obj_files(mesh: trimesh.Trimesh, path: Path) -> dict[Path, bytes]:
    """A textured mesh as NAME_albedo.png, NAME.mtl and NAME.obj (in the order to place them)."""
    from trimesh.exchange.obj import export_obj

    library, texture = obj_companions(path)
    text, _ = export_obj(
        mesh, include_normals=True, include_texture=True, return_texture=True, mtl_name=library.name
    )
    (material,) = re.findall(r"^usemtl (\S+)$", text, flags=re.MULTILINE)
    png = io.BytesIO()
    texture_image(mesh).save(png, format="PNG")
    # trimesh's own .mtl gives Kd 0.4, which viewers multiply the texture by: a plain matte one.
    mtl = (
        "# spacetime: the albedo baked into a texture, matte and not metallic\n"
        f"newmtl {material}\nKa 0 0 0\nKd 1 1 1\nKs 0 0 0\nd 1\nillum 1\nPr 1\nPm 0\n"
        f"map_Kd {texture.name}\n"
    )
    return {texture: png.getvalue(), library: mtl.encode(), path: text.encode()}
