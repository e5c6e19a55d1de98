"""Text → 3D mesh: load a model, distil a field from it (DreamFusion / MVDream), extract a mesh."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
import trimesh

from spacetime import checks
from spacetime.devices import check_device
from spacetime.errors import ArgumentTypeError, ArgumentValueError, SpacetimeError
from spacetime.formats.diffusers import Components
from spacetime.models.inflate import MVDream
from spacetime.threed import DEFAULT_STEPS, DEFAULT_TEXTURE_SIZE, REFINE_STEPS
from spacetime.threed.cameras import CameraRange
from spacetime.threed.export import extract_mesh
from spacetime.threed.guidance import Guidance, MultiViewGuidance, SingleViewGuidance
from spacetime.threed.optimise import OptimiseConfig, Progress, optimise
from spacetime.threed.reconstruct import Reconstructor
from spacetime.threed.sds import SDSConfig
from spacetime.threed.texture import check_texture_size

# Classifier-free guidance scales: MVDream distils at 50; one view at a time needs more to commit
# to a single mode (DreamFusion used 100 with Imagen).
MULTIVIEW_GUIDANCE = 50.0
SINGLE_VIEW_GUIDANCE = 100.0
# Score distillation refining the fast path's field moves it at this fraction of the learning
# rate it starts a sphere with: the shape is already there, only its details are to settle.
REFINE_LR = 0.05
# Smoothing steps (export.smooth) for the mesh of a distilled field: score distillation leaves
# wrinkles of the guidance's noise (mean angle between neighbouring faces 4.4 deg on the 15 world
# prompts, 1.1 on the fast path's meshes); 20 steps take it to 1.5 and mean IoU 0.879 -> 0.881.
# The fast path's meshes are smooth already: smoothing only rounds their edges (IoU -0.003).
DISTILLED_SMOOTHING = 20


@dataclass(frozen=True)
class Recipe:
    """The score-distillation settings a model distils with: SDS and the training cameras."""

    sds: SDSConfig
    cameras: CameraRange = field(default_factory=CameraRange)


# threestudio's MVDream recipe (MVDream-threestudio, configs/mvdream-sd21.yaml) in spacetime's
# terms, for MVDream's published weights: guidance 50; the x0-reconstruction loss (= SDS weighted
# sigma/alpha) with recon_std_rescale 0.5; min/max_step_percent 0.98 -> 0.02 / 0.98 -> 0.50 over
# the first 8000 of 10000 steps; elevations 0-30 degrees; distance 0.8-1.0 over tan(fovy / 2)
# (threestudio's relative radius) at a 45 degree field of view. docs/mvdream.md lists the rest.
_TAN_HALF_FOV = math.tan(math.radians(45.0 / 2))
MVDREAM_RECIPE = Recipe(
    SDSConfig(
        guidance=50.0, weighting="sigma", t_min=0.98, t_min_end=0.02, t_max=0.98, t_max_end=0.5,
        anneal="linear", anneal_until=0.8, rescale=0.5,
    ),
    CameraRange(
        elevation=(0.0, 30.0), distance=(0.8 / _TAN_HALF_FOV, 1.0 / _TAN_HALF_FOV), fov=45.0
    ),
)  # fmt: skip


def recipe_for(components: Components, single_view: bool = False) -> Recipe:
    """MVDREAM_RECIPE for a U-Net of MVDream's published layout distilling four views, else
    spacetime's defaults (tuned on the world models)."""
    published = components.unet.inflation == MVDream.published()
    if published and not single_view:
        return MVDREAM_RECIPE
    guidance = SINGLE_VIEW_GUIDANCE if single_view else MULTIVIEW_GUIDANCE
    return Recipe(SDSConfig(guidance=guidance))


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
    """SingleViewGuidance or MultiViewGuidance with the model's recipe (`recipe_for`); a given
    guidance scale replaces the recipe's."""
    recipe = recipe_for(components, single_view)
    sds = recipe.sds if guidance is None else replace(recipe.sds, guidance=guidance)
    make = SingleViewGuidance if single_view else MultiViewGuidance
    return make(components, prompt, negative_prompt, sds, recipe.cameras)


MAX_STEPS = 100_000  # ~10 hours at the CPU's ~0.4 s a step: more is a typo, not a plan
MAX_RESOLUTION = 512  # 512^3 lattice values already take 0.5 GB
MIN_FACES, MAX_FACES = 4, 100_000_000  # a tetrahedron; far past any lattice's surface


