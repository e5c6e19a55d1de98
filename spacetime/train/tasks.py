"""What each default model learns: the world VAE, and the text-to-image U-Net with its text encoder.

A task builds the trainable module (forward returns the loss so data-parallel wrappers see the whole
step), produces the batch for a global step, and exports the trained weights in diffusers layout.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from spacetime import world
from spacetime.formats.clip_tokenizer import Tokenizer
from spacetime.formats.diffusers import (
    Components,
    build_vae,
    save_component,
    save_diffusers,
)
from spacetime.formats.tokenizer import word_tokenizer
from spacetime.formats.weights import read_component, read_json
from spacetime.models.clip import CLIPTextConfig, CLIPTextModel
from spacetime.models.presets import PRESETS
from spacetime.models.text import TextEncoder
from spacetime.models.unet import UNet2DCondition
from spacetime.models.vae import AutoencoderKL, VAEConfig
from spacetime.sampling import NoiseSchedule, add_noise, clip_noise
from spacetime.train.config import TrainConfig, make_config
from spacetime.train.loop import rank_slice
from spacetime.train.multiview import MultiViewTask

TEXT_LENGTH = 16  # world captions are at most 9 words; 16 tokens keeps cross-attention cheap


def _generator(cfg: TrainConfig, step: int) -> torch.Generator:
    """Noise for a global step: a pure function of (seed, step), identical on every rank."""
    return torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)


def world_images(cfg: TrainConfig, step: int, split: str = "train") -> tuple[Tensor, list[str]]:
    """The global batch of scenes for a step: images in [-1, 1] (b, 3, 64, 64) and captions."""
    scenes = world.sample_scenes(np.random.default_rng([cfg.seed, step]), cfg.batch_size, split)
    return world.images_to_tensor(world.render_scenes(scenes)), [s.caption() for s in scenes]


def on_device_of(module: nn.Module, x: Tensor) -> Tensor:
    """x moved to where a frozen module lives (the loop places them on the training device, so
    a GPU encodes batches instead of the host's CPU)."""
    return x.to(next(module.parameters()).device)


def psnr(a: Tensor, b: Tensor) -> float:
    """Peak signal-to-noise ratio of images in [-1, 1], in dB."""
    mse = F.mse_loss(a.clamp(-1, 1), b.clamp(-1, 1)).item() / 4  # on a [0, 1] scale
    return 10 * math.log10(1 / max(mse, 1e-12))


@torch.no_grad()
def heldout_psnr(vae: AutoencoderKL, seed: int = 0, n: int = 512) -> float:
    """Reconstruction PSNR (posterior mean) on n held-out scenes, in dB."""
    probe = make_config({"batch_size": n, "seed": seed + 7})
    held = world_images(probe, 1, split="heldout")[0].to(next(vae.parameters()).device)
    return round(psnr(vae.decode(vae.encode(held, sample=False)), held), 2)


# -- the VAE ---------------------------------------------------------------------------------------


class VAELoss(nn.Module):
    """Reconstruction (MSE + L1, L1 keeps edges sharp) plus a small KL, as the LDM autoencoder."""

    def __init__(self, vae: AutoencoderKL, kl_weight: float):
        super().__init__()
        self.vae = vae
        self.kl_weight = kl_weight

    def forward(self, x: Tensor, noise: Tensor) -> Tensor:
        q = self.vae.posterior(x)
        z = q.mean + torch.exp(0.5 * q.logvar) * noise  # reparameterised sample
        rec = self.vae.decoder(self.vae.post_quant_conv(z)).float()
        rec_loss = F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x)
        return rec_loss + self.kl_weight * q.kl().mean()


