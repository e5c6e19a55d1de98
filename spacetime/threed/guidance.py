"""Guidance: renders in, a score-distillation loss on their latents out, through a latent
diffusion model: MVDream's joint multi-view denoising, or DreamFusion's one view at a time."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor

from spacetime.formats.diffusers import Components
from spacetime.sampling import classifier_free_guidance, to_epsilon
from spacetime.threed.cameras import CameraRange, camera_matrices, orbit_views
from spacetime.threed.sds import SDSConfig, sds_gradient, sds_loss, timestep_range
from spacetime.world.primitives import Camera


@dataclass(frozen=True)
class GuidanceStep:
    """One step's outcome: the loss to backpropagate (None when the step was skipped because the
    gradient was not finite), the timestep drawn, and the gradient's norm."""

    loss: Tensor | None
    timestep: int
    grad_norm: float


class Guidance:
    """Score distillation through a latent diffusion model (DreamFusion, SDS): render RGB in
    [0, 1] → VAE mean latents → noise → guided U-Net → w(t)(eps_hat - eps) on the latents.

    Subclasses choose the views of each step and the text each view is denoised with."""

    views: int

    def __init__(
        self,
        components: Components,
        cfg: SDSConfig | None = None,
        where: CameraRange | None = None,
        cameras: bool | None = None,
    ):
        """cfg: SDS settings (default SDSConfig()); where: the training cameras' range (default
        CameraRange(), the world's); cameras: pass camera matrices to the U-Net (None: when it has
        a camera embedding)."""
        self.components = components
        self.cfg = SDSConfig() if cfg is None else cfg
        self.where = CameraRange() if where is None else where
        self.camera_aware = components.unet.takes_cameras if cameras is None else cameras
        # Only the field trains: the backward pass runs through the VAE encoder to the renders,
        # and frozen weights keep it from accumulating (and allocating) gradients of its own.
        for module in (components.unet, components.vae, components.text_encoder):
            module.requires_grad_(False).eval()
        self.device = next(components.unet.parameters()).device
        abar = components.schedule.alphas_cumprod
        self.alphas_cumprod = abar.to(self.device, torch.float32)
        vae = components.vae
        # The size the model was trained at: renders are resized to it before encoding, as
        # DreamFusion upsamples its 64^2 renders to Stable Diffusion's 512^2.
        self.image_size = components.unet.config.sample_size * vae.config.downscale

    @torch.no_grad()
    def _embed(self, prompts: list[str]) -> Tensor:
        return self.components.text_encoder.encode(prompts).to(self.device, torch.float32)

    def sample_cameras(self, generator: torch.Generator) -> list[Camera]:
        """The cameras to render at this step."""
        raise NotImplementedError

    def context(self, cameras: list[Camera]) -> tuple[Tensor, Tensor]:
        """(conditional, unconditional) text embeddings, (1, n, d) each, for these views."""
        raise NotImplementedError

    def encode(self, rgb: Tensor) -> Tensor:
        """Renders (v, 3, h, w) in [0, 1] → scaled VAE mean latents (1, c, v, h/f, w/f)."""
        if rgb.shape[-1] != self.image_size or rgb.shape[-2] != self.image_size:
            size = (self.image_size, self.image_size)
            rgb = F.interpolate(rgb, size=size, mode="bilinear", align_corners=False)
        latents = self.components.vae.encode(rgb.to(self.device) * 2 - 1, sample=False)
        return rearrange(latents, "v c h w -> 1 c v h w")

    def predict_noise(
        self, z_t: Tensor, timestep: int, cameras: list[Camera], context: tuple[Tensor, Tensor]
    ) -> Tensor:
        """Classifier-free guided noise for z_t (1, c, v, h, w): one U-Net call on the
        unconditional and conditional halves, all views at once."""
        cond, uncond = context
        poses = camera_matrices(cameras).to(self.device) if self.camera_aware else None

        def net(x: Tensor, t: Tensor, text: Tensor) -> Tensor:
            if poses is None:  # an image U-Net folds the views into its batch, one by one
                return self.components.unet(x, t, text).float()
            cams = repeat(poses, "v i j -> b v i j", b=x.shape[0])
            return self.components.unet(x, t, text, cameras=cams).float()

        t = torch.tensor(float(timestep), device=self.device)
        abar, kind = self.alphas_cumprod[timestep], self.components.schedule.prediction_type
        if self.cfg.rescale == 0 or self.cfg.guidance <= 1:
            guided = classifier_free_guidance(net, cond, uncond, self.cfg.guidance)
            return to_epsilon(guided(z_t, t), z_t, abar, kind)
        both = net(torch.cat([z_t, z_t]), t, torch.cat([uncond, cond]))
        eps_uncond, eps_cond = (to_epsilon(p, z_t, abar, kind) for p in both.chunk(2))
        eps = eps_uncond + self.cfg.guidance * (eps_cond - eps_uncond)
        return rescaled_epsilon(eps, eps_cond, z_t, abar, self.cfg.rescale)

    def __call__(
        self,
        rgb: Tensor,
        cameras: list[Camera],
        step: int,
        steps: int,
        generator: torch.Generator,
    ) -> GuidanceStep:
        """The SDS loss of renders `rgb` (v, 3, h, w) seen from `cameras` at `step` of `steps`."""
        latents = self.encode(rgb)
        lo, hi = timestep_range(self.cfg, step, steps, len(self.alphas_cumprod))
        timestep = int(torch.randint(lo, hi + 1, (), generator=generator))
        context = self.context(cameras)
        grad = sds_gradient(
            lambda z_t: self.predict_noise(z_t, timestep, cameras, context),
            latents,
            self.alphas_cumprod[timestep],
            self.cfg.weighting,
            generator,
        )
        # A non-finite gradient (an fp16 overflow, a diverged field) would poison Adam's moments
        # for good: skip the step instead, and let the caller count it.
        if not torch.isfinite(grad).all():
            return GuidanceStep(None, timestep, float("nan"))
        return GuidanceStep(sds_loss(latents, grad), timestep, float(grad.norm()))