def check_arguments(
    prompt: object,
    negative_prompt: object = "",
    steps: object = None,
    seed: object = 0,
    guidance: object = None,
    resolution: object = 128,
    single_view: object = False,
    texture_size: object = DEFAULT_TEXTURE_SIZE,
    faces: object = 0,
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
    if texture_size != 0:  # 0: vertex colours only
        check_texture_size(texture_size)
    if faces != 0:  # 0: every face marching cubes makes
        checks.integer("faces", faces, MIN_FACES, MAX_FACES)


INITS = ("auto", "sphere", "fast")


def reconstructor_for(
    shipped_model: bool, single_view: bool = False, fast: bool = False, init: str = "auto"
) -> Reconstructor | None:
    """The reconstructor a run reads the model's views with, or None to distil from a sphere.
    The shipped one reads the shipped multi-view model's views only; asking the fast path
    (`fast`, init "fast") of anything else is an error, "auto" quietly starts from a sphere."""
    from spacetime.formats.load import default_model

    if init not in INITS:
        raise ArgumentValueError(f"init must be one of {', '.join(INITS)}, got {init!r}")
    wanted = fast or init == "fast"
    if single_view:
        if wanted:
            raise ArgumentValueError(
                "--fast and --init fast read a multi-view model: not --single-view"
            )
        return None
    if init == "sphere" and not fast:
        return None
    if not shipped_model or default_model("reconstructor") is None:
        if not wanted:
            return None
        if not shipped_model:
            raise ArgumentValueError(
                "--fast and --init fast use the shipped reconstructor, which reads the shipped "
                "multi-view model's views: leave out --model"
            )
        raise ArgumentValueError("this install has no shipped reconstructor for --fast")
    from spacetime.formats.load import shipped
    from spacetime.threed.reconstruct import load_reconstructor

    return load_reconstructor(shipped("reconstructor"))


def text_to_mesh(
    prompt: str,
    model: str | os.PathLike | Components | None = None,
    *,
    fast: bool = False,
    init: str = "auto",
    reconstructor: Reconstructor | None = None,
    steps: int | None = None,
    seed: int = 0,
    guidance: float | None = None,
    resolution: int = 128,
    single_view: bool = False,
    negative_prompt: str = "",
    texture_size: int = DEFAULT_TEXTURE_SIZE,
    faces: int = 0,
    device: str | torch.device = "cpu",
    progress: Callable[[Progress], None] | None = None,
) -> trimesh.Trimesh:
    """A coloured mesh of `prompt` from a multi-view model: reconstructed in one pass (`fast`),
    or distilled from it (or from a text-to-image model, `single_view`) by score distillation.

    model: a path, a hub id, loaded Components (used where they are), or None for the shipped
    default; fast: the model's four views at its default cameras read by `reconstructor` (None:
    the shipped one, which reads the shipped multi-view model), seconds instead of minutes;
    init: where score distillation starts: "sphere", "fast" (the fast path's field), or "auto"
    ("fast" with the shipped multi-view model or a given reconstructor, else "sphere",
    `reconstructor_for`); steps: Adam steps (None: DEFAULT_STEPS from a sphere, REFINE_STEPS from
    the fast field); resolution: marching-cubes lattice points per axis; texture_size: side of
    the texture the albedo is baked into (vertex colours are kept too), 0 for vertex colours
    only; faces: decimate the mesh to about this many faces for viewers (0: keep every face,
    `export.decimate`); device: where a model given by name is loaded and the field
    trains."""
    check_arguments(
        prompt,
        negative_prompt,
        steps,
        seed,
        guidance,
        resolution,
        single_view,
        texture_size,
        faces,
    )
    checks.flag("fast", fast)
    if reconstructor is None:
        reconstructor = reconstructor_for(model is None, single_view, fast, init)
    device = check_device(device)
    if not isinstance(model, Components):
        if model is not None and not isinstance(model, str | os.PathLike):
            raise ArgumentTypeError(
                f"model must be a path, a hub id, Components or None, got {model!r:.80}"
            )
        model = load_model(default_model_for(single_view) if model is None else model, device)
    start = None
    if reconstructor is not None and (fast or init != "sphere"):
        from spacetime.threed.reconstruct import reconstruct

        if not model.unet.takes_cameras:
            raise ArgumentValueError("the fast path reads a multi-view model's views")
        start = reconstruct(model, reconstructor.to(device), prompt, seed=seed,
                            negative_prompt=negative_prompt)  # fmt: skip
        if fast:
            return extract_mesh(start, resolution, texture_size, faces)
    if steps is None:
        steps = DEFAULT_STEPS if start is None else REFINE_STEPS
    cfg = OptimiseConfig(steps=steps, seed=seed)
    if start is not None:
        cfg = replace(cfg, lr=cfg.lr * REFINE_LR)
    guide = make_guidance(model, prompt, negative_prompt, single_view, guidance)
    field = optimise(guide, cfg, progress, start)
    return extract_mesh(field, resolution, texture_size, faces, smoothing=DISTILLED_SMOOTHING)
