"""A latent cache: a media dataset's frames encoded once by the VAE, so that training on a CPU or a
small GPU spends its time in the U-Net rather than decoding video and encoding pixels.

The cache holds, for every media file, the VAE posterior's moments (mean and log-variance) of all
its frames after preprocessing (resized and centre-cropped to `media_size`), one safetensors file
per shard of files, and `cache.json` recording what made it: the media source, `media_size` and a
SHA-256 of the VAE's weights. A run whose media, size or VAE differ is refused: a cache never feeds
latents of another VAE or crop. Files that could not be decoded are recorded as such.

Batches drawn from the cache equal batches drawn from the media: the same (seed, step) picks the
same files and starts (spacetime.train.media_data.MediaData.draw), and the posterior is sampled
with the step's generator over the batch in the order `vae.encode` samples it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from torch import Tensor, nn

from spacetime.errors import ConfigError
from spacetime.models.vae import DiagonalGaussian
from spacetime.train.media_data import Item, MediaData, pick

CACHE_FILE = "cache.json"
FILES_PER_SHARD = 256
ENCODE_FRAMES = 32  # frames per VAE call while building


def vae_fingerprint(vae: nn.Module) -> str:
    """SHA-256 of a VAE's weights, in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(vae.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class LatentCache:
    """The cached moments of a MediaData's files; built on first use, then reused."""

    def __init__(self, folder: str | Path, data: MediaData, vae: nn.Module):
        self.folder, self.data, self.vae = Path(folder), data, vae
        wanted = {"media": data.source, "media_size": data.size, "vae": vae_fingerprint(vae)}
        if not (self.folder / CACHE_FILE).is_file():
            self._build(wanted)
        found = json.loads((self.folder / CACHE_FILE).read_text())
        for key, value in wanted.items():
            if found.get(key) != value:
                raise ConfigError(
                    f"latent cache {self.folder} was made with {key} {found.get(key)!r}, this run "
                    f"has {value!r}: delete the cache or give another latent_cache folder"
                )
        self.bad: dict[str, str] = found["bad"]
        self.moments: dict[str, Tensor] = {}
        from safetensors.torch import load_file

        for shard in found["shards"]:
            self.moments.update(load_file(str(self.folder / shard)))

    def _build(self, meta: dict) -> None:
        """Encode every file's frames and write the cache into a new folder, renamed into place
        (so a killed build leaves nothing a later run would trust)."""
        import shutil

        from safetensors.torch import save_file
        from tqdm import tqdm

        from spacetime.tempfiles import temp_folder

        self.folder.parent.mkdir(parents=True, exist_ok=True)
        staging = temp_folder(self.folder.parent)
        try:
            shards, bad, current = [], {}, {}
            for item in tqdm(self.data.items, desc="latent cache", unit="file"):
                try:
                    frames = self.data.frames_of(item)
                except Exception as e:  # recorded, and skipped at draw time as MediaData does
                    bad[item.name] = str(e)
                    continue
                current[item.name] = self._moments(frames)
                if len(current) == FILES_PER_SHARD:
                    shards.append(self._write(staging, len(shards), current, save_file))
                    current = {}
            if current:
                shards.append(self._write(staging, len(shards), current, save_file))
            (staging / CACHE_FILE).write_text(json.dumps({**meta, "shards": shards, "bad": bad}))
            staging.rename(self.folder)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    @staticmethod
    def _write(folder: Path, index: int, moments: dict[str, Tensor], save_file) -> str:
        name = f"latents-{index:05d}.safetensors"
        save_file({k: v.contiguous() for k, v in moments.items()}, str(folder / name))
        return name

    @torch.no_grad()
    def _moments(self, frames: np.ndarray) -> Tensor:
        """uint8 (n, h, w, 3) → the posterior's (n, 2c, h/f, w/f): mean and log-variance."""
        device = next(self.vae.parameters()).device
        x = torch.from_numpy(frames).float().div(127.5).sub(1)
        x = rearrange(x, "n h w c -> n c h w")
        out = []
        for chunk in x.split(ENCODE_FRAMES):
            q = self.vae.posterior(chunk.to(device))
            out.append(torch.cat([q.mean, q.logvar], dim=1).float().cpu())
        return torch.cat(out)

    def _take(self, item: Item, frames: int, rng: np.random.Generator) -> Tensor:
        if item.name in self.bad:
            raise ValueError(self.bad[item.name])
        moments = self.moments[item.name]
        if not item.is_video:
            return moments
        return pick(moments, self.data.span(frames), self.data.stride, rng)

    def draw(self, seed: int, step: int, batch_size: int, frames: int) -> tuple[Tensor, list]:
        """The moments of a step's items (b, t, 2c, h, w), drawn as MediaData draws, and captions."""
        taken, captions = self.data.draw(seed, step, batch_size, frames, self._take)
        return torch.stack(taken), captions

    def sample(self, moments: Tensor, generator: torch.Generator) -> Tensor:
        """Scaled latents (b, c, t, h, w), sampled as vae.encode samples a clip's frames."""
        folded = rearrange(moments, "b t c h w -> (b t) c h w")
        mean, logvar = folded.chunk(2, dim=1)
        z = self.vae.scale(DiagonalGaussian(mean, logvar).sample(generator))
        return rearrange(z, "(b t) c h w -> b c t h w", b=len(moments))
