"""Why a motion module does or does not follow the prompt's direction: three numbers.

    python tools/diagnose_motion.py runs/world-motion/model/motion

1. Text: how far apart the text encoder puts "… moving left" and "… moving right", against two
   colours (the encoder the motion package carries, else the base model's).
2. Response: the ε-loss on training clips with the true caption against the same caption with
   the opposite (flip) or a perpendicular (perp) direction, at several noise levels. A model that
   reads the direction has flip/true well above 1 at high noise.
3. Ceiling: the share of clip-latent variance the direction explains given colour, shape and
   background, and the ε-loss an ideal denoiser that ignores the noisy clip would gain from it
   (SNR · explained variance), the most the prompt can be worth at each noise level.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter

import numpy as np
import torch

from spacetime import world
from spacetime.sampling import NoiseSchedule, add_noise

FLIP = {"left": "right", "right": "left", "up": "down", "down": "up"}
PERP = {"left": "up", "right": "down", "up": "left", "down": "right"}
LEVELS = (100, 300, 500, 700, 850, 950)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("motion", help="a motion adapter folder")
    p.add_argument("--base", default="spacetime/assets/default-image")
    p.add_argument("--clips", type=int, default=24, help="training clips for the response")
    args = p.parse_args()

    from spacetime.pipelines.video import VideoPipeline

    pipe = VideoPipeline.from_pretrained(args.base, "cpu", "fp32", args.motion, "per-frame")
    c = pipe.components
    encode_text = lambda prompts: c.text_encoder.model(c.text_encoder.tokenize(prompts))  # noqa: E731
    report = {}
    with torch.no_grad():
        left, right, blue = (
            encode_text([f"a {colour} square moving {d}"])
            for colour, d in (("red", "left"), ("red", "right"), ("blue", "left"))
        )
        report["text"] = {
            "left_vs_right": round((left - right).norm().item(), 3),
            "red_vs_blue": round((left - blue).norm().item(), 3),
            "norm": round(left.norm().item(), 3),
        }

        clips = world.sample_clips(np.random.default_rng(123), args.clips, "train", 16)
        x0 = c.vae.encode(world.clips_to_tensor(world.render_clips(clips)), sample=False)
        captions = {"true": [clip.caption() for clip in clips]}
        for name, table in (("flip", FLIP), ("perp", PERP)):
            captions[name] = [
                clip.caption().replace(
                    f"moving {clip.direction}", f"moving {table[clip.direction]}"
                )
                for clip in clips
            ]
        contexts = {k: encode_text(v) for k, v in captions.items()}
        abar = NoiseSchedule().alphas_cumprod.float()
        g = torch.Generator().manual_seed(0)
        response = {}
        for t in LEVELS:
            noise = torch.randn(x0.shape, generator=g)
            x_t = add_noise(x0, noise, abar[t])
            steps = torch.full((len(clips),), t)
            loss = {
                k: ((c.unet(x_t, steps, ctx) - noise) ** 2).mean().item()
                for k, ctx in contexts.items()
            }
            response[t] = {
                "flip/true": round(loss["flip"] / loss["true"], 4),
                "perp/true": round(loss["perp"] / loss["true"], 4),
                "true_loss": round(loss["true"], 5),
            }
        report["response"] = response
        report["ceiling"] = ceiling(c.vae, abar)
    print(json.dumps(report, indent=2))


def ceiling(vae, abar: torch.Tensor, n: int = 6000) -> dict:
    """Direction's share of latent variance within the most common colour × shape × background."""
    clips = world.sample_clips(np.random.default_rng(0), n, "train", 16)
    combo = Counter((c.colour, c.shape, c.background) for c in clips).most_common(1)[0][0]
    chosen = [c for c in clips if (c.colour, c.shape, c.background) == combo]
    x = world.clips_to_tensor(world.render_clips(chosen))
    z = torch.cat([vae.encode(x[i : i + 16], sample=False) for i in range(0, len(x), 16)])
    directions = np.array([c.direction for c in chosen])
    mean = z.mean(0)
    total = ((z - mean) ** 2).mean().item()
    explained = 0.0
    for d in FLIP:
        pick = torch.from_numpy(directions == d)
        if pick.any():
            share = pick.float().mean().item()
            explained += share * ((z[pick].mean(0) - mean) ** 2).mean().item()
    snr = {t: (abar[t] / (1 - abar[t])).item() for t in LEVELS}
    return {
        "clips": len(chosen),
        "explained_share": round(explained / total, 4),
        "ideal_eps_gain": {t: round(snr[t] * explained, 6) for t in LEVELS},
    }


if __name__ == "__main__":
    main()
