"""Text → 3D mesh: load a model, distil a field from it (DreamFusion / MVDream), extract a mesh."""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
import trimesh

from spacetime.errors import SpacetimeError
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
    if not prompt.strip():
        raise SpacetimeError("the prompt is empty")
    cfg = OptimiseConfig(seed=seed) if steps is None else OptimiseConfig(steps=steps, seed=seed)
    if guidance is not None:
        SDSConfig(guidance=guidance)  # validates it before any loading
    if resolution < 8:
        raise SpacetimeError(f"marching cubes resolution must be >= 8, got {resolution}")
    if not isinstance(model, Components):
        model = load_model(default_model_for(single_view) if model is None else model, device)
    guide = make_guidance(model, prompt, negative_prompt, single_view, guidance)
    field = optimise(guide, cfg, progress)
    return extract_mesh(field, resolution)
