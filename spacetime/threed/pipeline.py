"""Text → 3D mesh: load a model, distil a field from it (DreamFusion / MVDream), extract a mesh."""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
import trimesh

from spacetime import checks
from spacetime.devices import check_device
from spacetime.errors import ArgumentTypeError, ArgumentValueError, SpacetimeError
from spacetime.formats.diffusers import Components
from spacetime.threed.export import extract_mesh
from spacetime.threed.guidance import Guidance, MultiViewGuidance, SingleViewGuidance
from spacetime.threed.optimise import OptimiseConfig, Progress, optimise
from spacetime.threed.sds import SDSConfig

# Classifier-free guidance scales: MVDream distils at 50; one view at a time needs more to commit
# to a single mode (DreamFusion used 100 with Imagen).
MULTIVIEW_GUIDANCE = 50.0
SINGLE_VIEW_GUIDANCE = 100.0


def default_model_for(single_view: bool) -> os.PathLike:
    """The shipped multi-view model, or for single-view guidance the shipped image model."""
    from spacetime.formats.load import default_model

    kind = "image" if single_view else "multiview"
    model = default_model(kind)
    if model is None:
        raise SpacetimeError(
            f"this install has no default {kind} model: give --model (a diffusers folder, a "
            ".safetensors/.ckpt file or a hub id)"
            + ("" if single_view else ", or --single-view to use the image model")
        )
    return model


def load_model(model: str | os.PathLike, device: str | torch.device = "cpu") -> Components:
    """The model's components in fp32 on `device` (score distillation backpropagates through the
    VAE encoder, where half precision loses the small gradients)."""
    from spacetime.formats.load import load_components

    components = load_components(model)
    for module in (components.unet, components.vae, components.text_encoder):
        module.to(device, torch.float32)
    return components


def make_guidance(
    components: Components,
    prompt: str,
    negative_prompt: str = "",
    single_view: bool = False,
    guidance: float | None = None,
) -> Guidance:
    """SingleViewGuidance or MultiViewGuidance at the mode's default guidance scale."""
    if single_view:
        scale = SINGLE_VIEW_GUIDANCE if guidance is None else guidance
        return SingleViewGuidance(components, prompt, negative_prompt, SDSConfig(guidance=scale))
    scale = MULTIVIEW_GUIDANCE if guidance is None else guidance
    return MultiViewGuidance(components, prompt, negative_prompt, SDSConfig(guidance=scale))


MAX_STEPS = 100_000  # ~10 hours at the CPU's ~0.4 s a step: more is a typo, not a plan
MAX_RESOLUTION = 512  # 512^3 lattice values already take 0.5 GB


def check_arguments(
    prompt: object,
    negative_prompt: object = "",
    steps: object = None,
    seed: object = 0,
    guidance: object = None,
    resolution: object = 128,
    single_view: object = False,
) -> None:
    """text_to_mesh's arguments, each named in the error; no model needed."""
    for name, text in (("prompt", prompt), ("negative_prompt", negative_prompt)):
        if not isinstance(text, str):
            raise ArgumentTypeError(f"{name} must be a string, got {text!r:.80}")
    if not prompt.strip():
        raise ArgumentValueError("the prompt is empty")
    if steps is not None:
        checks.integer("steps", steps, 1, MAX_STEPS)
    checks.seed(seed)
    if guidance is not None:
        checks.number("guidance", guidance, 0.0)
    checks.integer("resolution", resolution, 8, MAX_RESOLUTION)
    checks.flag("single_view", single_view)


def text_to_mesh(
    prompt: str,
    model: str | os.PathLike | Components | None = None,
    *,
    steps: int | None = None,
    seed: int = 0,
    guidance: float | None = None,
    resolution: int = 128,
    single_view: bool = False,
    negative_prompt: str = "",
    device: str | torch.device = "cpu",
    progress: Callable[[Progress], None] | None = None,
) -> trimesh.Trimesh:
    """A coloured mesh of `prompt` distilled from a text-to-image or multi-view model.

    model: a path, a hub id, loaded Components (used where they are), or None for the shipped
    default; steps: Adam steps (None: DEFAULT_STEPS); resolution: marching-cubes lattice points per
    axis; device: where a model given by name is loaded and the field trains."""
    check_arguments(prompt, negative_prompt, steps, seed, guidance, resolution, single_view)
    device = check_device(device)
    cfg = OptimiseConfig(seed=seed) if steps is None else OptimiseConfig(steps=steps, seed=seed)
    if not isinstance(model, Components):
        if model is not None and not isinstance(model, str | os.PathLike):
            raise ArgumentTypeError(
                f"model must be a path, a hub id, Components or None, got {model!r:.80}"
            )
        model = load_model(default_model_for(single_view) if model is None else model, device)
    guide = make_guidance(model, prompt, negative_prompt, single_view, guidance)
    field = optimise(guide, cfg, progress)
    return extract_mesh(field, resolution)
