"""`python -m spacetime.video` (the CLI's body, spacetime/video.py) with timestamps per phase, and
with --profile-unet the sampling under the CPU profiler (tools/profile_video.py reads both from
stderr). Keep the body in step with spacetime/video.py.
"""

import time

START = time.time()
import sys  # noqa: E402  (after the first timestamp: import time is a phase)

from _phases import Phases  # noqa: E402

from spacetime.cli import use_attention_flag  # noqa: E402
from spacetime.devices import pick_device  # noqa: E402
from spacetime.media import check_video_target, write_video  # noqa: E402
from spacetime.pipelines.video import VideoPipeline  # noqa: E402
from spacetime.video import parser  # noqa: E402

T = Phases(START)
T.mark("imported")
profile = "--profile-unet" in sys.argv
a = parser().parse_args([v for v in sys.argv[1:] if v != "--profile-unet"])
check_video_target(a.out)
device = pick_device(a.device)
use_attention_flag(a.attention, device)
if device.type == "cuda":
    import torch

    T.sync = torch.cuda.synchronize
pipe = VideoPipeline.from_pretrained(a.model, device, a.precision, a.motion)
T.mark("loaded")
pipe.encode_prompts = T.after("encoded", pipe.encode_prompts)
pipe.decode = T.after("decoded", pipe.decode)


def generate():
    return pipe(
        a.prompt, a.negative_prompt, frames=a.frames, height=a.height, width=a.width,
        progress=lambda done, total: T.step(done == 1), steps=a.steps, guidance=a.guidance, scheduler=a.scheduler, seed=a.seed,
    )[0]  # fmt: skip


summary = None
if profile:
    import _profile

    _profile.mark(pipe.components.unet)
    clip, summary = _profile.profiled(generate)
else:
    clip = generate()
write_video(a.out, clip, a.fps or 8)
T.mark("saved")
if device.type == "cuda":
    T.report(summary, peak_gib=torch.cuda.max_memory_allocated() / 2**30)
else:
    T.report(summary)
