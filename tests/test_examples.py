"""The scripts in examples/ run against a tiny model through the public API."""

import subprocess
import sys
from pathlib import Path

import pytest
import tiny
from PIL import Image

ROOT = Path(__file__).parents[1]


def run(*args):
    proc = subprocess.run(
        [sys.executable, *map(str, args)], capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_text_to_image_example(tmp_path):
    tiny.sd_pipeline(tmp_path / "sd")
    out = tmp_path / "pair.png"
    run(
        "examples/text_to_image.py", "--model", tmp_path / "sd", "a red circle", out, "--steps", "3"
    )
    assert Image.open(out).size == (64, 32)


def test_convert_checkpoint_example_round_trips(tmp_path):
    tiny.sd_pipeline(tmp_path / "sd")
    run("examples/convert_checkpoint.py", tmp_path / "sd", tmp_path / "one.safetensors")
    run("examples/convert_checkpoint.py", tmp_path / "one.safetensors", tmp_path / "back")
    assert (tmp_path / "back" / "model_index.json").is_file()


def test_text_to_video_example(tmp_path):
    from spacetime.formats.load import load_components
    from spacetime.formats.motion import save_motion_adapter
    from spacetime.models.inflate import AnimateDiff, inflate

    tiny.sd_pipeline(tmp_path / "sd")
    unet = inflate(load_components(tmp_path / "sd").unet, AnimateDiff(heads=2))
    save_motion_adapter(unet, tmp_path / "motion")
    out = tmp_path / "clip.gif"
    args = ["--model", tmp_path / "sd", "--motion", tmp_path / "motion", "--steps", "2"]
    run("examples/text_to_video.py", "a red circle", out, *args, "--frames", "3")
    assert Image.open(out).n_frames == 3


@pytest.mark.parametrize(
    "args",
    [
        ["examples/text_to_image.py", "--model", "nowhere", "a red circle", "x.png"],
        ["examples/text_to_video.py", "--model", "nowhere", "a red circle", "x.gif"],
        ["examples/text_to_mesh.py", "--model", "nowhere", "a red cube", "x.glb"],
        ["examples/convert_checkpoint.py", "nowhere", "out"],
    ],
)
def test_a_bad_path_is_one_error_line(tmp_path, args):
    proc = subprocess.run(
        [sys.executable, str(ROOT / args[0]), *args[1:]], capture_output=True, text=True,
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: model not found") and proc.stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []
