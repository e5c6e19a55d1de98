"""Every CLI's documented bad values: one `error:` line naming the problem, exit code 2, and the
folder exactly as it was. Checks run before any weights load, so each case takes well under a
second in-process (the damaged-checkpoint cases load until the damage)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spacetime import image, mesh, video
from spacetime.formats.diffusers import save_diffusers
from spacetime.formats.load import default_model, load_components
from spacetime.train import __main__ as train

LONG = "a" * 300  # a file name over every common file system's 255 bytes
CUDA_BUILD = torch.version.cuda is not None


class Payload:
    def __reduce__(self):
        return (Path.write_text, (Path("pwned"), "the payload ran"))


@pytest.fixture(scope="module")
def bad_models(tmp_path_factory) -> Path:
    """Damaged and malicious models, outside the folder each case runs in."""
    root = tmp_path_factory.mktemp("bad-models")
    (root / "garbage.safetensors").write_bytes(b"not a checkpoint" * 8)
    torch.save({"state_dict": {"w": Payload()}}, root / "evil.ckpt")
    components = load_components(default_model("image"))
    tokenizer = save_diffusers(components, root / "bad-tokenizer")
    (tokenizer / "tokenizer" / "tokenizer.json").write_text('{"model": ')
    shards = save_diffusers(components, root / "bad-shards")
    (shards / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    (shards / "unet" / "diffusion_pytorch_model.safetensors.index.json").write_text("{")
    return root


def snapshot(folder: Path) -> list[tuple]:
    return sorted(
        (str(p.relative_to(folder)), p.is_dir(), p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
    )


def check_refused(main, args, message, tmp_path, capsys, monkeypatch):
    """Run `main(args)` in a folder holding a few obstacles; assert the promise."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "blocker").write_text("a file where a folder should be")
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "folder.mp4").mkdir()
    (tmp_path / "folder.glb").mkdir()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "frame_0000.png").write_bytes(b"x")
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in args])
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err, err
    assert snapshot(tmp_path) == before
    assert not (tmp_path / "pwned").exists()


MODEL_CASES = [
    (["--model", "no/such/model/here"], "model not found"),
    (["--model", "{bad}/garbage.safetensors"], "corrupt or truncated safetensors file"),
    (["--model", "{bad}/evil.ckpt"], "holds code, refused"),
    (["--model", "{bad}/bad-tokenizer"], "damaged tokenizer in"),
    (["--model", "{bad}/bad-shards"], "corrupt JSON in"),
]
SAMPLING_CASES = [
    (["--steps", "0"], "steps must be >= 1, got 0"),
    (["--steps", "1001"], "steps must be <= 1000 (the model's noise schedule), got 1001"),
    (
        ["--steps", "51", "--scheduler", "lcm"],
        "the lcm sampler takes at most 50 steps (the model's original_inference_steps), got 51",
    ),
    (["--steps", "2.5"], "argument --steps: invalid int value: '2.5'"),
    (["--guidance", "nan"], "guidance must be a finite number, got nan"),
    (["--guidance", "inf"], "guidance must be a finite number, got inf"),
    (["--guidance", "-2"], "guidance must be >= 0, got -2.0"),
    (["--eta", "nan"], "eta must be a finite number, got nan"),
    (["--eta", "-1"], "eta must be >= 0, got -1.0"),
    (["--attention", "xformers"], "--attention xformers runs on CUDA with xformers installed"),
    (["--eta", "0.5", "--scheduler", "euler"], "eta applies to the ddim sampler only, not euler"),
    (["--eta", "0.5", "--scheduler", "dpm++"], "eta applies to the ddim sampler only, not dpm++"),
    (["--karras"], "karras sigmas apply to euler, euler-a, dpm++, not the ddim sampler"),
    (["--karras", "--scheduler", "ddpm"], "not the ddpm sampler"),
    (["--scheduler", "bogus"], "argument --scheduler: invalid choice: 'bogus'"),
    (["--seed", "-1"], "seed must be in [0, 18446744073709551615], got -1"),
    (["--seed", str(2**64)], f"seed must be in [0, 18446744073709551615], got {2**64}"),
    (["--height", "36"], "height must be a positive multiple of 8, got 36"),
    (["--width", "0"], "width must be a positive multiple of 8, got 0"),
    (["--height", "100000", "--width", "100000"], "or pass --force to try anyway"),
    (["--precision", "fp8"], "argument --precision: invalid choice: 'fp8'"),
    (["--device", "bogus"], "device must be cpu, cuda or cuda:N, got 'bogus'"),
    (
        ["--device", "cuda:99" if CUDA_BUILD else "cuda"],
        "CUDA device(s)" if CUDA_BUILD else "this torch build has no CUDA support",
    ),
    (["--stpes", "3"], "unrecognized arguments: --stpes 3"),
    (["--lora", "no/such.safetensors"], "LoRA no/such.safetensors: no such file"),
    (["--lora", "{bad}:0.5"], "a folder"),
    (["--lora", "x.safetensors:nan"], "LoRA weight must be a finite number, got 'nan'"),
    *MODEL_CASES,
]

