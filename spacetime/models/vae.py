"""KL-regularised autoencoder (Rombach et al. 2022, LDM) with diffusers' `AutoencoderKL` names.

The VAE owns its latent scaling (and optional shift): `encode` returns latents ready for the U-Net
and `decode` takes them back, so no caller ever sees 0.18215. Images are `(b, 3, h, w)` in [-1, 1];
clips `(b, 3, t, h, w)` are handled frame by frame here (the video VAE adds temporal decoding).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from spacetime.models.attention import Attention
from spacetime.models.layers import Downsample, ResnetBlock, Upsample


@dataclass(frozen=True)
class VAEConfig:
    """Sizes of an SD-style KL autoencoder; downsampling factor is 2^(levels-1)."""

    in_channels: int = 3
    out_channels: int = 3
    latent_channels: int = 4
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    norm_num_groups: int = 32
    scaling_factor: float = 0.18215
    shift_factor: float | None = None
    mid_block_add_attention: bool = True
    sample_size: int = 512

    @property
    def downscale(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)

    @classmethod
    def from_diffusers(cls, cfg: dict) -> VAEConfig:
        """Read a diffusers `AutoencoderKL` config.json, refusing features we don't model."""
        cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
        unknown = set(cfg) - _DIFFUSERS_KEYS
        if unknown:
            raise ValueError(f"unsupported VAE config keys: {', '.join(sorted(unknown))}")
        levels = len(cfg.get("block_out_channels", cls.block_out_channels))
        checks = {
            "down_block_types": ["DownEncoderBlock2D"] * levels,
            "up_block_types": ["UpDecoderBlock2D"] * levels,
            "act_fn": "silu",
            "use_quant_conv": True,
            "use_post_quant_conv": True,
            "latents_mean": None,
            "latents_std": None,
        }
        for key, want in checks.items():
            got = cfg.get(key, want)
            if (list(got) if isinstance(got, list | tuple) else got) != want:
                raise ValueError(f"unsupported VAE config: {key}={got!r} (only {want!r})")
        return cls(
            in_channels=cfg.get("in_channels", 3),
            out_channels=cfg.get("out_channels", 3),
            latent_channels=cfg.get("latent_channels", 4),
            block_out_channels=tuple(cfg.get("block_out_channels", (64,))),
            layers_per_block=cfg.get("layers_per_block", 1),
            norm_num_groups=cfg.get("norm_num_groups", 32),
            scaling_factor=cfg.get("scaling_factor", 0.18215),
            shift_factor=cfg.get("shift_factor"),
            mid_block_add_attention=cfg.get("mid_block_add_attention", True),
            sample_size=cfg.get("sample_size") or 512,
        )

    def to_diffusers(self) -> dict:
        """A config.json that diffusers' `AutoencoderKL` loads."""
        levels = len(self.block_out_channels)
        return {
            "_class_name": "AutoencoderKL",
            "_diffusers_version": "0.30.0",
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "down_block_types": ["DownEncoderBlock2D"] * levels,
            "up_block_types": ["UpDecoderBlock2D"] * levels,
            "block_out_channels": list(self.block_out_channels),
            "layers_per_block": self.layers_per_block,
            "act_fn": "silu",
            "latent_channels": self.latent_channels,
            "norm_num_groups": self.norm_num_groups,
            "sample_size": self.sample_size,
            "scaling_factor": self.scaling_factor,
            "shift_factor": self.shift_factor,
            "mid_block_add_attention": self.mid_block_add_attention,
        }


_DIFFUSERS_KEYS = {
    "in_channels", "out_channels", "down_block_types", "up_block_types", "block_out_channels",
    "layers_per_block", "act_fn", "latent_channels", "norm_num_groups", "sample_size",
    "scaling_factor", "shift_factor", "latents_mean", "latents_std", "force_upcast",
    "use_quant_conv", "use_post_quant_conv", "mid_block_add_attention",
}  # fmt: skip


class SelfAttention2d(Attention):
    """Single-head self-attention over h·w with a GroupNorm in front and a residual (LDM VAE)."""

    def __init__(self, channels: int, groups: int):
        super().__init__(channels, heads=1, head_dim=channels, qkv_bias=True)
        self.group_norm = nn.GroupNorm(groups, channels, eps=1e-6)

    def forward(self, x: Tensor) -> Tensor:
        _, _, h, w = x.shape
        tokens = rearrange(self.group_norm(x), "b c h w -> b (h w) c")
        return x + rearrange(super().forward(tokens), "b (h w) c -> b c h w", h=h, w=w)


class MidBlock(nn.Module):
    """resnet → attention → resnet at the lowest resolution."""

    def __init__(self, channels: int, groups: int, attention: bool):
        super().__init__()
        self.resnets = nn.ModuleList(
            [ResnetBlock(channels, channels, None, groups, 1e-6) for _ in range(2)]
        )
        self.attentions = nn.ModuleList([SelfAttention2d(channels, groups)] if attention else [])

    def forward(self, x: Tensor) -> Tensor:
        x = self.resnets[0](x)
        for attn in self.attentions:
            x = attn(x)
        return self.resnets[1](x)