def rescaled_epsilon(
    eps: Tensor, eps_cond: Tensor, z_t: Tensor, abar: Tensor, rescale: float
) -> Tensor:
    """The noise whose x0 is the guided x0 blended towards the spread of the conditional one:
    x0 <- x0 (rescale · std(x0_cond) / std(x0) + 1 - rescale), std over each set (1, c, v, h, w).
    threestudio's MVDream `recon_std_rescale`, after Lin et al. 2023's guidance rescale."""
    x0, x0_cond = ((z_t - (1 - abar).sqrt() * e) / abar.sqrt() for e in (eps, eps_cond))
    dims = tuple(range(1, z_t.ndim))
    factor = (x0_cond.std(dim=dims, keepdim=True) + 1e-8) / (x0.std(dim=dims, keepdim=True) + 1e-8)
    x0 = x0 * (rescale * factor + 1 - rescale)
    return (z_t - abar.sqrt() * x0) / (1 - abar).sqrt()


class MultiViewGuidance(Guidance):
    """MVDream: `views` orbit views 360/views apart from a random azimuth, denoised jointly with
    their camera matrices, so every view agrees on one object (no multi-face Janus)."""

    def __init__(
        self,
        components: Components,
        prompt: str,
        negative_prompt: str = "",
        cfg: SDSConfig | None = None,
        where: CameraRange | None = None,
        views: int = 4,
        cameras: bool | None = None,
    ):
        super().__init__(components, cfg, where, cameras)
        if views < 1:
            raise ValueError(f"views must be >= 1, got {views}")
        self.views = views
        self.cond, self.uncond = self._embed([prompt]), self._embed([negative_prompt])

    def sample_cameras(self, generator: torch.Generator) -> list[Camera]:
        return orbit_views(generator, self.views, self.where)

    def context(self, cameras: list[Camera]) -> tuple[Tensor, Tensor]:
        return self.cond, self.uncond


# DreamFusion's view-dependent prompting: the camera's azimuth (0 = the object's front, +z) or a
# high elevation picks a suffix.
VIEW_WORDS = ("front", "side", "back", "overhead", "view")


def view_direction(camera: Camera) -> str:
    """front (azimuth within 45 degrees of 0), back (within 45 of 180), side, or overhead."""
    if camera.elevation > 60:
        return "overhead"
    azimuth = (camera.azimuth + 180) % 360 - 180
    if abs(azimuth) <= 45:
        return "front"
    return "back" if abs(azimuth) >= 135 else "side"


class SingleViewGuidance(Guidance):
    """DreamFusion: one random view per step through a plain text-to-image model, with ", front
    view" / ", side view" / ", back view" appended when the model's vocabulary has those words.
    A camera-conditioned model gets the view's camera (v = 1)."""

    views = 1

    def __init__(
        self,
        components: Components,
        prompt: str,
        negative_prompt: str = "",
        cfg: SDSConfig | None = None,
        where: CameraRange | None = None,
        cameras: bool | None = None,
    ):
        super().__init__(components, cfg, where, cameras)
        text = components.text_encoder
        # A closed vocabulary (the world model) would read unknown suffix words as noise.
        self.view_prompts = not text.unknown_words(" ".join(VIEW_WORDS))
        directions = ("front", "side", "back", "overhead") if self.view_prompts else ("any",)
        prompts = [f"{prompt}, {d} view" if self.view_prompts else prompt for d in directions]
        self.cond = dict(zip(directions, self._embed(prompts).split(1), strict=True))
        self.uncond = self._embed([negative_prompt])

    def sample_cameras(self, generator: torch.Generator) -> list[Camera]:
        return orbit_views(generator, 1, self.where)

    def context(self, cameras: list[Camera]) -> tuple[Tensor, Tensor]:
        direction = view_direction(cameras[0]) if self.view_prompts else "any"
        return self.cond[direction], self.uncond
