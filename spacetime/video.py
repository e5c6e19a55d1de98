"""python -m spacetime.video PROMPT — text to clip with an inflated (spatio-temporal) U-Net."""

from __future__ import annotations

import argparse
from pathlib import Path

from spacetime.cli import (
    Parser,
    add_lora_flag,
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
    size_from,
    warn_unknown_words,
)
from spacetime.control_flags import add_control_flags, check_controls, load_controls


def parser() -> Parser:
    p = Parser(
        prog="python -m spacetime.video",
        description="Generate a short clip from a text prompt: an image model inflated with motion modules.",
    )
    add_sampling_flags(
        p, prompt_help="what to generate, e.g. 'a red circle moving right'; leave it out for "
        "prompt travel (--prompt-at, --prompt-file)",
    )  # fmt: skip
    p.add_argument(
        "--prompt-at",
        nargs=2,
        action="append",
        default=[],
        metavar=("FRAME", "PROMPT"),
        help="prompt travel: PROMPT from key frame FRAME on (repeatable, increasing, the first at "
        "0); text embeddings are interpolated between key frames, as diffusers' FreeNoise does",
    )
    p.add_argument(
        "--prompt-file",
        type=Path,
        default=None,
        help="prompt travel from a JSON or YAML file mapping key frames to prompts, "
        '{"0": "a red circle", "12": "a blue circle"}',
    )
    p.add_argument(
        "--frames",
        type=int,
        default=None,
        help="frames to generate (default 16, or all of --init-video's; 1 = an image); with "
        "--init-video, its first FRAMES frames",
    )
    p.add_argument(
        "--init-video",
        type=Path,
        default=None,
        help="video-to-video: start from this clip (.mp4 or another file PyAV reads, .gif, "
        ".webp, or a folder of frame images in name order), noised by --strength; its frame "
        "count, fps and size (rounded down to multiples of 8) are the defaults, and frames are "
        "resized (Lanczos) to the size asked for",
    )
    add_strength_flag(p, "--init-video")
    p.add_argument(
        "--first-frame",
        type=Path,
        default=None,
        help="an image (png/jpg/webp) the clip starts from: its latent is frame 0, clean, and "
        "the rest is denoised around it; with the default world model the shipped first-frame "
        "motion LoRA continues it (other models need a first-frame LoRA of their own, "
        "--motion-lora, or, on SD 1.5 models, AnimateDiff's SparseCtrl RGB: --control "
        "v3_sd15_sparsectrl_rgb.ckpt --keyframe 0:IMAGE); its size is the default "
        "--height/--width",
    )
    p.add_argument(
        "--context-frames",
        type=int,
        default=None,
        help="frames per motion-module window for long clips: longer clips are denoised in "
        "overlapping windows blended without seams (default: 16 once --frames exceeds the frame "
        "positions the motion module knows, else the whole clip at once)",
    )
    p.add_argument(
        "--context-overlap",
        type=int,
        default=None,
        help="frames that neighbouring windows share (default: a quarter of the window)",
    )
    p.add_argument(
        "--free-init",
        type=int,
        default=None,
        metavar="N",
        help="FreeInit: sample N times, each pass starting from the last clip's low frequencies "
        "(steadier colour and layout across frames, N times the sampling time); 0 = off "
        "(default: what the motion package's config.json records, 3 for the shipped world "
        "module; off otherwise)",
    )
    p.add_argument(
        "--free-init-fast",
        action="store_true",
        help="FreeInit coarse to fine: pass i of N takes steps*(i+1)/N steps",
    )
    p.add_argument(
        "--fps",
        type=int,
        default=None,
        help="frames per second of the written clip (default 8, or --init-video's)",
    )
    p.add_argument(
        "--motion",
        type=Path,
        default=None,
        help="motion module: a diffusers MotionAdapter folder or an original AnimateDiff file "
        "(mm_sd_v15*.safetensors); default: the shipped one",
    )
    add_lora_flag(p, "--motion-lora", "a motion LoRA on the motion modules (a camera move)")
    add_control_flags(p, video=True)
    p.add_argument(
        "--vae",
        type=Path,
        default=None,
        help="video VAE that decodes the clip: a diffusers AutoencoderKLTemporalDecoder folder "
        "(e.g. SVD's, for SD 1.x models); default: the shipped temporal decoder with the default "
        "model, the model's own image VAE (frame by frame) otherwise",
    )
    p.add_argument(
        "--vae-per-frame",
        action="store_true",
        help="decode frame by frame with the model's image VAE (no temporal decoder), to compare",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("clip.mp4"),
        help="clip.mp4 (H.264), clip.gif, clip.webp, or a folder for frame_0000.png … (default clip.mp4)",
    )
    return p


def travel_prompts(args: argparse.Namespace) -> dict[int, str] | None:
    """Prompt travel's {frame: prompt} from --prompt-at or --prompt-file, or None for a plain
    prompt; exactly one of the three ways is given."""
    from spacetime.errors import ArgumentValueError

    given = [bool(args.prompt), bool(args.prompt_at), args.prompt_file is not None]
    if sum(given) != 1:
        raise ArgumentValueError(
            "give one of: a prompt, --prompt-at FRAME PROMPT (repeatable) or --prompt-file FILE"
        )
    if args.prompt:
        return None
    if args.prompt_at:
        pairs = args.prompt_at
        frames = [frame for frame, _ in pairs]
        for a, b in zip(frames[:-1], frames[1:], strict=True):
            if _frame(a) >= _frame(b):
                raise ArgumentValueError(f"--prompt-at key frames must increase, got {a} then {b}")
        return {_frame(frame): prompt for frame, prompt in pairs}
    return read_travel_file(args.prompt_file)


