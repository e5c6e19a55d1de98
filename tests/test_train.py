"""Training machinery: configs, data-parallel equivalence, and exact resume after SIGKILL."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from spacetime.errors import ConfigError, SpacetimeError
from spacetime.train.config import (
    CONFIGS,
    ConsistencyTraining,
    ControlNetTraining,
    LoRATraining,
    MotionTraining,
    MultiViewTraining,
    ReconstructorTraining,
    TextToImageTraining,
    VAETraining,
    VideoVAETraining,
    load_config,
    make_config,
)
from spacetime.train.loop import checkpoints
from spacetime.train.tasks import TASKS
from spacetime.train.vae import VAETask

ROOT = Path(__file__).parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def test_config_files_and_overrides_load_typed(tmp_path):
    (tmp_path / "c.yaml").write_text("task: vae\nsteps: 7\nlr: 1\n")
    cfg = load_config(tmp_path / "c.yaml", ["batch_size=4"])
    assert type(cfg) is VAETraining
    assert (cfg.steps, cfg.lr, cfg.batch_size) == (7, 1.0, 4) and isinstance(cfg.lr, float)
    assert make_config({"steps": 7.0}).steps == 7 and type(make_config({"steps": 7.0}).steps) is int
    motion = load_config(None, ["task=motion", "base=b", "train_text=true", "frames=8"])
    assert type(motion) is MotionTraining and motion.train_text is True and motion.frames == 8
    # the task is the class, recorded by to_dict, from which the same config is rebuilt
    assert motion.to_dict()["task"] == "motion" and "task" not in vars(motion)
    assert make_config(motion.to_dict()) == motion
    lora = load_config(None, ["task=lora", "base=b", "data=inverted", "targets=[to_q, conv1]"])
    assert lora.targets == ("to_q", "conv1") and make_config(lora.to_dict()) == lora
    assert type(make_config({})) is VAETraining  # task defaults to vae


def _known(cls) -> str:
    return re.escape(f"(known: task, {', '.join(sorted(f.name for f in fields(cls)))})")


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"stpes": 3}, "unknown vae config keys: stpes " + _known(VAETraining)),
        # a key of another task is refused, naming this task's keys
        ({"task": "motion", "base": "b", "kl_weight": 1e-6},
         "unknown motion config keys: kl_weight " + _known(MotionTraining)),
        ({"task": "video_vae", "vae": "v", "views": 4, "base": "b"},
         "unknown video_vae config keys: base, views " + _known(VideoVAETraining)),
        ({"task": "gan"}, "task must be one of vae, text2image, motion, video_vae, multiview, "
                          "lora, lcm, controlnet, reconstructor, got 'gan'"),
        ({"steps": 1.7}, "steps must be an int, got 1.7"),
        ({"steps": "many"}, "steps must be an int, got 'many'"),
        ({"steps": True}, "steps must be an int, got True"),
        ({"lr": float("nan")}, "lr must be a finite number, got nan"),
        ({"lr": float("inf")}, "lr must be a finite number, got inf"),
        ({"lr": "fast"}, "lr must be a float, got 'fast'"),
        ({"task": "motion", "base": "b", "train_text": "yes"},
         "train_text must be a bool, got 'yes'"),
        ({"task": "motion", "base": "b", "train_text": 1}, "train_text must be a bool, got 1"),
        ({"preset": 3}, "preset must be a str, got 3"),
        ({"lr": 0}, "lr must be > 0, got 0.0"),
        ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
        ({"warmup": -1}, "warmup must be >= 0, got -1"),
        ({"ema_decay": 1.5}, r"ema_decay must be in \[0, 1\], got 1.5"),
        ({"mixed_precision": "fp16"}, "mixed_precision must be 'no' or 'bf16', got 'fp16'"),
        ({"preset": "huge"}, "preset must be one of .*, got 'huge'"),
        ({"task": "text2image"}, "text2image training needs `vae:`"),
        ({"task": "text2image", "vae": "v", "caption_dropout": 1.5},
         r"caption_dropout must be in \[0, 1\], got 1.5"),
        ({"task": "motion"}, "motion training needs `base:`"),
        ({"task": "motion", "base": "b", "motion_word_std": 2.0},
         "motion_word_std needs train_text: true"),
        ({"task": "video_vae", "vae": "v", "frames": 6}, "frames must be a multiple of 4.*got 6"),
        ({"task": "multiview", "base": "b", "azimuth_step": 7},
         "azimuth_step must divide the 90 degrees between 4 views, got 7.0"),
        ({"task": "lora", "data": "inverted"}, "lora training needs `base:`"),
        ({"task": "lora", "base": "b", "data": "zoom"},
         r"data must be one of zoom-in, inverted, first-frame \(or give media: your own clips or images\), got 'zoom'"),
        ({"task": "lora", "base": "b", "data": "zoom-in"},
         "data 'zoom-in' trains motion modules: it needs `motion:`"),
        ({"task": "lora", "base": "b", "motion": "m", "data": "inverted"},
         "data 'inverted' is still images: leave `motion:` empty"),
        ({"task": "lora", "base": "b", "data": "inverted", "targets": "to_q"},
         "targets must be a list of strings, got 'to_q'"),
        ({"task": "lora", "base": "b", "data": "inverted", "targets": []},
         r"targets must name at least one layer, got \[\]"),
        ({"task": "lora", "base": "b", "data": "inverted", "rank": 0}, "rank must be >= 1, got 0"),
        ({"task": "lora", "base": "b", "data": "inverted", "alpha": -1},
         "alpha must be > 0, got -1.0"),
        ({"task": "lcm", "base": "b", "guidance": 0.5}, "guidance must be >= 1, got 0.5"),
        ({"task": "lcm", "base": "b", "huber_c": 0.001}, "unknown lcm config keys: huber_c"),
        ({"task": "lcm", "base": "b", "data": "inverted"}, "unknown lcm config keys: data"),
        ({"task": "controlnet"}, "controlnet training needs `base:`"),
        ({"task": "controlnet", "base": "b", "condition": "depth"},
         "condition must be a shipped preprocessor"),
        ({"task": "controlnet", "base": "b", "media": "m", "latent_cache": "c"},
         "latent_cache does not apply"),
    ],
)  # fmt: skip
def test_bad_configs_are_refused_naming_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message) as e:
        make_config(overrides)
    assert isinstance(e.value, SpacetimeError) and isinstance(e.value, ValueError)


def test_every_shipped_config_loads_as_its_tasks_class():
    expected = {"vae": VAETraining, "text2image": TextToImageTraining, "motion": MotionTraining,
                "video_vae": VideoVAETraining, "multiview": MultiViewTraining,
                "lora": LoRATraining, "lcm": ConsistencyTraining,
                "controlnet": ControlNetTraining,
                "reconstructor": ReconstructorTraining}  # fmt: skip
    assert expected == CONFIGS and set(TASKS) == set(CONFIGS)
    seen = set()
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        task = yaml.safe_load(path.read_text())["task"]
        cfg = load_config(path)
        assert type(cfg) is expected[task] and cfg.task == task, path.name
        seen.add(task)
    assert seen == set(expected)  # a shipped recipe for every task


def test_two_processes_match_one_on_the_same_global_batch(tmp_path):
    script = ROOT / "tests" / "scripts" / "train_and_dump.py"
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_port", "29517", str(script), str(tmp_path / "two"), "4"],
        capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "one"), "4"],
        capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    rank0, rank1 = (load_file(str(tmp_path / "two" / f"rank{r}.safetensors")) for r in (0, 1))
    single = load_file(str(tmp_path / "one" / "rank0.safetensors"))
    torch.manual_seed(0)  # the loop seeds the initial weights with cfg.seed = 0
    cfg = make_config(dict(task="vae", preset="tiny", batch_size=4))
    initial = VAETask(cfg).build().state_dict()
    moved = 0.0
    for key, w in single.items():
        assert torch.equal(rank0[key], rank1[key]), key  # DDP keeps ranks identical
        # Adam's first steps are ~lr·sign(g), so a gradient that is pure summation-order noise (a
        # conv bias feeding a GroupNorm) could move by ±lr at random; with the loop's AdamW eps
        # (1e-8) the two runs agree to ~3e-7 here, far inside the tolerance.
        torch.testing.assert_close(rank0[key], w, rtol=1e-3, atol=1e-4)
        moved = max(moved, (w - initial[key]).abs().max().item())
    assert moved > 2e-3


def _train_cmd(out: Path) -> list[str]:
    return [sys.executable, "-m", "spacetime.train", "--out", str(out), "--quiet",
            "--set", "task=vae", "--set", "preset=tiny", "--set", "steps=12",
            "--set", "batch_size=4", "--set", "checkpoint_every=3", "--set", "threads=1"]  # fmt: skip


def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path):
    straight = subprocess.run(_train_cmd(tmp_path / "a"), capture_output=True, text=True, env=ENV)
    assert straight.returncode == 0, straight.stderr[-3000:]

    proc = subprocess.Popen(_train_cmd(tmp_path / "b"), env=ENV, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not checkpoints(tmp_path / "b" / "checkpoints"):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = checkpoints(tmp_path / "b" / "checkpoints")[-1].name
    assert killed_at != "step_12", "the run finished before it could be killed"

    resumed = subprocess.run(_train_cmd(tmp_path / "b"), capture_output=True, text=True, env=ENV)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout
    weights = "model/vae/diffusion_pytorch_model.safetensors"
    a, b = load_file(str(tmp_path / "a" / weights)), load_file(str(tmp_path / "b" / weights))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_max_minutes_stops_with_a_checkpoint_and_an_export(tmp_path):
    """A time-limited run (a fixed-length GPU loan) stops early, exports, and resumes."""
    from spacetime.train.loop import train

    cfg = make_config(dict(task="vae", preset="tiny", batch_size=2, steps=5, checkpoint_every=5,
                           max_minutes=1e-6))  # fmt: skip
    train(cfg, VAETask(cfg), tmp_path, progress=False)
    assert [c.name for c in checkpoints(tmp_path / "checkpoints")] == ["step_1"]
    assert (tmp_path / "model" / "vae" / "config.json").is_file()
    assert json.loads((tmp_path / "export.json").read_text())["steps_done"] == 1
    # stop_after replays the stop at a step count: same schedule, same step, same weights
    replay = tmp_path / "replay"
    train(make_config({**cfg.to_dict(), "max_minutes": 0.0, "stop_after": 1}), VAETask(cfg), replay,
          progress=False)  # fmt: skip
    a, b = (load_file(str(d / "model" / "vae" / "diffusion_pytorch_model.safetensors"))
            for d in (tmp_path, replay))  # fmt: skip
    assert all(torch.equal(a[k], b[k]) for k in a)
    cfg = make_config({**cfg.to_dict(), "max_minutes": 0.0})
    train(cfg, VAETask(cfg), tmp_path, progress=False)
    assert checkpoints(tmp_path / "checkpoints")[-1].name == "step_5"


def test_every_task_names_what_it_keeps_frozen():
    """The loop asks each task for its frozen batch-making modules; the VAE task has none."""
    for name, cls in TASKS.items():
        assert callable(getattr(cls, "frozen", None)) and CONFIGS[name].task == name
    assert VAETask(make_config({"preset": "tiny"})).frozen() == []


def test_x0_loss_weights_turn_the_eps_loss_into_an_x0_loss_at_high_noise():
    """‖ε̂ − ε‖² · (1−ᾱ)/ᾱ equals ‖x̂0 − x0‖², so weights 1/SNR make the two losses agree; they are
    clamped to [1, cap] so low noise keeps the plain ε loss."""
    from spacetime.sampling import NoiseSchedule
    from spacetime.train.common import x0_loss_weights

    abar = NoiseSchedule().alphas_cumprod.float()
    t = torch.tensor([0, 300, 700, 999])
    w = x0_loss_weights(abar[t], 20.0)
    assert w[0] == 1 and w[1] == 1 and w[-1] == 20  # low noise untouched, high noise capped
    assert torch.equal(x0_loss_weights(abar[t], 0.0), torch.ones(4))
    g = torch.Generator().manual_seed(0)
    x0, eps, eps_hat = (torch.randn(3, 8, generator=g) for _ in range(3))
    a = abar[700]
    x0_hat = (a.sqrt() * x0 + (1 - a).sqrt() * eps - (1 - a).sqrt() * eps_hat) / a.sqrt()
    weighted = x0_loss_weights(a.expand(3), 1e9) * (eps_hat - eps).pow(2).mean(1)
    torch.testing.assert_close(weighted, (x0_hat - x0).pow(2).mean(1))
