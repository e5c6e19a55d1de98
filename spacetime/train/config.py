"""Training configuration: one frozen dataclass per task over one shared run/optimiser section.

`task:` in a YAML file picks the class; the file then overrides that class's typed fields only. A
key that is not the task's, a value of the wrong type (`steps: 1.7`) or out of range (`lr: .nan`)
is refused with one error naming it. Every field here is used by a recipe in configs/ or by a
documented flag (`--set max_minutes=N`); experiments' options live on branches and in docs/.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from spacetime.errors import ConfigError


@dataclass(frozen=True)
class TrainConfig:
    """The run and optimiser section every task shares; the same config and seed give the same
    weights."""

    task: ClassVar[str]

    steps: int = 1000
    batch_size: int = 32  # global batch, split evenly across processes
    lr: float = 1e-3  # AdamW, after a linear warm-up, cosine decay to 10%
    warmup: int = 100
    ema_decay: float = 0.999
    seed: int = 0
    checkpoint_every: int = 500
    mixed_precision: str = "no"  # no | bf16
    threads: int = 0  # torch intra-op threads per process; 0 = torch's default
    # Stop after this many minutes of training (checkpoint, then export what the EMA holds) even
    # before `steps`; a later run resumes towards `steps`. 0: no limit. For fixed-length GPU loans.
    max_minutes: float = 0.0
    # Stop after this step (0: at `steps`) while the LR schedule still spans `steps`: replays a
    # run that max_minutes stopped early, step for step.
    stop_after: int = 0

    def __post_init__(self):
        if self.mixed_precision not in ("no", "bf16"):
            raise ConfigError(
                f"mixed_precision must be 'no' or 'bf16', got {self.mixed_precision!r}"
            )
        self._at_least(1, "steps", "batch_size", "checkpoint_every")
        self._at_least(0, "warmup", "seed", "threads", "max_minutes", "stop_after")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        self._within(0, 1, "ema_decay")

    def _at_least(self, low: float, *names: str) -> None:
        for name in names:
            if getattr(self, name) < low:
                raise ConfigError(f"{name} must be >= {low}, got {getattr(self, name)}")

    def _within(self, low: float, high: float, *names: str) -> None:
        for name in names:
            if not low <= getattr(self, name) <= high:
                raise ConfigError(f"{name} must be in [{low}, {high}], got {getattr(self, name)}")

    def _needs(self, name: str, what: str) -> None:
        if not getattr(self, name):
            raise ConfigError(f"{self.task} training needs `{name}:` ({what})")

    def to_dict(self) -> dict:
        """`task` and every field: what a run folder's config.json records."""
        return {"task": self.task, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class VAETraining(TrainConfig):
    """The world autoencoder (LDM's KL-regularised VAE)."""

    task: ClassVar[str] = "vae"
    preset: str = "world"  # model sizes, see spacetime/models/presets.py
    kl_weight: float = 1e-6  # KL(q(z|x) || N(0, I)) weight, small as in LDM

    def __post_init__(self):
        super().__post_init__()
        _check_preset(self.preset)
        self._at_least(0, "kl_weight")


@dataclass(frozen=True)
class MediaTraining(TrainConfig):
    """A task that learns from images or clips: the world's, or real ones from `media`
    (spacetime.train.media_data: a folder of captioned videos or images, or webdataset shards)."""

    media: str = ""  # a folder, a .tar, a glob or a brace range of shards; empty: the world
    media_size: int = 64  # pixels: the shorter side resized to it, then centre-cropped square
    frame_stride: int = 1  # a clip takes every frame_stride-th frame of its video
    # A folder for media's frames encoded once by the VAE (built on first use, refused when its
    # media, size or VAE differ); empty: encode every step
    latent_cache: str = ""

    def __post_init__(self):
        super().__post_init__()
        self._at_least(8, "media_size")
        self._at_least(1, "frame_stride")
        if self.latent_cache and not self.media:
            raise ConfigError("latent_cache caches media: give media too")


@dataclass(frozen=True)
class TextToImageTraining(MediaTraining):
    """The world U-Net and its text encoder, trained jointly on a trained VAE's latents."""

    task: ClassVar[str] = "text2image"
    preset: str = "world"
    vae: str = ""  # folder of the trained image VAE (or its model folder)
    caption_dropout: float = 0.1  # empty captions teach the unconditional model (CFG)

    def __post_init__(self):
        super().__post_init__()
        _check_preset(self.preset)
        self._needs("vae", "a trained VAE folder")
        self._within(0, 1, "caption_dropout")


@dataclass(frozen=True)
class MotionTraining(MediaTraining):
    """Motion modules (AnimateDiff) on world clips over the frozen spatial layers of `base`."""

    task: ClassVar[str] = "motion"
    base: str = ""  # the image model to inflate (a diffusers folder)
    frames: int = 16  # per training clip
    caption_dropout: float = 0.1
    train_text: bool = False  # also fine-tune the text encoder (to learn motion words)
    motion_text: bool = False  # the motion modules cross-attend to the prompt
    # Re-draw the token embeddings of "moving" and the directions at this std (the image stage
    # leaves them near-identical, ~0.16 in norm), so each direction starts as its own text state;
    # needs train_text (the package ships the encoder). 0 keeps the image stage's.
    motion_word_std: float = 0.0
    motion_pixel_positions: bool = False  # the modules know each pixel's place (Fourier features)
    # Share of samples with t drawn from [high_noise_min, 1000)
    high_noise_fraction: float = 0.0
    high_noise_min: int = 600
    # Weight each sample's ε loss by clamp(1/SNR(t), 1, cap), an x0 loss at high noise where the
    # ε loss hardly sees the clip; 0 keeps the plain ε loss
    x0_weight_cap: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        self._needs("base", "the image model to inflate")
        self._at_least(1, "frames")
        self._at_least(0, "motion_word_std", "x0_weight_cap")
        self._within(0, 1, "caption_dropout", "high_noise_fraction")
        self._within(0, 999, "high_noise_min")
        if self.motion_word_std > 0 and not self.train_text:
            raise ConfigError(
                "motion_word_std needs train_text: true (the package ships the encoder)"
            )


@dataclass(frozen=True)
class VideoVAETraining(MediaTraining):
    """The video VAE's temporal decoder (SVD) grown from a trained image VAE, encoder frozen."""

    task: ClassVar[str] = "video_vae"
    vae: str = ""  # folder of the trained image VAE (or its model folder)
    frames: int = 16  # per training clip: the window the decoder then decodes at once
    temporal_weight: float = 1.0  # L1 on frame-to-frame differences (against flicker)

    def __post_init__(self):
        super().__post_init__()
        self._needs("vae", "a trained VAE folder")
        self._at_least(0, "temporal_weight")
        if self.latent_cache:
            raise ConfigError("latent_cache does not apply: the video VAE trains on pixels")
        if self.frames < 4 or self.frames % 4:
            raise ConfigError(
                f"frames must be a multiple of 4 (the decode window keeps half), got {self.frames}"
            )


@dataclass(frozen=True)
class OrbitTraining(TrainConfig):
    """A task that renders the world's primitives from an orbit: at elevations 0 to
    max_elevation, every elevation_step (the multi-view model and the reconstructor)."""

    max_elevation: float = 30.0
    elevation_step: float = 7.5

    def __post_init__(self):
        super().__post_init__()
        if self.elevation_step <= 0 or not 0 <= self.max_elevation < 90:
            raise ConfigError(
                "elevation_step must be > 0 and max_elevation in [0, 90), got "
                f"{self.elevation_step} and {self.max_elevation}"
            )


@dataclass(frozen=True)
class MultiViewTraining(OrbitTraining):
    """The multi-view model (MVDream): `base` inflated with cameras and cross-view attention,
    trained whole on sets of `views` renders 360/views degrees apart in azimuth, drawn from a
    render cache on a grid of azimuths (every azimuth_step) and elevations (0 to max_elevation,
    every elevation_step), at distance 3."""

    task: ClassVar[str] = "multiview"
    base: str = ""
    caption_dropout: float = 0.1
    views: int = 4
    azimuth_step: float = 15.0

    def __post_init__(self):
        super().__post_init__()
        self._needs("base", "the image model to inflate")
        self._at_least(1, "views")
        self._within(0, 1, "caption_dropout")
        spacing = 360 / self.views
        if self.azimuth_step <= 0 or spacing % self.azimuth_step:
            raise ConfigError(
                f"azimuth_step must divide the {spacing:g} degrees between {self.views} views, "
                f"got {self.azimuth_step}"
            )


# What a LoRA run learns from: the world's data the base never had, by name.
LORA_DATA: dict[str, str] = {
    "zoom-in": "motion",  # still scenes, the camera zooming in (spacetime.world.zoom)
    "inverted": "image",  # scenes with object and background colours swapped (world.inverted)
    # the world's motion clips, their first frame given clean (at t = 0) and the rest to denoise:
    # the modules learn to continue a clip from an image (spacetime.first_frame)
    "first-frame": "motion",
}


@dataclass(frozen=True)
class LoRAStudent(MediaTraining):
    """The LoRA (Hu et al. 2021) a run trains on a frozen model: on the motion modules of `motion`
    (with `motion`), or on `base`'s U-Net. Not a task itself: LoRATraining and
    ConsistencyTraining share it."""

    base: str = ""  # the image model (a diffusers folder)
    motion: str = ""  # a motion package (the clip model is base + its modules)
    rank: int = 8
    alpha: float = 8.0  # ΔW = alpha / rank · up @ down
    # Layer names or their last dotted parts, as peft's target_modules: the attention projections
    targets: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
    frames: int = 16  # per training clip (with `motion`)

    def __post_init__(self):
        super().__post_init__()
        self._needs("base", "the image model the LoRA adapts")
        self._at_least(1, "rank", "frames")
        if self.alpha <= 0:
            raise ConfigError(f"alpha must be > 0, got {self.alpha}")
        if not self.targets or not all(self.targets):
            raise ConfigError(f"targets must name at least one layer, got {list(self.targets)}")


@dataclass(frozen=True)
class LoRATraining(LoRAStudent):
    """A LoRA learning what the frozen model never saw: a camera move on the motion modules of
    `motion` (as AnimateDiff's motion LoRAs), or, without `motion`, a concept or style on `base`'s
    U-Net. Saved as a PEFT/diffusers file that `load_lora` and diffusers' `load_lora_weights`
    read."""

    task: ClassVar[str] = "lora"
    data: str = ""  # one of LORA_DATA
    caption_dropout: float = 0.1

    def __post_init__(self):
        super().__post_init__()
        if self.media:
            if self.data:
                raise ConfigError("give data (the world's) or media (your own), not both")
            self._within(0, 1, "caption_dropout")
            return
        if self.data not in LORA_DATA:
            raise ConfigError(
                f"data must be one of {', '.join(LORA_DATA)} (or give media: your own clips or "
                f"images), got {self.data!r}"
            )
        if LORA_DATA[self.data] == "motion" and not self.motion:
            raise ConfigError(f"data {self.data!r} trains motion modules: it needs `motion:`")
        if LORA_DATA[self.data] == "image" and self.motion:
            raise ConfigError(f"data {self.data!r} is still images: leave `motion:` empty")
        self._within(0, 1, "caption_dropout")


@dataclass(frozen=True)
class ConsistencyTraining(LoRAStudent):
    """Latent consistency distillation (Luo et al. 2023; as LCM-LoRA, a LoRA student): `base`
    (with the motion modules of `motion`: the clip model) learns to sample in a few LCM steps at
    guidance 1, taught on the world's images or clips by itself frozen under classifier-free
    guidance, one DDIM step of T / original_inference_steps at a time."""

    task: ClassVar[str] = "lcm"
    guidance: float = 7.5  # the teacher's scale, baked into the student
    original_inference_steps: int = 50  # the solver's grid, as LCMScheduler's
    # A LoRA whose factors start the student (file, folder or shipped name): the image student's
    # for a clip student, as AnimateLCM's decoupled consistency learning (Wang et al. 2024)
    init_lora: str = ""

    def __post_init__(self):
        super().__post_init__()
        self._at_least(1, "guidance", "original_inference_steps")


@dataclass(frozen=True)
class ControlNetTraining(MediaTraining):
    """A ControlNet (Zhang et al. 2023) for the frozen image model `base`: a trainable copy of its
    U-Net's encoder learns to steer it from control images that `condition` (a shipped
    preprocessor) makes of the training images: the world's silhouettes (mask), or the edges of
    your own pictures (canny)."""

    task: ClassVar[str] = "controlnet"
    base: str = ""  # the image model (a diffusers folder)
    condition: str = "mask"  # the preprocessor that makes control images of the training images
    caption_dropout: float = (
        0.5  # the paper's: half the prompts empty, so layout comes from control
    )

    def __post_init__(self):
        super().__post_init__()
        self._needs("base", "the image model the ControlNet steers")
        if self.condition not in SHIPPED_PREPROCESSORS:
            raise ConfigError(
                f"condition must be a shipped preprocessor ({', '.join(SHIPPED_PREPROCESSORS)}), "
                f"got {self.condition!r}"
            )
        if self.latent_cache:
            raise ConfigError(
                "controlnet training preprocesses pixels: latent_cache does not apply"
            )
        self._within(0, 1, "caption_dropout")


SHIPPED_PREPROCESSORS = ("mask", "canny")


@dataclass(frozen=True)
class ReconstructorTraining(OrbitTraining):
    """The fast path's feed-forward reconstructor (spacetime.threed.reconstruct): four views of a
    primitive → its truncated signed distance and albedo. Each step's sets are the world's renders
    (views 90° apart, elevation 0 to max_elevation) and, `generated_share` of them, sets that the
    multi-view model `multiview` made for the training split's prompts at its default cameras
    (`generated_per_prompt` seeds each, at the fast path's sampling settings, made once and
    cached), so the reconstructor learns the model's own rendering and its disagreements between
    views."""

    task: ClassVar[str] = "reconstructor"
    multiview: str = ""  # the multi-view model whose sets the reconstructor reads; "" none
    generated_per_prompt: int = 8
    generated_share: float = 0.5
    grid: int = 16
    width: int = 32
    latent: int = 128

    def __post_init__(self):
        super().__post_init__()
        self._within(0, 1, "generated_share")
        self._at_least(1, "generated_per_prompt")
        if self.generated_share > 0:
            self._needs("multiview", "the multi-view model whose sets it learns to read")


CONFIGS: dict[str, type[TrainConfig]] = {
    cls.task: cls
    for cls in (
        VAETraining,
        TextToImageTraining,
        MotionTraining,
        VideoVAETraining,
        MultiViewTraining,
        LoRATraining,
        ConsistencyTraining,
        ControlNetTraining,
        ReconstructorTraining,
    )  # fmt: skip
}


def _check_preset(preset: str) -> None:
    from spacetime.models.presets import PRESETS

    if preset not in PRESETS:
        raise ConfigError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")


def _coerce(name: str, value, kind: str):
    """`value` as the field's type, refusing what would silently change it (1.7 for an int,
    "yes" for a bool, NaN for a float)."""
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    elif kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif kind == "float":
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{name} must be a finite number, got {value}")
            return float(value)
    elif kind == "str" and isinstance(value, str):
        return value
    elif kind == "tuple[str, ...]":
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ConfigError(f"{name} must be a list of strings, got {value!r}")
    raise ConfigError(f"{name} must be {'an' if kind == 'int' else 'a'} {kind}, got {value!r}")


def make_config(overrides: dict) -> TrainConfig:
    """The config of task `overrides["task"]` (default vae) with its fields overridden; a key that
    is not the task's raises, listing the task's keys."""
    overrides = dict(overrides)
    task = overrides.pop("task", "vae")
    if task not in CONFIGS:
        raise ConfigError(f"task must be one of {', '.join(CONFIGS)}, got {task!r}")
    cls = CONFIGS[task]
    kinds = {f.name: f.type for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - set(kinds))
    if unknown:
        raise ConfigError(
            f"unknown {task} config keys: {', '.join(unknown)} "
            f"(known: task, {', '.join(sorted(kinds))})"
        )
    return cls(**{k: _coerce(k, v, kinds[k]) for k, v in overrides.items()})


def load_config(path: str | Path | None, sets: typing.Sequence[str] = ()) -> TrainConfig:
    """YAML file (optional) then `key=value` overrides, in that order."""
    import yaml

    overrides = {}
    if path is not None:
        overrides = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(overrides, dict):
            raise ConfigError(f"{path}: expected a mapping of config keys")
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        overrides[key.strip()] = yaml.safe_load(value)
    return make_config(overrides)
