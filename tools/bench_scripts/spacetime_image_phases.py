"""`python -m spacetime.image` (the CLI's body, spacetime/image.py) with timestamps per phase.

tools/bench_image.py runs this only for the phase breakdown; its headline whole-process times run
the real `python -m spacetime.image`. The timestamps go to stderr as one `BENCH_PHASES {json}`
line. Keep the body in step with spacetime/image.py.
"""

import time

T = {"start": time.time()}
import json  # noqa: E402  (after the first timestamp: import time is a phase)
import sys  # noqa: E402

from spacetime.devices import pick_device  # noqa: E402
from spacetime.image import parser  # noqa: E402
from spacetime.media import IMAGE_SUFFIXES, check_writable, write_image  # noqa: E402
from spacetime.pipelines.diffusion import GenerationRequest  # noqa: E402, F401 (the CLI imports it)
from spacetime.pipelines.image import ImagePipeline  # noqa: E402

T["imported"] = time.time()
a = parser().parse_args()
check_writable(a.out, IMAGE_SUFFIXES)
pipe = ImagePipeline.from_pretrained(a.model, pick_device(a.device), a.precision)
T["loaded"] = time.time()


def timed(name, fn):
    def wrapper(*args, **kwargs):
        out = fn(*args, **kwargs)
        T[name] = time.time()
        return out

    return wrapper


def progress(done, total):
    T["first_step" if done == 1 else "last_step"] = time.time()


pipe.encode_prompts = timed("encoded", pipe.encode_prompts)
pipe.decode = timed("decoded", pipe.decode)
images = pipe(
    a.prompt, a.negative_prompt, height=a.height, width=a.width,
    progress=progress, steps=a.steps, guidance=a.guidance, scheduler=a.scheduler, karras=a.karras,
    eta=a.eta, seed=a.seed, num_images=a.num_images, clip_skip=a.clip_skip,
)  # fmt: skip
write_image(a.out, images[0])
T["saved"] = time.time()
print("BENCH_PHASES " + json.dumps(T), file=sys.stderr)
