"""Text → image: the diffusion pipeline with one frame."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from spacetime import checks, sdedit
from spacetime.control import Control
from spacetime.devices import check_device
from spacetime.errors import ArgumentTypeError, CheckpointError
from spacetime.formats.diffusers import Components, save_diffusers
from spacetime.formats.load import load_components, shipped
from spacetime.formats.lora import read_lora
from spacetime.formats.lora_files import find_lora, lora_name
from spacetime.formats.motion import ADAPTER_KEY
from spacetime.models.lora import Adapters
from spacetime.pipelines.diffusion import DiffusionPipeline, GenerationRequest

# What a call may set besides the prompts; the pipeline decides the rest.
OPTIONS = frozenset(GenerationRequest.__dataclass_fields__) - {"prompts", "negative_prompts"}


class ImagePipeline(DiffusionPipeline):
    """`ImagePipeline.from_pretrained(path)("a red circle", seed=0)` → uint8 (n, h, w, 3)."""

    def __init__(
        self, components: Components, device: str | torch.device = "cpu", precision: str = "auto"
    ):
        super().__init__(components, device, precision)
        # LoRA adapters on the U-Net and the text encoder, named as in diffusers' LoRA files
        self.lora = Adapters(
            {"unet": components.unet, "text_encoder": components.text_encoder.model}
        )

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

    def load_lora(
        self,
        path: str | os.PathLike,
        name: str | None = None,
        weight: float = 1.0,
        motion: bool = False,
    ) -> str:
        """Add a LoRA (kohya/A1111, PEFT/diffusers or AnimateDiff motion LoRA; U-Net and
        text-encoder layers alike) as adapter `name` at `weight`, on top of those already loaded;
        returns its name. `path`: a file, a diffusers LoRA folder or a shipped LoRA's name
        (`zoom-in`); the name defaults to the file's stem (the folder's for a diffusers folder).
        `motion`: the file must be a motion LoRA (motion-module layers only). If any layer does
        not fit the model, a CheckpointError names it and the model is left as it was."""
        path = find_lora(path)
        if name is None:
            stem = name = lora_name(path)
            n = 2
            while name in self.lora.weights:  # the same stem twice, e.g. from two folders
                name, n = f"{stem}-{n}", n + 1
        factors = read_lora(path, self.lora.layer_names())
        spatial = [key for key in factors if ADAPTER_KEY not in key]
        if motion and spatial:
            raise CheckpointError(
                f"{path} is not a motion LoRA: it adapts {', '.join(spatial[:3])} (pass it as an "
                "image LoRA instead)"
            )
        self.lora.add(name, factors, weight)
        return name

    def set_lora_weights(self, weights: Mapping[str, float]) -> None:
        """New weights for loaded adapters, by name (0 switches one off); nothing is reloaded."""
        self.lora.set_weights(weights)

    def fuse_lora(self) -> None:
        """Fold the adapters at their weights into the model's weights: sampling then costs what
        it costs without LoRA. Weights set later are folded in again from the originals."""
        self.lora.fuse()

    def unfuse_lora(self) -> None:
        """Restore the original weights bit for bit; the adapters run as side branches again."""
        self.lora.unfuse()

    def unload_lora(self, name: str | None = None) -> None:
        """Remove adapter `name`, or every adapter."""
        for each in [name] if name is not None else list(self.lora.weights):
            self.lora.remove(each)

    def request(
        self,
        prompt: str | Sequence[str],
        negative_prompt: str | Sequence[str] | None = None,
        *,
        height: int | None = None,
        width: int | None = None,
        **options,
    ) -> GenerationRequest:
        """Validate arguments into a request (raises SpacetimeError naming the bad value). A
        {frame: prompt} mapping is prompt travel: one clip whose prompt changes over time."""
        if isinstance(prompt, Mapping):
            options["key_frames"], prompt = checks.prompt_travel(prompt)
        prompts = checks.prompts("prompt", prompt)
        negatives = checks.prompts("negative_prompt", negative_prompt, allow_none=True)
        unknown = sorted(set(options) - OPTIONS)
        if unknown:
            raise ArgumentTypeError(
                f"unknown option {', '.join(unknown)}; expected one of {', '.join(sorted(OPTIONS))}"
            )
        if len(negatives) == 1 and len(prompts) > 1 and not options.get("key_frames"):
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
        image: np.ndarray | None = None,
        controls: Sequence[Control] = (),
        precision: str | None = None,
        progress: Callable[[int, int], None] | None = None,
        **options,
    ) -> np.ndarray:
        """Images for the prompt(s); options are GenerationRequest fields (steps, guidance,
        scheduler, karras, eta, seed, height, width, num_images, clip_skip, strength).
        `image`: uint8 (h, w, 3) to start from (image-to-image, SDEdit) at `strength` (default
        0.8, diffusers'); height and width default to its size rounded down to multiples of 8.
        `controls`: ControlNets with their control images (spacetime.control.Control); without
        an input image, height and width default to the first control image's size."""
        if "frames" in options:
            raise ArgumentTypeError(
                "frames: an ImagePipeline makes images; VideoPipeline makes clips"
            )
        if image is not None:
            options = {**init_size(image, options), "strength": options.get("strength", 0.8)}
        options = control_size(controls, options)
        req = self.request(prompt, negative_prompt, **options)
        return self.generate(req, precision, progress, init=image, controls=controls)

    def generate(
        self,
        req: GenerationRequest,
        precision: str | None = None,
        progress: Callable[[int, int], None] | None = None,
        init: np.ndarray | None = None,
        first_frame: np.ndarray | None = None,
        controls: Sequence[Control] = (),
    ) -> np.ndarray:
        """Pixels for a validated request: (n, h, w, 3), or (n, t, h, w, 3) for clips; `init`,
        uint8 pixels to start from (SDEdit), and `first_frame`, a uint8 image a clip starts from,
        both resized to the request's size; `controls` (spacetime.control)."""
        if precision is not None:
            checks.choice("precision", precision, checks.PRECISIONS)
        pixels = None if init is None else sdedit.to_pixels(init, req.height, req.width)
        first = None
        if first_frame is not None:
            if np.ndim(first_frame) != 3:
                raise ArgumentTypeError(f"first_frame must be one image (h, w, 3), got shape "
                                        f"{np.shape(first_frame)}")  # fmt: skip
            first = sdedit.to_pixels(first_frame, req.height, req.width)
        latents = self.sample_latents(
            req, precision, progress, init=pixels, first_frame=first, controls=controls
        )
        return self.decode(latents, precision)


def control_size(controls: Sequence[Control], options: Mapping) -> dict:
    """Options with height and width defaulting to the first control image's size (rounded down
    to multiples of 8), as diffusers' ControlNet pipelines default to their image's."""
    if not controls or ("height" in options and "width" in options):
        return dict(options)
    height, width = controls[0].size
    return {"height": max(8, height // 8 * 8), "width": max(8, width // 8 * 8), **options}


def init_size(pixels, options: Mapping) -> dict:
    """Options with height and width defaulting to an input's, rounded down to multiples of 8
    (as diffusers' image processor does)."""
    shape = np.shape(pixels)
    if len(shape) < 3:
        raise ArgumentTypeError(f"expected uint8 RGB pixels (..., h, w, 3), got shape {shape}")
    height, width = shape[-3:-1]
    return {"height": max(8, height // 8 * 8), "width": max(8, width // 8 * 8), **options}


def load_pipeline(
    model: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    precision: str = "auto",
) -> ImagePipeline:
    """Load a text-to-image pipeline from a diffusers folder, a single-file checkpoint or a hub
    id; None (the default, as for VideoPipeline) is the image model shipped in the package."""
    return ImagePipeline.from_pretrained(model, device, precision)
