"""Training machinery: configs, data-parallel equivalence, and exact resume after SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from spacetime.train.config import load_config, make_config
from spacetime.train.loop import checkpoints
from spacetime.train.tasks import VAETask

ROOT = Path(__file__).parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def test_unknown_config_keys_are_named(tmp_path):
    with pytest.raises(ValueError, match="unknown config keys: stpes"):
        make_config({"stpes": 3})
    (tmp_path / "c.yaml").write_text("task: vae\nsteps: 7\nlr: 1\n")
    cfg = load_config(tmp_path / "c.yaml", ["batch_size=4"])
    assert (cfg.steps, cfg.lr, cfg.batch_size) == (7, 1.0, 4) and isinstance(cfg.lr, float)
    with pytest.raises(ValueError, match="steps must be int"):
        make_config({"steps": "many"})
    with pytest.raises(ValueError, match="needs `vae:`"):
        make_config({"task": "text2image"})
    # `T | None` keys: "none" from --set is None, anything else the type
    assert load_config(None, ["shared_noise=none"]).shared_noise is None
    assert load_config(None, ["shared_noise=0.5"]).shared_noise == 0.5
    with pytest.raises(ValueError, match="shared_noise must be float"):
        make_config({"shared_noise": "lots"})
    with pytest.raises(ValueError, match=r"shared_noise must be in \[0, 1\)"):
        make_config({"shared_noise": 1.0})
    with pytest.raises(ValueError, match="repair_min < repair_max"):
        make_config({"repair_min": 600, "repair_max": 600})
    with pytest.raises(ValueError, match=r"repair_run must be in \[1, frames\)"):
        make_config({"repair_fraction": 0.5, "repair_run": 16, "frames": 16})


def test_shipped_configs_load():
    for path in (ROOT / "configs").glob("world_*.yaml"):
        load_config(path)


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
        # conv bias feeding a GroupNorm) would move by ±lr at random; adam_eps=1e-6 silences it.
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
    train(make_config({**cfg.__dict__, "max_minutes": 0.0, "stop_after": 1}), VAETask(cfg), replay,
          progress=False)  # fmt: skip
    a, b = (load_file(str(d / "model" / "vae" / "diffusion_pytorch_model.safetensors"))
            for d in (tmp_path, replay))  # fmt: skip
    assert all(torch.equal(a[k], b[k]) for k in a)
    cfg = make_config({**cfg.__dict__, "max_minutes": 0.0})
    train(cfg, VAETask(cfg), tmp_path, progress=False)
    assert checkpoints(tmp_path / "checkpoints")[-1].name == "step_5"


def test_x0_loss_weights_turn_the_eps_loss_into_an_x0_loss_at_high_noise():
    """‖ε̂ − ε‖² · (1−ᾱ)/ᾱ equals ‖x̂0 − x0‖², so weights 1/SNR make the two losses agree; they are
    clamped to [1, cap] so low noise keeps the plain ε loss."""
    from spacetime.sampling import NoiseSchedule
    from spacetime.train.tasks import x0_loss_weights

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


def test_repair_target_leads_a_noisy_wrong_clip_back_to_the_true_one():
    """Given x_t noised from another clip, the target ε is the one whose x0 estimate
    (x_t − √(1−ᾱ) ε) / √ᾱ is the true clip; noised from the true clip, it is the noise itself."""
    from spacetime.sampling import NoiseSchedule, add_noise
    from spacetime.train.tasks import repair_target

    abar = NoiseSchedule().alphas_cumprod.float()[torch.tensor([100, 450])]
    g = torch.Generator().manual_seed(0)
    x0, wrong, eps = (torch.randn(2, 4, 3, 5, 5, generator=g) for _ in range(3))
    a = abar.reshape(2, 1, 1, 1, 1)
    x_t = add_noise(wrong, eps, abar)
    target = repair_target(x_t, x0, abar)
    torch.testing.assert_close((x_t - (1 - a).sqrt() * target) / a.sqrt(), x0)
    torch.testing.assert_close(repair_target(add_noise(x0, eps, abar), x0, abar), eps)
