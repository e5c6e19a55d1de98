"""Evaluate the world ControlNet and ship it in the package as `world-mask`.

    python tools/ship_controlnet.py --run runs/world-controlnet

Writes spacetime/assets/controlnet/world-mask/ (config.json, weights in fp16, MODEL_CARD.md,
metrics.json) and the README's pictures docs/images/control_*.png / .gif (`--pictures`: only
those). Every held-out scene
prompt (colour x shape x background combinations never trained on) gets --layouts silhouettes of
its shape at random places and sizes; the shipped image model samples each (DDIM 20 steps,
guidance 7.5, as the CLI) with the silhouette as control image and, on the same seeds, without
it. The oracle reads whether the object sits where the silhouette is (centre within --position
px) in its shape, and whether the prompt's colour and background hold.
"""

from __future__ import annotations

import json
import math

from _shared import ROOT, publish, run_facts, ship_parser, stage

DEST = ROOT / "spacetime" / "assets" / "controlnet" / "world-mask"


def layouts(prompts: list[str], per_prompt: int, seed: int) -> list:
    """(prompt, Scene) pairs: the prompt's shape, colour and background at a random place and
    size, as the world samples them."""
    import numpy as np

    from spacetime.world import Scene, parse_caption, sample_scenes

    rng = np.random.default_rng(seed)
    pairs = []
    for prompt in prompts:
        spec = parse_caption(prompt)
        for where in sample_scenes(rng, per_prompt, "train"):  # places and sizes only
            pairs.append((prompt, Scene(spec.shape, spec.colour, spec.background, where.centre,
                                        where.size)))  # fmt: skip
    return pairs


def silhouette(scene):
    """The control image of a scene: its shape in white on black, as the mask preprocessor
    makes of a render."""
    from spacetime.world import Scene

    return Scene(scene.shape, "white", "black", scene.centre, scene.size).render()


def evaluate(pipe, net, pairs, position: float, controlled: bool) -> dict:
    import numpy as np

    from spacetime.control import Control
    from spacetime.eval.oracle import read_images

    images = np.concatenate([
        pipe(prompt, seed=i, controls=[Control(net, silhouette(scene))] if controlled else ())
        for i, (prompt, scene) in enumerate(pairs)
    ])  # fmt: skip
    readings = read_images(images)

    def placed(r, s) -> bool:
        return r.centre is not None and math.dist(r.centre, s.centre) <= position

    rows = list(zip(readings, (s for _, s in pairs), strict=True))
    return {
        "layout": round(float(np.mean([placed(r, s) and r.shape == s.shape for r, s in rows])), 4),
        "position": round(float(np.mean([placed(r, s) for r, s in rows])), 4),
        "shape": round(float(np.mean([r.shape == s.shape for r, s in rows])), 4),
        "colour_and_background": round(float(np.mean(
            [(r.colour, r.background) == (s.colour, s.background) for r, s in rows])), 4),
        "images": len(rows),
    }  # fmt: skip


def main() -> None:
    p = ship_parser(__doc__, "runs/world-controlnet")
    p.add_argument("--layouts", type=int, default=4, help="silhouettes per held-out prompt")
    p.add_argument("--position", type=float, default=4.0, help="px: the centre counts within this")
    p.add_argument("--dry-run", action="store_true", help="print the metrics, ship nothing")
    p.add_argument("--pictures", action="store_true", help="only (re)write the README's pictures")
    args = p.parse_args()
    if args.pictures:
        write_pictures()
        return

    from spacetime.formats.controlnet import load_controlnet
    from spacetime.pipelines.image import ImagePipeline
    from spacetime.world import heldout_prompts

    staging = stage(args.run / "model", DEST)
    pipe = ImagePipeline.from_pretrained(precision="fp32")  # the CLI's world model
    net = load_controlnet(staging)
    pairs = layouts(heldout_prompts(), args.layouts, seed=2026)
    rows = {
        "with the silhouette": evaluate(pipe, net, pairs, args.position, True),
        "prompt alone (chance)": evaluate(pipe, net, pairs, args.position, False),
    }
    print(json.dumps(rows), flush=True)
    if args.dry_run:
        return
    card = {
        "heldout": rows,
        "position_tolerance_px": args.position,
        "layouts_per_prompt": args.layouts,
        "steps_done": json.loads((args.run / "export.json").read_text())["steps_done"],
        **run_facts(args.run, staging, args.machine),
    }
    publish(staging, DEST, card, model_card(card))
    write_pictures()


