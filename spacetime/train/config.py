"""Training configuration: one frozen dataclass; YAML files override its typed fields only."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path

TASKS = ("vae", "text2image", "motion", "video_vae", "multiview")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on; the same config and seed give the same weights."""

    task: str = "vae"  # vae | text2image | motion | video_vae | multiview
    preset: str = "world"  # model sizes, see spacetime/models/presets.py
    steps: int = 1000
    batch_size: int = 32  # global batch, split evenly across processes
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.0
    adam_eps: float = 1e-8
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    seed: int = 0
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    mixed_precision: str = "no"  # no | bf16
    kl_weight: float = 1e-6  # vae: KL(q(z|x) || N(0, I)) weight, small as in LDM
    caption_dropout: float = 0.1  # text2image: empty captions teach the unconditional model (CFG)
    vae: str = ""  # text2image, video_vae: folder of the trained image VAE (or its model folder)
    base: str = ""  # motion, multiview: the image model to inflate (a diffusers folder)
    frames: int = 16  # motion, video_vae: frames per training clip
    temporal_weight: float = 1.0  # video_vae: L1 on frame-to-frame differences (against flicker)
    train_text: bool = False  # motion: also fine-tune the text encoder (to learn motion words)
    motion_text: bool = False  # motion: motion modules cross-attend to the prompt
    # motion: re-draw the token embeddings of "moving" and the directions at this std (the image
    # stage leaves them near-identical, ~0.16 in norm), so each direction starts as its own text
    # state; needs train_text (the package ships the encoder). 0 keeps the image stage's.
    motion_word_std: float = 0.0
    # motion: fine-tune this motion package (a MotionAdapter folder, with its text encoder if it has
    # one) instead of fresh modules; its config, not the keys above, says how the U-Net is inflated
    init_motion: str = ""
    # motion: weight of a prior-preservation term (DreamBooth-style) on the trained text encoder:
    # its states for a motion caption, at every token but the motion words, match the base
    # encoder's states for the still caption (motion words dropped), and its states for the still
    # caption match the base encoder's, so the frozen spatial layers keep reading colour, shape and
    # background as the image stage taught them. Needs train_text. Measured in
    # docs/colour-constancy.md: it helps colour per frame, not constancy across frames.
    text_preservation: float = 0.0
    # motion: share of each element's noise variance common to all frames of the clip (PYoCo's
    # mixed noise); the exported module records it so the pipeline samples with the same noise.
    # None: 0 for fresh modules, the package's own share with init_motion
    shared_noise: float | None = None
    # motion: share of samples with t drawn from [high_noise_min, 1000)
    high_noise_fraction: float = 0.0
    high_noise_min: int = 600
    # motion: weight each sample's ε loss by clamp(1/SNR(t), 1, cap), an x0 loss at high noise where
    # the ε loss hardly sees the clip (weight SNR); 0 keeps the plain ε loss
    x0_weight_cap: float = 0.0
    # motion: share of samples noised from a copy of the clip in which a run of 1 to repair_run
    # frames shows the object in another colour, at t in [repair_min, repair_max), while the loss
    # asks for the true clip: the frozen image layers settle colour late and frame by frame, and
    # this teaches the modules to overrule the frames that settle on the wrong one. 0: off.
    # Measured in docs/colour-constancy.md: the modules learn it; sampled clips hold no better
    repair_fraction: float = 0.0
    repair_min: int = 100
    repair_max: int = 600
    repair_run: int = 8
    # motion: slip to one of the repair_nearest palette colours nearest the object's in RGB (the
    # image model confuses neighbours: green and cyan, yellow and white); 0: any other colour
    repair_nearest: int = 0
    # motion: repair captioned clips only, so the repair lives in what the caption changes, which
    # classifier-free guidance amplifies (7.5x), as it does the image layers' per-frame colour push
    repair_captioned_only: bool = False
    # motion: add joint (t h w) self-attention with frame positions beside each spatial attention
    space_time_attention: bool = False
    # motion: the motion modules know each pixel's place in the frame (Fourier features)
    motion_pixel_positions: bool = False
    threads: int = 0  # torch intra-op threads per process; 0 = torch's default
    # Stop after this many minutes of training (checkpoint, then export what the EMA holds) even
    # before `steps`; a later run resumes towards `steps`. 0: no limit. For fixed-length GPU loans.
    max_minutes: float = 0.0
    # Stop after this step (0: at `steps`) while the LR schedule still spans `steps`: replays a
    # run that max_minutes stopped early, step for step.
    stop_after: int = 0
    # multiview: sets of `views` renders 360/views degrees apart in azimuth, drawn from a render
    # cache on a grid of azimuths (every azimuth_step) and elevations (0 to max_elevation, every
    # elevation_step), at distance 3
    views: int = 4
    azimuth_step: float = 15.0
    elevation_step: float = 7.5
    max_elevation: float = 30.0

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.mixed_precision not in ("no", "bf16"):
            raise ValueError(
                f"mixed_precision must be 'no' or 'bf16', got {self.mixed_precision!r}"
            )
        for name in ("steps", "batch_size", "checkpoint_every", "keep_checkpoints", "views"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.task in ("text2image", "video_vae") and not self.vae:
            raise ValueError(f"{self.task} training needs `vae:` (a trained VAE folder)")
        if self.task in ("motion", "multiview") and not self.base:
            raise ValueError(f"{self.task} training needs `base:` (the image model to inflate)")
        if self.motion_word_std > 0 and not self.train_text:
            raise ValueError(
                "motion_word_std needs train_text: true (the package ships the encoder)"
            )
        if self.text_preservation > 0 and not self.train_text:
            raise ValueError("text_preservation needs train_text: true (it constrains the encoder)")
        if self.shared_noise is not None and not 0 <= self.shared_noise < 1:
            raise ValueError(f"shared_noise must be in [0, 1), got {self.shared_noise}")
        if not 0 <= self.repair_fraction <= 1:
            raise ValueError(f"repair_fraction must be in [0, 1], got {self.repair_fraction}")
        if not 0 <= self.repair_min < self.repair_max <= 1000:
            raise ValueError(
                f"need 0 <= repair_min < repair_max <= 1000, got {self.repair_min} and "
                f"{self.repair_max}"
            )
        if self.repair_fraction > 0 and not 1 <= self.repair_run < self.frames:
            raise ValueError(
                f"repair_run must be in [1, frames) so some frames keep the true colour, got "
                f"{self.repair_run} with {self.frames} frames"
            )
        if self.motion_word_std > 0 and self.init_motion:
            raise ValueError("motion_word_std would re-draw the words init_motion learned: set one")
        if self.task == "multiview":
            spacing = 360 / self.views
            if self.azimuth_step <= 0 or spacing % self.azimuth_step:
                raise ValueError(
                    f"azimuth_step must divide the {spacing:g} degrees between {self.views} views, "
                    f"got {self.azimuth_step}"
                )
            if self.elevation_step <= 0 or not 0 <= self.max_elevation < 90:
                raise ValueError(
                    "elevation_step must be > 0 and max_elevation in [0, 90), got "
                    f"{self.elevation_step} and {self.max_elevation}"
                )


def _coerce(name: str, value, kind):
    options = typing.get_args(kind)
    if type(None) in options:  # `T | None`: None (or "none" from --set) stays None
        if value is None or str(value).lower() in ("none", "null"):
            return None
        (kind,) = (k for k in options if k is not type(None))
    kind = {"int": int, "float": float, "str": str, "bool": bool}.get(kind, kind)
    if kind is float and isinstance(value, int):
        return float(value)
    if kind is bool and isinstance(value, str):
        return value.lower() in ("1", "true", "yes")
    if not isinstance(value, kind):
        try:
            return kind(value)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be {kind.__name__}, got {value!r}") from None
    return value


def make_config(overrides: dict) -> TrainConfig:
    """A TrainConfig from overrides; an unknown key raises, naming it."""
    hints = typing.get_type_hints(TrainConfig)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(
            f"unknown config keys: {', '.join(unknown)} (known: {', '.join(sorted(fields))})"
        )
    return TrainConfig(**{k: _coerce(k, v, hints[k]) for k, v in overrides.items()})


def load_config(path: str | Path | None, sets: list[str] = ()) -> TrainConfig:
    """YAML file (optional) then `key=value` overrides, in that order."""
    import yaml

    overrides = {}
    if path is not None:
        overrides = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(overrides, dict):
            raise ValueError(f"{path}: expected a mapping of config keys")
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects key=value, got {item!r}")
        overrides[key.strip()] = yaml.safe_load(value)
    return make_config(overrides)
