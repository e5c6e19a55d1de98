"""Structure control for the sampler: ControlNets (Zhang et al. 2023) on every frame, as diffusers'
`StableDiffusionControlNetPipeline` / `AnimateDiffControlNetPipeline`, and SparseCtrl (AnimateDiff
v3) on a few key frames, as `AnimateDiffSparseControlNetPipeline`.

Each `Control` pairs a network with its condition, a scale and the share of the sampling steps it
acts on (`start`/`end`, diffusers' `control_guidance_start/end`). Their residuals are summed (a
multi-ControlNet) and handed to the one U-Net; samplers never see them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from einops import rearrange, repeat
from torch import Tensor

from spacetime import sdedit
from spacetime.errors import ArgumentValueError
from spacetime.models.controlnet import ControlNet
from spacetime.models.unet import ControlResiduals


@dataclass(frozen=True, eq=False)
class Control:
    """One ControlNet and what it reads.

    image: uint8 (h, w, 3) or (n, h, w, 3), resized to the request's size (Lanczos, as diffusers'
    image processor), or float (n, c, h, w) in [0, 1] at that size: one image for every frame
    (n = 1), one per frame (n = frames), or, for SparseCtrl, one per key frame
    (n = len(key_frames)).
    guess_mode: the residuals rise from 0.1 to 1 across the skips and skip the unconditional
    branch of guidance, so the ControlNet's reading of the image carries the content (diffusers'
    `guess_mode`; pair it with a low guidance scale, 3-5)."""

    net: ControlNet
    image: Tensor | np.ndarray
    scale: float = 1.0
    start: float = 0.0
    end: float = 1.0
    key_frames: tuple[int, ...] = ()
    guess_mode: bool = False

    def __post_init__(self):
        if not isinstance(self.net, ControlNet):
            raise ArgumentValueError(f"a Control needs a ControlNet, got {type(self.net).__name__}")
        if torch.is_tensor(self.image) and self.image.ndim != 4:
            raise ArgumentValueError(
                f"a control image tensor must be (n, c, h, w) in [0, 1], got "
                f"{tuple(self.image.shape)}"
            )
        if not torch.is_tensor(self.image):
            sdedit.as_frames(self.image)  # uint8 (h, w, 3) or (n, h, w, 3)
        if not 0 <= self.start < self.end <= 1:
            raise ArgumentValueError(
                f"control start and end must satisfy 0 <= start < end <= 1, got {self.start}, "
                f"{self.end}"
            )
        sparse = self.net.control_config.sparse
        if sparse and len(self.key_frames) != self.count:
            raise ArgumentValueError(
                f"SparseCtrl takes one image per key frame: {self.count} images for key "
                f"frames {list(self.key_frames)}"
            )
        if not sparse and self.key_frames:
            raise ArgumentValueError("key frames apply to a SparseCtrl network only")

    @property
    def count(self) -> int:
        """How many images."""
        return 1 if np.ndim(self.image) == 3 else len(self.image)

    @property
    def size(self) -> tuple[int, int]:
        """The images' (height, width)."""
        return tuple(
            self.image.shape[-2:] if torch.is_tensor(self.image) else np.shape(self.image)[-3:-1]
        )

    def pixels(self, height: int, width: int) -> Tensor:
        """The images as float (n, c, height, width) in [0, 1]."""
        if torch.is_tensor(self.image):
            if tuple(self.image.shape[2:]) != (height, width):
                raise ArgumentValueError(
                    f"the control image is {tuple(self.image.shape[2:])}, the request "
                    f"{(height, width)} (height, width): resize it, or pass uint8 pixels"
                )
            return self.image.float()
        clip = torch.from_numpy(sdedit.resized(self.image, height, width)).float() / 255
        return rearrange(clip, "n h w c -> n c h w")

    def acts_at(self, step: int, steps: int) -> bool:
        """Whether it acts at step `step` of `steps` (diffusers' `controlnet_keep`)."""
        return not (step / steps < self.start or (step + 1) / steps > self.end)


