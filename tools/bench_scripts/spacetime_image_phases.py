"""`python -m spacetime.image` (the CLI's body, spacetime/image.py) with timestamps per phase.

tools/bench_image.py runs this only for the phase breakdown; its headline whole-process times run
the real `python -m spacetime.image`. The timestamps go to stderr as one `BENCH_PHASES {json}`
line. Keep the body in step with spacetime/image.py.
"""

import time

START = time.time()
from _phases import Phases  # noqa: E402

from spacetime.devices import pick_device  # noqa: E402
from spacetime.image import parser  # noqa: E402
from spacetime.media import IMAGE_SUFFIXES, check_writable, write_image  # noqa: E402
from spacetime.pipelines.diffusion import GenerationRequest  # noqa: E402, F401 (the CLI imports it)
from spacetime.pipelines.image import ImagePipeline  # noqa: E402

T = Phases(START)
T.mark("imported")
a = parser().parse_args()
check_writable(a.out, IMAGE_SUFFIXES)
pipe = ImagePipeline.from_pretrained(a.model, pick_device(a.device), a.precision)
T.mark("loaded")
pipe.encode_prompts = T.after("encoded", pipe.encode_prompts)
pipe.decode = T.after("decoded", pipe.decode)
images = pipe(
    a.prompt, a.negative_prompt, height=a.height, width=a.width,
    progress=lambda done, total: T.step(done == 1), steps=a.steps, guidance=a.guidance, scheduler=a.scheduler, karras=a.karras,
    eta=a.eta, seed=a.seed, num_images=a.num_images, clip_skip=a.clip_skip,
)  # fmt: skip
write_image(a.out, images[0])
T.mark("saved")
T.report()
