"""ControlNet (Zhang et al. 2023) and AnimateDiff v3's SparseCtrl (Guo et al. 2023), built from the
U-Net's own encoder half.

A ControlNet is a trainable copy of the U-Net's conv_in, timestep embedding, down blocks and mid
block (`UNetEncoder`, the same class the U-Net is built on), plus a small convolutional embedding
of the control image added after conv_in, and zero-initialised 1x1 convolutions that turn each skip
and the mid block's output into residuals for the U-Net (`ControlResiduals`). Parameter names equal
diffusers' `ControlNetModel`, so its folders load without renaming.

SparseCtrl is the same network with temporal layers in its down blocks (`inflate` with an
AnimateDiff spec of one attention per block), a mask channel telling which frames carry a
condition, and a noisy input it ignores (it sees zeros): the condition alone, on a few key frames,
steers every frame through the temporal layers. Its RGB variant reads VAE latents of the key frames
through a single convolution ("simplified" embedding); the scribble variant reads pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from spacetime.models.unet import ControlResiduals, UNetConfig, UNetEncoder

EMBEDDING_CHANNELS = (16, 32, 96, 256)  # the paper's condition encoder (diffusers' default)


@dataclass(frozen=True)
class ControlNetConfig:
    """A ControlNet's sizes: its encoder's (a U-Net config; only the down half is built) and its
    condition's."""

    unet: UNetConfig = field(default_factory=UNetConfig)
    conditioning_channels: int = 3  # RGB control images; SparseCtrl RGB: 4 latent channels
    # The condition encoder's widths; () : SparseCtrl RGB's single convolution on latents
    embedding_channels: tuple[int, ...] = EMBEDDING_CHANNELS
    bgr: bool = False  # diffusers' controlnet_conditioning_channel_order="bgr"
    global_pool: bool = False  # residuals averaged over space (ControlNet 1.1 shuffle)
    # SparseCtrl: a mask channel beside the condition, and zeros in place of the noisy input
    sparse: bool = False

    def __post_init__(self):
        if self.conditioning_channels < 1:
            raise ValueError(
                f"conditioning_channels must be >= 1, got {self.conditioning_channels}"
            )

    @property
    def input_channels(self) -> int:
        """Channels the condition embedding reads: the condition's, plus SparseCtrl's mask."""
        return self.conditioning_channels + int(self.sparse)


