"""Layers that mix information across frames, each the identity at initialisation.

Spatial layers see frames folded into the batch `(b t) c h w`; these unfold them and fold pixels
into the batch instead, so a 2D model plus these layers is a video model that, before any
training, still computes exactly what the 2D model computed frame by frame.
"""

from __future__ import annotations

from einops import rearrange
from torch import Tensor, nn

from spacetime.models.layers import TransformerBlock


class TemporalTransformer(nn.Module):
    """Self-attention over frames at every pixel, with a zero-initialised output projection.

    Two layouts share it. AnimateDiff's motion module (Guo et al. 2023; diffusers'
    `AnimateDiffTransformer3D`) adds sinusoidal frame positions. ModelScope's temporal attention
    (Wang et al. 2023; diffusers' `TransformerTemporalModel`, as `temp_attentions` and
    `transformer_in`) has none (`max_frames=None`) and may run wider than its input
    (`heads · head_dim ≠ channels`). In both the block's second attention attends to the frames
    again, not to text; the GroupNorm spans all frames, as diffusers' does.
    """

    def __init__(
        self,
        channels: int,
        heads: int,
        groups: int = 32,
        layers: int = 1,
        max_frames: int | None = 32,
        head_dim: int | None = None,
    ):
        super().__init__()
        inner = heads * (head_dim or channels // heads)
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, inner)
        self.transformer_blocks = nn.ModuleList(
            TransformerBlock(inner, heads, inner // heads, None, positions=max_frames or 0)
            for _ in range(layers)
        )
        self.proj_out = nn.Linear(inner, channels)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: Tensor, frames: int) -> Tensor:
        # x ((b t), c, h, w) → tokens ((b h w), t, inner) → back, plus the residual
        b, h, w = x.shape[0] // frames, x.shape[2], x.shape[3]
        clip = self.norm(rearrange(x, "(b t) c h w -> b c t h w", t=frames))
        tokens = self.proj_in(rearrange(clip, "b c t h w -> (b h w) t c"))
        for block in self.transformer_blocks:
            tokens = block(tokens, None)
        out = rearrange(self.proj_out(tokens), "(b h w) t c -> (b t) c h w", b=b, h=h, w=w)
        return x + out


class TemporalConv(nn.Module):
    """Pseudo-3D convolution (Make-A-Video / ModelScope): four GroupNorm-SiLU-Conv3d(3,1,1) stages
    over frames with a residual; the last conv starts at zero. Keys as diffusers'
    `TemporalConvLayer` (conv1.0 norm, conv1.2 conv, conv2-4.{0, 3})."""

    def __init__(self, channels: int, groups: int = 32):
        super().__init__()

        def stage(first: bool) -> nn.Sequential:
            conv = nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0))
            middle = [nn.SiLU()] if first else [nn.SiLU(), nn.Dropout(0.0)]
            return nn.Sequential(nn.GroupNorm(groups, channels), *middle, conv)

        self.conv1, self.conv2, self.conv3, self.conv4 = (stage(i == 0) for i in range(4))
        nn.init.zeros_(self.conv4[-1].weight)
        nn.init.zeros_(self.conv4[-1].bias)

    def forward(self, x: Tensor, frames: int) -> Tensor:
        clip = rearrange(x, "(b t) c h w -> b c t h w", t=frames)
        out = self.conv4(self.conv3(self.conv2(self.conv1(clip))))
        return x + rearrange(out, "b c t h w -> (b t) c h w")
