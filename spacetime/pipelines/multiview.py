"""Text → a multi-view set (MVDream, Shi et al. 2023): the clip loop, with views for frames.

A multi-view set is a clip whose frame axis is a view axis: the same sampler denoises latents
`(b, 4, v, h, w)` jointly, and every U-Net call, conditional and unconditional, gets each view's
camera.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from spacetime.errors import SpacetimeError
from spacetime.formats.diffusers import Components
from spacetime.formats.load import load_components, shipped
from spacetime.pipelines.image import ImagePipeline
from spacetime.threed.cameras import camera_matrices
from spacetime.world.primitives import Camera, orbit

DEFAULT_VIEWS = 4
DEFAULT_ELEVATION = 15.0  # degrees: the middle of the world model's training range (0-30)


def default_cameras() -> list[Camera]:
    """Four views 90° apart at 15° elevation, distance 3: the set the world model trained on."""
    return orbit(DEFAULT_VIEWS, elevation=DEFAULT_ELEVATION)


class MultiViewPipeline(ImagePipeline):
    """`MultiViewPipeline.from_pretrained(path)("a red cube")` → uint8 (n, v, h, w, 3), one view
    per camera (default: `default_cameras()`)."""

    def __init__(
        self, components: Components, device: str | torch.device = "cpu", precision: str = "auto"
    ):
        if not components.unet.takes_cameras:
            raise SpacetimeError(
                "this model has no camera conditioning: a multi-view model's U-Net is inflated "
                "with an MVDream spec (its unet/config.json records spacetime_inflation)"
            )
        super().__init__(components, device, precision)

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
        precision: str = "auto",
    ) -> MultiViewPipeline:
        """`model` None is the shipped world multi-view model."""
        return cls(load_components(model or shipped("multiview")), device, precision)

    def __call__(
        self,
        prompt: str | Sequence[str],
        negative_prompt: str | Sequence[str] | None = None,
        *,
        cameras: Sequence[Camera] | np.ndarray | Tensor | None = None,
        precision: str | None = None,
        progress: Callable[[int, int], None] | None = None,
        **options,
    ) -> np.ndarray:
        """Views of each prompt from `cameras`: a list of Camera, or camera-to-world matrices
        (v, 4, 4) shared by every set or (b, v, 4, 4) per set (b = prompts × num_images).
        Options are the image pipeline's (steps, guidance, scheduler, seed, num_images, ...)."""
        matrices = camera_matrices(default_cameras() if cameras is None else cameras)
        req = self.request(prompt, negative_prompt, frames=matrices.shape[-3], **options)
        batch = len(req.prompts) * req.num_images
        if matrices.ndim == 3:
            matrices = matrices.expand(batch, -1, -1, -1)
        elif len(matrices) != batch:
            raise SpacetimeError(
                f"cameras for {len(matrices)} sets, but {len(req.prompts)} prompts × "
                f"{req.num_images} images make {batch}"
            )
        latents = self.sample_latents(req, precision, progress, cameras=matrices)
        views = self.decode(latents, precision)
        return views if views.ndim == 5 else views[:, None]  # one view: (n, 1, h, w, 3)
