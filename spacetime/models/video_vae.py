"""Video VAE with a temporal decoder (SVD, Blattmann et al. 2023), keys as diffusers'
`AutoencoderKLTemporalDecoder`.

Frames are encoded one by one by the image VAE's encoder; the decoder interleaves every spatial
resnet with a temporal resnet (Conv3d (3, 1, 1) over frames) mixed in by a learned factor, and ends
with a temporal convolution on the pixels, so decoded frames agree with their neighbours. Built from
an image VAE (`VideoVAE.from_image_vae`), every temporal part starts as the identity and the model
decodes exactly as the image VAE does frame by frame.

Long or large clips decode in temporal windows with context frames and in spatial tiles, both
crossfaded where they overlap (`VideoVAE.decode`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from spacetime.errors import SpacetimeError
from spacetime.models.layers import Layout2d, ResnetBlock, Upsample
from spacetime.models.vae import (
    AutoencoderKL,
    DiagonalGaussian,
    Encoder,
    SelfAttention2d,
    VAEConfig,
)
from spacetime.windows import crossfade, spread

DIFFUSERS_CLASS = "AutoencoderKLTemporalDecoder"


@dataclass(frozen=True)
class VideoVAEConfig:
    """Sizes of an SVD-style video VAE; downsampling factor is 2^(levels-1).

    diffusers' class fixes 32 norm groups, a mid block of `layers_per_block` resnets, no
    post-quant conv and no shift; the next four fields lift those limits for video VAEs grown
    from small image VAEs, and are written to config.json only when they differ. `decode_window`
    is spacetime's too.
    """

    in_channels: int = 3
    out_channels: int = 3
    latent_channels: int = 4
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    scaling_factor: float = 0.18215
    sample_size: int = 768
    use_post_quant_conv: bool = False
    norm_num_groups: int = 32
    mid_block_layers: int = 2
    shift_factor: float | None = None
    # Frames the decoder was trained to decode together (its temporal GroupNorms pool them):
    # longer clips decode in windows of this length that keep the middle half. None: whole clips,
    # as diffusers decodes SVD's.
    decode_window: int | None = None

    def __post_init__(self):
        if self.decode_window is not None and (self.decode_window < 4 or self.decode_window % 4):
            raise ValueError(f"decode_window must be a multiple of 4, got {self.decode_window}")

    def decode_windows(self, frames: int) -> dict:
        """`VideoVAE.decode` window arguments for a clip of `frames` frames: windows of
        `decode_window` frames keeping the middle half, crossfaded; none for shorter clips."""
        if self.decode_window is None or frames <= self.decode_window:
            return {}
        return {"chunk_frames": self.decode_window // 2, "context_frames": self.decode_window // 4}

    @property
    def downscale(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)

    @property
    def temporal_radius(self) -> int:
        """Frames on each side that one decoded frame depends on through the Conv3d (3, 1, 1)s:
        two per spatio-temporal resnet that runs (only the first two of the mid block do, as in
        diffusers) and one for `time_conv_out`."""
        blocks = min(self.mid_block_layers, 2) + len(self.block_out_channels) * (
            self.layers_per_block + 1
        )
        return 2 * blocks + 1

    @property
    def image_config(self) -> VAEConfig:
        """The image VAE whose encoder this one shares (the encoder always has mid attention)."""
        return VAEConfig(
            in_channels=self.in_channels,
            out_channels=self.out_channels,
            latent_channels=self.latent_channels,
            block_out_channels=self.block_out_channels,
            layers_per_block=self.layers_per_block,
            norm_num_groups=self.norm_num_groups,
            scaling_factor=self.scaling_factor,
            shift_factor=self.shift_factor,
            mid_block_add_attention=True,
            sample_size=self.sample_size,
        )

    @classmethod
    def from_diffusers(cls, cfg: dict) -> VideoVAEConfig:
        """Read an `AutoencoderKLTemporalDecoder` config.json (plus our extra fields)."""
        name = cfg.get("_class_name", DIFFUSERS_CLASS)
        if name != DIFFUSERS_CLASS:
            raise ValueError(f"expected a {DIFFUSERS_CLASS} config, got _class_name={name!r}")
        cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
        unknown = set(cfg) - _DIFFUSERS_KEYS - _EXTRA_KEYS
        if unknown:
            raise ValueError(f"unsupported video VAE config keys: {', '.join(sorted(unknown))}")
        channels = tuple(cfg.get("block_out_channels", (64,)))
        blocks = list(cfg.get("down_block_types", ["DownEncoderBlock2D"]))
        if blocks != ["DownEncoderBlock2D"] * len(channels):
            raise ValueError(
                f"unsupported video VAE config: down_block_types={blocks!r} "
                f"(only {len(channels)} x 'DownEncoderBlock2D')"
            )
        layers = cfg.get("layers_per_block", 1)
        return cls(
            in_channels=cfg.get("in_channels", 3),
            out_channels=cfg.get("out_channels", 3),
            latent_channels=cfg.get("latent_channels", 4),
            block_out_channels=channels,
            layers_per_block=layers,
            scaling_factor=cfg.get("scaling_factor", 0.18215),
            sample_size=cfg.get("sample_size") or 32,
            use_post_quant_conv=cfg.get("use_post_quant_conv", False),
            norm_num_groups=cfg.get("norm_num_groups", 32),
            mid_block_layers=cfg.get("mid_block_layers", layers),
            shift_factor=cfg.get("shift_factor"),
            decode_window=cfg.get("decode_window"),
        )

    def to_diffusers(self) -> dict:
        """A config.json for diffusers' `AutoencoderKLTemporalDecoder` (which ignores, with a
        warning, the extra fields; it computes the same only when none is written)."""
        cfg = {
            "_class_name": DIFFUSERS_CLASS,
            "_diffusers_version": "0.30.0",
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "down_block_types": ["DownEncoderBlock2D"] * len(self.block_out_channels),
            "block_out_channels": list(self.block_out_channels),
            "layers_per_block": self.layers_per_block,
            "latent_channels": self.latent_channels,
            "sample_size": self.sample_size,
            "scaling_factor": self.scaling_factor,
            "force_upcast": True,
        }
        extras = {
            "use_post_quant_conv": (self.use_post_quant_conv, False),
            "norm_num_groups": (self.norm_num_groups, 32),
            "mid_block_layers": (self.mid_block_layers, self.layers_per_block),
            "shift_factor": (self.shift_factor, None),
            "decode_window": (self.decode_window, None),
        }
        cfg.update({k: v for k, (v, default) in extras.items() if v != default})
        return cfg


_DIFFUSERS_KEYS = {
    "in_channels", "out_channels", "down_block_types", "block_out_channels", "layers_per_block",
    "latent_channels", "sample_size", "scaling_factor", "force_upcast",
}  # fmt: skip
_EXTRA_KEYS = {
    "use_post_quant_conv", "norm_num_groups", "mid_block_layers", "shift_factor", "decode_window",
}  # fmt: skip


class TemporalResBlock(nn.Module):
    """Two GroupNorm-SiLU-Conv3d (3, 1, 1) stages over frames plus a residual (SVD); the second
    conv starts at zero so the block starts as the identity. Keys as diffusers'
    `TemporalResnetBlock`."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, channels, eps=1e-5)
        self.conv1 = nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0))
        self.norm2 = nn.GroupNorm(groups, channels, eps=1e-5)
        self.conv2 = nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0))
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: Tensor) -> Tensor:
        # x (b, c, t, h, w). GroupNorm on 5-D input pools its statistics over all the frames
        # decoded together, as SVD's does: that is why chunked decoding is close, not bit-exact.
        h = self.conv1(F.silu(self.norm1(x)))
        return x + self.conv2(F.silu(self.norm2(h)))


