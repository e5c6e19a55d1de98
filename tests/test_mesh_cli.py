"""`python -m spacetime.mesh` and examples/text_to_mesh.py: outputs, progress, and one clear line
for bad input, with nothing written."""

import subprocess
import sys
from pathlib import Path

import in_process
import numpy as np
import pytest
import trimesh
from PIL import Image
from test_threed import tiny_components

from spacetime.formats.diffusers import save_diffusers
from spacetime.mesh import main

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mesh-cli")
    save_diffusers(tiny_components(folder), folder / "tiny")
    return folder / "tiny"


def run_cli(args, capsys):
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    return in_process.run_cli(main, args, capsys)


def test_writes_a_textured_glb_and_a_turntable(model, tmp_path, capsys):
    out, preview = tmp_path / "sub" / "cube.glb", tmp_path / "turn.gif"
    code, stdout, stderr = run_cli(
        ["a red cube", "--model", model, "--steps", "2", "--resolution", "24", "--out", out,
         "--preview", preview, "--device", "cpu"], capsys,
    )  # fmt: skip
    assert code == 0, stderr
    assert f"wrote {out}" in stdout and f"wrote {preview}" in stdout
    assert "a 1024x1024 texture" in stdout  # the default
    assert "distilling" in stderr and "loss=" in stderr  # the progress bar shows the loss
    assert "no camera conditioning" in stderr  # the tiny model is a plain image model
    mesh = trimesh.load(out, process=False, force="mesh")
    assert len(mesh.faces) > 0 and mesh.visual.kind == "texture"
    assert mesh.visual.material.baseColorTexture.size == (1024, 1024)
    assert mesh.vertex_attributes["_ALBEDO"].shape == (len(mesh.vertices), 4)
    assert Image.open(preview).n_frames > 1


def test_texture_size_zero_writes_vertex_colours_only(model, tmp_path, capsys):
    out = tmp_path / "m.glb"
    code, stdout, stderr = run_cli(
        ["a red cube", "--model", model, "--steps", "1", "--resolution", "16", "--out", out,
         "--texture-size", "0"], capsys,
    )  # fmt: skip
    assert code == 0, stderr
    assert stdout.strip().endswith("faces)")  # no texture
    (mesh,) = trimesh.load(out, process=False).geometry.values()
    assert mesh.visual.material.baseColorTexture is None  # the matte material, no texture
    assert mesh.visual.vertex_attributes["color"].shape == (len(mesh.vertices), 3)  # COLOR_0


@pytest.mark.parametrize(
    "flag, value",
    [("--texture-size", v) for v in ("100", "8", "16384", "-1")]
    + [("--faces", v) for v in ("3", "-1", "1e9", "many")],
)
def test_bad_texture_size_or_face_count_is_one_line_and_writes_nothing(
    tmp_path, capsys, flag, value
):
    out = tmp_path / "m.glb"
    code, _, stderr = run_cli(["a red cube", "--out", out, flag, value], capsys)
    assert code == 2 and flag[2:].replace("-", "_") in stderr and value in stderr
    assert len(stderr.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())


def test_single_view_writes_a_textured_obj(model, tmp_path, capsys):
    out = tmp_path / "m.obj"
    code, stdout, stderr = run_cli(
        ["a red cube", "--model", model, "--steps", "1", "--resolution", "16", "--out", out,
         "--single-view", "--guidance", "20", "--texture-size", "64"], capsys,
    )  # fmt: skip
    assert code == 0, stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.mtl", "m.obj", "m_albedo.png"]
    assert f"wrote {tmp_path / 'm.mtl'}, {tmp_path / 'm_albedo.png'}" in stdout
    mesh = trimesh.load(out, process=False, force="mesh")
    assert len(mesh.vertices) > 0 and mesh.visual.material.image.size == (64, 64)
    assert "no camera conditioning" not in stderr


def test_without_a_shipped_multiview_model_asks_for_one(tmp_path, capsys, monkeypatch):
    import spacetime.formats.load as load

    monkeypatch.setattr(load, "default_model", lambda kind="image": None)
    code, _, stderr = run_cli(["a red cube", "--out", tmp_path / "m.glb"], capsys)
    assert code == 2 and "no default multiview model: give --model" in stderr
    assert "--single-view" in stderr
    assert not any(tmp_path.iterdir())


def test_text_to_mesh_example(model, tmp_path):
    out, preview = tmp_path / "cube.ply", tmp_path / "turn.gif"
    run = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "text_to_mesh.py"), "a red cube", str(out),
         "--model", str(model), "--steps", "1", "--preview", str(preview)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    mesh = trimesh.load(out, process=False, force="mesh")
    assert np.asarray(mesh.visual.vertex_colors).shape == (len(mesh.vertices), 4)
    assert Image.open(preview).n_frames == 24


def test_fast_makes_the_prompts_solid_in_one_watertight_piece(tmp_path, capsys):
    """`--fast` with the shipped multi-view model and reconstructor: the true solid, closed."""
    from spacetime.threed.metrics import compare
    from spacetime.world.primitives import Primitive

    out = tmp_path / "cone.glb"
    code, stdout, _ = run_cli(
        ["a red cone", "--fast", "--out", out, "--texture-size", "64", "--faces", "3000"], capsys
    )
    assert code == 0 and f"wrote {out}" in stdout
    mesh = trimesh.load(out, force="mesh")
    solid = trimesh.Trimesh(mesh.vertices, mesh.faces)  # welded along the UV seams
    assert solid.is_watertight and len(solid.split(only_watertight=False)) == 1
    assert len(solid.faces) == 3000  # decimated from ~50k
    assert compare(solid, Primitive("cone", "red")).iou > 0.85


@pytest.mark.parametrize(
    "args, message",
    [
        (["--fast", "--single-view"], "read a multi-view model: not --single-view"),
        (["--init", "fast", "--model", "x"], "leave out --model"),
        (["--init", "middle"], "invalid choice: 'middle'"),
    ],
)
def test_fast_path_refusals_are_one_line_and_write_nothing(args, message, tmp_path, capsys):
    out = tmp_path / "m.glb"
    code, _, stderr = run_cli(["a red cube", "--out", out, *args], capsys)
    assert code == 2 and message in stderr and not out.exists()


def test_a_face_count_raised_to_keep_the_solid_is_a_warning(tmp_path, capsys, monkeypatch):
    """When `export.decimate` keeps more faces than asked (fewer would tear the solid), say so."""
    import spacetime.threed.pipeline as pipeline

    sphere = trimesh.creation.icosphere(subdivisions=2)  # 320 faces, as if decimation stopped
    monkeypatch.setattr(pipeline, "text_to_mesh", lambda *a, **k: sphere)
    out = tmp_path / "m.ply"
    code, stdout, stderr = run_cli(["a red cube", "--fast", "--out", out, "--faces", "100"], capsys)
    assert code == 0 and "320 faces" in stdout
    assert "warning: kept 320 faces, not 100: fewer would tear the solid" in stderr
