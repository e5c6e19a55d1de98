"""python -m spacetime.image PROMPT — text to image with a Stable-Diffusion-family model."""

from __future__ import annotations

import argparse
from pathlib import Path

from spacetime.cli import (
    add_sampling_flags,
    base_model,
    fast_exit,
    pick_device,
    progress_bar,
    run,
    sampling_options,
    warn_unknown_words,
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m spacetime.image",
        description="Generate images from a text prompt with a latent diffusion model.",
    )
    add_sampling_flags(p)
    p.add_argument("--num-images", type=int, default=1, help="images per prompt (default 1)")
    p.add_argument("--clip-skip", type=int, default=None, help="skip the last k CLIP layers")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("out.png"),
        help="output image (.png/.jpg/.webp); several images become out-0.png, out-1.png, …",
    )
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)

    def body() -> None:
        from spacetime.media import IMAGE_SUFFIXES, check_writable, numbered, write_image

        check_writable(args.out, IMAGE_SUFFIXES)
        options = sampling_options(args, num_images=args.num_images, clip_skip=args.clip_skip)
        from spacetime.pipelines.image import ImagePipeline

        model = base_model(args)
        pipe = ImagePipeline.from_pretrained(model, pick_device(args.device), args.precision)
        warn_unknown_words(pipe, args.prompt, args.negative_prompt)
        images = pipe(
            args.prompt, args.negative_prompt, height=args.height, width=args.width,
            progress=progress_bar("sampling"), **options,
        )  # fmt: skip
        for path, pixels in zip(numbered(args.out, len(images)), images, strict=True):
            write_image(path, pixels)
            print(f"wrote {path}")

    run(body)


if __name__ == "__main__":
    main()
    fast_exit()
