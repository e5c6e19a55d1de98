"""The training tasks by name: what `task:` in a config picks (spacetime.train.config.CONFIGS
holds each one's typed config under the same name)."""

from __future__ import annotations

from spacetime.train.consistency import ConsistencyTask
from spacetime.train.controlnet import ControlNetTask
from spacetime.train.loop import Task
from spacetime.train.lora import LoRATask
from spacetime.train.motion import MotionTask
from spacetime.train.multiview import MultiViewTask
from spacetime.train.reconstructor import ReconstructorTask
from spacetime.train.text_to_image import TextToImageTask
from spacetime.train.vae import VAETask
from spacetime.train.video_vae import VideoVAETask

TASKS: dict[str, type[Task]] = {
    "vae": VAETask, "text2image": TextToImageTask, "motion": MotionTask,
    "video_vae": VideoVAETask, "multiview": MultiViewTask, "lora": LoRATask,
    "lcm": ConsistencyTask, "controlnet": ControlNetTask, "reconstructor": ReconstructorTask,
}  # fmt: skip
