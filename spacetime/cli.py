"""Pieces shared by the `python -m spacetime.*` entry points: flags, checks, errors, progress.

Building a parser imports nothing heavy, so `--help` prints before torch loads; every check of
the request runs before any weights load, so bad input fails in a fraction of a second.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from spacetime.checks import (
    ATTENTION_BACKENDS,
    BETA_SCHEDULES,
    PRECISIONS,
    SAMPLERS,
    TIMESTEP_SPACINGS,
)

EXIT_USAGE, EXIT_INTERRUPTED = 2, 130


class Parser(argparse.ArgumentParser):
    """argparse whose errors are the project's: one `error:` line and exit code 2."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"error: {message} (see {self.prog} --help)\n")


def add_device_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)"
    )


def add_force_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--force",
        action="store_true",
        help="run even when the size asked for needs more memory than this machine has free",
    )


def add_sampling_flags(
    parser: argparse.ArgumentParser, steps: int = 20, prompt_help: str | None = None
) -> None:
    """Flags every generator shares (prompt, model, sampler, seed, size, precision); with
    `prompt_help` the prompt may be left out (given another way, as that help says)."""
    if prompt_help is None:
        parser.add_argument("prompt", help="what to generate, e.g. 'a red circle'")
    else:
        parser.add_argument("prompt", nargs="?", help=prompt_help)
    parser.add_argument(
        "--model",
        help="diffusers folder, single-file .safetensors/.ckpt, or hub id (needs a network); "
        "default: the small world model shipped in the package",
    )
    parser.add_argument("--negative-prompt", default=None, help="what to steer away from")
    parser.add_argument(
        "--steps",
        type=int,
        default=steps,
        help=f"sampling steps, at most the model's schedule length (default {steps})",
    )
    parser.add_argument(
        "--guidance", type=float, default=7.5, help="classifier-free guidance scale (default 7.5)"
    )
    parser.add_argument(
        "--scheduler", choices=SAMPLERS, default="ddim", help="sampler (default ddim)"
    )
    parser.add_argument(
        "--karras", action="store_true", help="Karras sigma spacing (euler, euler-a, dpm++)"
    )
    parser.add_argument(
        "--beta-schedule",
        choices=BETA_SCHEDULES,
        default=None,
        help="override the model's noise schedule, as few-step checkpoints ask: linear for "
        "AnimateLCM and AnimateDiff-Lightning (default: the model's scheduler config)",
    )
    parser.add_argument(
        "--timestep-spacing",
        choices=TIMESTEP_SPACINGS,
        default=None,
        help="override how the sampler spaces its steps: trailing for AnimateDiff-Lightning's "
        "euler (default: the model's scheduler config)",
    )
    parser.add_argument(
        "--eta", type=float, default=0.0, help="DDIM noise (ddim only; 0 = deterministic)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed, 0 to 2**64-1 (default 0)")
    parser.add_argument("--height", type=int, default=None, help="pixels; default: the model's")
    parser.add_argument("--width", type=int, default=None, help="pixels; default: the model's")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="auto = bf16 on CPUs with AMX/AVX512-BF16, fp16 on CUDA, else fp32",
    )
    parser.add_argument(
        "--attention",
        choices=ATTENTION_BACKENDS,
        default="auto",
        help="attention kernel: sdpa (torch's fused scaled-dot-product attention), xformers "
        "(CUDA, needs `pip install spacetime[xformers]`), sliced (query chunks: least memory); "
        "auto = xformers on CUDA when installed, else sdpa",
    )
    add_lora_flag(parser, "--lora", "a LoRA on the image model's layers (kohya/A1111 or PEFT)")
    add_device_flag(parser)
    add_force_flag(parser)


def add_lora_flag(parser: argparse.ArgumentParser, flag: str, what: str) -> None:
    from spacetime.formats.lora_files import shipped_loras

    shipped = ", ".join(shipped_loras()) or "none in this install"
    parser.add_argument(
        flag,
        action="append",
        default=[],
        metavar="PATH[:WEIGHT]",
        help=f"{what}: a .safetensors file, a diffusers LoRA folder or a shipped LoRA's name "
        f"(shipped: {shipped}), at WEIGHT (default 1); repeatable, adapters stack",
    )


def check_loras(values: list[str]) -> list[tuple[str, float]]:
    """`PATH[:WEIGHT]` values → (file, weight), each LoRA found (a file, a diffusers LoRA folder
    or a shipped name), before any weights load."""
    from spacetime.checks import parse_lora_arg
    from spacetime.formats.lora_files import find_lora

    loras = [parse_lora_arg(value) for value in values]
    return [(str(find_lora(path)), weight) for path, weight in loras]


