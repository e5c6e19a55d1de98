"""Text-conditioned latent diffusion, shared by every pipeline: encode prompt, sample, decode.

Images are one-frame clips: the same loop samples `(b, 4, h, w)` image latents or `(b, 4, t, h, w)`
clip latents, and the U-Net folds frames into its batch.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from einops import rearrange
from torch import Tensor

from spacetime import checks, control, sampling, sdedit
from spacetime.context import DEFAULT_FRAMES, ContextWindows, windowed
from spacetime.errors import ArgumentTypeError, ArgumentValueError, SpacetimeError
from spacetime.first_frame import conditioned as first_frame_net
from spacetime.first_frame import place as place_first_frame
from spacetime.formats.diffusers import Components
from spacetime.free_init import FreeInit
from spacetime.memory import large_blocks_returned
from spacetime.models.vae import AutoencoderKL
from spacetime.precision import DTYPES, autocast, resolve_precision
from spacetime.travel import travel

DECODE_CHUNK = 8  # frames per VAE decode call: decode memory grows with this, not with the clip


def to_uint8(images: Tensor) -> np.ndarray:
    """Decoder output in [-1, 1], (b, 3, h, w) or (b, 3, t, h, w) → uint8 (b, [t,] h, w, 3),
    rounded as diffusers does; a few frames at a time, so a long clip's float temporaries never
    exist whole."""
    if images.ndim == 4:
        return to_uint8(images[:, :, None])[:, 0]
    b, _, t, h, w = images.shape
    pixels = np.empty((b, t, h, w, 3), np.uint8)
    for s in range(0, t, DECODE_CHUNK):
        chunk = (images[:, :, s : s + DECODE_CHUNK].float() / 2 + 0.5).clamp(0, 1)
        chunk = rearrange(chunk, "b c t h w -> b t h w c").cpu().numpy()
        pixels[:, s : s + DECODE_CHUNK] = (chunk * 255).round()
    return pixels


def _layout(x: Tensor) -> torch.memory_format:
    return (
        torch.channels_last if x.ndim == 4 and x.device.type == "cpu" else torch.contiguous_format
    )


@dataclass(frozen=True)
class GenerationRequest:
    """Everything that decides the output besides the weights; validated on construction."""

    prompts: tuple[str, ...]
    negative_prompts: tuple[str, ...]
    steps: int = 20
    guidance: float = 7.5
    scheduler: str = "ddim"
    karras: bool = False
    eta: float = 0.0
    seed: int | None = 0
    height: int = 512
    width: int = 512
    frames: int = 1
    num_images: int = 1
    clip_skip: int | None = None
    # Sliding context windows for long clips (spacetime.context); None: 16 frames once the clip
    # outgrows the motion modules' frame positions, overlapping by a quarter of the window.
    context_frames: int | None = None
    context_overlap: int | None = None
    # Resample a clip from its own low frequencies (spacetime.free_init); images skip it.
    free_init: FreeInit | None = None
    # Prompt travel (spacetime.travel): prompts[i] holds from key_frames[i], one clip; empty: each
    # prompt is its own clip
    key_frames: tuple[int, ...] = ()
    # SDEdit: with an input image or clip, the share of the sampler's steps that run from it
    # noised (spacetime.sdedit); 1 starts from pure noise
    strength: float = 1.0

    def __post_init__(self):
        """Every field alone and in combination, named in the error (spacetime.checks)."""
        checks.prompts("prompt", self.prompts)
        checks.prompts("negative_prompt", self.negative_prompts)
        if not self.prompts:
            raise ArgumentValueError("at least one prompt is needed")
        if not self.key_frames and len(self.negative_prompts) not in (0, len(self.prompts)):
            raise ArgumentValueError(
                f"{len(self.negative_prompts)} negative prompts for {len(self.prompts)} prompts"
            )
        checks.integer("steps", self.steps, 1)
        checks.number("guidance", self.guidance, 0.0)
        checks.sampler_options(self.scheduler, self.karras, self.eta)
        checks.seed(self.seed)
        for name in ("height", "width"):
            value = checks.integer(name, getattr(self, name))
            if value < 8 or value % 8:
                raise ArgumentValueError(f"{name} must be a positive multiple of 8, got {value}")
        checks.integer("frames", self.frames, 1)
        checks.integer("num_images", self.num_images, 1)
        if self.clip_skip is not None:
            checks.integer("clip_skip", self.clip_skip, 0)
        if self.context_overlap is not None:
            checks.integer("context_overlap", self.context_overlap, 0)
        if self.context_frames is not None:
            checks.integer("context_frames", self.context_frames, 1)
            self.windows(self.context_frames)  # validates the pair
        if self.free_init is not None and not isinstance(self.free_init, FreeInit):
            raise ArgumentTypeError(f"free_init must be a FreeInit or None, got {self.free_init!r}")
        if not 0 < checks.number("strength", self.strength) <= 1:
            raise ArgumentValueError(f"strength must be in (0, 1], got {self.strength}")
        if self.key_frames:
            checks.key_frames(self.key_frames, self.frames)
            if len(self.key_frames) != len(self.prompts) or len(self.negative_prompts) > 1:
                raise ArgumentValueError(
                    f"prompt travel takes one prompt per key frame and at most one negative "
                    f"prompt, got {len(self.prompts)} prompts for {len(self.key_frames)} key "
                    f"frames and {len(self.negative_prompts)} negative prompts"
                )

    @property
    def clips(self) -> int:
        """Prompts that each make their own clip (or image): one for prompt travel."""
        return 1 if self.key_frames else len(self.prompts)

    def windows(self, frames: int) -> ContextWindows:
        """Windows of `frames` frames with the requested overlap (default: a quarter window)."""
        overlap = frames // 4 if self.context_overlap is None else self.context_overlap
        return ContextWindows(frames, overlap)


class DiffusionPipeline:
    """Prompt → latents → pixels over a `Components` bundle (thin: the work is in the modules)."""

    def __init__(
        self, components: Components, device: str | torch.device = "cpu", precision: str = "auto"
    ):
        """Move the modules to `device` and cast their weights to `precision` once, up front:
        bf16 weights run ~2x faster than fp32 on AMX CPUs, where autocast re-casts every weight at
        every call. Channels-last convolutions suit oneDNN on CPUs (the VAE decoder ~2x)."""
        self.components = components
        self.device = torch.device(device)
        self.precision = resolve_precision(precision, self.device)
        self.dtype = DTYPES[self.precision]
        # fp16 can overflow in SD's VAE decoder (diffusers' force_upcast); bf16 has fp32's range.
        vae_dtype = torch.float32 if self.precision == "fp16" else self.dtype
        layout = torch.channels_last if self.device.type == "cpu" else torch.contiguous_format
        components.unet.to(self.device, self.dtype, memory_format=layout)
        components.vae.to(self.device, vae_dtype, memory_format=layout)
        components.text_encoder.to(self.device, self.dtype)

    def _compute(self, precision: str | None):
        """Autocast for a call asking less precision than the weights hold; refuse more."""
        wanted = self.precision if precision is None else resolve_precision(precision, self.device)
        if wanted == self.precision:
            return contextlib.nullcontext()
        if self.precision != "fp32":
            raise SpacetimeError(
                f"this pipeline holds {self.precision} weights; load it with "
                f"precision={wanted!r} to run in {wanted}"
            )
        return autocast(wanted, self.device)

    @property
    def default_size(self) -> int:
        c = self.components
        return c.unet.config.sample_size * c.vae.config.downscale

    def context_windows(self, req: GenerationRequest) -> ContextWindows | None:
        """The frame windows each network call runs over, or None for one call over all frames.

        By default a clip runs whole while its motion modules know enough frame positions (as in
        diffusers' AnimateDiffPipeline) and in 16-frame windows past that."""
        limit = self.components.unet.frame_positions
        if req.context_frames is not None and limit is not None and req.context_frames > limit:
            raise SpacetimeError(
                f"context_frames={req.context_frames} exceeds the {limit} frame positions this "
                "motion module knows"
            )
        if req.context_frames is not None:
            windows = req.windows(req.context_frames)
        elif limit is not None and req.frames > limit:
            windows = req.windows(min(DEFAULT_FRAMES, limit))
        else:
            return None
        return windows if req.frames > windows.frames else None

    def set_schedule(self, **overrides) -> None:
        """Override noise-schedule settings of the model's scheduler config, as diffusers'
        `Scheduler.from_config(config, **overrides)`: few-step checkpoints ask for theirs
        (AnimateLCM: beta_schedule="linear"; AnimateDiff-Lightning: also
        timestep_spacing="trailing"). Keys: spacetime.sampling.NoiseSchedule's fields."""
        schedule = self.components.schedule
        known = {f.name for f in dataclasses.fields(schedule)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ArgumentValueError(
                f"unknown schedule setting {unknown[0]!r}; known: {', '.join(sorted(known))}"
            )
        try:
            self.components.schedule = dataclasses.replace(schedule, **overrides)
        except (TypeError, ValueError) as e:
            raise ArgumentValueError(str(e)) from None

    def check_request(self, req: GenerationRequest) -> None:
        """Limits that follow from this model: steps within its noise schedule, clip_skip within
        its text encoder."""
        schedule = self.components.schedule
        checks.steps_fit(req.steps, req.scheduler, schedule.num_train_timesteps,
                         schedule.original_inference_steps)  # fmt: skip
        layers = self.components.text_encoder.model.config.num_hidden_layers
        if req.clip_skip is not None and req.clip_skip >= layers:
            raise ArgumentValueError(
                f"clip_skip must be < {layers} (the text encoder's layers), got {req.clip_skip}"
            )

    @torch.no_grad()
    def encode_prompts(self, req: GenerationRequest) -> tuple[Tensor, Tensor | None]:
        """(b·n, 77, d) conditional and unconditional embeddings, repeated per image (diffusers order)."""
        text = self.components.text_encoder
        cond = text.encode(list(req.prompts), req.clip_skip)
        if req.key_frames:  # one clip, a context per frame: (1, t, n, d)
            cond = travel(cond, req.key_frames, req.frames)[None]
        uncond = None
        if req.guidance > 1.0:  # at <= 1 the sampler calls the conditional branch alone
            negatives = list(req.negative_prompts) or [""] * req.clips
            uncond = text.encode(negatives, req.clip_skip)
            if req.key_frames:
                uncond = uncond[:, None].expand(cond.shape)
        repeat = lambda e: None if e is None else e.repeat_interleave(req.num_images, dim=0)  # noqa: E731
        return repeat(cond), repeat(uncond)

    @torch.no_grad()
    def sample_latents(
        self,
        req: GenerationRequest,
        precision: str | None = None,
        progress: Callable[[int, int], None] | None = None,
        cameras: Tensor | None = None,
        on_step: Callable[[int, int, Tensor], None] | None = None,
        init: Tensor | None = None,
        first_frame: Tensor | None = None,
        controls: Sequence[control.Control] = (),
    ) -> Tensor:
        """Run the sampler; returns clean latents (b, 4, h/8, w/8) or (b, 4, t, h/8, w/8).

        `init`: pixels in [-1, 1], (1, 3, h, w) or (1, 3, t, h, w) at the request's size, that
        sampling starts from, noised to the request's strength (SDEdit; spacetime.sdedit); every
        image of the batch starts from the same posterior sample, and FreeInit does not apply.
        `first_frame`: pixels (1, 3, h, w) in [-1, 1] that the clip starts from: its latent is
        frame 0, clean, while the rest is denoised around it (spacetime.first_frame).
        `controls`: ControlNets and SparseCtrl networks with their images (spacetime.control);
        their residuals are summed into every U-Net call they act on, window by window.

        `cameras` (b, t, 4, 4) camera-to-world matrices go to a camera-conditioned U-Net with
        every call (both guidance branches): a multi-view set is a clip whose frames are views.
        `on_step(step, timestep, x0)` sees each step's estimate of the clean latents, counting
        steps over all FreeInit passes: what the sample looks like at that noise level."""
        c = self.components
        self.check_request(req)
        factor = c.vae.config.downscale
        if req.height % factor or req.width % factor:
            raise SpacetimeError(
                f"height and width must be multiples of {factor} for this VAE, "
                f"got {req.height}x{req.width}"
            )
        windows = self.context_windows(req)
        if cameras is not None and windows is not None:
            raise SpacetimeError(
                "a multi-view set (cameras) is denoised whole; context windows do not apply"
            )
        compute = self._compute(precision)
        with compute:
            cond, uncond = self.encode_prompts(req)
        batch = req.clips * req.num_images
        lat = (req.height // factor, req.width // factor)
        frames = () if req.frames == 1 else (req.frames,)
        shape = (batch, c.unet.config.in_channels, *frames, *lat)
        # Seeds follow the ecosystem: one CPU generator draws the initial latents, then any
        # sampler noise, so the same seed gives diffusers' images.
        generator = torch.Generator("cpu")
        if req.seed is not None:
            generator.manual_seed(req.seed)
        else:
            generator.seed()
        noise, start, first = self._starting_point(req, init, shape, generator, compute)
        cameras = None if cameras is None else cameras.to(self.device, torch.float32)
        prepared = self._prepare_controls(req, controls, compute)
        guided = uncond is not None and req.guidance > 1
        first_latent = None  # the first frame's (1, c, h, w)
        if first_frame is not None:
            first_latent = self._first_frame_latent(req, first_frame, compute)

        def denoiser_for(plan: sampling.Plan) -> sampling.Denoiser:
            """The network under windows, first frame and guidance, for one pass of `plan`."""
            step_of = {float(t): i for i, t in enumerate(plan.timesteps)}

            def net(x_t: Tensor, t: Tensor, context: Tensor, frames: slice = slice(None)) -> Tensor:
                x_t = x_t.to(self.dtype).contiguous(memory_format=_layout(x_t))
                t, context = torch.as_tensor(t).to(self.device), context.to(self.dtype)
                extra = {}
                if prepared:  # the step decides which controls act (control start / end)
                    step = (step_of[float(t.max())], len(plan.timesteps))
                    extra["control"] = control.residuals(
                        prepared, x_t, t, context, step, guided, frames
                    )
                if cameras is not None:
                    # Guidance stacks [uncond, cond] along the batch: each half, the same cameras.
                    extra["cameras"] = cameras.repeat(len(x_t) // len(cameras), 1, 1, 1)
                return c.unet(x_t, t, context, **extra).float()

            if windows is not None:
                net = windowed(net, windows)
            if first_latent is not None:
                net = first_frame_net(net, first_latent)
            model_fn = sampling.classifier_free_guidance(net, cond, uncond, req.guidance)
            return sampling.model_denoiser(model_fn, c.schedule)

        free_init = req.free_init if req.frames > 1 and start is None else None
        total = req.steps - first if free_init is None else free_init.total_steps(req.steps)
        done = 0  # steps taken over all sampling passes

        def sample_pass(x_T: Tensor, steps: int) -> Tensor:
            """One sampling run from unit-variance noise x_T to clean latents."""
            nonlocal done
            plan = sampling.plan(c.schedule, req.scheduler, steps, karras=req.karras)
            if start is None:
                x = x_T * plan.init_noise_sigma
            else:  # SDEdit: the input noised to the first step that runs
                plan = plan.tail(first)
                x = start + plan.sigmas[0] * x_T

            def callback(k: int, _x: Tensor, x0: Tensor) -> None:
                if progress is not None:
                    progress(done + k + 1, total)
                if on_step is not None:  # x0 sits at sigma 0, where sigma and network space agree
                    on_step(done + k, int(plan.timesteps[k]), x0)

            with compute:  # one autocast region for the whole loop keeps its weight-cast cache
                x = sampling.sample(
                    req.scheduler, denoiser_for(plan), x, plan,
                    eta=req.eta, generator=generator, callback=callback,
                )  # fmt: skip
            done += len(plan.timesteps)
            return sampling.to_network_space(x, plan.sigmas_next[-1])

        if free_init is not None:
            sample_pass = free_init.wrap(sample_pass, c.schedule.alphas_cumprod[-1], generator)
        latents = sample_pass(noise, req.steps)
        return latents if first_latent is None else place_first_frame(latents, first_latent)

    def _starting_point(
        self,
        req: GenerationRequest,
        init: Tensor | None,
        shape: tuple,
        generator: torch.Generator,
        compute,
    ) -> tuple[Tensor, Tensor | None, int]:
        """(unit noise, SDEdit's encoded input at sigma 0 or None, the plan's first step)."""
        if init is None:
            if req.strength != 1:
                raise ArgumentValueError("strength applies to an input image or video only")
            return torch.randn(shape, generator=generator).to(self.device), None, 0
        frames = () if req.frames == 1 else (req.frames,)
        if tuple(init.shape[2:]) != (*frames, req.height, req.width):
            raise ArgumentValueError(
                f"the input is {tuple(init.shape[2:])} (frames, height, width), the request "
                f"{(*frames, req.height, req.width)}"
            )
        first = sdedit.first_step(req.steps, req.strength)
        with compute:
            vae = self.components.vae
            start = sdedit.encode(vae, init.to(self.device, self.dtype), generator).float()
        start = start.expand(shape)
        return sdedit.noise_like(start, generator).to(self.device), start, first

    def _prepare_controls(
        self, req: GenerationRequest, controls: Sequence[control.Control], compute
    ) -> list[control.Prepared]:
        """Each control's condition over the clip, its network on the pipeline's device and
        precision (SparseCtrl RGB's key frames encoded to latents)."""

        def encode(pixels: Tensor) -> Tensor:
            with compute:
                vae = self.components.vae
                return vae.encode(pixels.to(self.device, self.dtype), sample=False).float()

        layout = torch.channels_last if self.device.type == "cpu" else torch.contiguous_format
        prepared = []
        for item in controls:
            if not isinstance(item, control.Control):
                raise ArgumentTypeError(f"controls must be Control objects, got {item!r:.60}")
            item.net.to(self.device, self.dtype, memory_format=layout)
            size = (req.height, req.width)
            prepared.append(control.prepare(item, req.frames, size, encode))
        return prepared

    def _first_frame_latent(self, req: GenerationRequest, pixels: Tensor, compute) -> Tensor:
        """The latent (1, c, h, w) of the image a clip starts from (the posterior mean)."""
        if req.frames < 2 or tuple(pixels.shape[2:]) != (req.height, req.width):
            raise ArgumentValueError(
                f"a first frame needs a clip (frames >= 2) and the clip's size "
                f"{(req.height, req.width)}, got frames={req.frames} and an image of "
                f"{tuple(pixels.shape[2:])}"
            )
        with compute:
            latent = self.components.vae.encode(pixels.to(self.device, self.dtype), sample=False)
        return latent.float()

    @torch.no_grad()
    def decode(self, latents: Tensor, precision: str | None = None) -> np.ndarray:
        """Latents → uint8 pixels (b, h, w, 3) or (b, t, h, w, 3), rounded as diffusers does.

        An image VAE decodes clips `DECODE_CHUNK` frames at a time, each chunk straight to uint8,
        so a long clip never holds all its frames' decoder activations or float pixels at once."""
        with large_blocks_returned():
            return self._decode(latents, precision)

    def _decode(self, latents: Tensor, precision: str | None) -> np.ndarray:
        vae = self.components.vae
        z = latents.to(self.device, next(vae.parameters()).dtype)
        # Only a per-frame decoder makes chunks exact; a temporal one must see its neighbours.
        if z.ndim == 4 or not isinstance(vae, AutoencoderKL):
            windows = vae.config.decode_windows(z.shape[2]) if z.ndim == 5 else {}
            return self._decode_chunk(z, precision, **windows)
        frames, pixels = z.shape[2], None
        for s in range(0, frames, DECODE_CHUNK):
            chunk = self._decode_chunk(z[:, :, s : s + DECODE_CHUNK], precision)
            if pixels is None:
                pixels = np.empty((chunk.shape[0], frames, *chunk.shape[2:]), np.uint8)
            pixels[:, s : s + DECODE_CHUNK] = chunk
        return pixels

    def _decode_chunk(self, z: Tensor, precision: str | None, **windows) -> np.ndarray:
        with self._compute(precision):
            z = z.contiguous(memory_format=_layout(z))
            images = self.components.vae.decode(z, **windows)
        return to_uint8(images)