class AlphaBlender(nn.Module):
    """Learned mix of the spatial and temporal paths (SVD): x + sigmoid(mix_factor) (x_t - x).

    diffusers' "learned" strategy with `switch_spatial_to_temporal_mix` (its image-only indicator
    is all zeros for clips, which makes "learned_with_images" the same)."""

    def __init__(self):
        super().__init__()
        self.mix_factor = nn.Parameter(torch.zeros(1))

    def forward(self, spatial: Tensor, temporal: Tensor) -> Tensor:
        # lerp rather than a·x + (1-a)·x_t: when both paths agree (at initialisation) the result
        # is exactly x for any mix factor.
        return torch.lerp(spatial, temporal, torch.sigmoid(self.mix_factor).to(spatial.dtype))


class SpatioTemporalResBlock(nn.Module):
    """An image resnet per frame, then a temporal resnet over frames blended in (SVD's
    VideoResBlock); keys spatial_res_block, temporal_res_block, time_mixer as diffusers'."""

    def __init__(self, in_channels: int, out_channels: int, groups: int):
        super().__init__()
        self.spatial_res_block = ResnetBlock(in_channels, out_channels, None, groups, 1e-6)
        self.temporal_res_block = TemporalResBlock(out_channels, groups)
        self.time_mixer = AlphaBlender()

    def forward(self, x: Tensor, frames: int) -> Tensor:
        clip = rearrange(self.spatial_res_block(x), "(b t) c h w -> b c t h w", t=frames)
        mixed = self.time_mixer(clip, self.temporal_res_block(clip))
        return rearrange(mixed, "b c t h w -> (b t) c h w")


