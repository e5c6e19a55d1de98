"""Motion modules (AnimateDiff, Guo et al. 2023) on world clips: the default image model's U-Net
inflated and frozen, the modules (and optionally the text encoder) trained on the ε loss."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from spacetime import world
from spacetime.formats.diffusers import save_component
from spacetime.sampling import NoiseSchedule, add_noise
from spacetime.train.common import (
    DenoisingLoss,
    TrainingData,
    drop_captions,
    rank_slice,
    step_generator,
)
from spacetime.train.config import MotionTraining


class MotionLoss(DenoisingLoss):
    """The same ε loss on clips; the motion modules train, the spatial U-Net stays frozen
    (AnimateDiff), and the text encoder trains only when it is unfrozen."""

    def forward(self, ids: Tensor, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        trains_text = any(p.requires_grad for p in self.text_model.parameters())
        with torch.set_grad_enabled(trains_text and torch.is_grad_enabled()):
            context = self.text_model(ids)
        # torch 2.13 on CPU segfaults in backward when the autograd graph first starts inside the
        # frozen U-Net (at the first motion module); rooting it at the input avoids that.
        x_t = add_noise(x0, noise, self.alphas_cumprod[t]).requires_grad_(True)
        return self.loss(self.unet(x_t, t, context), noise, t)


def motion_word_ids(tokenize) -> Tensor:
    """Token ids of "moving" and the four directions, one token each in the world's vocabulary."""
    words = ("moving", *world.DIRECTIONS)
    return tokenize([" ".join(words)])[0, 1 : 1 + len(words)]  # after the start token


class MotionTask:
    """Motion modules on world clips, inflating a trained image model (`base:` folder)."""

    def __init__(self, cfg: MotionTraining):
        from spacetime.formats.load import load_components

        self.cfg = cfg
        self.base = load_components(cfg.base)
        self.data = TrainingData(cfg, self.base.vae)
        self.base.vae.eval()

    def frozen(self) -> list[nn.Module]:
        return [self.base.vae]

    def build(self) -> nn.Module:
        from spacetime.models.inflate import AnimateDiff, freeze_spatial, inflate

        spec = AnimateDiff(
            heads=self.base.unet.config.heads[0], max_frames=32, reads_text=self.cfg.motion_text,
            pixel_positions=self.cfg.motion_pixel_positions,
        )  # fmt: skip
        unet = inflate(self.base.unet, spec)
        freeze_spatial(unet)
        # CLIP learned "moving left" from the web; our small text encoder only ever saw still-scene
        # captions, so motion words carry nothing until the motion stage teaches it (train_text).
        text = self.base.text_encoder.model
        text.requires_grad_(self.cfg.train_text)
        if self.cfg.motion_word_std > 0:
            self._redraw_motion_words(text.embeddings.token_embedding.weight)
        schedule = NoiseSchedule().alphas_cumprod.float()
        return MotionLoss(unet, text, schedule, self.cfg.x0_weight_cap)

    @torch.no_grad()
    def _redraw_motion_words(self, table: Tensor) -> None:
        """N(0, motion_word_std) rows for "moving" and the directions, seeded by the run's seed."""
        ids = motion_word_ids(self.base.text_encoder.tokenize)
        g = torch.Generator().manual_seed(self.cfg.seed)
        rows = torch.randn((len(ids), table.shape[1]), generator=g) * self.cfg.motion_word_std
        table[ids.to(table.device)] = rows.to(table)

    @torch.no_grad()
    def batch(self, step: int, rank: int, world_size: int) -> dict[str, Tensor]:
        cfg = self.cfg
        x, captions = self.data.clips(step, cfg.frames)
        g = step_generator(cfg.seed, step)
        ids = self.base.text_encoder.tokenize(drop_captions(captions, cfg.caption_dropout, g))
        # (b, 4, t, h/8, w/8), frame by frame
        x0 = self.data.encode(x, generator=g)
        t = torch.randint(0, 1000, (len(captions),), generator=g)
        # Below high noise the noisy clip itself shows which way the object moves; only at high
        # noise must the prompt decide it, so that is where the text pathway learns.
        if cfg.high_noise_fraction > 0:
            high = torch.rand(len(captions), generator=g) < cfg.high_noise_fraction
            t = torch.where(high, torch.randint(cfg.high_noise_min, 1000, t.shape, generator=g), t)
        noise = torch.randn(x0.shape, generator=g)
        batch = {"ids": ids, "x0": x0, "t": t, "noise": noise}
        return {k: rank_slice(v, rank, world_size) for k, v in batch.items()}

    def export(self, module: nn.Module, folder: Path) -> dict:
        """A MotionAdapter folder, with the text encoder its modules were trained with when the
        run trained it."""
        from spacetime.formats.motion import save_motion_adapter
        from spacetime.models.inflate import is_temporal

        save_motion_adapter(module.unet, folder / "motion")
        trainable = sum(p.numel() for n, p in module.unet.named_parameters() if is_temporal(n))
        if self.cfg.train_text:
            text = module.text_model.float().eval()
            save_component(
                folder / "motion" / "text_encoder",
                text.config.to_dict(),
                text.state_dict(),
                "model",
            )
        return {"motion_parameters": trainable, **self.data.summary()}