class CoderBlock(nn.Module):
    """Resnets then an optional down/up sampler: one level of the encoder or decoder."""

    def __init__(self, ins: list[int], out: int, groups: int, resample: str | None):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(c, out, None, groups, 1e-6) for c in ins])
        if resample == "down":
            self.downsamplers = nn.ModuleList([Downsample(out, padding=0)])
        elif resample == "up":
            self.upsamplers = nn.ModuleList([Upsample(out)])

    def forward(self, x: Tensor) -> Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        for sampler in (*getattr(self, "downsamplers", ()), *getattr(self, "upsamplers", ())):
            x = sampler(x)
        return x


class Encoder(nn.Module):
    """Image → 2·latent moments at 1/2^(levels-1) resolution."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        ch, g, n = cfg.block_out_channels, cfg.norm_num_groups, len(cfg.block_out_channels)
        self.conv_in = nn.Conv2d(cfg.in_channels, ch[0], 3, padding=1)
        self.down_blocks = nn.ModuleList(
            CoderBlock(
                [ch[max(i - 1, 0)]] + [ch[i]] * (cfg.layers_per_block - 1),
                ch[i],
                g,
                "down" if i < n - 1 else None,
            )
            for i in range(n)
        )
        self.mid_block = MidBlock(ch[-1], g, cfg.mid_block_add_attention)
        self.conv_norm_out = nn.GroupNorm(g, ch[-1], eps=1e-6)
        self.conv_out = nn.Conv2d(ch[-1], 2 * cfg.latent_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        x = self.mid_block(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


class Decoder(nn.Module):
    """Latent → image, mirroring the encoder with one extra resnet per level."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        ch, g, n = cfg.block_out_channels[::-1], cfg.norm_num_groups, len(cfg.block_out_channels)
        self.conv_in = nn.Conv2d(cfg.latent_channels, ch[0], 3, padding=1)
        self.mid_block = MidBlock(ch[0], g, cfg.mid_block_add_attention)
        self.up_blocks = nn.ModuleList(
            CoderBlock(
                [ch[max(i - 1, 0)]] + [ch[i]] * cfg.layers_per_block,
                ch[i],
                g,
                "up" if i < n - 1 else None,
            )
            for i in range(n)
        )
        self.conv_norm_out = nn.GroupNorm(g, ch[-1], eps=1e-6)
        self.conv_out = nn.Conv2d(ch[-1], cfg.out_channels, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        x = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


@dataclass
class DiagonalGaussian:
    """q(z|x) = N(mean, exp(logvar)) (Kingma & Welling 2014)."""

    mean: Tensor
    logvar: Tensor

    @classmethod
    def from_moments(cls, moments: Tensor) -> DiagonalGaussian:
        mean, logvar = moments.chunk(2, dim=1)
        return cls(mean, logvar.clamp(-30.0, 20.0))

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        noise = torch.randn(self.mean.shape, generator=generator, dtype=self.mean.dtype)
        return self.mean + torch.exp(0.5 * self.logvar) * noise.to(self.mean.device)

    def kl(self) -> Tensor:
        """KL(q || N(0, I)) summed over latent dims, per sample."""
        var = torch.exp(self.logvar)
        return 0.5 * (self.mean**2 + var - 1.0 - self.logvar).flatten(1).sum(1)


def _per_frame(fn):
    """Let an image-space method take clips (b, c, t, h, w) by folding frames into the batch."""

    @functools.wraps(fn)
    def wrapper(self, x: Tensor, *args, **kwargs):
        if x.ndim == 4:
            return fn(self, x, *args, **kwargs)
        frames = x.shape[2]
        out = fn(self, rearrange(x, "b c t h w -> (b t) c h w"), *args, **kwargs)
        return rearrange(out, "(b t) c h w -> b c t h w", t=frames)

    return wrapper


class AutoencoderKL(nn.Module):
    """Image ↔ scaled latent; `encode`/`decode` apply the VAE's own scaling factor."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.config = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quant_conv = nn.Conv2d(2 * cfg.latent_channels, 2 * cfg.latent_channels, 1)
        self.post_quant_conv = nn.Conv2d(cfg.latent_channels, cfg.latent_channels, 1)

    def posterior(self, x: Tensor) -> DiagonalGaussian:
        """Unscaled q(z|x) for images (b, 3, h, w) in [-1, 1]."""
        return DiagonalGaussian.from_moments(self.quant_conv(self.encoder(x)))

    def scale(self, z: Tensor) -> Tensor:
        """Unscaled posterior samples → the latents the U-Net sees."""
        return (z - (self.config.shift_factor or 0.0)) * self.config.scaling_factor

    @_per_frame
    def encode(
        self, x: Tensor, generator: torch.Generator | None = None, sample: bool = True
    ) -> Tensor:
        """Images in [-1, 1] → scaled latents (a posterior sample, or its mean)."""
        q = self.posterior(x)
        return self.scale(q.sample(generator) if sample else q.mean)

    @_per_frame
    def decode(self, z: Tensor) -> Tensor:
        """Scaled latents → images in [-1, 1] (not clamped)."""
        z = z / self.config.scaling_factor + (self.config.shift_factor or 0.0)
        return self.decoder(self.post_quant_conv(z))