def add_strength_flag(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--strength",
        type=float,
        default=None,
        help=f"how much of the {what} to redo, in (0, 1] (SDEdit: it is noised to the step this "
        "picks and the last strength x --steps steps run): 1 starts from noise, lower keeps "
        "more of it (default 0.8, as diffusers)",
    )


def sdedit_options(args: argparse.Namespace, pixels) -> dict:
    """For an input image or clip, uint8 (..., h, w, 3): --height/--width default to its size
    rounded down to multiples of 8, and `strength` for the request (--strength, or 0.8)."""
    from spacetime.errors import ArgumentValueError

    if pixels is None:
        if args.strength is not None:
            raise ArgumentValueError("--strength applies to an input (--init-image, --init-video)")
        return {}
    size_from(args, pixels)
    return {"strength": 0.8 if args.strength is None else args.strength}


def size_from(args: argparse.Namespace, pixels) -> None:
    """--height/--width, where not given, from an input's size rounded down to multiples of 8."""
    height, width = pixels.shape[-3:-1]
    args.height = max(8, height // 8 * 8) if args.height is None else args.height
    args.width = max(8, width // 8 * 8) if args.width is None else args.width


def set_schedule(pipe, args: argparse.Namespace) -> None:
    """Apply --beta-schedule / --timestep-spacing over the model's scheduler config."""
    overrides = {"beta_schedule": args.beta_schedule, "timestep_spacing": args.timestep_spacing}
    pipe.set_schedule(**{k: v for k, v in overrides.items() if v is not None})


def load_loras(pipe, loras: list[tuple[str, float]], motion: bool = False) -> None:
    for path, weight in loras:
        pipe.load_lora(path, weight=weight, motion=motion)


@dataclass(frozen=True)
class ModelFacts:
    """What the checks need to know of a model, read from its JSON configs without its weights;
    SD 1.x's values where a file (single checkpoint) does not say."""

    schedule_length: int = 1000
    lcm_steps: int = 50  # the lcm sampler's most steps: the schedule's original_inference_steps
    sample_size: int = 64  # latent pixels per side
    downscale: int = 8
    vae_width: int = 128  # the decoder's widest (full-resolution) level
    unet_width: int = 320  # the U-Net's first level

    @classmethod
    def of(cls, model: Path) -> ModelFacts:
        if not model.is_dir():
            return cls()

        def config(part: str, name: str = "config.json") -> dict:
            try:
                found = json.loads((model / part / name).read_text())
            except (OSError, ValueError):
                return {}  # loading reports a missing or damaged file, naming it
            return found if isinstance(found, dict) else {}

        scheduler, unet, vae = (
            config("scheduler", "scheduler_config.json"),
            config("unet"),
            config("vae"),
        )
        widths = vae.get("block_out_channels") or [cls.vae_width]
        facts = dict(
            schedule_length=scheduler.get("num_train_timesteps", cls.schedule_length),
            lcm_steps=scheduler.get("original_inference_steps", cls.lcm_steps),
            sample_size=unet.get("sample_size", cls.sample_size),
            downscale=2 ** (len(widths) - 1),
            vae_width=widths[0],
            unet_width=(unet.get("block_out_channels") or [cls.unet_width])[0],
        )  # fmt: skip
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in facts.values()):
            return cls()
        return cls(**facts)


def check_generation(
    args: argparse.Namespace, travel: dict[int, str] | None = None, **extra
) -> tuple[dict, Path, object]:
    """Every shared flag alone and together, before any weights load: the request's values
    (GenerationRequest), the model's existence and limits, the device, and the memory the size
    needs; `travel`, prompt travel's {frame: prompt}, in place of args.prompt. Returns
    (GenerationRequest fields, local model path, device)."""
    from spacetime import checks
    from spacetime.devices import pick_device
    from spacetime.formats.load import resolve
    from spacetime.pipelines.diffusion import GenerationRequest

    options = dict(
        steps=args.steps, guidance=args.guidance, scheduler=args.scheduler, karras=args.karras,
        eta=args.eta, seed=args.seed, **extra,
    )  # fmt: skip
    device = pick_device(args.device)
    use_attention_flag(args.attention, device)
    model = resolve(base_model(args))
    facts = ModelFacts.of(model)
    size = facts.sample_size * facts.downscale  # the model's default; 0 is checked, not replaced
    height = size if args.height is None else args.height
    width = size if args.width is None else args.width
    negatives = () if args.negative_prompt is None else (args.negative_prompt,)
    prompts, key_frames = (args.prompt,), ()
    if travel is not None:
        key_frames, prompts = checks.prompt_travel(travel)
    req = GenerationRequest(
        prompts, negatives, height=height, width=width, key_frames=key_frames, **options
    )
    checks.steps_fit(args.steps, args.scheduler, facts.schedule_length, facts.lcm_steps)
    check_memory(args, device, height, width, req.frames, req.num_images, facts)
    return options, model, device


def use_attention_flag(name: str, device) -> None:
    """--attention: the process's attention kernel, set before any model loads."""
    from spacetime.errors import ArgumentValueError
    from spacetime.models.attention import set_attention_backend, xformers_available

    if name == "xformers" and not (device.type == "cuda" and xformers_available()):
        raise ArgumentValueError(
            "--attention xformers runs on CUDA with xformers installed "
            f"(`pip install spacetime[xformers]`); this run is on {device.type}"
            + ("" if xformers_available() else " without xformers")
        )
    set_attention_backend(name)


def report_device(device) -> None:
    """What a finished run used of its accelerator: the CUDA memory peak (nothing on CPU)."""
    if device.type == "cuda":
        import torch

        print(f"peak CUDA memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")


def check_memory(args, device, height: int, width: int, frames: int, batch: int, facts) -> None:
    """Refuse, unless --force, a size whose lower-bound memory estimate exceeds what is free."""
    from spacetime.errors import ArgumentValueError
    from spacetime.memory import available_bytes, generation_bytes

    need = generation_bytes(height, width, frames, batch, facts.vae_width, facts.unet_width)
    if device.type == "cuda":
        import torch

        free = torch.cuda.mem_get_info(device)[0]
    else:
        free = available_bytes()
    if free is not None and need > free and not args.force:
        raise ArgumentValueError(
            f"{width}x{height} pixels x {frames} frames x {batch} needs at least "
            f"{need / 2**30:.1f} GiB, more than the {free / 2**30:.1f} GiB free on {device.type}; "
            "ask for less, or pass --force to try anyway"
        )


def base_model(args: argparse.Namespace):
    """--model, or the image model shipped in the package."""
    from spacetime.errors import SpacetimeError
    from spacetime.formats.load import default_model

    model = args.model or default_model("image")
    if model is None:
        raise SpacetimeError(
            "--model is required (this install has no default model): give a diffusers "
            "folder, a .safetensors/.ckpt file or a hub id"
        )
    return model


def run(body: Callable[[], None]) -> None:
    """Run a CLI body: user errors become one `error:` line and exit code 2; Ctrl-C (or SIGTERM)
    one line and exit code 130, after the writers' cleanup has run as the exception unwound."""
    from spacetime.errors import SpacetimeError

    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        body()
    except SpacetimeError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not add a traceback
        print("interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def entry_point(main: Callable[[], None], fast: bool = True) -> Callable[[], None]:
    """A console-script / `python -m` entry: main(), then (fast) leave without interpreter
    teardown. An interrupted run leaves by os._exit(130) too: CPython ends a process whose
    start-up saw a KeyboardInterrupt by re-raising SIGINT at exit, which would replace the
    exit code 130 with death by signal."""

    def start() -> None:
        try:
            main()
        except SystemExit as e:
            if e.code != EXIT_INTERRUPTED:
                raise
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(EXIT_INTERRUPTED)
        if fast:
            fast_exit()

    return start


def fast_exit() -> None:
    """Leave without interpreter teardown (~0.5 s of freeing tensors and modules that the OS
    reclaims anyway). Only for entry points, after their output is written."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def progress_bar(desc: str):
    """A tqdm bar driven by (done, total) callbacks."""
    from tqdm import tqdm

    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=desc, unit="step", file=sys.stderr)
        bar.update(done - bar.n)
        if done == total:
            bar.close()

    return update


def warn_unknown_words(pipe, *prompts: str | None) -> None:
    """Small closed-vocabulary models (the embedded default) cannot read other words: say so."""
    text = pipe.components.text_encoder
    unknown = sorted({w for p in prompts if p for w in text.unknown_words(p)})
    if unknown:
        print(
            f"warning: the model does not know {', '.join(map(repr, unknown))}; "
            f"it knows: {', '.join(text.vocabulary())}",
            file=sys.stderr,
        )
