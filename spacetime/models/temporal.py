"""Layers that mix information across frames or views, each the identity at initialisation.

Spatial layers see frames folded into the batch `(b t) c h w`; these unfold them and fold pixels
into the batch instead (or, across views, gather all views' pixels into one sequence), so a 2D
model plus these layers is a video or multi-view model that, before any training, still computes
exactly what the 2D model computed frame by frame. A multi-view set is a clip whose frame axis is
a view axis, with cameras. MVDream's published layout adds no layer here: its spatial
self-attention spans the views (`TransformerBlock`'s `views`).
"""

from __future__ import annotations

import math

import torch
from einops import rearrange, repeat
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

    SparseCtrl's temporal layers (AnimateDiff v3) have one attention per block (`attentions=1`).

    With `context_dim` the second attention attends to the prompt instead (spacetime's
    text-conditioned motion module): each pixel's frame sequence reads the text, so a motion word
    can steer the motion directly rather than only through the frozen spatial cross-attention.
    """

    def __init__(
        self,
        channels: int,
        heads: int,
        groups: int = 32,
        layers: int = 1,
        max_frames: int | None = 32,
        head_dim: int | None = None,
        context_dim: int | None = None,
        pixel_positions: bool = False,
        attentions: int = 2,
    ):
        super().__init__()
        inner = heads * (head_dim or channels // heads)
        self.reads_text = context_dim is not None
        self.pixel_positions = PixelPositions(channels) if pixel_positions else None
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, inner)
        self.transformer_blocks = nn.ModuleList(
            TransformerBlock(
                inner,
                heads,
                inner // heads,
                context_dim,
                positions=max_frames or 0,
                second_attention=attentions == 2,
            )  # fmt: skip
            for _ in range(layers)
        )
        self.proj_out = nn.Linear(inner, channels)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: Tensor, frames: int, context: Tensor | None = None) -> Tensor:
        # x ((b t), c, h, w) → tokens ((b h w), t, inner) → back, plus the residual
        b, h, w = x.shape[0] // frames, x.shape[2], x.shape[3]
        clip = self.norm(rearrange(x, "(b t) c h w -> b c t h w", t=frames))
        text = None
        if self.reads_text:
            if context is None:
                raise ValueError("this motion module reads the prompt: pass the text context")
            # context arrives per frame ((b t), n, d): the first frame's, one copy per pixel
            # sequence (with prompt travel, the prompt the clip starts from)
            text = repeat(context[::frames], "b n d -> (b h w) n d", h=h, w=w)
        tokens = rearrange(clip, "b c t h w -> (b h w) t c")
        if self.pixel_positions is not None:
            where = self.pixel_positions(h, w).to(tokens.dtype)
            tokens = tokens + repeat(where, "(h w) c -> (b h w) 1 c", b=b, h=h, w=w)
        out = self.attend(tokens, text)
        return x + rearrange(out, "(b h w) t c -> (b t) c h w", b=b, h=h, w=w)

    def attend(self, tokens: Tensor, context: Tensor | None = None) -> Tensor:
        """(batch, n, channels) normalised tokens → the residual update, same shape."""
        tokens = self.proj_in(tokens)
        for block in self.transformer_blocks:
            tokens = block(tokens, context)
        return self.proj_out(tokens)


class PixelPositions(nn.Module):
    """Where a pixel sits in the frame, for a per-pixel temporal layer: Fourier features (Tancik et
    al. 2020) of its normalised (y, x), projected to the channels and added to its frame sequence.

    Without it a pixel's frame sequence cannot tell the left edge from the right, so a motion
    module cannot learn that an object moving right starts on the left: the prompt's direction
    had nothing to act on. Normalised coordinates keep it meaningful at any resolution.
    """

    def __init__(self, channels: int, frequencies: int = 4):
        super().__init__()
        self.frequencies = frequencies
        self.proj = nn.Linear(4 * frequencies, channels)

    def forward(self, h: int, w: int) -> Tensor:
        """(h w, channels) position codes, row-major."""
        device = self.proj.weight.device
        freqs = math.pi * 2.0 ** torch.arange(self.frequencies, device=device)
        ys = (torch.arange(h, device=device) + 0.5) / h
        xs = (torch.arange(w, device=device) + 0.5) / w
        grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), -1)  # (h, w, 2)
        angles = grid[..., None] * freqs  # (h, w, 2, f)
        features = torch.cat([angles.sin(), angles.cos()], -1)  # (h, w, 2, 2f)
        return self.proj(rearrange(features, "h w a f -> (h w) (a f)").to(self.proj.weight.dtype))


class CrossViewTransformer(TemporalTransformer):
    """Cross-view self-attention of MVDream (Shi et al. 2023): every view's pixels attend to every
    pixel of every view of its set, `(b v) c h w → b (v h w) c`.

    MVDream widens SD's own self-attention to span the views; here it is a separate residual layer
    beside each spatial attention, with TemporalTransformer's zero-initialised output projection,
    so the inflated U-Net starts as the 2D U-Net applied view by view and keeps every 2D key. No
    view positions: the camera embedding tells views apart. The GroupNorm is per view, as the
    spatial transformer's, so a view's features are normalised by its own statistics.
    """

    def __init__(self, channels: int, heads: int, head_dim: int, groups: int = 32, layers: int = 1):
        super().__init__(channels, heads, groups, layers, max_frames=None, head_dim=head_dim)

    def forward(self, x: Tensor, views: int) -> Tensor:
        # x ((b v), c, h, w) → tokens (b, (v h w), c) → back, plus the residual
        h, w = x.shape[2], x.shape[3]
        tokens = rearrange(self.norm(x), "(b v) c h w -> b (v h w) c", v=views)
        out = self.attend(tokens)
        return x + rearrange(out, "b (v h w) c -> (b v) c h w", v=views, h=h, w=w)


# MVDream's world is spacetime's turned from +y up to +z up, (x, y, z) -> (x, -z, y): the
# "Blender" flip of its camera_utils.convert_opengl_to_blender.
_Y_UP_TO_Z_UP = (
    (1.0, 0.0, 0.0, 0.0),
    (0.0, 0.0, -1.0, 0.0),
    (0.0, 1.0, 0.0, 0.0),
    (0.0, 0.0, 0.0, 1.0),
)


def to_mvdream_frame(c2w: Tensor) -> Tensor:
    """Camera-to-world matrices (n, 4, 4) in spacetime's world (OpenGL, +y up) -> the frame
    MVDream was trained with (mvdream/camera_utils.py: `get_camera` then `normalize_camera`,
    as threestudio feeds it): the world turned to +z up and each camera centre scaled onto the
    unit sphere; the camera's own axes stay OpenGL's (right, up, back). A spacetime
    Camera(e, a) becomes exactly MVDream's camera at elevation e, azimuth a."""
    turned = torch.tensor(_Y_UP_TO_Z_UP, dtype=c2w.dtype, device=c2w.device) @ c2w
    centre = turned[:, :3, 3:]
    centre = centre / (centre.norm(dim=1, keepdim=True) + 1e-8)
    return torch.cat([torch.cat([turned[:, :3, :3], centre], dim=2), turned[:, 3:]], dim=1)


class CameraEmbedding(nn.Sequential):
    """MVDream's camera conditioning (Shi et al. 2023): a flattened camera-to-world 4×4 →
    Linear-SiLU-Linear, added to the timestep embedding of each view. The last layer starts at
    zero, so the embedding adds nothing until trained. Keys `camera_embed.{0,2}` as MVDream's."""

    def __init__(self, dim: int, hidden: int):
        super().__init__(nn.Linear(16, hidden), nn.SiLU(), nn.Linear(hidden, dim))
        nn.init.zeros_(self[2].weight)
        nn.init.zeros_(self[2].bias)


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