class ConditioningEmbedding(nn.Module):
    """The control image's encoder: conv-SiLU stages, each pair halving the resolution, down to
    the latent grid, then a zero-initialised conv to the U-Net's first width. Keys as diffusers'
    `ControlNetConditioningEmbedding` (conv_in, blocks.*, conv_out)."""

    def __init__(self, in_channels: int, widths: tuple[int, ...], out_channels: int):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        self.blocks = nn.ModuleList()
        for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
            self.blocks.append(nn.Conv2d(c_in, c_in, 3, padding=1))
            self.blocks.append(nn.Conv2d(c_in, c_out, 3, padding=1, stride=2))
        self.conv_out = _zero(nn.Conv2d(widths[-1], out_channels, 3, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        h = F.silu(self.conv_in(x))
        for block in self.blocks:
            h = F.silu(block(h))
        return self.conv_out(h)


class ControlNet(UNetEncoder):
    """ControlNet / SparseCtrl over images `(b, c, h, w)` or clips `(b, c, t, h, w)`."""

    def __init__(self, cfg: ControlNetConfig):
        super().__init__(cfg.unet)
        self.control_config = cfg
        c0 = cfg.unet.block_out_channels[0]
        self.controlnet_cond_embedding = (
            ConditioningEmbedding(cfg.input_channels, cfg.embedding_channels, c0)
            if cfg.embedding_channels
            else _zero(nn.Conv2d(cfg.input_channels, c0, 3, padding=1))
        )
        self.controlnet_down_blocks = nn.ModuleList(
            _zero(nn.Conv2d(c, c, 1)) for c in self.skip_channels()
        )
        mid = cfg.unet.block_out_channels[-1]
        self.controlnet_mid_block = _zero(nn.Conv2d(mid, mid, 1))

    @classmethod
    def from_unet(cls, unet: UNetEncoder, pixels_per_latent: int, channels: int = 3) -> ControlNet:
        """A ControlNet for `unet` that starts as a copy of its encoder (the paper's
        initialisation), reading `channels`-channel control images at `pixels_per_latent` times
        the latent size: the condition encoder halves the resolution that many times over."""
        halvings = pixels_per_latent.bit_length() - 1
        if pixels_per_latent != 1 << halvings or halvings >= len(EMBEDDING_CHANNELS):
            raise ValueError(f"pixels_per_latent must be 1, 2, 4 or 8, got {pixels_per_latent}")
        cfg = ControlNetConfig(
            unet=unet.config,
            conditioning_channels=channels,
            embedding_channels=EMBEDDING_CHANNELS[: halvings + 1],
        )
        net = cls(cfg).to(unet.conv_in.weight.device)
        encoder = {k: v for k, v in unet.state_dict().items() if k in net.state_dict()}
        missing = net.load_state_dict(encoder, strict=False).missing_keys
        if any(not k.startswith("controlnet_") for k in missing):
            raise ValueError("the U-Net's encoder does not fill the ControlNet's: inflated U-Net?")
        return net

    def forward(
        self,
        x: Tensor,
        timestep: Tensor | float,
        context: Tensor | None,
        condition: Tensor,
        scale: float = 1.0,
        guess_mode: bool = False,
        mask: Tensor | None = None,
    ) -> ControlResiduals:
        """Residuals for a U-Net denoising `x` at `timestep` (shapes as the U-Net's forward).

        condition: (b, c, h, w) or (b, c, t, h, w), the control image (pixels in [0, 1]) or, for
        SparseCtrl RGB, VAE latents, with x's batch and frames. mask: SparseCtrl's (b, 1, t, h, w),
        1 on the frames that carry a condition. guess_mode: residuals scaled from 0.1 at the first
        skip to 1 at the mid block (the reference implementation's "guess mode", for a ControlNet
        that must recognise the content without a prompt)."""
        cfg = self.control_config
        if cfg.sparse:
            if mask is None:
                raise ValueError("SparseCtrl needs the key-frame mask beside its condition")
            condition = torch.cat([condition, mask.to(condition)], dim=1)
            x = torch.zeros_like(x)  # SparseCtrl reads the condition alone
        elif mask is not None:
            raise ValueError("a mask applies to SparseCtrl only")
        if condition.ndim != x.ndim or condition.shape[0] != x.shape[0]:
            raise ValueError(
                f"the condition {tuple(condition.shape)} must have the input's batch and frames "
                f"{tuple(x.shape)}"
            )
        if cfg.bgr:
            condition = condition.flip(1)
        x, temb, context, frames, _ = self.fold(x, timestep, context)
        if condition.ndim == 5:
            condition = rearrange(condition, "b c t h w -> (b t) c h w")
        # ((b t), c0, h, w): the noisy latents' features plus the condition's
        h = self.conv_in(x) + self.controlnet_cond_embedding(condition.to(x.dtype))
        h, skips = self.encode(h, temb, context, frames)
        down = [zero(s) for zero, s in zip(self.controlnet_down_blocks, skips, strict=True)]
        mid = self.controlnet_mid_block(h)
        if guess_mode and not cfg.global_pool:
            scales = torch.logspace(-1, 0, len(down) + 1).tolist()
        else:
            scales = [1.0] * (len(down) + 1)
        down = [d * (s * scale) for d, s in zip(down, scales, strict=False)]
        mid = mid * (scales[-1] * scale)
        if cfg.global_pool:
            down = [d.mean(dim=(2, 3), keepdim=True) for d in down]
            mid = mid.mean(dim=(2, 3), keepdim=True)
        return ControlResiduals(tuple(down), mid)


def _zero(module: nn.Module) -> nn.Module:
    """Zero-initialised: a fresh ControlNet adds nothing until trained (the paper's zero conv)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module
