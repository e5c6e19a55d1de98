"""python -m spacetime.image PROMPT — text to image with a Stable-Diffusion-family model."""

from __future__ import annotations

from pathlib import Path

from spacetime.cli import (
    Parser,
    add_sampling_flags,
    add_strength_flag,
    check_generation,
    check_loras,
    entry_point,
    load_loras,
    progress_bar,
    report_device,
    run,
    sdedit_options,
    set_schedule,
    warn_unknown_words,
)
from spacetime.control_flags import add_control_flags, check_controls, load_controls


def parser() -> Parser:
    p = Parser(
        prog="python -m spacetime.image",
        description="Generate images from a text prompt with a latent diffusion model.",
    )
    add_sampling_flags(p)
    p.add_argument("--num-images", type=int, default=1, help="images per prompt (default 1)")
    p.add_argument(
        "--clip-skip", type=int, default=None, help="skip the last k CLIP layers (k >= 0)"
    )
    p.add_argument(
        "--init-image",
        type=Path,
        default=None,
        help="image-to-image: start from this image (png/jpg/webp), noised by --strength; its "
        "size, rounded down to multiples of 8, is the default --height/--width, and it is "
        "resized (Lanczos) to the size asked for",
    )
    add_strength_flag(p, "--init-image")
    add_control_flags(p, video=False)
    p.add_argument(
        "--out",
        type=Path,
        default=Path("out.png"),
        help="output image (.png/.jpg/.webp); several images become out-0.png, out-1.png, …",
    )
    return p


def main(argv: list[str] | None = None) -> None:
    def body() -> None:
        args = parser().parse_args(argv)
        from spacetime import checks
        from spacetime.media import (
            IMAGE_SUFFIXES,
            check_writable,
            numbered,
            read_image,
            write_image,
        )

        # --num-images decides the file names, so it is checked before them.
        count = checks.integer("num_images", args.num_images, 1)
        for path in numbered(args.out, count):
            check_writable(path, IMAGE_SUFFIXES)
        loras = check_loras(args.lora)
        image = None if args.init_image is None else read_image(args.init_image)
        control_requests = check_controls(args)
        options, model, device = check_generation(
            args, num_images=args.num_images, clip_skip=args.clip_skip,
            **sdedit_options(args, image),
        )  # fmt: skip
        from spacetime.pipelines.image import ImagePipeline

        pipe = ImagePipeline.from_pretrained(model, device, args.precision)
        load_loras(pipe, loras)
        set_schedule(pipe, args)
        controls = load_controls(control_requests, pipe.components.unet, args.guess_mode)
        warn_unknown_words(pipe, args.prompt, args.negative_prompt)
        images = pipe(
            args.prompt, args.negative_prompt, image=image, controls=controls, height=args.height,
            width=args.width, progress=progress_bar("sampling"), **options,
        )  # fmt: skip
        for path, pixels in zip(numbered(args.out, len(images)), images, strict=True):
            write_image(path, pixels)
            print(f"wrote {path}")
        report_device(device)

    run(body)


script = entry_point(main)  # the console script

if __name__ == "__main__":
    script()