def write_pictures() -> None:
    """The README's example with the shipped ControlNet: a silhouette → an image, and a
    silhouette moving along a diagonal (a path the world's clips never take) → a clip that follows
    it, the ControlNet on every frame (seed 2: on seeds 0-3 the oracle reads the blue background in
    15 or 16 of the 16 frames)."""
    import numpy as np

    from spacetime.control import Control
    from spacetime.formats.controlnet import load_controlnet
    from spacetime.media import write_image, write_video
    from spacetime.pipelines.image import ImagePipeline
    from spacetime.pipelines.video import VideoPipeline
    from spacetime.world import Scene

    net = load_controlnet(DEST)
    images = ROOT / "docs" / "images"
    control = silhouette(Scene("triangle", "white", "black", (20.0, 42.0), 13.0))
    write_image(images / "control_mask.png", control)
    image = ImagePipeline.from_pretrained(precision="fp32")
    write_image(images / "control_image.png",
                image("a yellow triangle on a blue background", controls=[Control(net, control)])[0])  # fmt: skip
    path = np.stack([
        silhouette(Scene("triangle", "white", "black", (16.0 + 2.0 * t, 46.0 - 1.8 * t), 11.0))
        for t in range(16)
    ])  # fmt: skip
    write_video(images / "control_path.gif", path, fps=8)
    video = VideoPipeline.from_pretrained(precision="fp32")
    clip = video("a yellow triangle moving right on a blue background", seed=2,
                 controls=[Control(net, path)])[0]  # fmt: skip
    write_video(images / "control_clip.gif", clip, fps=8)


def model_card(card: dict) -> str:
    cfg = card["config"]
    rows = "\n".join(
        f"| {name} | {m['layout']:.1%} | {m['position']:.1%} | {m['shape']:.1%} | "
        f"{m['colour_and_background']:.1%} |"
        for name, m in card["heldout"].items()
    )
    images = next(iter(card["heldout"].values()))["images"]
    return f"""# world-mask: a ControlNet that puts the world's object where a silhouette says

A ControlNet (Zhang et al. 2023) for the default image model: a copy of its U-Net's encoder, a
small encoder of the control image and zero-initialised 1x1 convolutions into the U-Net's skips.
It reads a silhouette (white shape on black, 64x64; the `mask` preprocessor makes one of any world
picture) and steers the object to its place and shape, while the prompt keeps the colour and
background. {card["shipped_megabytes"]} MB in fp16, diffusers' ControlNetModel layout.

    python -m spacetime.image "a yellow triangle on a blue background" \\
        --control world-mask --control-image silhouette.png
    python -m spacetime.video "a yellow triangle moving right on a blue background" \\
        --control world-mask --control-video silhouettes.gif

## Training

    python -m spacetime.train configs/world_controlnet.yaml --out runs/world-controlnet
    python tools/ship_controlnet.py --run runs/world-controlnet

Seed {cfg["seed"]}; {card["steps_done"]} steps of {cfg["batch_size"]} world scenes (the training
split), each with its `{cfg["condition"]}` control image; the ControlNet starts as a copy of the image
U-Net's encoder, and the image model stays frozen; lr {cfg["lr"]:g} (cosine), EMA {cfg["ema_decay"]},
{cfg["caption_dropout"]:.0%} empty captions (the paper's share). Wall time on {card["machine"]}:
{card["train_wall_seconds"] / 60:.1f} min.

## Metrics ({card["date"]})

Every held-out scene prompt (colour x shape x background combinations never trained on), each with
{card["layouts_per_prompt"]} silhouettes of its shape at places and sizes drawn as the world draws
them: {images} images per row, DDIM 20 steps, guidance 7.5, the same seeds in both rows. The
oracle reads the object's centre (within {card["position_tolerance_px"]:g} px of the silhouette's),
its shape, colour and background. Without the silhouette the place is chance.

| sampler | layout (place and shape) | place | shape | colour and background |
|---|---|---|---|---|
{rows}
"""


if __name__ == "__main__":
    main()
