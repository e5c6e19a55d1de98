"""Text → image: the diffusion pipeline with one frame."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
import torch

from spacetime import checks
from spacetime.devices import check_device
from spacetime.errors import ArgumentTypeError
from spacetime.formats.diffusers import save_diffusers
from spacetime.formats.load import load_components, shipped
from spacetime.pipelines.diffusion import DiffusionPipeline, GenerationRequest

# What a call may set besides the prompts; the pipeline decides the rest.
OPTIONS = frozenset(GenerationRequest.__dataclass_fields__) - {"prompts", "negative_prompts"}


class ImagePipeline(DiffusionPipeline):
    """`ImagePipeline.from_pretrained(path)("a red circle", seed=0)` → uint8 (n, h, w, 3)."""

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
        precision: str = "auto",
    ) -> ImagePipeline:
        """Load weights and cast them once to `precision` (auto: bf16 on AMX CPUs, fp16 on CUDA).
        `model` None is the image model shipped in the package."""
        device = check_device(device)
        checks.choice("precision", precision, checks.PRECISIONS)
        return cls(load_components(shipped("image") if model is None else model), device, precision)

    def save_pretrained(self, path: str | os.PathLike, overwrite: bool = False) -> None:
        save_diffusers(self.components, path, overwrite=overwrite)

    def request(
        self,
        prompt: str | Sequence[str],
        negative_prompt: str | Sequence[str] | None = None,
        *,
        height: int | None = None,
        width: int | None = None,
        **options,
    ) -> GenerationRequest:
        """Validate arguments into a request (raises SpacetimeError naming the bad value)."""
        prompts = checks.prompts("prompt", prompt)
        negatives = checks.prompts("negative_prompt", negative_prompt, allow_none=True)
        unknown = sorted(set(options) - OPTIONS)
        if unknown:
            raise ArgumentTypeError(
                f"unknown option {', '.join(unknown)}; expected one of {', '.join(sorted(OPTIONS))}"
            )
        if len(negatives) == 1 and len(prompts) > 1:
            negatives = negatives * len(prompts)
        return GenerationRequest(
            prompts,
            negatives,
            height=self.default_size if height is None else height,
            width=self.default_size if width is None else width,
            **options,
        )

    def __call__(
        self,
        prompt: str | Sequence[str],
        negative_prompt: str | Sequence[str] | None = None,
        *,
        precision: str | None = None,
        progress: Callable[[int, int], None] | None = None,
        **options,
    ) -> np.ndarray:
        """Images for the prompt(s); options are GenerationRequest fields (steps, guidance,
        scheduler, karras, eta, seed, height, width, num_images, clip_skip)."""
        if "frames" in options:
            raise ArgumentTypeError(
                "frames: an ImagePipeline makes images; VideoPipeline makes clips"
            )
        return self.generate(self.request(prompt, negative_prompt, **options), precision, progress)

    def generate(
        self,
        req: GenerationRequest,
        precision: str | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """Pixels for a validated request: (n, h, w, 3), or (n, t, h, w, 3) for clips."""
        if precision is not None:
            checks.choice("precision", precision, checks.PRECISIONS)
        return self.decode(self.sample_latents(req, precision, progress), precision)


def load_pipeline(
    model: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    precision: str = "auto",
) -> ImagePipeline:
    """Load a text-to-image pipeline from a diffusers folder, a single-file checkpoint or a hub
    id; None (the default, as for VideoPipeline) is the image model shipped in the package."""
    return ImagePipeline.from_pretrained(model, device, precision)
