"""Text → image: the diffusion pipeline with one frame."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
import torch

from spacetime.formats.diffusers import save_diffusers
from spacetime.formats.load import load_components
from spacetime.pipelines.diffusion import DiffusionPipeline, GenerationRequest


def _as_tuple(p: str | Sequence[str] | None) -> tuple[str, ...]:
    if p is None:
        return ()
    return (p,) if isinstance(p, str) else tuple(p)


class ImagePipeline(DiffusionPipeline):
    """`ImagePipeline.from_pretrained(path)("a red circle", seed=0)` → uint8 (n, h, w, 3)."""

    @classmethod
    def from_pretrained(
        cls, model: str | os.PathLike, device: str | torch.device = "cpu", precision: str = "auto"
    ) -> ImagePipeline:
        """Load weights and cast them once to `precision` (auto: bf16 on AMX CPUs, fp16 on CUDA)."""
        return cls(load_components(model), device, precision)

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
        prompts, negatives = _as_tuple(prompt), _as_tuple(negative_prompt)
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
        req = self.request(prompt, negative_prompt, **options)
        return self.decode(self.sample_latents(req, precision, progress), precision)


def load_pipeline(
    model: str | os.PathLike, device: str | torch.device = "cpu", precision: str = "auto"
) -> ImagePipeline:
    """Load a text-to-image pipeline from a diffusers folder, a single-file checkpoint or a hub id."""
    return ImagePipeline.from_pretrained(model, device, precision)