IMAGE_CASES = [
    *SAMPLING_CASES,
    ([], "the following arguments are required: prompt"),
    (["--num-images", "0"], "num_images must be >= 1, got 0"),
    (["--clip-skip", "-1"], "clip_skip must be >= 0, got -1"),
    (["--out", "x.gif"], "extension must be one of .png, .jpg, .jpeg, .webp"),
    (["--out", "folder.png"], "cannot write folder.png: it is a folder"),
    (["--out", f"{LONG}.png"], "bytes, over this file system's"),
    (["--out", "blocker/x.png"], "is not a writable folder"),
]


@pytest.mark.parametrize("args, message", IMAGE_CASES, ids=[str(a) for a, _ in IMAGE_CASES])
def test_image_cli_refuses(args, message, bad_models, tmp_path, capsys, monkeypatch):
    args = [a.format(bad=bad_models) for a in args]
    check_refused(image.main, (["a red circle"] if args else []) + args, message, tmp_path,
                  capsys, monkeypatch)  # fmt: skip


VIDEO_CASES = [
    *SAMPLING_CASES,
    (["--frames", "0"], "frames must be >= 1, got 0"),
    (["--frames", "100000000"], "or pass --force to try anyway"),
    (["--fps", "0"], "fps must be >= 1, got 0"),
    (["--context-frames", "0"], "context_frames must be >= 1, got 0"),
    (["--context-overlap", "-1"], "context_overlap must be >= 0, got -1"),
    (["--context-frames", "8", "--context-overlap", "8"], "overlap"),
    (["--free-init", "-1"], "free_init must be >= 0, got -1"),
    (["--free-init-fast"], "--free-init-fast needs --free-init N"),
    (["--vae", "blocker", "--vae-per-frame"], "--vae and --vae-per-frame exclude each other"),
    (["--motion", "no/such/motion"], "--motion: nothing at"),
    (["--vae", "no/such/vae"], "--vae: nothing at"),
    (["--motion-lora", "no/such.safetensors:0.8"], "LoRA no/such.safetensors: no such file"),
    (["--out", "x.avi"], "extension must be one of .mp4, .gif, .webp"),
    (["--out", "folder.mp4"], "cannot write folder.mp4: it is a folder"),
    (["--out", "full"], "cannot write frames into full: the folder is not empty"),
    (["--out", "blocker"], "cannot write frames into blocker: it is a file"),
    (["--out", f"{LONG}.mp4"], "bytes, over this file system's"),
    (["--out", "blocker/clip.mp4"], "is not a writable folder"),
]


@pytest.mark.parametrize("args, message", VIDEO_CASES, ids=[str(a) for a, _ in VIDEO_CASES])
def test_video_cli_refuses(args, message, bad_models, tmp_path, capsys, monkeypatch):
    args = [a.format(bad=bad_models) for a in args]
    check_refused(video.main, ["a red circle moving right", *args], message, tmp_path, capsys,
                  monkeypatch)  # fmt: skip


