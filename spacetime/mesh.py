"""python -m spacetime.mesh PROMPT — text to a coloured 3D mesh by score distillation."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

from spacetime.cli import Parser, add_device_flag, entry_point, run, warn_unknown_words
from spacetime.threed import DEFAULT_STEPS, DEFAULT_TEXTURE_SIZE, REFINE_STEPS


def parser() -> Parser:
    p = Parser(
        prog="python -m spacetime.mesh",
        description="Distil a 3D mesh from a text prompt with a multi-view (MVDream) or image "
        "(DreamFusion) diffusion model.",
    )
    p.add_argument("prompt", help="what to make, e.g. 'a red cube'")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("mesh.glb"),
        help="output mesh: .glb (default; textured, with vertex colours too), .obj (textured: "
        "writes NAME.mtl and NAME_albedo.png beside it), .ply (vertex colours)",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"optimisation steps, 1 to 100000 (default {REFINE_STEPS} refining the fast path's "
        f"shape, {DEFAULT_STEPS} from a sphere)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed, 0 to 2**64-1 (default 0)")
    p.add_argument(
        "--guidance",
        type=float,
        default=None,
        help="classifier-free guidance scale (default 50 multi-view, 100 single-view)",
    )
    p.add_argument(
        "--resolution",
        type=int,
        default=128,
        help="marching-cubes lattice points per axis, 8 to 512 (default 128)",
    )
    p.add_argument(
        "--texture-size",
        type=int,
        default=DEFAULT_TEXTURE_SIZE,
        help="side in pixels of the PNG texture the colour is baked into (.glb, .obj): a power of "
        f"two from 16 to 8192, or 0 for vertex colours only (default {DEFAULT_TEXTURE_SIZE})",
    )
    p.add_argument(
        "--faces",
        type=int,
        default=0,
        help="decimate the mesh to about this many faces for viewers (quadric edge collapse; "
        "more where fewer would break the solid), 4 to 10**8, or 0 to keep every face marching "
        "cubes makes (default 0: ~50k-100k at --resolution 128)",
    )
    p.add_argument(
        "--preview", type=Path, default=None, help="also write a turntable of the mesh (.mp4, .gif)"
    )
    p.add_argument(
        "--model",
        help="diffusers folder, single-file .safetensors/.ckpt, or hub id; default: the multi-view "
        "model shipped in the package (the image model with --single-view)",
    )
    p.add_argument(
        "--fast",
        action="store_true",
        help="seconds instead of minutes: the multi-view model's four views read by a "
        "feed-forward reconstructor in one pass (LRM/LGM-style; the shipped one reads the shipped "
        "multi-view model), no score distillation",
    )
    p.add_argument(
        "--init",
        choices=("auto", "sphere", "fast"),
        default="auto",
        help="where score distillation starts: the fast path's shape (fast), a sphere, or auto "
        "(fast with the shipped models, else sphere)",
    )
    p.add_argument(
        "--single-view",
        action="store_true",
        help="DreamFusion: one view per step through a text-to-image model, instead of MVDream's "
        "four views denoised jointly",
    )
    p.add_argument("--negative-prompt", default="", help="what to steer away from")
    add_device_flag(p)
    return p


def loss_bar(desc: str):
    """A tqdm bar driven by optimise()'s Progress reports, showing the loss."""
    from tqdm import tqdm

    bar = None

    def update(p) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=p.steps, desc=desc, unit="step", file=sys.stderr)
        bar.set_postfix(loss=f"{p.loss:.4g}", refresh=False)
        bar.update(p.step - bar.n)
        if p.step == p.steps:
            bar.close()

    return update


def main(argv: list[str] | None = None) -> None:
    def body() -> None:
        args = parser().parse_args(argv)
        from spacetime.devices import pick_device
        from spacetime.errors import SpacetimeError
        from spacetime.formats.load import resolve
        from spacetime.media import check_video_target
        from spacetime.threed.export import check_mesh_target
        from spacetime.threed.pipeline import check_arguments

        # Everything that can be wrong with the request fails here, before a model loads.
        check_arguments(
            args.prompt, args.negative_prompt, args.steps, args.seed, args.guidance,
            args.resolution, args.single_view, args.texture_size, args.faces,
        )  # fmt: skip
        check_mesh_target(args.out)
        # A .ply holds vertex colours only: no texture to bake.
        texture_size = 0 if args.out.suffix.lower() == ".ply" else args.texture_size
        if args.preview is not None:
            if args.preview.suffix == "":  # a turntable is one file, never a folder of frames
                raise SpacetimeError(
                    f"--preview must be a .mp4, .gif or .webp file, got {args.preview}"
                )
            check_video_target(args.preview)
        device = pick_device(args.device)
        from spacetime.threed.pipeline import (
            default_model_for,
            load_model,
            reconstructor_for,
            text_to_mesh,
        )

        reconstructor = reconstructor_for(not args.model, args.single_view, args.fast, args.init)
        model = resolve(args.model or default_model_for(args.single_view))
        components = load_model(model, device)
        # The shared warning reads a pipeline's components; a namespace stands in for one.
        warn_unknown_words(
            SimpleNamespace(components=components), args.prompt, args.negative_prompt
        )
        if not args.single_view and not components.unet.takes_cameras:
            print(
                "warning: this model has no camera conditioning; its four views are denoised "
                "independently (use a multi-view model, or --single-view for view prompts)",
                file=sys.stderr,
            )
        skipped = 0

        def progress(p) -> None:
            nonlocal skipped
            skipped = p.skipped
            bar(p)

        bar = loss_bar("distilling")
        mesh = text_to_mesh(
            args.prompt, components, fast=args.fast, init=args.init, reconstructor=reconstructor,
            steps=args.steps, seed=args.seed, guidance=args.guidance,
            resolution=args.resolution, single_view=args.single_view,
            negative_prompt=args.negative_prompt, texture_size=texture_size, faces=args.faces,
            progress=progress,
        )  # fmt: skip
        if skipped:
            print(f"warning: {skipped} steps skipped for non-finite gradients", file=sys.stderr)
        if args.faces and len(mesh.faces) > args.faces:  # export.decimate raised the count
            print(
                f"warning: kept {len(mesh.faces)} faces, not {args.faces}: fewer would tear the "
                "solid (holes or pieces)",
                file=sys.stderr,
            )
        from spacetime.threed.export import write_mesh

        write_mesh(mesh, args.out)
        texture = f", a {texture_size}x{texture_size} texture" if texture_size else ""
        print(f"wrote {args.out} ({len(mesh.vertices)} vertices, {len(mesh.faces)} faces{texture})")
        if texture_size and args.out.suffix.lower() == ".obj":
            from spacetime.threed.export import obj_companions

            print(f"wrote {', '.join(map(str, obj_companions(args.out)))}")
        if args.preview is not None:
            from spacetime.media import write_video
            from spacetime.threed.rasterise import turntable

            write_video(args.preview, turntable(mesh), fps=16)
            print(f"wrote {args.preview}")

    run(body)


script = entry_point(main)  # the console script

if __name__ == "__main__":
    script()