class TemporalMidBlock(nn.Module):
    """resnet → attention → resnet at the lowest resolution (diffusers' MidBlockTemporalDecoder)."""

    def __init__(self, channels: int, groups: int, layers: int):
        super().__init__()
        self.resnets = nn.ModuleList(
            SpatioTemporalResBlock(channels, channels, groups) for _ in range(layers)
        )
        self.attentions = nn.ModuleList([SelfAttention2d(channels, groups)])

    def forward(self, x: Tensor, frames: int) -> Tensor:
        # diffusers zips the resnets after the first with its single attention: resnets past the
        # second hold weights but never run (and with one layer the attention never runs). Kept,
        # so SVD weights compute here what they compute there.
        x = self.resnets[0](x, frames)
        for attn, resnet in zip(self.attentions, self.resnets[1:], strict=False):
            x = resnet(attn(x), frames)
        return x


class TemporalUpBlock(nn.Module):
    """Spatio-temporal resnets then an optional 2× upsampler (diffusers' UpBlockTemporalDecoder)."""

    def __init__(self, ins: list[int], out: int, groups: int, upsample: bool):
        super().__init__()
        self.resnets = nn.ModuleList(SpatioTemporalResBlock(c, out, groups) for c in ins)
        if upsample:
            self.upsamplers = nn.ModuleList([Upsample(out)])

    def forward(self, x: Tensor, frames: int) -> Tensor:
        for resnet in self.resnets:
            x = resnet(x, frames)
        for upsampler in getattr(self, "upsamplers", ()):
            x = upsampler(x)
        return x


class TemporalDecoder(nn.Module):
    """Latent clip → pixel clip with spatio-temporal resnets and a final temporal conv (SVD)."""

    def __init__(self, cfg: VideoVAEConfig):
        super().__init__()
        ch, g, n = cfg.block_out_channels[::-1], cfg.norm_num_groups, len(cfg.block_out_channels)
        self.conv_in = nn.Conv2d(cfg.latent_channels, ch[0], 3, padding=1)
        self.mid_block = TemporalMidBlock(ch[0], g, cfg.mid_block_layers)
        self.up_blocks = nn.ModuleList(
            TemporalUpBlock(
                [ch[max(i - 1, 0)]] + [ch[i]] * cfg.layers_per_block, ch[i], g, i < n - 1
            )
            for i in range(n)
        )
        self.conv_norm_out = nn.GroupNorm(g, ch[-1], eps=1e-6)
        self.conv_out = nn.Conv2d(ch[-1], cfg.out_channels, 3, padding=1)
        self.time_conv_out = nn.Conv3d(
            cfg.out_channels, cfg.out_channels, (3, 1, 1), padding=(1, 0, 0)
        )
        # Identity over frames at initialisation: centre tap = identity matrix, the rest zero.
        nn.init.dirac_(self.time_conv_out.weight)
        nn.init.zeros_(self.time_conv_out.bias)

    def forward(self, z: Tensor) -> Tensor:
        # z (b, c, t, h, w) → frames folded into the batch ((b t), c, h, w) for the spatial layers,
        # unfolded inside each temporal layer → pixels (b, 3, t, h·f, w·f)
        frames = z.shape[2]
        x = self.conv_in(rearrange(z, "b c t h w -> (b t) c h w"))
        x = self.mid_block(x, frames)
        for block in self.up_blocks:
            x = block(x, frames)
        x = self.conv_out(F.silu(self.conv_norm_out(x)))
        return self.time_conv_out(rearrange(x, "(b t) c h w -> b c t h w", t=frames))


def temporal_windows(
    frames: int, chunk: int, context: int, overlap: int
) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """((decoded lo, hi), (kept lo, hi)) per window: cores of `chunk` frames, decoded with
    `context` extra frames each side, keeping `overlap` of them for the crossfade."""
    windows = []
    for lo in range(0, frames, chunk):
        hi = min(lo + chunk, frames)
        windows.append(
            (
                (max(lo - context, 0), min(hi + context, frames)),
                (max(lo - overlap, 0), min(hi + overlap, frames)),
            )
        )
    return windows