MESH_CASES = [
    (["--steps", "0"], "steps must be in [1, 100000], got 0"),
    (["--steps", "1e9"], "argument --steps: invalid int value: '1e9'"),
    (["--steps", "1000000000"], "steps must be in [1, 100000], got 1000000000"),
    (["--resolution", "4"], "resolution must be in [8, 512], got 4"),
    (["--resolution", "100000"], "resolution must be in [8, 512], got 100000"),
    (["--guidance", "nan"], "guidance must be a finite number, got nan"),
    (["--guidance", "-1"], "guidance must be >= 0, got -1.0"),
    (["--seed", "-1"], "seed must be in [0, 18446744073709551615], got -1"),
    (["--device", "bogus"], "device must be cpu, cuda or cuda:N, got 'bogus'"),
    (["--out", "x.stl"], "extension must be one of .glb, .obj, .ply"),
    (["--out", "folder.glb"], "cannot write folder.glb: it is a folder"),
    (["--out", f"{LONG}.glb"], "bytes, over this file system's"),
    (["--out", "blocker/m.glb"], "is not a writable folder"),
    (["--preview", "x.txt"], "extension must be one of .mp4, .gif, .webp"),
    (["--preview", "turntable"], "--preview must be a .mp4, .gif or .webp file"),
    (["--preview", "folder.mp4"], "cannot write folder.mp4: it is a folder"),
    *MODEL_CASES,
]


@pytest.mark.parametrize("args, message", MESH_CASES, ids=[str(a) for a, _ in MESH_CASES])
def test_mesh_cli_refuses(args, message, bad_models, tmp_path, capsys, monkeypatch):
    args = [a.format(bad=bad_models) for a in args]
    check_refused(mesh.main, ["a red cube", "--steps", "1", *args], message, tmp_path, capsys,
                  monkeypatch)  # fmt: skip


def test_mesh_cli_refuses_an_empty_prompt(tmp_path, capsys, monkeypatch):
    check_refused(mesh.main, ["  "], "the prompt is empty", tmp_path, capsys, monkeypatch)


TRAIN_CASES = [
    ([], "the following arguments are required: --out"),
    (["missing.yaml", "--out", "run"], "cannot read config missing.yaml: no such file"),
    (["full", "--out", "run"], "cannot read config full: a folder"),
    (["binary.yaml", "--out", "run"], "cannot read config binary.yaml: not a text file"),
    (["broken.yaml", "--out", "run"], "config broken.yaml is not plain YAML"),
    (["code.yaml", "--out", "run"], "config code.yaml is not plain YAML"),
    (["list.yaml", "--out", "run"], "expected a mapping of config keys"),
    (["--set", "stpes=3", "--out", "run"], "unknown vae config keys: stpes (known: task, "),
    (["--set", "frames=8", "--out", "run"], "unknown vae config keys: frames"),
    (["--set", "steps=1.7", "--out", "run"], "steps must be an int, got 1.7"),
    (["--set", "lr=.nan", "--out", "run"], "lr must be a finite number, got nan"),
    (["--set", "lr=0", "--out", "run"], "lr must be > 0, got 0.0"),
    (["--set", "task=motion", "--out", "run"], "motion training needs `base:`"),
    (["--set", "steps", "--out", "run"], "--set expects key=value, got 'steps'"),
    (["--set", "steps=[", "--out", "run"], "config --set is not plain YAML"),
    (["--set", "task=bogus", "--out", "run"], "task must be one of"),
    (["--out", "blocker"], "--out blocker is a file, not a run folder"),
    (["--out", "blocker/run"], "is not a writable folder"),
    (["--out", LONG], "bytes, over this file system's"),
]


