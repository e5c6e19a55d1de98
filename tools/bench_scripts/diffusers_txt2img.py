"""Minimal diffusers text-to-image: the whole-process baseline of tools/bench_image.py.

Import, `from_pretrained`, DDIM as the checkpoint configures it, save. Timestamps per phase go to
stderr as one `BENCH_PHASES {json}` line, which tools/bench_image.py reads.
"""

import time

START = time.time()
import argparse  # noqa: E402  (after the first timestamp: import time is a phase)
import contextlib  # noqa: E402

import torch  # noqa: E402
from _phases import Phases  # noqa: E402
from diffusers import StableDiffusionPipeline  # noqa: E402

T = Phases(START)
T.mark("imported")
p = argparse.ArgumentParser()
p.add_argument("prompt")
p.add_argument("--model", required=True)
p.add_argument("--steps", type=int, default=20)
p.add_argument("--height", type=int, default=512)
p.add_argument("--width", type=int, default=512)
p.add_argument("--guidance", type=float, default=7.5)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
p.add_argument("--out", default="out.png")
a = p.parse_args()
pipe = StableDiffusionPipeline.from_pretrained(a.model)
T.mark("loaded")


def on_step(pipe, i, t, kwargs):
    T.step(i == 0)
    return kwargs


pipe.encode_prompt = T.after("encoded", pipe.encode_prompt)
pipe.vae.decode = T.after("decoded", pipe.vae.decode)
ctx = (
    torch.autocast("cpu", dtype=torch.bfloat16)
    if a.precision == "bf16"
    else contextlib.nullcontext()
)
with ctx:
    image = pipe(
        a.prompt, height=a.height, width=a.width, num_inference_steps=a.steps,
        guidance_scale=a.guidance, generator=torch.Generator("cpu").manual_seed(a.seed),
        callback_on_step_end=on_step,
    ).images[0]  # fmt: skip
image.save(a.out)
T.mark("saved")
T.report()