class VAETask:
    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.vae_config = PRESETS[cfg.preset][0]

    def build(self) -> nn.Module:
        return VAELoss(AutoencoderKL(self.vae_config), self.cfg.kl_weight)

    def batch(self, step: int, rank: int, world_size: int) -> dict[str, Tensor]:
        x, _ = world_images(self.cfg, step)
        c, f = self.vae_config.latent_channels, self.vae_config.downscale
        noise = torch.randn((x.shape[0], c, 64 // f, 64 // f), generator=_generator(self.cfg, step))
        return {"x": rank_slice(x, rank, world_size), "noise": rank_slice(noise, rank, world_size)}

    @torch.no_grad()
    def export(self, module: nn.Module, folder: Path) -> dict:
        """Save vae/ with a scaling factor giving unit-variance latents; report held-out PSNR."""
        vae = module.vae.float().eval()
        probe = dataclasses.replace(self.cfg, batch_size=512, seed=self.cfg.seed + 7)
        device = next(vae.parameters()).device
        x = world_images(probe, 0)[0].to(device)
        std = vae.posterior(x).mean.std().item()
        vae.config = dataclasses.replace(vae.config, scaling_factor=round(1.0 / std, 5))
        save_component(
            folder / "vae", vae.config.to_diffusers(), vae.state_dict(), "diffusion_pytorch_model"
        )
        return {"psnr_heldout_db": heldout_psnr(vae, self.cfg.seed),
                "scaling_factor": vae.config.scaling_factor}  # fmt: skip


def load_vae(folder: str | Path) -> AutoencoderKL:
    """A VAE from a folder holding config.json + weights (or its parent with a vae/ inside)."""
    folder = Path(folder)
    if (folder / "vae").is_dir():
        folder = folder / "vae"
    cfg = VAEConfig.from_diffusers(read_json(folder / "config.json"))
    return build_vae(cfg, read_component(folder, "diffusion_pytorch_model")).eval()


# -- text to image ---------------------------------------------------------------------------------


class DenoisingLoss(nn.Module):
    """ε-prediction loss ‖ε − ε̂(√ᾱ x0 + √(1−ᾱ) ε, t, text)‖² (DDPM, Ho et al. 2020), text encoder
    trained jointly; further batch entries (a multi-view set's `cameras`) go to the U-Net."""

    def __init__(
        self,
        unet: UNet2DCondition,
        text_model: nn.Module,
        alphas_cumprod: Tensor,
        x0_weight_cap: float = 0.0,
    ):
        super().__init__()
        self.unet = unet
        self.text_model = text_model
        self.x0_weight_cap = x0_weight_cap
        self.register_buffer("alphas_cumprod", alphas_cumprod, persistent=False)

    def forward(self, ids: Tensor, x0: Tensor, t: Tensor, noise: Tensor, **conditioning) -> Tensor:
        x_t = add_noise(x0, noise, self.alphas_cumprod[t])
        return self.loss(self.unet(x_t, t, self.text_model(ids), **conditioning), noise, t)

    def loss(self, prediction: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """Mean squared ε error, each sample weighted by x0_loss_weights (all 1 by default)."""
        error = (prediction.float() - noise).pow(2).flatten(1).mean(1)
        return (x0_loss_weights(self.alphas_cumprod[t], self.x0_weight_cap) * error).mean()


class TextToImageTask:
    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        _, self.unet_config, text = PRESETS[cfg.preset]
        self.vae = load_vae(cfg.vae)
        self._tok_dir = tempfile.TemporaryDirectory()
        tok = word_tokenizer(world.VOCABULARY, self._tok_dir.name, TEXT_LENGTH)
        self.text_config = CLIPTextConfig(
            vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id, **text,
        )  # fmt: skip
        self.tokenizer = Tokenizer.wrap(tok)
        self.schedule = NoiseSchedule()  # SD 1.x's: scaled-linear betas 0.00085–0.012, ε

    def frozen(self) -> list[nn.Module]:
        """Modules that only make batches; the loop puts them on the training device."""
        return [self.vae]

    def build(self) -> nn.Module:
        return DenoisingLoss(
            UNet2DCondition(self.unet_config),
            CLIPTextModel(self.text_config),
            self.schedule.alphas_cumprod.float(),
        )

    @torch.no_grad()
    def batch(self, step: int, rank: int, world_size: int) -> dict[str, Tensor]:
        x, captions = world_images(self.cfg, step)
        g = _generator(self.cfg, step)
        drop = torch.rand(len(captions), generator=g) < self.cfg.caption_dropout
        captions = ["" if d else c for c, d in zip(captions, drop.tolist(), strict=True)]
        ids = self.tokenizer(captions)
        x0 = self.vae.encode(on_device_of(self.vae, x), generator=g)
        t = torch.randint(0, self.schedule.num_train_timesteps, (len(captions),), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        batch = {"ids": ids, "x0": x0, "t": t, "noise": noise}
        return {k: rank_slice(v, rank, world_size) for k, v in batch.items()}

    def export(self, module: nn.Module, folder: Path) -> dict:
        text = TextEncoder(self.tokenizer, module.text_model.float().eval())
        components = Components(module.unet.float().eval(), self.vae, text, self.schedule)
        save_diffusers(components, folder, overwrite=True)
        return {"unet_parameters": sum(p.numel() for p in module.unet.parameters()),
                "text_parameters": sum(p.numel() for p in module.text_model.parameters())}  # fmt: skip


# -- motion (text to video) ------------------------------------------------------------------------


class MotionLoss(DenoisingLoss):
    """The same ε loss on clips; the motion modules train, the spatial U-Net stays frozen
    (AnimateDiff), and the text encoder trains only when it is unfrozen. With a frozen
    `reference` encoder, plus `preservation` × the MSE between the trained encoder's states at the
    kept (non-motion-word) tokens and the reference's states for the still caption, and the MSE
    between the two encoders' states for the still caption."""

    def __init__(self, *args, reference: nn.Module | None = None, preservation: float = 0.0):
        super().__init__(*args)
        self.reference = reference
        self.preservation = preservation

    def forward(
        self,
        ids: Tensor,
        x0: Tensor,
        t: Tensor,
        noise: Tensor,
        still_ids: Tensor | None = None,
        keep: Tensor | None = None,
        seen: Tensor | None = None,
    ) -> Tensor:
        """`seen`: the clip the noise is added to where it is not x0 (colour repair); the target is
        then the ε that leads from that noisy clip back to x0."""
        trains_text = any(p.requires_grad for p in self.text_model.parameters())
        with torch.set_grad_enabled(trains_text and torch.is_grad_enabled()):
            context = self.text_model(ids)
        abar = self.alphas_cumprod[t]
        # torch 2.13 on CPU segfaults in backward when the autograd graph first starts inside the
        # frozen U-Net (at the first motion module); rooting it at the input avoids that.
        x_t = add_noise(x0 if seen is None else seen, noise, abar).requires_grad_(True)
        target = noise if seen is None else repair_target(x_t, x0, abar)
        loss = self.loss(self.unet(x_t, t, context), target, t)
        if self.reference is None or keep is None:  # no preservation, or a batch without stills
            return loss
        kept = rearrange(context[keep], "(b n) d -> b n d", b=len(ids))
        with torch.no_grad():
            target = self.reference(still_ids)
        # The still captions themselves too: nothing else in motion training constrains them, and
        # a CPU pilot without this term let "a blue triangle" images drift to 1/24 right.
        still = self.text_model(still_ids)
        drift = F.mse_loss(kept.float(), target[:, : kept.shape[1]].float())
        return loss + self.preservation * (drift + F.mse_loss(still.float(), target.float()))


def motion_word_ids(tokenize) -> Tensor:
    """Token ids of "moving" and the four directions, one token each in the world's vocabulary."""
    words = ("moving", *world.DIRECTIONS)
    return tokenize([" ".join(words)])[0, 1 : 1 + len(words)]  # after the start token


def still_alignment(tokenize, captions: list[str], ids: Tensor) -> tuple[Tensor, Tensor]:
    """Token ids of the captions' still versions (motion words dropped), and a (b, n) mask of the
    caption tokens `ids` that the still caption's first n-2 tokens line up with: all but
    "moving <direction>", or all but the last two where a caption names no motion."""
    motion_words = [f"moving {d}" for d in world.DIRECTIONS]
    stills = [next((c.replace(f" {m}", "") for m in motion_words if m in c), c) for c in captions]
    motion = torch.isin(ids, motion_word_ids(tokenize))
    motion[~motion.any(1), -2:] = True
    return tokenize(stills), ~motion


def repair_target(x_t: Tensor, x0: Tensor, abar: Tensor) -> Tensor:
    """The ε a sampler must be given at x_t to estimate x0: (x_t − √ᾱ x0) / √(1−ᾱ)."""
    abar = abar.reshape(-1, *([1] * (x0.ndim - 1)))
    return (x_t - abar.sqrt() * x0) / (1 - abar).sqrt()


def colour_slips(
    clips: list[world.Clip], rng: np.random.Generator, max_run: int, nearest: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The clips with a run of 1 to max_run frames (anywhere, edges included) whose object has
    another colour (never the background's; one of the `nearest` closest in RGB, 0: any), as
    sampling from frozen image layers makes them -> uint8 frames (n, t, 64, 64, 3) and the slipped
    frames' mask (n, t)."""
    frames = clips[0].frames
    mask = np.zeros((len(clips), frames), dtype=bool)
    scenes = []
    for i, clip in enumerate(clips):
        run = int(rng.integers(1, max_run + 1))
        start = int(rng.integers(0, frames - run + 1))
        mask[i, start : start + run] = True
        others = [c for c in world.COLOURS if c not in (clip.colour, clip.background)]
        if nearest:
            rgb = np.array(world.COLOURS[clip.colour])
            others = sorted(others, key=lambda c: np.linalg.norm(np.array(world.COLOURS[c]) - rgb))
            others = others[:nearest]
        other = others[int(rng.integers(len(others)))]
        scenes += [
            dataclasses.replace(scene, colour=other) if slipped else scene
            for scene, slipped in zip(clip.scenes(), mask[i], strict=True)
        ]
    rendered = world.render_scenes(scenes)
    return rearrange(rendered, "(b t) h w c -> b t h w c", t=frames), mask


def x0_loss_weights(abar: Tensor, cap: float) -> Tensor:
    """Per-sample weights clamp(1/SNR, 1, cap) on the ε loss, SNR = ᾱ/(1−ᾱ): the ε error is
    √SNR times the x0 error, so at high noise, where only the prompt can say which way the object
    moves, the plain ε loss hardly sees the clip; 1/SNR makes it an x0 loss there. cap 0: all 1."""
    if cap <= 0:
        return torch.ones_like(abar)
    return ((1 - abar) / abar).clamp(1.0, cap)


class MotionTask:
    """Motion modules on world clips, inflating a trained image model (`base:` folder)."""

    def __init__(self, cfg: TrainConfig):
        from spacetime.formats.load import load_components

        self.cfg = cfg
        self.base = load_components(cfg.base)
        self.base.vae.eval()
        self.shared_noise = self._shared_noise()

    def _shared_noise(self) -> float:
        """The share of noise common to a clip's frames this run trains on: the config's, else
        the fine-tuned package's, else none. Resolved once: every batch draws with it."""
        if self.cfg.shared_noise is not None:
            return self.cfg.shared_noise
        package = Path(self.cfg.init_motion) / "config.json"
        if self.cfg.init_motion and package.is_file():
            from spacetime.formats.motion import spec_from_adapter_config

            return spec_from_adapter_config(read_json(package)).shared_noise
        return 0.0

    def frozen(self) -> list[nn.Module]:
        return [self.base.vae]

    def build(self) -> nn.Module:
        from spacetime.models.inflate import InflationSpec, freeze_spatial, inflate

        # The image stage's encoder as it reads still captions, before anything here changes it.
        reference = None
        if self.cfg.text_preservation > 0:
            reference = copy.deepcopy(self.base.text_encoder.model).eval().requires_grad_(False)
        if self.cfg.init_motion:  # fine-tune a trained package, text encoder included
            from spacetime.formats.motion import load_motion_adapter, load_motion_text_encoder

            unet = load_motion_adapter(self.base.unet, self.cfg.init_motion)
            tokenizer = self.base.text_encoder.tokenizer
            encoder = load_motion_text_encoder(self.cfg.init_motion, tokenizer)
            text = (encoder or self.base.text_encoder).model
            # the exported package records the noise this run trains on
            unet.inflation = dataclasses.replace(unet.inflation, shared_noise=self.shared_noise)
        else:
            heads = self.base.unet.config.heads[0]
            spec = InflationSpec(
                heads=heads, max_frames=32, motion_text=self.cfg.motion_text,
                view_attention=self.cfg.space_time_attention, view_heads=heads,
                view_frames=32 if self.cfg.space_time_attention else 0,
                motion_pixel_positions=self.cfg.motion_pixel_positions,
                shared_noise=self.shared_noise,
            )  # fmt: skip
            unet = inflate(self.base.unet, spec)
            text = self.base.text_encoder.model
        freeze_spatial(unet)
        # CLIP learned "moving left" from the web; our small text encoder only ever saw still-scene
        # captions, so motion words carry nothing until the motion stage teaches it (train_text).
        text.requires_grad_(self.cfg.train_text)
        if self.cfg.motion_word_std > 0:
            self._redraw_motion_words(text.embeddings.token_embedding.weight)
        schedule = NoiseSchedule().alphas_cumprod.float()
        return MotionLoss(
            unet, text, schedule, self.cfg.x0_weight_cap,
            reference=reference, preservation=self.cfg.text_preservation,
        )  # fmt: skip

    @property
    def ships_text(self) -> bool:
        """The package carries the text encoder its modules were trained with: one trained here,
        or the one the package it fine-tunes came with."""
        started_from = self.cfg.init_motion and Path(self.cfg.init_motion) / "text_encoder"
        return self.cfg.train_text or bool(started_from and started_from.is_dir())

    @torch.no_grad()
    def _redraw_motion_words(self, table: Tensor) -> None:
        """N(0, motion_word_std) rows for "moving" and the directions, seeded by the run's seed."""
        ids = motion_word_ids(self.base.text_encoder.tokenize)
        g = torch.Generator().manual_seed(self.cfg.seed)
        rows = torch.randn((len(ids), table.shape[1]), generator=g) * self.cfg.motion_word_std
        table[ids.to(table.device)] = rows.to(table)

    @torch.no_grad()
    def batch(self, step: int, rank: int, world_size: int) -> dict[str, Tensor]:
        clips = world.sample_clips(
            np.random.default_rng([self.cfg.seed, step]),
            self.cfg.batch_size,
            "train",
            self.cfg.frames,
        )
        x = world.clips_to_tensor(world.render_clips(clips))
        g = _generator(self.cfg, step)
        captions = [c.caption() for c in clips]
        drop = torch.rand(len(captions), generator=g) < self.cfg.caption_dropout
        captions = ["" if d else c for c, d in zip(captions, drop.tolist(), strict=True)]
        ids = self.base.text_encoder.tokenize(captions)
        # (b, 4, t, h/8, w/8), frame by frame
        x0 = self.base.vae.encode(on_device_of(self.base.vae, x), generator=g)
        t = torch.randint(0, 1000, (len(captions),), generator=g)
        # Below high noise the noisy clip itself shows which way the object moves; only at high
        # noise must the prompt decide it, so that is where the text pathway learns.
        if self.cfg.high_noise_fraction > 0:
            high = torch.rand(len(captions), generator=g) < self.cfg.high_noise_fraction
            t = torch.where(
                high, torch.randint(self.cfg.high_noise_min, 1000, t.shape, generator=g), t
            )
        noise = clip_noise(tuple(x0.shape), self.shared_noise, g)
        batch = {"ids": ids, "x0": x0, "t": t, "noise": noise}
        if self.cfg.repair_fraction > 0:
            batch["seen"], batch["t"] = self._slip_colours(clips, x0, t, g, step, ~drop)
        if self.cfg.text_preservation > 0:  # still captions only where a term reads them
            batch["still_ids"], batch["keep"] = still_alignment(
                self.base.text_encoder.tokenize, captions, ids
            )
        return {k: rank_slice(v, rank, world_size) for k, v in batch.items()}

    def _slip_colours(
        self,
        clips: list[world.Clip],
        x0: Tensor,
        t: Tensor,
        g: torch.Generator,
        step: int,
        captioned: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """For a repair_fraction share of the clips: latents in which a run of frames shows the
        object in another colour, and t redrawn in [repair_min, repair_max); the rest as is."""
        cfg = self.cfg
        repair = torch.rand(len(clips), generator=g) < cfg.repair_fraction
        if cfg.repair_captioned_only:
            repair &= captioned
        t = torch.where(
            repair, torch.randint(cfg.repair_min, cfg.repair_max, t.shape, generator=g), t
        )
        seen = x0.clone()
        picked = repair.nonzero().flatten().tolist()
        if not picked:
            return seen, t
        # its own stream, so the rest of the batch is what it would be without repair
        rng = np.random.default_rng([cfg.seed, step, 1])
        frames, mask = colour_slips(
            [clips[i] for i in picked], rng, cfg.repair_run, cfg.repair_nearest
        )
        x = on_device_of(self.base.vae, world.clips_to_tensor(frames))
        slipped = self.base.vae.encode(x, generator=g)  # (n, 4, t, h/8, w/8)
        mask = rearrange(torch.from_numpy(mask).to(x0.device), "b t -> b 1 t 1 1")
        seen[picked] = torch.where(mask, slipped.to(x0), x0[picked])
        return seen, t

    def export(self, module: nn.Module, folder: Path) -> dict:
        from spacetime.formats.motion import save_motion_adapter
        from spacetime.models.inflate import is_temporal

        save_motion_adapter(module.unet, folder / "motion")
        trainable = sum(p.numel() for n, p in module.unet.named_parameters() if is_temporal(n))
        if self.ships_text:
            text = module.text_model.float().eval()
            save_component(
                folder / "motion" / "text_encoder",
                text.config.to_dict(),
                text.state_dict(),
                "model",
            )
        return {"motion_parameters": trainable}


# -- the video VAE's temporal decoder -------------------------------------------------------------


def world_clips(cfg: TrainConfig, step: int, split: str = "train") -> Tensor:
    """The global batch of motion clips for a step, in [-1, 1] (b, 3, t, 64, 64)."""
    rng = np.random.default_rng([cfg.seed, step])
    return world.clips_to_tensor(
        world.render_clips(world.sample_clips(rng, cfg.batch_size, split, cfg.frames))
    )


class TemporalDecoderLoss(nn.Module):
    """SVD's decoder fine-tuning on clips, encoder frozen: reconstruction (MSE + L1, as the image
    VAE) plus L1 between predicted and true frame-to-frame differences, which is what flicker is."""

    def __init__(self, vae: nn.Module, temporal_weight: float):
        super().__init__()
        self.vae = vae
        self.temporal_weight = temporal_weight

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        rec = self.vae._decode(z).float()  # unscaled latents (b, 4, t, h, w) → (b, 3, t, h, w)
        rec_loss = F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x)
        return rec_loss + self.temporal_weight * F.l1_loss(rec.diff(dim=2), x.diff(dim=2))


class VideoVAETask:
    """The temporal decoder grown from the trained image VAE (`vae:`), fine-tuned on world clips."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.image_vae = load_vae(cfg.vae)

    def frozen(self) -> list[nn.Module]:
        return [self.image_vae]

    def build(self) -> nn.Module:
        from spacetime.models.video_vae import VideoVAE

        video = VideoVAE.from_image_vae(self.image_vae)
        for name, p in video.named_parameters():  # SVD keeps the encoder as it was
            p.requires_grad_(name.startswith(("decoder.", "post_quant_conv.")))
        return TemporalDecoderLoss(video, self.cfg.temporal_weight)

    @torch.no_grad()
    def batch(self, step: int, rank: int, world_size: int) -> dict[str, Tensor]:
        x = world_clips(self.cfg, step)
        frames = x.shape[2]
        # Posterior samples, not means: the decoder must take whatever latents sampling ends at.
        q = self.image_vae.posterior(
            on_device_of(self.image_vae, rearrange(x, "b c t h w -> (b t) c h w"))
        )
        z = rearrange(q.sample(_generator(self.cfg, step)), "(b t) c h w -> b c t h w", t=frames)
        return {"x": rank_slice(x, rank, world_size), "z": rank_slice(z, rank, world_size)}

    @torch.no_grad()
    def export(self, module: nn.Module, folder: Path) -> dict:
        """Save vae/ (diffusers AutoencoderKLTemporalDecoder layout) and score it against decoding
        frame by frame on held-out clips."""
        from spacetime.eval.video_vae import evaluate_decoder, heldout_clips
        from spacetime.formats.video_vae import save_video_vae

        video = module.vae.float().eval().cpu()
        save_video_vae(video, folder / "vae", overwrite=True)
        clips = heldout_clips(32, self.cfg.frames, self.cfg.seed)
        encode = lambda x: self.image_vae.encode(x, sample=False)  # noqa: E731
        return {
            "temporal_decoder": evaluate_decoder(video.decode, encode, clips),
            "frame_by_frame": evaluate_decoder(self.image_vae.decode, encode, clips),
        }


TASKS = {"vae": VAETask, "text2image": TextToImageTask, "motion": MotionTask,
         "video_vae": VideoVAETask, "multiview": MultiViewTask}  # fmt: skip