@pytest.mark.parametrize("args, message", TRAIN_CASES, ids=[str(a) for a, _ in TRAIN_CASES])
def test_train_cli_refuses(args, message, tmp_path, capsys, monkeypatch):
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00steps")
    (tmp_path / "broken.yaml").write_text("steps: [1\n")
    (tmp_path / "code.yaml").write_text("steps: !!python/object/apply:os.system ['touch pwned']\n")
    (tmp_path / "list.yaml").write_text("- steps\n")
    check_refused(train.main, args, message, tmp_path, capsys, monkeypatch)


# --- what needs a process of its own: --help before torch, Ctrl-C, SIGKILL --------------------

CLIS = ["spacetime.image", "spacetime.video", "spacetime.mesh", "spacetime.train"]


@pytest.mark.parametrize("module", CLIS)
def test_help_prints_before_torch_loads(module):
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['{module}', '--help']\n"
        "try:\n"
        f"    runpy.run_module('{module}', run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "print(sorted(m for m in ('torch', 'transformers', 'numpy') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "usage:" in out.stdout and out.stdout.strip().endswith("[]")


def test_an_exit_code_and_one_line_from_a_real_process(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "spacetime.image", "a red circle", "--guidance", "nan"],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr == "error: guidance must be a finite number, got nan\n"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("delay", [0.3, 0.6, 1.0])  # start-up takes ~1.4 s here
def test_ctrl_c_during_start_up_is_one_line_and_exit_130(tmp_path, delay):
    import signal
    import time

    # As from a terminal: a shell without job control starts background jobs with SIGINT
    # ignored, and a CI runner may run this suite as one; Ctrl-C at a prompt is SIG_DFL.
    proc = subprocess.Popen(
        [sys.executable, "-m", "spacetime.video", "a red circle moving right", "--steps", "2"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err == "interrupted\n"
    assert list(tmp_path.iterdir()) == []


def test_a_temp_file_left_by_sigkill_is_cleared_by_the_next_run(tmp_path):
    """A writer killed mid-write leaves its pid-named temp; the next write beside it removes it."""
    import signal

    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from spacetime.formats.weights import atomic_write\n"
        "def write(tmp):\n"
        "    tmp.write_bytes(b'half an mp4')\n"
        "    print('writing', flush=True)\n"
        "    time.sleep(60)\n"
        "atomic_write(Path(sys.argv[1]), write)\n"
    )
    target = tmp_path / "clip.mp4"
    proc = subprocess.Popen([sys.executable, "-c", script, str(target)], stdout=subprocess.PIPE)
    assert proc.stdout.readline() == b"writing\n"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    (left,) = tmp_path.iterdir()
    assert left.name.startswith(f".spacetime-tmp-{proc.pid}-")
    from spacetime.media import write_video

    write_video(target, torch.zeros(2, 8, 8, 3, dtype=torch.uint8).numpy(), fps=2)
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]


@pytest.mark.parametrize("flag", ["--height", "--width"])
def test_a_zero_size_is_refused_before_any_weights_load(flag, tmp_path, capsys, monkeypatch):
    """0 is a size to refuse, not a request for the model's default."""
    import spacetime.pipelines.image as image_pipeline

    def no_loading(*_, **__):
        raise AssertionError("weights were loaded before the size was checked")

    monkeypatch.setattr(image_pipeline, "load_components", no_loading)
    check_refused(image.main, ["a red circle", flag, "0"], "must be a positive multiple of 8, got 0",
                  tmp_path, capsys, monkeypatch)  # fmt: skip


def test_another_hosts_temp_files_are_left_alone(tmp_path):
    """On a folder shared between hosts a pid says nothing about the other host's processes:
    only this host's temporaries of dead processes are cleared."""
    import socket

    from spacetime.tempfiles import PREFIX, clear_stale

    dead = 2**22 + 12345  # above Linux's pid_max: no such process here
    mine = tmp_path / f"{PREFIX}{dead}-{socket.gethostname()}-a.tmp"
    theirs = tmp_path / f"{PREFIX}{dead}-another-host.example-b.tmp"
    for path in (mine, theirs):
        path.write_bytes(b"half a file")
    assert clear_stale(tmp_path) == [mine]
    assert [p.name for p in tmp_path.iterdir()] == [theirs.name]
