"""UV atlas, texture baking and textured mesh files: spacetime.threed.atlas / texels / texture and
the textured paths of spacetime.threed.export."""

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from spacetime.errors import ArgumentTypeError, ArgumentValueError
from spacetime.threed.atlas import self_overlaps, unwrap
from spacetime.threed.export import extract_mesh, write_mesh
from spacetime.threed.field import Field, FieldConfig
from spacetime.threed.metrics import render_views
from spacetime.threed.texels import texels
from spacetime.threed.texture import texture_mesh, vertex_colours
from spacetime.world.palette import COLOURS
from spacetime.world.primitives import Camera, Primitive

ROOT = Path(__file__).parents[1]
needs_three_js = pytest.mark.skipif(
    shutil.which("chromium") is None
    or not (ROOT / "tools" / "node_modules" / "three" / "build").is_dir(),
    reason="needs Chromium and `cd tools && npm install` (three.js)",
)


def gradient(points):
    """A smooth albedo: x, y, z mapped from [-1, 1] to [0, 1]."""
    return (np.asarray(points, np.float64) + 1) / 2


def sample(image, uv):
    """Bilinear reads (n, 3) of a uint8 image at UVs with their origin at its bottom left."""
    image = np.asarray(image, np.float64)
    h, w = image.shape[:2]
    x = np.clip(uv[:, 0] * w - 0.5, 0, w - 1)
    y = np.clip((1 - uv[:, 1]) * h - 0.5, 0, h - 1)
    x0, y0 = np.minimum(x.astype(int), w - 2), np.minimum(y.astype(int), h - 2)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    top = image[y0, x0] * (1 - fx) + image[y0, x0 + 1] * fx
    bottom = image[y0 + 1, x0] * (1 - fx) + image[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


@pytest.fixture(scope="module")
def sphere():
    return trimesh.creation.icosphere(subdivisions=3, radius=0.6)


@pytest.fixture(scope="module")
def textured(sphere):
    return texture_mesh(sphere, gradient, 256)


# --- the atlas and the bake ----------------------------------------------------------------------


def test_every_face_has_uvs_in_the_unit_square_on_the_source_surface(sphere, textured):
    assert len(textured.faces) == len(sphere.faces)
    uv = textured.visual.uv
    assert uv.shape == (len(textured.vertices), 2) and np.isfinite(uv).all()
    assert uv.min() >= 0 and uv.max() <= 1
    # Atlas vertices are source vertices (cut along seams), each face the source face in order.
    source = np.asarray(sphere.vertices)
    nearest = np.linalg.norm(textured.vertices[:, None] - source[None], axis=-1).argmin(1)
    assert np.array_equal(nearest[textured.faces], sphere.faces)
    assert np.allclose(textured.vertices, source[nearest])
    # Every face covers UV area, and keeps its orientation within its chart.
    corners = uv[textured.faces]
    area = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    assert (np.abs(area) > 0).all()


def test_the_texture_reproduces_the_albedo_at_every_vertex(textured):
    image = textured.visual.material.baseColorTexture
    assert image.size == (256, 256) and image.mode == "RGB"
    expected = gradient(textured.vertices) * 255
    assert np.abs(sample(image, textured.visual.uv) - expected).max() < 3  # of 255
    # Vertex colours are kept beside the texture.
    assert np.abs(vertex_colours(textured)[:, :3] - expected).max() <= 0.5
    assert (vertex_colours(textured)[:, 3] == 255).all()


def test_a_step_in_colour_stays_sharp_away_from_the_step(sphere):
    red, blue = np.array([1.0, 0, 0]), np.array([0, 0, 1.0])
    mesh = texture_mesh(sphere, lambda p: np.where(p[:, :1] > 0, red, blue), 128)
    image = mesh.visual.material.baseColorTexture
    corners = mesh.vertices[mesh.faces]
    # Face centres (in UV) of faces wholly on one side, a face's width from the step.
    far = np.abs(corners[:, :, 0]).min(1) > 0.05
    side = corners[far, 0, 0] > 0
    centres = mesh.visual.uv[mesh.faces[far]].mean(1)
    got = sample(image, centres)
    assert np.abs(got - np.where(side[:, None], red, blue) * 255).max() < 1


def test_gutters_take_the_charts_colours_so_mipmaps_cannot_bleed(sphere):
    colour = np.array([0.2, 0.6, 0.4])
    mesh = texture_mesh(sphere, lambda p: np.broadcast_to(colour, p.shape), 64)
    pixels = np.asarray(mesh.visual.material.baseColorTexture)
    assert (pixels == np.round(colour * 255)).all()  # every texel, the empty ones too


def test_material_is_matte_and_single_sided(textured):
    material = textured.visual.material
    assert material.metallicFactor == 0 and material.roughnessFactor == 1
    assert material.doubleSided is False


def test_charts_never_cover_a_texel_twice(textured, sphere):
    atlas = unwrap(sphere, 256, padding=2)
    covered = texels_of(atlas.uv, atlas.faces, 256)
    chart_of = np.zeros(len(atlas.faces), np.int64)  # all one chart: any two faces may clash
    assert len(self_overlaps(atlas.faces, chart_of, covered)) == 0
    assert atlas.charts >= 6  # a sphere needs at least the six box directions


def texels_of(uv, faces, size):
    corners = np.stack([uv[:, 0], 1 - uv[:, 1]], -1)[faces] * size
    return texels(corners, size, size)


def helicoid(turns=2.0, steps=160, rings=6):
    """A ramp winding `turns` times around the z axis, facing up: one box-projection chart that
    covers itself in projection, as a handle or a spiral on a distilled surface may."""
    angle = np.linspace(0, 2 * np.pi * turns, steps)
    radius = np.linspace(0.3, 0.7, rings)
    a, r = np.meshgrid(angle, radius, indexing="ij")
    vertices = np.stack([r * np.cos(a), r * np.sin(a), 0.02 * a], -1).reshape(-1, 3)
    i, j = np.meshgrid(np.arange(steps - 1), np.arange(rings - 1), indexing="ij")
    v = (i * rings + j).ravel()
    faces = np.concatenate(
        [np.stack([v, v + 1, v + rings], 1), np.stack([v + 1, v + rings + 1, v + rings], 1)]
    )
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    assert mesh.face_normals[:, 2].min() > 0.9  # every face looks up the z axis
    return mesh


def test_a_surface_over_itself_is_cut_into_charts_that_bake_correctly():
    ramp = helicoid()
    assert unwrap(ramp, 256, padding=2).charts > 1
    mesh = texture_mesh(ramp, gradient, 256)
    # Whatever lies above another turn has its own texels: each vertex reads its own height.
    expected = gradient(mesh.vertices) * 255
    assert (
        np.abs(sample(mesh.visual.material.baseColorTexture, mesh.visual.uv) - expected).max() < 3
    )


def test_slivers_become_points_in_uv_and_break_nothing(sphere):
    vertices = np.concatenate([sphere.vertices, [[0.0, 0.0, 0.6 + 1e-10]]])  # by the top pole
    top = int(np.argmax(sphere.vertices[:, 2]))
    ring = sphere.faces[(sphere.faces == top).any(1)][0]
    faces = np.concatenate([sphere.faces, [[top, ring[ring != top][0], len(sphere.vertices)]]])
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    assert mesh.area_faces[-1] < 1e-10
    out = texture_mesh(mesh, gradient, 128)
    sliver = out.visual.uv[out.faces[-1]]
    assert np.allclose(sliver, sliver[0]) and sliver.min() >= 0 and sliver.max() <= 1
    # The point is where the sliver's first corner lies in the charts: it reads that colour.
    first = gradient(out.vertices[out.faces[-1, :1]]) * 255
    assert np.abs(sample(out.visual.material.baseColorTexture, sliver[:1]) - first).max() < 3
    others = out.faces[:-1]
    assert (
        np.abs(
            sample(out.visual.material.baseColorTexture, out.visual.uv[others.ravel()])
            - gradient(out.vertices[others.ravel()]) * 255
        ).max()
        < 3
    )


def test_texture_size_must_be_a_power_of_two(sphere):
    with pytest.raises(ArgumentValueError, match="texture_size must be a power of two, got 100"):
        texture_mesh(sphere, gradient, 100)
    with pytest.raises(ArgumentValueError, match=r"texture_size must be in \[16, 8192\], got 8"):
        texture_mesh(sphere, gradient, 8)
    with pytest.raises(ArgumentTypeError, match="texture_size must be an integer"):
        texture_mesh(sphere, gradient, 256.0)


def test_a_field_bakes_its_albedo_and_renders_as_before():
    primitive = Primitive("torus", "yellow")
    field = Field.from_sdf(primitive, FieldConfig(resolution=48, levels=2))
    plain = extract_mesh(field, 48)
    mesh = extract_mesh(field, 48, texture_size=128)
    assert mesh.visual.kind == "texture" and len(mesh.faces) == len(plain.faces)
    pixels = np.asarray(mesh.visual.material.baseColorTexture).reshape(-1, 3).astype(int)
    assert np.abs(pixels - COLOURS["yellow"]).max() <= 2
    # The seams don't show: renders read the same colours and the source's smooth normals.
    cams = [Camera(20, 30), Camera(-10, 200)]
    with torch.no_grad():
        assert (
            np.abs(
                render_views(mesh, cams, resolution=32).astype(int)
                - render_views(plain, cams, resolution=32)
            ).max()
            <= 1
        )


# --- files ---------------------------------------------------------------------------------------


def glb_json(path):
    data = path.read_bytes()
    (length,) = struct.unpack("<I", data[12:16])
    assert data[16:20] == b"JSON"
    return json.loads(data[20 : 20 + length])


def glb_attribute(path, name):
    """A float32 vertex attribute of the first primitive, read from the binary chunk."""
    data = path.read_bytes()
    tree = glb_json(path)
    binary = 20 + struct.unpack("<I", data[12:16])[0] + 8
    accessor = tree["accessors"][tree["meshes"][0]["primitives"][0]["attributes"][name]]
    view = tree["bufferViews"][accessor["bufferView"]]
    start = binary + view.get("byteOffset", 0) + accessor.get("byteOffset", 0)
    return np.frombuffer(data, np.float32, accessor["count"] * 3, start).reshape(-1, 3)


def test_glb_round_trip_keeps_geometry_uvs_texture_and_vertex_colours(textured, tmp_path):
    path = tmp_path / "m.glb"
    write_mesh(textured, path)
    back = trimesh.load(path, process=False, force="mesh")
    assert np.allclose(back.vertices, textured.vertices, atol=1e-6)
    assert np.array_equal(back.faces, textured.faces)
    assert np.allclose(back.visual.uv, textured.visual.uv, atol=1e-6)
    assert back.visual.material.baseColorTexture.size == (256, 256)
    assert np.array_equal(
        np.asarray(back.visual.material.baseColorTexture),
        np.asarray(textured.visual.material.baseColorTexture),
    )  # PNG: lossless
    assert np.array_equal(back.vertex_attributes["_ALBEDO"], vertex_colours(textured))
    tree = glb_json(path)
    (primitive,) = tree["meshes"][0]["primitives"]
    assert set(primitive["attributes"]) == {"POSITION", "NORMAL", "TEXCOORD_0", "_ALBEDO"}
    (material,) = tree["materials"]
    assert primitive["material"] == 0 and material["doubleSided"] is False
    pbr = material["pbrMetallicRoughness"]
    assert pbr["metallicFactor"] == 0 and pbr["roughnessFactor"] == 1
    texture = tree["textures"][pbr["baseColorTexture"]["index"]]
    assert tree["images"][texture["source"]]["mimeType"] == "image/png"
    assert tree["samplers"][texture["sampler"]] == {
        "magFilter": 9729, "minFilter": 9987, "wrapS": 33071, "wrapT": 33071,
    }  # fmt: skip
    # Vertex and index data say so (the validator hints otherwise); the image's view must not.
    image_views = {image["bufferView"] for image in tree["images"]}
    assert all(("target" in v) != (i in image_views) for i, v in enumerate(tree["bufferViews"]))
    # Copies of a vertex along a seam carry one unit normal: the seams don't show in shading.
    position, normal = glb_attribute(path, "POSITION"), glb_attribute(path, "NORMAL")
    _, vertex = np.unique(position, axis=0, return_inverse=True)
    first = np.zeros((vertex.max() + 1, 3), np.float32)
    first[vertex.ravel()] = normal
    assert len(first) < len(position) and np.array_equal(normal, first[vertex.ravel()])
    assert np.allclose(np.linalg.norm(normal, axis=1), 1, atol=1e-6)
    assert [p.name for p in tmp_path.iterdir()] == ["m.glb"]


def test_obj_mtl_and_png_name_each_other_and_round_trip(textured, tmp_path):
    path = tmp_path / "cube.obj"
    write_mesh(textured, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cube.mtl", "cube.obj", "cube_albedo.png"]
    obj = path.read_text().splitlines()
    assert "mtllib cube.mtl" in obj and "usemtl albedo" in obj
    mtl = (tmp_path / "cube.mtl").read_text().splitlines()
    assert "newmtl albedo" in mtl and "map_Kd cube_albedo.png" in mtl
    assert "Kd 1 1 1" in mtl and "Ks 0 0 0" in mtl  # the texture as it is, no sheen
    assert Image.open(tmp_path / "cube_albedo.png").size == (256, 256)
    back = trimesh.load(path, process=False, force="mesh")
    assert len(back.vertices) == len(textured.vertices) and len(back.faces) == len(textured.faces)
    assert np.allclose(back.vertices, textured.vertices, atol=1e-6)
    assert np.allclose(back.visual.uv, textured.visual.uv, atol=1e-6)
    assert back.visual.material.image.size == (256, 256)


def test_ply_keeps_vertex_colours_welded_along_the_seams(sphere, textured, tmp_path):
    path = tmp_path / "m.ply"
    write_mesh(textured, path)
    back = trimesh.load(path, process=False, force="mesh")
    assert len(back.vertices) == len(sphere.vertices) and len(back.faces) == len(sphere.faces)
    expected = np.round(gradient(back.vertices) * 255)
    assert np.abs(back.visual.vertex_colors[:, :3] - expected).max() <= 1


def test_a_failed_obj_write_leaves_nothing(textured, tmp_path, monkeypatch):
    import spacetime.tempfiles as tempfiles

    renames = []

    def third_rename_fails(src, dst):
        renames.append(dst)
        if len(renames) == 3:  # the .png and .mtl are in place; the .obj fails
            raise OSError("disk full")
        os.rename(src, dst)

    monkeypatch.setattr(tempfiles.os, "replace", third_rename_fails)
    with pytest.raises(OSError, match="disk full"):
        write_mesh(textured, tmp_path / "m.obj")
    assert [Path(p).name for p in renames] == ["m_albedo.png", "m.mtl", "m.obj"]
    assert not any(tmp_path.iterdir())


def test_an_obj_beside_a_folder_of_its_texture_name_fails_first(tmp_path):
    from spacetime.errors import SpacetimeError
    from spacetime.threed.export import check_mesh_target

    (tmp_path / "m_albedo.png").mkdir()
    with pytest.raises(SpacetimeError, match="m_albedo.png beside .*m.obj: it is a folder"):
        check_mesh_target(tmp_path / "m.obj")


# --- viewers (skipped where their tools are not installed) ---------------------------------------


VALIDATOR = ROOT / "tools" / "node_modules" / "gltf-validator"


@pytest.mark.skipif(
    shutil.which("node") is None or not VALIDATOR.is_dir(),
    reason="needs node and `cd tools && npm install` (the Khronos glTF-Validator)",
)
@pytest.mark.parametrize("kind", ["textured", "vertex colours"])
def test_glb_passes_the_khronos_validator_without_warnings(kind, sphere, textured, tmp_path):
    path = tmp_path / "m.glb"
    if kind == "textured":
        write_mesh(textured, path)
    else:
        coloured = sphere.copy()
        coloured.visual = trimesh.visual.ColorVisuals(coloured, vertex_colors=[140, 30, 210, 255])
        write_mesh(coloured, path)
    run = subprocess.run(
        ["node", str(ROOT / "tools" / "validate_gltf.mjs"), str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(run.stdout)
    assert (report["errors"], report["warnings"], report["infos"]) == (0, 0, 0), report["messages"]


@pytest.mark.slow
@needs_three_js
def test_textured_glb_renders_in_three_js(textured, tmp_path):
    path = tmp_path / "m.glb"
    write_mesh(textured, path)
    (report,) = three_js(path)
    assert report["meshes"] == 1 and report["map"] == {"width": 256, "height": 256}
    assert report["material"] == "MeshStandardMaterial" and report["vertexColors"] is False
    assert report["covered"] > 0.05 and min(report["mean"]) > 40  # the lit gradient, not black


@pytest.mark.slow
@needs_three_js
def test_vertex_coloured_and_textured_glbs_look_alike_in_three_js(sphere, tmp_path):
    """The same colour as COLOR_0 (linear) and as a texture (sRGB) renders the same: neither
    lighter (sRGB bytes read as linear) nor darker (glTF's metallic default material)."""
    red = np.array(COLOURS["red"]) / 255
    coloured = sphere.copy()
    coloured.visual = trimesh.visual.ColorVisuals(coloured, vertex_colors=[*COLOURS["red"], 255])
    paths = tmp_path / "coloured.glb", tmp_path / "textured.glb"
    write_mesh(coloured, paths[0])
    write_mesh(texture_mesh(sphere, lambda p: np.broadcast_to(red, p.shape), 64), paths[1])
    vertex, texture = three_js(*paths)
    assert vertex["vertexColors"] is True and vertex["metalness"] == 0
    assert np.abs(np.array(vertex["mean"]) - texture["mean"]).max() <= 3, (vertex, texture)


def three_js(*paths):
    """check_glb_threejs.py's report on each .glb."""
    run = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "check_glb_threejs.py"), *map(str, paths)],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    return [json.loads(line) for line in run.stdout.splitlines()]