@dataclass(frozen=True, eq=False)
class Prepared:
    """A Control's condition laid out over the clip: (1, c, t, h, w), or (1, c, h, w) for an image;
    SparseCtrl's mask (1, 1, t, h, w) marks its key frames."""

    control: Control
    condition: Tensor
    mask: Tensor | None


def prepare(
    control: Control, frames: int, size: tuple[int, int], encode: Callable[[Tensor], Tensor]
) -> Prepared:
    """Lay a control's images out over `frames` frames at pixel `size`; `encode` turns pixels in
    [-1, 1] into latents (SparseCtrl RGB reads the key frames' latents)."""
    image, cfg = control.pixels(*size), control.net.control_config
    channels = cfg.conditioning_channels if cfg.embedding_channels else 3
    if image.shape[1] != channels:
        raise ArgumentValueError(
            f"this ControlNet reads {channels}-channel images, got {image.shape[1]} channels"
        )
    if cfg.sparse:
        if frames < 2 or any(not 0 <= k < frames for k in control.key_frames):
            raise ArgumentValueError(
                f"SparseCtrl key frames {list(control.key_frames)} must lie within a clip of "
                f"{frames} frames (at least 2)"
            )
        rows = image if cfg.embedding_channels else encode(image * 2 - 1)  # RGB: latents
        condition = rows.new_zeros((1, rows.shape[1], frames, *rows.shape[2:]))
        mask = rows.new_zeros((1, 1, frames, *rows.shape[2:]))
        keys = list(control.key_frames)
        condition[:, :, keys] = rearrange(rows, "n c h w -> 1 c n h w")
        mask[:, :, keys] = 1
        return Prepared(control, condition, mask)
    if frames == 1:
        if len(image) != 1:
            raise ArgumentValueError(f"an image takes one control image, got {len(image)}")
        return Prepared(control, image, None)
    if len(image) not in (1, frames):
        raise ArgumentValueError(
            f"a clip of {frames} frames takes one control image or one per frame, got {len(image)}"
        )
    clip = repeat(image, "n c h w -> 1 c (n t) h w", t=frames // len(image))
    return Prepared(control, clip, None)


def residuals(
    prepared: Sequence[Prepared],
    x_t: Tensor,
    timestep: Tensor,
    context: Tensor,
    step: tuple[int, int],
    guided: bool,
    frames: slice = slice(None),
) -> ControlResiduals | None:
    """The summed residuals of the controls acting at `step` (index, count) for a U-Net call on
    x_t (rows, c, [t,] h, w) holding the clip's `frames`. `guided`: the rows are [uncond, cond]
    halves (spacetime.sampling.classifier_free_guidance), so guess mode runs on the second half
    and gives the first zeros, as diffusers does."""
    total = None
    for p in prepared:
        control = p.control
        if not control.acts_at(*step):
            continue  # diffusers runs it at scale 0: the same sum, without the work
        condition, mask = p.condition, p.mask
        if condition.ndim == 5:
            condition = condition[:, :, frames]
            mask = None if mask is None else mask[:, :, frames]
        half = control.guess_mode and guided
        skip = x_t.shape[0] // 2 if half else 0  # rows the network does not see
        rows = x_t.shape[0] - skip
        t = timestep[skip:] if timestep.ndim and len(timestep) == x_t.shape[0] else timestep
        out = control.net(
            x_t[skip:],
            t,
            context[skip:],
            condition.to(x_t).expand(rows, *condition.shape[1:]),
            control.scale,
            guess_mode=control.guess_mode,
            mask=None if mask is None else mask.to(x_t).expand(rows, *mask.shape[1:]),
        )
        if half:  # the unconditional rows get nothing
            pad = lambda r: torch.cat([torch.zeros_like(r), r])  # noqa: E731
            out = ControlResiduals(tuple(pad(d) for d in out.down), pad(out.mid))
        total = out if total is None else total + out
    return total
