"""One training loop for every model, on `accelerate`: the same script runs on 1 CPU or many GPUs.

A task supplies the trainable module (its forward returns the loss), the batch for a given global
step, and an export. Batches and noise are pure functions of (seed, step), so a run killed at any
point and resumed from its last checkpoint ends with the same weights as one never interrupted,
and N processes each taking 1/N of the global batch match one process taking all of it.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import time
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor, nn

from spacetime.errors import CheckpointError, ConfigError
from spacetime.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from spacetime.train.config import TrainConfig
from spacetime.train.ema import EMA, Counter

GRAD_CLIP = 1.0  # max global gradient norm, every recipe's
KEEP_CHECKPOINTS = 2  # the newest two: one to resume from even if the last save was cut short


class Task(Protocol):
    """Everything the loop asks of a task; each task's typed config is its `cfg`."""

    cfg: TrainConfig

    def build(self) -> nn.Module:
        """The trained module: its forward takes a batch's entries and returns the loss.
        Parameters with requires_grad train; the rest (a frozen spatial U-Net) stay as built."""
        ...

    def frozen(self) -> list[nn.Module]:
        """Modules outside the trained one that only make batches (an encoder): the loop moves
        them to the training device and back to the CPU for export."""
        ...

    def batch(self, step: int, rank: int, world: int) -> dict[str, Tensor]:
        """This rank's share of the global batch of `step`: a pure function of (seed, step)."""
        ...

    def export(self, module: nn.Module, folder: Path) -> dict:
        """Write the trained weights (EMA) in diffusers layout to `folder`; return metrics."""
        ...


def checkpoints(folder: Path) -> list[Path]:
    """Completed checkpoints, oldest first (partial ones are hidden dot-folders)."""
    found = [p for p in folder.glob("step_*") if p.is_dir()]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def _lr_lambda(cfg: TrainConfig):
    """Linear warm-up then cosine decay to 10%."""

    def factor(step: int) -> float:
        if step < cfg.warmup:
            return (step + 1) / cfg.warmup
        progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def _agree(accelerator, flag: bool) -> bool:
    """Rank 0's flag, on every rank."""
    if accelerator.num_processes == 1:
        return flag
    from accelerate.utils import broadcast_object_list

    return bool(broadcast_object_list([flag], from_process=0)[0])


def train(
    cfg: TrainConfig, task: Task, out: Path, resume: bool = True, progress: bool = True
) -> Path:
    """Train to cfg.steps (resuming from out/checkpoints if present); export to out/model."""
    from accelerate import Accelerator
    from tqdm import tqdm

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    accelerator = Accelerator(
        mixed_precision=cfg.mixed_precision, cpu=not torch.cuda.is_available()
    )
    rank, world = accelerator.process_index, accelerator.num_processes
    if cfg.batch_size % world:
        raise ConfigError(f"batch_size {cfg.batch_size} does not split over {world} processes")
    out = Path(out)
    ckpt_root = out / "checkpoints"
    if accelerator.is_main_process:
        ckpt_root.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")

    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    module = task.build()
    frozen = task.frozen()
    for m in frozen:
        m.to(accelerator.device)
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg))
    # The LR schedule counts global steps: accelerate's prepared scheduler would step once per
    # process, so it stays ours and is only checkpointed.
    module, opt = accelerator.prepare(module, opt)
    ema = EMA(accelerator.unwrap_model(module), cfg.ema_decay)  # on the training device
    counter = Counter()
    # Checkpointed by spacetime.train.checkpoint, never by accelerate's pickles.
    stateful = {"module": accelerator.unwrap_model(module), "optimizer": opt, "scheduler": sched,
                "ema": ema, "counter": counter}  # fmt: skip

    found = checkpoints(ckpt_root) if resume else []
    if found:
        _load_checkpoint(found[-1], stateful)
        accelerator.print(f"resumed from {found[-1]} (step {counter.step})")

    last = min(cfg.stop_after or cfg.steps, cfg.steps)
    bar = tqdm(
        total=last, initial=counter.step, desc=f"train {cfg.task}", unit="step",
        disable=not (progress and accelerator.is_main_process), dynamic_ncols=True,
    )  # fmt: skip
    log = (out / "log.jsonl").open("a") if accelerator.is_main_process else None
    started = time.time()
    module.train()
    while counter.step < last:
        batch = {
            k: v.to(accelerator.device) for k, v in task.batch(counter.step, rank, world).items()
        }
        with accelerator.autocast():
            loss = module(**batch)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(params if world == 1 else module.parameters(), GRAD_CLIP)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        ema.update(accelerator.unwrap_model(module))
        counter.step += 1
        value = loss.item()
        bar.update(1)
        bar.set_postfix(loss=f"{value:.4f}")
        # Every rank must agree to stop at the same step, so rank 0's clock decides for all.
        out_of_time = cfg.max_minutes > 0 and _agree(
            accelerator, time.time() - started > cfg.max_minutes * 60
        )
        if log is not None and (counter.step % 50 == 0 or counter.step == last or out_of_time):
            entry = {"step": counter.step, "loss": value, "lr": sched.get_last_lr()[0],
                     "seconds": round(time.time() - started, 1)}  # fmt: skip
            log.write(json.dumps(entry) + "\n")
            log.flush()
        if counter.step % cfg.checkpoint_every == 0 or counter.step == last or out_of_time:
            _save_checkpoint(accelerator, ckpt_root, counter.step, KEEP_CHECKPOINTS, stateful)
        if out_of_time:
            accelerator.print(f"stopping at step {counter.step}: max_minutes={cfg.max_minutes}")
            break
    bar.close()

    accelerator.wait_for_everyone()
    model_dir = out / "model"
    for m in frozen:
        m.to("cpu")
    if accelerator.is_main_process:
        final = copy.deepcopy(accelerator.unwrap_model(module))  # keep the live weights intact
        ema.copy_to(final)
        final.eval()
        metrics = task.export(final, model_dir)
        metrics["steps_done"] = counter.step
        metrics["train_seconds_this_run"] = round(time.time() - started, 1)
        (out / "export.json").write_text(json.dumps(metrics, indent=2) + "\n")
    accelerator.wait_for_everyone()
    if log is not None:
        log.close()
    return model_dir


def _load_checkpoint(folder: Path, stateful: dict) -> None:
    """Restore every object's state from a pickle-free checkpoint (see train/checkpoint.py)."""
    state = load_checkpoint(folder)
    try:
        for name, obj in stateful.items():
            obj.load_state_dict(state[name])
        set_rng_state(state["rng"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(
            f"checkpoint {folder} does not fit this run ({type(e).__name__}: {e}); "
            "start over with --no-resume or another --out"
        ) from None


def _save_checkpoint(accelerator, root: Path, step: int, keep: int, stateful: dict) -> None:
    """Save to a hidden folder, then rename: a kill mid-save never leaves a bad 'latest'.
    All ranks hold the same weights, optimizer and counters (DDP), so rank 0 writes them."""
    tmp = root / f".step_{step}"
    if accelerator.is_main_process:
        if tmp.exists():  # left by a kill mid-save
            shutil.rmtree(tmp)
        state = {name: obj.state_dict() for name, obj in stateful.items()}
        save_checkpoint(tmp, {**state, "rng": rng_state()})
        final = root / f"step_{step}"
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        for old in checkpoints(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
