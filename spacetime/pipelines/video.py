"""Text → clip: the same diffusion loop with a frame axis, through an inflated U-Net."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from spacetime import checks
from spacetime.control import Control
from spacetime.devices import check_device
from spacetime.errors import ArgumentTypeError, ArgumentValueError
from spacetime.formats.load import default_model, load_components, shipped
from spacetime.formats.motion import (
    load_motion_adapter,
    load_motion_text_encoder,
    motion_free_init,
)
from spacetime.free_init import FreeInit
from spacetime.pipelines.diffusion import GenerationRequest
from spacetime.pipelines.image import ImagePipeline, control_size, init_size

PER_FRAME = "per-frame"


class VideoPipeline(ImagePipeline):
    """`VideoPipeline.from_pretrained(sd, motion=adapter)("a red circle moving right", frames=16)`
    → uint8 (n, t, h, w, 3). With one frame it is image generation through the same model."""

    # FreeInit for every call that does not pass its own `free_init` (diffusers' enable_free_init).
    free_init: FreeInit | None = None

    def enable_free_init(self, **settings) -> None:
        """Sample every clip with FreeInit (spacetime.free_init.FreeInit fields as keywords)."""
        self.free_init = FreeInit(**settings)

    def disable_free_init(self) -> None:
        self.free_init = None

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
        precision: str = "auto",
        motion: str | os.PathLike | None = None,
        vae: str | os.PathLike | None = None,
    ) -> VideoPipeline:
        """`model` None is the shipped world model, which then comes with its shipped motion
        module and temporal decoder unless `motion`/`vae` say otherwise. `vae`: a video VAE
        folder (diffusers AutoencoderKLTemporalDecoder, e.g. SVD's), or "per-frame" for the
        model's own image VAE (the default for models given by path). A motion package that
        records a FreeInit in its config.json (the shipped world module does, as its card says)
        samples with it unless `enable_free_init` / `disable_free_init` say otherwise."""
        device = check_device(device)
        checks.choice("precision", precision, checks.PRECISIONS)
        if model is None:
            model = shipped("image")
            motion = motion or default_model("motion")
            vae = vae or default_model("video-vae")
        components = load_components(model)
        if vae is not None and str(vae) != PER_FRAME:
            from spacetime.formats.video_vae import load_video_vae

            components.vae = load_video_vae(vae)
        if motion is not None:
            components.unet = load_motion_adapter(components.unet, motion)
            text = load_motion_text_encoder(motion, components.text_encoder.tokenizer)
            if text is not None:
                components.text_encoder = text
        pipe = cls(components, device, precision)
        if motion is not None:
            pipe.free_init = motion_free_init(motion)
        return pipe

    def request(self, prompt, negative_prompt=None, **options) -> GenerationRequest:
        options.setdefault("free_init", self.free_init)
        return super().request(prompt, negative_prompt, **options)

    def __call__(
        self,
        prompt: str | Sequence[str] | Mapping[int, str],
        negative_prompt: str | Sequence[str] | None = None,
        *,
        frames: int | None = None,
        video: np.ndarray | None = None,
        first_frame: np.ndarray | None = None,
        controls: Sequence[Control] = (),
        precision: str | None = None,
        progress: Callable[[int, int], None] | None = None,
        **options,
    ) -> np.ndarray:
        """Clips for the prompt(s), or one clip whose prompt travels ({0: "a red circle", 12: "a
        blue circle"}: embeddings interpolated between key frames, as diffusers' FreeNoise);
        options are the image pipeline's plus `context_frames` and
        `context_overlap`: clips longer than the window are denoised in overlapping windows
        (spacetime.context), by default in 16-frame windows once the clip outgrows the motion
        modules' frame positions; and `free_init` (a FreeInit, or None for one plain pass),
        which defaults to the pipeline's own (`enable_free_init`). `video`: uint8 (t, h, w, 3)
        to start from (video-to-video, SDEdit) at `strength` (default 0.8, diffusers'); its
        first `frames` frames (default all), height and width defaulting to its size rounded
        down to multiples of 8. `frames` defaults to 16 without a video. `first_frame`: a uint8
        (h, w, 3) image the clip starts from (spacetime.first_frame; the world model continues
        it with the shipped first-frame motion LoRA: `pipe.load_lora("first-frame",
        motion=True)`), its size the default height and width. `controls`: ControlNets on every
        frame or SparseCtrl on key frames (spacetime.control.Control), run inside the context
        windows; their first image's size is the default height and width otherwise."""
        if first_frame is not None and video is None:
            options = init_size(first_frame, options)
        if video is not None:
            video = np.asarray(video)
            if video.ndim != 4:
                raise ArgumentTypeError(f"video must be (t, h, w, 3), got shape {video.shape}")
            frames = len(video) if frames is None else frames
            if checks.integer("frames", frames, 1) > len(video):
                raise ArgumentValueError(f"frames={frames} but the video has {len(video)}")
            video = video[:frames]
            options = {**init_size(video, options), "strength": options.get("strength", 0.8)}
        options = control_size(controls, options)
        req = self.request(prompt, negative_prompt, frames=frames or 16, **options)
        clips = self.generate(
            req, precision, progress, init=video, first_frame=first_frame, controls=controls
        )
        return clips if clips.ndim == 5 else clips[:, None]  # one frame: (n, 1, h, w, 3)
