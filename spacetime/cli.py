"""Pieces shared by the `python -m spacetime.*` entry points: common flags, errors, progress."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable


def add_sampling_flags(parser: argparse.ArgumentParser, steps: int = 20) -> None:
    """Flags every generator shares (prompt, model, sampler, seed, size, precision)."""
    from spacetime.sampling import SAMPLERS

    parser.add_argument("prompt", help="what to generate, e.g. 'a red circle'")
    parser.add_argument(
        "--model",
        help="diffusers folder, single-file .safetensors/.ckpt, or hub id (needs a network); "
        "default: the small world model shipped in the package",
    )
    parser.add_argument("--negative-prompt", default=None, help="what to steer away from")
    parser.add_argument(
        "--steps", type=int, default=steps, help=f"sampling steps (default {steps})"
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
    parser.add_argument("--eta", type=float, default=0.0, help="DDIM noise (0 = deterministic)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--height", type=int, default=None, help="pixels; default: the model's")
    parser.add_argument("--width", type=int, default=None, help="pixels; default: the model's")
    parser.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16", "fp16"),
        default="auto",
        help="auto = bf16 on CPUs with AMX/AVX512-BF16, fp16 on CUDA, else fp32",
    )
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")


def sampling_options(args: argparse.Namespace, **extra) -> dict:
    """GenerationRequest fields from the shared flags; validated before the model loads, so bad
    input fails in a fraction of a second."""
    from spacetime.pipelines.diffusion import GenerationRequest

    options = dict(
        steps=args.steps, guidance=args.guidance, scheduler=args.scheduler, karras=args.karras,
        eta=args.eta, seed=args.seed, **extra,
    )  # fmt: skip
    GenerationRequest(
        (args.prompt,), (), height=args.height or 512, width=args.width or 512, **options
    )
    return options


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


def run(main: Callable[[], None]) -> None:
    """Run a CLI body; user errors become one line on stderr and exit code 2."""
    from spacetime.errors import SpacetimeError

    try:
        main()
    except SpacetimeError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def fast_exit() -> None:
    """Leave without interpreter teardown (~0.5 s of freeing tensors and modules that the OS
    reclaims anyway). Only for `python -m` entry points, after their output is written."""
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


def pick_device(name: str | None) -> str:
    import torch

    if name:
        return name
    return "cuda" if torch.cuda.is_available() else "cpu"


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
