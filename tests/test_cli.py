"""`python -m spacetime.image`: output files, progress, and one clear line for bad input."""

import subprocess
import sys

import in_process
import numpy as np
import pytest
import tiny
from PIL import Image

from spacetime.formats.load import load_components
from spacetime.formats.single_file import save_single_file
from spacetime.image import main


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli") / "tiny-sd"
    tiny.sd_pipeline(folder)
    return folder


def run_cli(args, capsys):
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    return in_process.run_cli(main, args, capsys)


def test_writes_png_and_says_where(model, tmp_path, capsys):
    out = tmp_path / "sub" / "x.png"
    code, stdout, stderr = run_cli(
        ["a red circle", "--model", model, "--steps", "3", "--height", "32", "--width", "48",
         "--out", out, "--precision", "fp32"], capsys,
    )  # fmt: skip
    assert code == 0
    assert f"wrote {out}" in stdout
    assert "sampling" in stderr  # the progress bar
    assert Image.open(out).size == (48, 32)


def test_several_images_are_numbered(model, tmp_path, capsys):
    code, stdout, _ = run_cli(
        ["a red circle", "--model", model, "--steps", "2", "--num-images", "2",
         "--scheduler", "euler-a", "--out", tmp_path / "img.webp"], capsys,
    )  # fmt: skip
    assert code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img-0.webp", "img-1.webp"]


def test_single_file_checkpoint_gives_the_same_image(model, tmp_path, capsys):
    single = tmp_path / "tiny.safetensors"
    save_single_file(load_components(model), single)
    common = ["a red circle", "--steps", "3", "--seed", "5", "--precision", "fp32"]
    run_cli([*common, "--model", model, "--out", tmp_path / "a.png"], capsys)
    run_cli([*common, "--model", single, "--out", tmp_path / "b.png"], capsys)
    a, b = (np.asarray(Image.open(tmp_path / f)) for f in ("a.png", "b.png"))
    assert np.array_equal(a, b)


def test_every_attention_kernel_gives_the_same_image(model, tmp_path, capsys, monkeypatch):
    from spacetime.models import attention

    # The flag sets a process-wide switch; put it back for the tests that follow in this process.
    monkeypatch.setattr(attention, "_backend", attention._backend)
    monkeypatch.setattr(attention, "_slice_size", 7)  # several query chunks at 32x48
    common = ["a red circle", "--model", model, "--steps", "2", "--height", "32", "--width", "48",
              "--precision", "fp32"]  # fmt: skip
    for kernel in ("sdpa", "sliced"):
        code, _, _ = run_cli([*common, "--attention", kernel, "--out", tmp_path / f"{kernel}.png"],
                             capsys)  # fmt: skip
        assert code == 0
        assert attention._backend == kernel
    sdpa, sliced = (np.asarray(Image.open(tmp_path / f"{k}.png"), int) for k in ("sdpa", "sliced"))
    assert np.abs(sdpa - sliced).max() <= 1


@pytest.mark.parametrize("damage", ["missing", "truncated", "garbage", "wrong-shape"])
def test_bad_checkpoints_are_one_line_and_write_nothing(model, tmp_path, capsys, damage):
    single = tmp_path / "m.safetensors"
    if damage != "missing":
        save_single_file(load_components(model), single)
        data = single.read_bytes()
        if damage == "truncated":
            single.write_bytes(data[: len(data) // 2])
        elif damage == "garbage":
            single.write_bytes(b"not a checkpoint at all" * 10)
        else:
            from safetensors import safe_open
            from safetensors.torch import load_file, save_file

            with safe_open(str(single), "pt") as f:
                meta = f.metadata()
            sd = load_file(str(single))
            key = "model.diffusion_model.out.2.weight"
            sd[key] = torch_zeros(sd[key].shape[0] + 1, *sd[key].shape[1:])
            save_file(sd, str(single), metadata=meta)
    out = tmp_path / "out.png"
    code, _, stderr = run_cli(["a", "--model", single, "--steps", "1", "--out", out], capsys)
    assert code == 2 and len(stderr.strip().splitlines()) == 1 and stderr.startswith("error: ")
    assert str(single) in stderr
    assert not out.exists()


def torch_zeros(*shape):
    import torch

    return torch.zeros(*shape)


def test_model_is_required_when_no_default_ships(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("spacetime.formats.load.default_model", lambda kind="image": None)
    code, _, stderr = run_cli(["a red circle", "--out", tmp_path / "x.png"], capsys)
    assert code == 2 and "--model is required" in stderr


def test_help_explains_every_flag():
    out = subprocess.run(
        [sys.executable, "-m", "spacetime.image", "--help"], capture_output=True, text=True
    ).stdout
    for flag in ("--model", "--negative-prompt", "--steps", "--guidance", "--scheduler", "--seed",
                 "--height", "--width", "--num-images", "--precision", "--out", "--karras"):  # fmt: skip
        assert flag in out


def test_python_dash_m_runs_end_to_end(model, tmp_path):
    out = tmp_path / "x.png"
    proc = subprocess.run(
        [sys.executable, "-m", "spacetime.image", "a red circle", "--model", str(model),
         "--steps", "2", "--out", str(out)], capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert out.is_file() and f"wrote {out}" in proc.stdout