class VideoVAE(Layout2d):
    """Clip ↔ scaled latent clip (SVD's temporal-decoder VAE, Blattmann et al. 2023); the same
    `encode`/`decode` contract and scaling as `AutoencoderKL`, so it drops into pipelines."""

    def __init__(self, cfg: VideoVAEConfig):
        super().__init__()
        self.config = cfg
        self.encoder = Encoder(cfg.image_config)
        self.decoder = TemporalDecoder(cfg)
        self.quant_conv = nn.Conv2d(2 * cfg.latent_channels, 2 * cfg.latent_channels, 1)
        self.post_quant_conv = (
            nn.Conv2d(cfg.latent_channels, cfg.latent_channels, 1)
            if cfg.use_post_quant_conv
            else None
        )

    @property
    def temporal_radius(self) -> int:
        """Context frames each side at which chunked decoding equals whole-clip decoding, up to
        the temporal GroupNorms' statistics (see `decode`)."""
        return self.config.temporal_radius

    @classmethod
    def from_image_vae(cls, vae: AutoencoderKL) -> VideoVAE:
        """SVD's architecture grown from an image VAE: its weights in every spatial part, every
        temporal part the identity, so it decodes exactly as `vae` does frame by frame."""
        c = vae.config
        cfg = VideoVAEConfig(
            in_channels=c.in_channels,
            out_channels=c.out_channels,
            latent_channels=c.latent_channels,
            block_out_channels=c.block_out_channels,
            layers_per_block=c.layers_per_block,
            scaling_factor=c.scaling_factor,
            sample_size=c.sample_size,
            use_post_quant_conv=True,
            norm_num_groups=c.norm_num_groups,
            mid_block_layers=2,  # the image mid block: resnet → attention → resnet
            shift_factor=c.shift_factor,
        )
        param = next(vae.parameters())
        model = cls(cfg).to(param.device, param.dtype)
        # Image decoder resnets become the spatial half of the spatio-temporal ones.
        spatial = re.compile(r"^(decoder\.(?:mid_block|up_blocks\.\d+)\.resnets\.\d+)\.")
        sd = {spatial.sub(r"\1.spatial_res_block.", k): v for k, v in vae.state_dict().items()}
        result = model.load_state_dict(sd, strict=False)
        new = re.compile(r"temporal_res_block|time_mixer|time_conv_out|mid_block\.attentions")
        if result.unexpected_keys or not all(new.search(k) for k in result.missing_keys):
            raise RuntimeError(f"from_image_vae: key mapping out of date ({result})")
        if not c.mid_block_add_attention:
            # An image VAE without mid attention: the attention's zero output projection plus
            # its residual make it the identity.
            with torch.no_grad():
                for coder in (model.encoder, model.decoder):
                    coder.mid_block.attentions[0].to_out[0].weight.zero_()
                    coder.mid_block.attentions[0].to_out[0].bias.zero_()
        return model.train(vae.training)

    def _check(self, x: Tensor, what: str, channels: int, multiple: int) -> None:
        """Raise naming the expected shape unless x is (b, c, t, h, w) or (b, c, h, w)."""
        fits = (
            x.ndim in (4, 5)
            and x.shape[1] == channels
            and all(s > 0 for s in x.shape)
            and x.shape[-1] % multiple == 0
            and x.shape[-2] % multiple == 0
        )
        if not fits:
            sizes = f" with h and w multiples of {multiple}" if multiple > 1 else ""
            raise SpacetimeError(
                f"expected {what} (b, {channels}, t, h, w) or (b, {channels}, h, w){sizes}, "
                f"got {tuple(x.shape)}"
            )

    def posterior(self, x: Tensor) -> DiagonalGaussian:
        """Unscaled q(z|x) for frames folded into the batch ((b t), 3, h, w) in [-1, 1]."""
        return DiagonalGaussian.from_moments(self.quant_conv(self.encoder(x)))

    def encode(
        self, x: Tensor, generator: torch.Generator | None = None, sample: bool = True
    ) -> Tensor:
        """Frames (b, 3, t, h, w) in [-1, 1] → scaled latents (b, 4, t, h/f, w/f), each frame on
        its own as SVD encodes (a posterior sample, or its mean); (b, 3, h, w) is one frame."""
        self._check(x, "frames", self.config.in_channels, self.config.downscale)
        clip = x if x.ndim == 5 else x.unsqueeze(2)
        q = self.posterior(rearrange(clip, "b c t h w -> (b t) c h w"))
        z = q.sample(generator) if sample else q.mean
        z = (z - (self.config.shift_factor or 0.0)) * self.config.scaling_factor
        z = rearrange(z, "(b t) c h w -> b c t h w", t=clip.shape[2])
        return z if x.ndim == 5 else z[:, :, 0]

    def decode(
        self,
        z: Tensor,
        chunk_frames: int | None = None,
        context_frames: int | None = None,
        overlap_frames: int | None = None,
        tile: int | None = None,
        tile_overlap: int | None = None,
    ) -> Tensor:
        """Scaled latents (b, 4, t, h, w) → frames (b, 3, t, h·f, w·f) in [-1, 1] (not clamped);
        (b, 4, h, w) is one frame. Memory grows with the window, not the clip:

        - `chunk_frames`: frames kept per window (None: the whole clip at once), each window
          decoded with `context_frames` (default `temporal_radius`) more on both sides that are
          then dropped. At the radius the kept frames equal whole-clip decoding up to the
          temporal GroupNorms, whose statistics pool the frames decoded together (exact for a
          model fresh from `from_image_vae`; close for trained weights).
        - `overlap_frames` of each side's context are kept and crossfaded linearly with the
          neighbour (default 0 with full context, else min(context, chunk // 2) so short
          context leaves no seam).
        - `tile`: decode spatial tiles of this many latent pixels, overlapping by `tile_overlap`
          (default tile // 4) and crossfaded linearly (diffusers' tiled decoding; approximate,
          since attention and GroupNorm see one tile).
        """
        self._check(z, "latents", self.config.latent_channels, 1)
        clip = z if z.ndim == 5 else z.unsqueeze(2)
        clip = clip / self.config.scaling_factor + (self.config.shift_factor or 0.0)
        if chunk_frames is None and tile is None:
            out = self._decode(clip)
        else:
            out = self._decode_windows(
                clip, chunk_frames, context_frames, overlap_frames, tile, tile_overlap
            )
        return out if z.ndim == 5 else out[:, :, 0]

    def _decode(self, z: Tensor) -> Tensor:
        """Unscaled latents (b, 4, t, h, w) → frames, all in one pass."""
        if self.post_quant_conv is not None:
            frames = z.shape[2]
            z = self.post_quant_conv(rearrange(z, "b c t h w -> (b t) c h w"))
            z = rearrange(z, "(b t) c h w -> b c t h w", t=frames)
        return self.decoder(z)

    def _decode_windows(
        self,
        z: Tensor,
        chunk: int | None,
        context: int | None,
        overlap: int | None,
        tile: int | None,
        tile_overlap: int | None,
    ) -> Tensor:
        """Unscaled latents → frames, window by window and tile by tile, crossfaded."""
        b, _, t, h, w = z.shape
        chunk = t if chunk is None else chunk
        context = self.temporal_radius if context is None else context
        if overlap is None:
            overlap = 0 if context >= self.temporal_radius else min(context, chunk // 2)
        tile = max(h, w) if tile is None else tile
        tile_overlap = tile // 4 if tile_overlap is None else tile_overlap
        problems = [
            f"chunk_frames={chunk} (expected >= 1)" if chunk < 1 else "",
            f"context_frames={context} (expected >= 0)" if context < 0 else "",
            f"overlap_frames={overlap} (expected 0 to min(context_frames, chunk_frames // 2) "
            f"= {min(context, chunk // 2)})"
            if not 0 <= overlap <= min(context, chunk // 2)
            else "",
            f"tile={tile} (expected >= 1)" if tile < 1 else "",
            f"tile_overlap={tile_overlap} (expected 0 to tile - 1 = {tile - 1})"
            if not 0 <= tile_overlap < max(tile, 1)
            else "",
        ]
        if any(problems):
            raise SpacetimeError("bad decode window: " + "; ".join(p for p in problems if p))

        f = self.config.downscale
        windows = temporal_windows(t, chunk, context, overlap)
        weights_t = crossfade([kept for _, kept in windows])
        rows, cols = spread(h, tile, tile_overlap), spread(w, tile, tile_overlap)
        weights_y = crossfade([(lo * f, hi * f) for lo, hi in rows])
        weights_x = crossfade([(lo * f, hi * f) for lo, hi in cols])
        out = z.new_zeros(b, self.config.out_channels, t, h * f, w * f)
        for ((d0, d1), (k0, k1)), wt in zip(windows, weights_t, strict=True):
            for (y0, y1), wy in zip(rows, weights_y, strict=True):
                for (x0, x1), wx in zip(cols, weights_x, strict=True):
                    block = self._decode(z[:, :, d0:d1, y0:y1, x0:x1])[:, :, k0 - d0 : k1 - d0]
                    weight = wt[:, None, None] * wy[:, None] * wx  # (t, h, w)
                    out[:, :, k0:k1, y0 * f : y1 * f, x0 * f : x1 * f] += block * weight.to(block)
        return out
