"""Building blocks shared by the U-Net and the VAE, with diffusers' parameter names."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from spacetime.models.attention import Attention


def timestep_embedding(
    timesteps: Tensor, dim: int, flip_sin_to_cos: bool = True, freq_shift: float = 0.0
) -> Tensor:
    """Sinusoidal embedding of diffusion time (Vaswani et al. 2017; DDPM, Ho et al. 2020)."""
    half = dim // 2
    exponent = -math.log(10000) * torch.arange(half, dtype=torch.float32, device=timesteps.device)
    freqs = torch.exp(exponent / (half - freq_shift))
    angles = timesteps[:, None].float() * freqs[None, :]
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)
    if flip_sin_to_cos:
        emb = torch.cat([emb[:, half:], emb[:, :half]], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class Layout2d(nn.Module):
    """A network mixing 2D and 3D convolutions whose `.to(memory_format=...)` lays out its 4-D
    tensors only: torch applies a format to every 4- and 5-D tensor and refuses channels_last for
    the 5-D weights of temporal Conv3d's, while a 2D layout concerns the 2D convs alone."""

    def to(self, *args, memory_format: torch.memory_format | None = None, **kwargs):
        super().to(*args, **kwargs)
        if memory_format is not None:
            self._apply(lambda t: t.contiguous(memory_format=memory_format) if t.dim() == 4 else t)
        return self


class TimestepEmbedding(nn.Module):
    """Two-layer MLP on the sinusoidal embedding."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class GroupNorm(nn.GroupNorm):
    """nn.GroupNorm (Wu & He 2018), same parameters and keys, with a faster path for one case of
    torch's CPU kernel: bf16 channels-last input whose feature map has under 1024 pixels (torch
    then parallelises over samples × groups) and fewer than 16 channels per group. There each
    group reads a few values out of every pixel's channel row, and runs 5-10x slower than the
    same tensor channels-first (docs/benchmarks.md, "Speed: what the video profile decided").
    That case runs channels-first and returns channels-last: the same result up to rounding, for
    the price of two copies."""

    def forward(self, x: Tensor) -> Tensor:
        if (
            x.ndim == 4
            and x.dtype == torch.bfloat16
            and x.device.type == "cpu"
            and x.shape[2] * x.shape[3] < 1024
            and x.shape[1] // self.num_groups < 16
            and not x.is_contiguous()
            and x.is_contiguous(memory_format=torch.channels_last)
        ):
            out = super().forward(x.contiguous())
            return out.contiguous(memory_format=torch.channels_last)
        return super().forward(x)


class ResnetBlock(nn.Module):
    """GroupNorm-SiLU-conv residual block, optionally shifted by a time embedding (DDPM / LDM)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        temb_channels: int | None,
        groups: int = 32,
        eps: float = 1e-5,
    ):
        super().__init__()
        self.norm1 = GroupNorm(groups, in_channels, eps=eps)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb_channels, out_channels) if temb_channels else None
        self.norm2 = GroupNorm(groups, out_channels, eps=eps)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = (
            nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None
        )

    def forward(self, x: Tensor, temb: Tensor | None = None) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        if self.time_emb_proj is not None:
            h = h + rearrange(self.time_emb_proj(F.silu(temb)), "b c -> b c 1 1")
        h = self.conv2(F.silu(self.norm2(h)))
        skip = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return skip + h


class Downsample(nn.Module):
    """Stride-2 3×3 conv; the VAE pads asymmetrically (right/bottom) as LDM does."""

    def __init__(self, channels: int, padding: int = 1):
        super().__init__()
        self.padding = padding
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=padding)

    def forward(self, x: Tensor) -> Tensor:
        if self.padding == 0:
            x = F.pad(x, (0, 1, 0, 1))
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour 2× (or to a skip's size) then a 3×3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        # Interpolating to the skip's size keeps odd latent sizes working; for exact halves it
        # equals scale_factor=2. Nearest has no bf16 CPU kernel in older torch, so upcast.
        dtype = x.dtype
        if size is None:
            x = F.interpolate(x.float(), scale_factor=2.0, mode="nearest")
        else:
            x = F.interpolate(x.float(), size=size, mode="nearest")
        return self.conv(x.to(dtype))


class GEGLU(nn.Module):
    """Gated GELU projection (Shazeer 2020)."""

    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.proj = nn.Linear(dim, inner * 2)

    def forward(self, x: Tensor) -> Tensor:
        h, gate = self.proj(x).chunk(2, dim=-1)
        return h * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU feed-forward; keys ff.net.0.proj and ff.net.2 as diffusers."""

    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.ModuleList(
            [GEGLU(dim, dim * mult), nn.Dropout(0.0), nn.Linear(dim * mult, dim)]
        )

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.net:
            x = layer(x)
        return x


def sinusoidal_codes(length: int, dim: int, device=None) -> Tensor:
    """(1, length, dim) sine/cosine position codes (Vaswani et al. 2017), AnimateDiff's `pe`."""
    position = torch.arange(length, device=device).unsqueeze(1)
    freqs = torch.exp(torch.arange(0, dim, 2, device=device) * (-math.log(10000.0) / dim))
    pe = torch.zeros(1, length, dim, device=device)
    pe[0, :, 0::2] = torch.sin(position * freqs)
    pe[0, :, 1::2] = torch.cos(position * freqs)
    return pe


class SinusoidalPositions(nn.Module):
    """Adds fixed sine/cosine position codes along the sequence (Vaswani et al. 2017).

    The codes are a pure function of position, computed per call (a few thousand numbers): never
    saved, so checkpoints with or without them load, and a model built on the meta device needs
    nothing rebuilt."""

    def __init__(self, dim: int, max_length: int):
        super().__init__()
        self.dim, self.max_length = dim, max_length

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] > self.max_length:
            raise ValueError(
                f"sequence of {x.shape[1]} exceeds the {self.max_length} positions this layer knows"
            )
        return x + sinusoidal_codes(x.shape[1], self.dim, x.device).to(x.dtype)


