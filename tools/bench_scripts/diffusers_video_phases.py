"""Minimal diffusers text-to-video: `AnimateDiffPipeline` over an SD folder and a MotionAdapter,
DDIM as the checkpoint configures it, frames written as a GIF; on CPU or CUDA, fp32, fp16 weights
(diffusers' `torch_dtype`, as GPU users run it) or bf16 autocast. Timestamps per phase, and with
--profile-unet the sampling under the CPU profiler, go to stderr (tools/profile_video.py reads
them).
"""

import time

START = time.time()
import argparse  # noqa: E402  (after the first timestamp: import time is a phase)
import contextlib  # noqa: E402

import torch  # noqa: E402
from _phases import Phases  # noqa: E402
from diffusers import AnimateDiffPipeline, MotionAdapter  # noqa: E402
from diffusers.utils import export_to_gif  # noqa: E402

T = Phases(START)
T.mark("imported")
p = argparse.ArgumentParser()
p.add_argument("prompt")
p.add_argument("--model", required=True)
p.add_argument("--motion", required=True)
p.add_argument("--frames", type=int, default=16)
p.add_argument("--steps", type=int, default=10)
p.add_argument("--height", type=int, default=128)
p.add_argument("--width", type=int, default=128)
p.add_argument("--guidance", type=float, default=7.5)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32")
p.add_argument("--device", default="cpu")
p.add_argument("--out", default="clip.gif")
p.add_argument("--profile-unet", action="store_true")
a = p.parse_args()
dtype = torch.float16 if a.precision == "fp16" else torch.float32
pipe = AnimateDiffPipeline.from_pretrained(
    a.model, motion_adapter=MotionAdapter.from_pretrained(a.motion, torch_dtype=dtype),
    torch_dtype=dtype,
).to(a.device)  # fmt: skip
if a.device.startswith("cuda"):
    T.sync = torch.cuda.synchronize
pipe.set_progress_bar_config(disable=True)
T.mark("loaded")


def on_step(pipe, i, t, kwargs):
    T.step(i == 0)
    return kwargs


pipe.encode_prompt = T.after("encoded", pipe.encode_prompt)
pipe.decode_latents = T.after("decoded", pipe.decode_latents)
ctx = (
    torch.autocast(torch.device(a.device).type, dtype=torch.bfloat16)
    if a.precision == "bf16"
    else contextlib.nullcontext()
)


def generate():
    with ctx:
        return pipe(
            a.prompt, num_frames=a.frames, height=a.height, width=a.width,
            num_inference_steps=a.steps, guidance_scale=a.guidance,
            generator=torch.Generator("cpu").manual_seed(a.seed), callback_on_step_end=on_step,
        ).frames[0]  # fmt: skip


import _profile  # noqa: E402

summary = None
if a.profile_unet:
    _profile.mark(pipe.unet)
    frames, summary = _profile.profiled(generate)
else:
    frames = generate()
export_to_gif(frames, a.out, fps=8)
T.mark("saved")
cuda = a.device.startswith("cuda")
T.report(summary, peak_gib=torch.cuda.max_memory_allocated() / 2**30 if cuda else None)
