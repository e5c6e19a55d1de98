"""The world U-Net and its CLIP text encoder, trained jointly on a trained VAE's latents."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import torch
from torch import Tensor, nn

from spacetime import world
from spacetime.formats.clip_tokenizer import Tokenizer
from spacetime.formats.diffusers import Components, save_diffusers
from spacetime.formats.tokenizer import word_tokenizer
from spacetime.models.clip import CLIPTextConfig, CLIPTextModel
from spacetime.models.presets import PRESETS
from spacetime.models.text import TextEncoder
from spacetime.models.unet import UNet2DCondition
from spacetime.sampling import NoiseSchedule
from spacetime.train.common import (
    DenoisingLoss,
    TrainingData,
    drop_captions,
    load_vae,
    rank_slice,
    step_generator,
)
from spacetime.train.config import TextToImageTraining

TEXT_LENGTH = 16  # world captions are at most 9 words; 16 tokens keeps cross-attention cheap
CLIP_LENGTH = 77  # the most tokens a caption of your own keeps, as CLIP's


def caption_vocabulary(captions) -> tuple[list[str], int]:
    """The words of captions (lower-case letters; the tokenizer spells anything else letter by
    letter) and a token length that holds the longest caption, at most CLIP's 77."""
    words, longest = {}, 0
    for caption in captions:
        found = re.findall(r"[a-z]+", caption.lower())
        words.update(dict.fromkeys(found))
        longest = max(longest, len(found))
    return list(words), min(CLIP_LENGTH, max(TEXT_LENGTH, longest + 2))


class TextToImageTask:
    def __init__(self, cfg: TextToImageTraining):
        self.cfg = cfg
        _, self.unet_config, text = PRESETS[cfg.preset]
        self.vae = load_vae(cfg.vae)
        self.data = TrainingData(cfg, self.vae)
        words, length = world.VOCABULARY, TEXT_LENGTH
        if self.data.media is not None:  # your own captions: their words, one token each
            words, length = caption_vocabulary(item.caption for item in self.data.media.items)
        self._tok_dir = tempfile.TemporaryDirectory()
        tok = word_tokenizer(words, self._tok_dir.name, length)
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
        x, captions = self.data.images(step)
        g = step_generator(self.cfg.seed, step)
        ids = self.tokenizer(drop_captions(captions, self.cfg.caption_dropout, g))
        x0 = self.data.encode(x, generator=g)
        t = torch.randint(0, self.schedule.num_train_timesteps, (len(captions),), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        batch = {"ids": ids, "x0": x0, "t": t, "noise": noise}
        return {k: rank_slice(v, rank, world_size) for k, v in batch.items()}

    def export(self, module: nn.Module, folder: Path) -> dict:
        text = TextEncoder(self.tokenizer, module.text_model.float().eval())
        components = Components(module.unet.float().eval(), self.vae, text, self.schedule)
        save_diffusers(components, folder, overwrite=True)
        return {"unet_parameters": sum(p.numel() for p in module.unet.parameters()),
                "text_parameters": sum(p.numel() for p in module.text_model.parameters()),
                **self.data.summary()}  # fmt: skip