class TransformerBlock(nn.Module):
    """Self-attention, cross-attention to text, GEGLU feed-forward, pre-norm residuals (LDM).

    With `context_dim=None` the second attention is self-attention too, and `positions` adds
    position codes before each attention: AnimateDiff's temporal block. SparseCtrl's temporal
    blocks have no second attention (`second_attention=False`; diffusers' BasicTransformerBlock
    with neither cross-attention nor double self-attention).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        head_dim: int,
        context_dim: int | None,
        positions: int = 0,
        second_attention: bool = True,
    ):
        super().__init__()
        self.pos_embed = SinusoidalPositions(dim, positions) if positions else None
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads, head_dim)
        if second_attention:
            self.norm2 = nn.LayerNorm(dim)
            self.attn2 = Attention(dim, heads, head_dim, context_dim=context_dim)
        else:
            self.norm2 = self.attn2 = None
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)

    def forward(self, x: Tensor, context: Tensor | None, views: int = 1) -> Tensor:
        """x ((b v), n, dim). With views > 1 the self-attention spans the tokens of all views of a
        set, `(b v) n c -> b (v n) c`: MVDream's multi-view attention (Shi et al. 2023) through
        SD's own weights; the cross-attention and feed-forward stay per view."""
        q = self._positioned(self.norm1(x))
        if views > 1:
            wide = self.attn1(rearrange(q, "(b v) n c -> b (v n) c", v=views))
            x = x + rearrange(wide, "b (v n) c -> (b v) n c", v=views)
        else:
            x = x + self.attn1(q)
        if self.attn2 is not None:
            x = x + self.attn2(self._positioned(self.norm2(x)), context)
        return x + self.ff(self.norm3(x))

    def _positioned(self, x: Tensor) -> Tensor:
        return x if self.pos_embed is None else self.pos_embed(x)


class SpatialTransformer(nn.Module):
    """Transformer over the h·w tokens of a feature map (diffusers' Transformer2DModel)."""

    def __init__(
        self,
        channels: int,
        heads: int,
        context_dim: int,
        depth: int = 1,
        groups: int = 32,
        linear_projection: bool = False,
    ):
        super().__init__()
        self.linear_projection = linear_projection
        self.norm = GroupNorm(groups, channels, eps=1e-6)
        make = nn.Linear if linear_projection else (lambda i, o: nn.Conv2d(i, o, 1))
        self.proj_in = make(channels, channels)
        self.transformer_blocks = nn.ModuleList(
            [
                TransformerBlock(channels, heads, channels // heads, context_dim)
                for _ in range(depth)
            ]
        )
        self.proj_out = make(channels, channels)

    def forward(self, x: Tensor, context: Tensor | None, views: int = 1) -> Tensor:
        """x ((b v), c, h, w); `views` > 1: self-attention across a set's views (MVDream)."""
        _, _, h, w = x.shape
        residual = x
        x = self.norm(x)
        if self.linear_projection:
            x = self.proj_in(rearrange(x, "b c h w -> b (h w) c"))
        else:
            x = rearrange(self.proj_in(x), "b c h w -> b (h w) c")
        for block in self.transformer_blocks:
            x = block(x, context, views)
        if self.linear_projection:
            x = rearrange(self.proj_out(x), "b (h w) c -> b c h w", h=h, w=w)
        else:
            x = self.proj_out(rearrange(x, "b (h w) c -> b c h w", h=h, w=w))
        return x + residual