def _frame(text: str) -> int:
    from spacetime.errors import ArgumentValueError

    try:
        return int(text)
    except ValueError:
        raise ArgumentValueError(f"a key frame must be an integer, got {text!r}") from None


def read_travel_file(path: Path) -> dict[int, str]:
    """{frame: prompt} from a JSON or YAML mapping (keys may be strings of digits)."""
    import yaml

    from spacetime.errors import ArgumentValueError

    try:
        data = yaml.safe_load(path.read_text())  # YAML reads JSON too
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ArgumentValueError(f"--prompt-file {path}: {e}") from None
    if not isinstance(data, dict) or not data:
        raise ArgumentValueError(
            f"--prompt-file {path}: expected a mapping of key frames to prompts"
        )
    return {_frame(str(frame)): prompt for frame, prompt in data.items()}


def free_init_option(args: argparse.Namespace) -> dict:
    """`free_init` for the request when the flags say; nothing leaves the pipeline's default."""
    from spacetime import checks
    from spacetime.errors import ArgumentValueError
    from spacetime.free_init import FreeInit

    if args.free_init is None:
        if args.free_init_fast:
            raise ArgumentValueError("--free-init-fast needs --free-init N")
        return {}
    if checks.integer("free_init", args.free_init, 0) == 0:
        if args.free_init_fast:
            raise ArgumentValueError("--free-init-fast needs --free-init N with N >= 1")
        return {"free_init": None}
    return {"free_init": FreeInit(iterations=args.free_init, fast=args.free_init_fast)}


def main(argv: list[str] | None = None) -> None:
    def body() -> None:
        args = parser().parse_args(argv)
        from spacetime import checks
        from spacetime.errors import ArgumentValueError
        from spacetime.media import check_video_target, read_image, read_video, write_video

        check_video_target(args.out)
        video, fps = (None, None) if args.init_video is None else read_video(args.init_video)
        if video is not None:
            frames = len(video) if args.frames is None else checks.integer("frames", args.frames, 1)
            if frames > len(video):
                raise ArgumentValueError(
                    f"--frames {frames} but {args.init_video} has {len(video)}"
                )
            video = video[:frames]
        first = None if args.first_frame is None else read_image(args.first_frame)
        if first is not None and video is None:
            size_from(args, first)
        control_requests = check_controls(args)
        args.frames = (
            len(video) if video is not None else (16 if args.frames is None else args.frames)
        )
        args.fps = args.fps if args.fps is not None else max(1, round(fps or 8))
        checks.integer("fps", args.fps, 1)
        if args.vae is not None and args.vae_per_frame:
            raise ArgumentValueError("--vae and --vae-per-frame exclude each other")
        for flag, path in (("--motion", args.motion), ("--vae", args.vae)):
            if path is not None and not path.exists():
                raise ArgumentValueError(f"{flag}: nothing at {path.absolute()}")
        loras = check_loras(args.lora)
        motion_loras = check_loras(args.motion_lora)
        travel = travel_prompts(args)
        options, model, device = check_generation(
            args,
            travel,
            frames=args.frames,
            context_frames=args.context_frames,
            context_overlap=args.context_overlap,
            **free_init_option(args),
            **sdedit_options(args, video),
        )
        from spacetime.pipelines.video import VideoPipeline

        # The shipped motion module and temporal decoder belong to the shipped model; a model
        # given by path brings its own temporal layers (ModelScope) or takes --motion.
        vae = "per-frame" if args.vae_per_frame else args.vae
        pipe = VideoPipeline.from_pretrained(
            model if args.model else None, device, args.precision, args.motion, vae
        )
        if args.frames > 1 and pipe.components.unet.inflation is None:
            raise ArgumentValueError(
                "this model has no temporal layers: give --motion (a diffusers MotionAdapter "
                "folder or an AnimateDiff file), or --frames 1 for an image"
            )
        load_loras(pipe, loras)
        set_schedule(pipe, args)
        if first is not None and not args.model and args.motion is None:
            pipe.load_lora("first-frame", motion=True)  # the world model's, shipped
        load_loras(pipe, motion_loras, motion=True)
        controls = load_controls(control_requests, pipe.components.unet, args.guess_mode)
        warn_unknown_words(pipe, args.prompt, *(travel or {}).values(), args.negative_prompt)
        clip = pipe(
            travel or args.prompt, args.negative_prompt, video=video, first_frame=first,
            controls=controls, height=args.height,
            width=args.width,
            progress=progress_bar("sampling"), **options,
        )[0]  # fmt: skip
        write_video(args.out, clip, args.fps)
        print(
            f"wrote {args.out} ({clip.shape[0]} frames, {clip.shape[2]}x{clip.shape[1]}, {args.fps} fps)"
        )
        report_device(device)

    run(body)


script = entry_point(main)  # the console script

if __name__ == "__main__":
    script()
