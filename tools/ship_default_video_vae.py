"""Evaluate the trained temporal decoder and ship it as the package's default video VAE.

    python -m spacetime.train configs/world_video_vae.yaml --out runs/world-video-vae
    python tools/ship_default_video_vae.py --run runs/world-video-vae

Writes spacetime/assets/default-video-vae/ (diffusers AutoencoderKLTemporalDecoder layout, fp16,
MODEL_CARD.md, metrics.json): flicker and PSNR on held-out world clips against decoding the same
latents frame by frame with the image VAE, decoded the way the video pipeline decodes.
"""

from __future__ import annotations

import json
from pathlib import Path

from _shared import ROOT, publish, run_facts, ship_parser, stage

DEST = ROOT / "spacetime" / "assets" / "default-video-vae"


def main() -> None:
    p = ship_parser(__doc__, "runs/world-video-vae")
    p.add_argument("--clips", type=int, default=64, help="held-out clips to evaluate")
    p.add_argument("--frames", type=int, default=16, help="frames per evaluation clip")
    args = p.parse_args()

    from spacetime.eval.video_vae import evaluate_decoder, heldout_clips
    from spacetime.formats.load import default_model, load_components
    from spacetime.formats.video_vae import load_video_vae

    staging = stage(args.run / "model" / "vae", DEST)
    image_vae = load_components(default_model("image")).vae.float().eval()
    video_vae = load_video_vae(staging).float().eval()
    clips = heldout_clips(args.clips, args.frames)
    encode = lambda x: image_vae.encode(x, sample=False)  # noqa: E731
    rows = {
        "frame_by_frame": evaluate_decoder(image_vae.decode, encode, clips),
        "temporal_decoder": evaluate_decoder(
            lambda z: video_vae.decode(z, **video_vae.config.decode_windows(args.frames)),
            encode,
            clips,
        ),
        "temporal_decoder_whole_clip": evaluate_decoder(video_vae.decode, encode, clips),
    }
    base = rows["frame_by_frame"]["flicker_levels"]
    for row in rows.values():
        row["flicker_vs_frame_by_frame"] = round(row["flicker_levels"] / base - 1, 4)

    facts = run_facts(args.run, staging, args.machine)
    card = {
        "heldout": rows,
        "window": video_vae.config.decode_windows(args.frames),
        "stopped": stopped(args.run, facts["config"]),
        **facts,
    }
    publish(staging, DEST, card, model_card(card))
    print(json.dumps(rows, indent=2))


def model_card(c: dict) -> str:
    cfg, rows, w = c["config"], c["heldout"], c["window"]
    names = {
        "frame_by_frame": "image VAE, frame by frame",
        "temporal_decoder": "temporal decoder, pipeline windows",
        "temporal_decoder_whole_clip": "temporal decoder, whole clip at once",
    }
    table = "\n".join(
        f"| {names[k]} | {r['psnr_db']:.2f} | {r['flicker_levels']:.3f} | "
        f"{r['flicker_vs_frame_by_frame']:+.1%} |"
        for k, r in rows.items()
    )
    m = rows["frame_by_frame"]
    return f"""# spacetime default video VAE (temporal decoder, the procedural world)

SVD's `AutoencoderKLTemporalDecoder` design (Blattmann et al. 2023): the default image model's
encoder, frame by frame and frozen, and a decoder whose res blocks gain Conv3d (3,1,1) temporal
branches mixed by learned blends, plus a final temporal conv. Grown from the image VAE's decoder
so that before training it decoded exactly as the image VAE does, then fine-tuned on world clips.
fp16 safetensors, {c["shipped_megabytes"]} MB; it decodes the default image model's latents only.

## Training

    python -m spacetime.train configs/world_video_vae.yaml --out runs/world-video-vae
    python tools/ship_default_video_vae.py --run runs/world-video-vae

Seed {cfg["seed"]}; a {cfg["steps"]}-step schedule × {cfg["batch_size"]} clips of {cfg["frames"]} frames
(posterior samples of the frozen encoder), lr {cfg["lr"]} (warm-up, cosine); loss MSE + 0.5·L1 +
{cfg["temporal_weight"]}·L1 on frame-to-frame differences. {c["stopped"]}
Wall time: {c["train_wall_seconds"] / 60:.1f} min on {c["machine"]}.

## Metrics ({c["date"]})

{m["clips"]} held-out world clips of {m["frames"]} frames, encoded to posterior means by the
image encoder and decoded three ways. Flicker: mean absolute frame-to-frame change (8-bit levels)
on the pixels the ground truth keeps static. The pipeline decodes long clips in windows that keep
{w["chunk_frames"]} frames and see {w["context_frames"]} more on each side (crossfaded): 8-frame windows,
the training length (the temporal GroupNorms pool the frames of a window).

| decoder | PSNR (dB) | flicker | flicker vs frame by frame |
|---|---|---|---|
{table}
"""


def stopped(run: Path, cfg: dict) -> str:
    """Where the run stopped, from its export.json (steps_done) or else its log."""
    export = json.loads((run / "export.json").read_text())
    if "steps_done" in export:
        return f"It ran {export['steps_done']} steps."
    last = json.loads((run / "log.jsonl").read_text().splitlines()[-1])["step"]
    if cfg.get("max_minutes") and last < cfg["steps"]:
        return (
            f"max_minutes={cfg['max_minutes']} stopped it after step {last} and before step "
            f"{last + 50} (the log's last entry; replay with stop_after)."
        )
    return f"It ran {last} steps."


if __name__ == "__main__":
    main()
