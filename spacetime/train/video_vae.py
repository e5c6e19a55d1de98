"""The video VAE's temporal decoder (SVD, Blattmann et al. 2023), grown from the trained image VAE
and fine-tuned on world clips with the encoder frozen."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from spacetime.train.common import (
    TrainingData,
    load_vae,
    on_device_of,
    rank_slice,
    step_generator,
)
from spacetime.train.config import VideoVAETraining


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

    def __init__(self, cfg: VideoVAETraining):
        self.cfg = cfg
        self.data = TrainingData(cfg)
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
        x, _ = self.data.clips(step, self.cfg.frames)
        frames = x.shape[2]
        # Posterior samples, not means: the decoder must take whatever latents sampling ends at.
        q = self.image_vae.posterior(
            on_device_of(self.image_vae, rearrange(x, "b c t h w -> (b t) c h w"))
        )
        g = step_generator(self.cfg.seed, step)
        z = rearrange(q.sample(g), "(b t) c h w -> b c t h w", t=frames)
        return {"x": rank_slice(x, rank, world_size), "z": rank_slice(z, rank, world_size)}

    @torch.no_grad()
    def export(self, module: nn.Module, folder: Path) -> dict:
        """Save vae/ (diffusers AutoencoderKLTemporalDecoder layout), recording the clip length it
        trained on as the window it decodes at once, and score it against decoding frame by frame
        on held-out clips."""
        from spacetime.eval.video_vae import evaluate_decoder, heldout_clips
        from spacetime.formats.video_vae import save_video_vae

        video = module.vae.float().eval().cpu()
        video.config = dataclasses.replace(video.config, decode_window=self.cfg.frames)
        save_video_vae(video, folder / "vae", overwrite=True)
        clips = heldout_clips(32, self.cfg.frames, self.cfg.seed)
        encode = lambda x: self.image_vae.encode(x, sample=False)  # noqa: E731
        return {
            "temporal_decoder": evaluate_decoder(video.decode, encode, clips),
            "frame_by_frame": evaluate_decoder(self.image_vae.decode, encode, clips),
            **self.data.summary(),
        }
