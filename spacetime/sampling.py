"""Noise schedules and samplers as small pure functions over a denoiser (k-diffusion style).

Everything runs in sigma space (Karras et al. 2022): x = x0 + sigma * eps with
sigma = sqrt((1 - abar) / abar), and the network sees x_t = x / sqrt(1 + sigma^2). `plan` reproduces
the timestep and sigma rules of diffusers' DDIM, DDPM, Euler, Euler ancestral, DPM-Solver++ and
LCM schedulers number for number, so the same seed gives the same latents as diffusers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace

import numpy as np
import torch
from torch import Tensor

# torch-free, for the CLIs' --help
from spacetime.checks import BETA_SCHEDULES, SAMPLERS, TIMESTEP_SPACINGS

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")

# Keys of diffusers scheduler configs that these samplers honour only at the value that leaves the
# math as implemented here; any other value raises.
_FIXED_CONFIG_VALUES = {
    "trained_betas": (None,),
    "thresholding": (False,),
    "variance_type": ("fixed_small", None),  # DDPM's default, DPM-Solver's default
    "timestep_type": ("discrete",),
    "interpolation_type": ("linear",),
    "use_karras_sigmas": (False,),  # Karras sigmas are chosen per call: plan(..., karras=True)
    "use_exponential_sigmas": (False,),
    "use_beta_sigmas": (False,),
    "use_lu_lambdas": (False,),
    "use_flow_sigmas": (False,),
    "use_dynamic_shifting": (False,),
    "sigma_min": (None,),
    "sigma_max": (None,),
    "final_sigmas_type": ("zero",),
    "solver_order": (2,),
    "algorithm_type": ("dpmsolver++",),
    "solver_type": ("midpoint",),
    "lower_order_final": (True,),
    "euler_at_final": (False,),
    "lambda_min_clipped": (-math.inf,),
}
# Keys that never change the math here: PNDM's PRK warm-up (we have no PNDM sampler), and parameters
# read only when a flag above is on (thresholding, flow sigmas, dynamic shifting).
_IGNORED_CONFIG_KEYS = (
    "skip_prk_steps",
    "dynamic_thresholding_ratio",
    "sample_max_value",
    "flow_shift",
    "time_shift_type",
)


@dataclass(frozen=True)
class NoiseSchedule:
    """The training noise schedule of a discrete-time (DDPM-style) model; defaults are SD 1.x."""

    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "scaled_linear"
    prediction_type: str = "epsilon"
    timestep_spacing: str = "leading"
    steps_offset: int = 1
    clip_sample: bool = False  # clamp x0 (DDIM and DDPM only, as in diffusers)
    clip_sample_range: float = 1.0
    set_alpha_to_one: bool = False  # DDIM only: the last step ends at sigma 0, else at t = 0
    rescale_betas_zero_snr: bool = False
    # LCM only: the distillation's timestep grid (its steps are picked from it) and the scaling of
    # the timestep in the consistency boundary condition c_skip / c_out
    original_inference_steps: int = 50
    timestep_scaling: float = 10.0

    def __post_init__(self):
        for name, allowed in (
            ("beta_schedule", BETA_SCHEDULES),
            ("prediction_type", PREDICTION_TYPES),
            ("timestep_spacing", TIMESTEP_SPACINGS),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"{name}={getattr(self, name)!r} is not supported; expected one of {allowed}"
                )
        if self.num_train_timesteps < 2:
            raise ValueError(f"num_train_timesteps must be >= 2, got {self.num_train_timesteps}")
        if not 1 <= self.original_inference_steps <= self.num_train_timesteps:
            raise ValueError(
                f"original_inference_steps must be in [1, {self.num_train_timesteps}], got "
                f"{self.original_inference_steps}"
            )

    @classmethod
    def from_diffusers_config(cls, cfg: dict) -> NoiseSchedule:
        """Read a diffusers scheduler_config.json (PNDM, DDIM, DDPM, Euler, DPM-Solver, ...).

        Missing keys take this dataclass's SD 1.x defaults, not the diffusers class's defaults.
        """
        own = {f.name for f in fields(cls)}
        kwargs = {}
        for key, value in cfg.items():
            if key.startswith("_") or key in _IGNORED_CONFIG_KEYS:
                continue
            if key in own:
                kwargs[key] = value
            elif key in _FIXED_CONFIG_VALUES:
                allowed = _FIXED_CONFIG_VALUES[key]
                if value not in allowed:
                    hint = (
                        "; pass karras=True to plan() instead" if key == "use_karras_sigmas" else ""
                    )
                    raise ValueError(
                        f"scheduler config {key}={value!r} is not supported (only {allowed}){hint}"
                    )
            else:
                raise ValueError(f"unknown scheduler config key {key!r} (value {value!r})")
        return cls(**kwargs)

    def to_diffusers_config(self) -> dict:
        """This schedule as a DDIMScheduler config that diffusers can load (with LCM's keys where
        they are not the defaults: a distilled model's scheduler)."""
        own = asdict(self)
        for key in ("original_inference_steps", "timestep_scaling"):
            if own[key] == NoiseSchedule.__dataclass_fields__[key].default:
                del own[key]
        return {
            "_class_name": "DDIMScheduler",
            **own,
            "trained_betas": None,
            "thresholding": False,
            "dynamic_thresholding_ratio": 0.995,
            "sample_max_value": 1.0,
        }

    @property
    def alphas_cumprod(self) -> Tensor:
        """abar_t for t = 0 .. T-1, in float32 exactly as diffusers computes it."""
        n = self.num_train_timesteps
        if self.beta_schedule == "linear":
            betas = torch.linspace(self.beta_start, self.beta_end, n, dtype=torch.float32)
        elif self.beta_schedule == "scaled_linear":
            betas = torch.linspace(self.beta_start**0.5, self.beta_end**0.5, n, dtype=torch.float32)
            betas = betas**2
        else:  # cosine schedule (Nichol & Dhariwal 2021), betas capped at 0.999
            abar = [math.cos((i / n + 0.008) / 1.008 * math.pi / 2) ** 2 for i in range(n + 1)]
            betas = torch.tensor(
                [min(1 - abar[i + 1] / abar[i], 0.999) for i in range(n)], dtype=torch.float32
            )
        if self.rescale_betas_zero_snr:
            betas = _rescale_zero_terminal_snr(betas)
        return torch.cumprod(1.0 - betas, dim=0)


def add_noise(x0: Tensor, noise: Tensor, abar: Tensor) -> Tensor:
    """x_t = √ᾱ x0 + √(1−ᾱ) ε, the forward process q(x_t | x0) (DDPM); `abar` is one level or one
    per sample (b,), broadcast over the remaining axes."""
    abar = torch.as_tensor(abar, device=x0.device)
    abar = abar.reshape(-1, *([1] * (x0.ndim - 1))) if abar.ndim else abar
    return abar.sqrt() * x0 + (1 - abar).sqrt() * noise


def _rescale_zero_terminal_snr(betas: Tensor) -> Tensor:
    """Shift and scale sqrt(abar) so the last step has zero SNR (Lin et al. 2023, Algorithm 1)."""
    abar_sqrt = torch.cumprod(1.0 - betas, dim=0).sqrt()
    first, last = abar_sqrt[0].clone(), abar_sqrt[-1].clone()
    abar = ((abar_sqrt - last) * (first / (first - last))) ** 2
    return 1 - torch.cat([abar[:1], abar[1:] / abar[:-1]])


def _sigmas_of(alphas_cumprod: Tensor) -> Tensor:
    return ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5


@dataclass(frozen=True, eq=False)
class Plan:
    """Step i calls the network at timesteps[i] and moves x from sigmas[i] to sigmas_next[i]."""

    timesteps: Tensor  # (n,) float32
    sigmas: Tensor  # (n,) float32
    sigmas_next: Tensor  # (n,) float32
    init_noise_sigma: float  # initial x = randn * init_noise_sigma (sigma space)
    clip_sample_range: float | None = None  # clamp x0 to +-range (DDIM / DDPM / LCM clip_sample)
    timestep_scaling: float = 10.0  # LCM's boundary condition

    def tail(self, start: int) -> Plan:
        """The plan from step `start` on: SDEdit joins it part-way."""
        rows = dict(timesteps=self.timesteps, sigmas=self.sigmas, sigmas_next=self.sigmas_next)
        return replace(self, **{k: v[start:] for k, v in rows.items()})

    def __post_init__(self):
        n = len(self.timesteps)
        if n < 1 or self.sigmas.shape != (n,) or self.sigmas_next.shape != (n,):
            raise ValueError(
                "a plan needs n >= 1 timesteps, sigmas and sigmas_next of shape (n,), got shapes "
                f"{[tuple(v.shape) for v in (self.timesteps, self.sigmas, self.sigmas_next)]}"
            )


def plan(schedule: NoiseSchedule, sampler: str, steps: int, karras: bool = False) -> Plan:
    """The timesteps and sigmas diffusers' scheduler for `sampler` would use for `steps` steps."""
    _check_sampler(sampler)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if steps > schedule.num_train_timesteps:
        raise ValueError(
            f"steps must be <= num_train_timesteps={schedule.num_train_timesteps}, got {steps}"
        )
    if karras and sampler in ("ddim", "ddpm"):
        raise ValueError(
            f"karras sigmas are supported for euler, euler-a and dpm++, not {sampler!r}"
        )
    if sampler in ("ddim", "ddpm"):
        return _plan_ddim_ddpm(schedule, sampler, steps)
    if sampler == "lcm":
        return _plan_lcm(schedule, steps)
    return _plan_sigma_samplers(schedule, sampler, steps, karras)


def _spaced_timesteps(schedule: NoiseSchedule, sampler: str, steps: int) -> np.ndarray:
    """diffusers' set_timesteps spacing for `sampler`, descending (float64; integer-valued except
    Euler's linspace, which is not rounded)."""
    total, offset = schedule.num_train_timesteps, schedule.steps_offset
    if schedule.timestep_spacing == "trailing":
        return np.round(np.arange(total, 0, -total / steps)) - 1
    if sampler == "dpm++":  # DPM-Solver spaces steps + 1 points and drops the last one
        if schedule.timestep_spacing == "linspace":
            return np.linspace(0, total - 1, steps + 1).round()[::-1][:-1]
        return (np.arange(steps + 1) * (total // (steps + 1)))[::-1][:-1] + offset
    if schedule.timestep_spacing == "linspace":
        if sampler in ("euler", "euler-a"):
            return np.linspace(0, total - 1, steps, dtype=np.float32)[::-1].astype(np.float64)
        return np.linspace(0, total - 1, steps).round()[::-1]
    return (np.arange(steps) * (total // steps))[::-1] + offset


def _plan_ddim_ddpm(schedule: NoiseSchedule, sampler: str, steps: int) -> Plan:
    timesteps = torch.from_numpy(_spaced_timesteps(schedule, sampler, steps).astype(np.int64))
    sigma_of_t = _sigmas_of(schedule.alphas_cumprod)
    sigmas = sigma_of_t[timesteps]
    if sampler == "ddim":
        # DDIM steps to t - T // n even where that is not the next listed timestep (linspace, or
        # trailing with n not dividing T); below t = 0 it ends at abar = 1 or abar_0.
        prev = timesteps - schedule.num_train_timesteps // steps
        final = torch.tensor(0.0) if schedule.set_alpha_to_one else sigma_of_t[0]
        sigmas_next = torch.where(prev >= 0, sigma_of_t[prev.clamp(min=0)], final)
    else:
        sigmas_next = torch.cat([sigmas[1:], torch.zeros(1)])
    if not torch.isfinite(sigmas).all():
        raise ValueError(
            f"rescale_betas_zero_snr=True puts timestep {len(sigma_of_t) - 1} at infinite sigma, "
            f"which {sampler} reaches with timestep_spacing={schedule.timestep_spacing!r}; "
            "use euler, euler-a or dpm++ (they clamp it like diffusers) or leading spacing"
        )
    return Plan(
        timesteps=timesteps.float(),
        sigmas=sigmas,
        sigmas_next=sigmas_next,
        init_noise_sigma=float((sigmas[0] ** 2 + 1) ** 0.5),  # network input x_t = randn
        clip_sample_range=schedule.clip_sample_range if schedule.clip_sample else None,
    )


def _plan_lcm(schedule: NoiseSchedule, steps: int) -> Plan:
    """diffusers' LCMScheduler: `steps` timesteps picked at evenly spaced indices (floored) from the
    distillation grid t = k·j − 1, j = 1 … original_inference_steps, k = T // original, descending;
    each step re-noises to the next timestep, the last ends at sigma 0."""
    original = schedule.original_inference_steps
    if steps > original:
        raise ValueError(
            f"the lcm sampler takes at most original_inference_steps={original} steps, got {steps}"
        )
    k = schedule.num_train_timesteps // original
    grid = (np.arange(1, original + 1) * k - 1)[::-1]
    picks = np.floor(np.linspace(0, len(grid), steps, endpoint=False)).astype(np.int64)
    timesteps = torch.from_numpy(grid[picks].copy())
    sigmas = _sigmas_of(schedule.alphas_cumprod)[timesteps]
    return Plan(
        timesteps=timesteps.float(),
        sigmas=sigmas,
        sigmas_next=torch.cat([sigmas[1:], torch.zeros(1)]),
        init_noise_sigma=float((sigmas[0] ** 2 + 1) ** 0.5),  # network input x_t = randn
        clip_sample_range=schedule.clip_sample_range if schedule.clip_sample else None,
        timestep_scaling=schedule.timestep_scaling,
    )


def _plan_sigma_samplers(schedule: NoiseSchedule, sampler: str, steps: int, karras: bool) -> Plan:
    alphas_cumprod = schedule.alphas_cumprod
    if schedule.rescale_betas_zero_snr:  # diffusers' Euler and DPM-Solver keep sigma_max finite
        alphas_cumprod[-1] = 2**-24
    sigma_of_t = _sigmas_of(alphas_cumprod).numpy()
    log_sigma_of_t = np.log(sigma_of_t)
    timesteps = _spaced_timesteps(schedule, sampler, steps)
    sigmas = np.interp(timesteps, np.arange(len(sigma_of_t)), sigma_of_t)
    if karras and sampler == "dpm++":  # DPM-Solver spans the whole training range
        sigmas = _karras_sigmas(float(sigma_of_t[0]), float(sigma_of_t[-1]), steps)
        timesteps = _sigma_to_t(sigmas, log_sigma_of_t)
        if schedule.beta_schedule != "squaredcos_cap_v2":
            timesteps = timesteps.round()
    elif karras:  # Euler spans the range of its spaced timesteps
        sigmas = _karras_sigmas(sigmas[-1].item(), sigmas[0].item(), steps)
        timesteps = _sigma_to_t(sigmas, log_sigma_of_t)
    if sampler == "dpm++":  # DPM-Solver calls the network with integer (truncated) timesteps
        timesteps = timesteps.astype(np.int64)
    sigmas = torch.from_numpy(np.concatenate([sigmas, [0.0]]).astype(np.float32))
    # Euler's init_noise_sigma is sigma_max, or sqrt(sigma_max^2 + 1) for leading spacing (a
    # diffusers quirk); DPM-Solver starts from x_t = randn in network space.
    init = sigmas.max()
    if sampler == "dpm++" or schedule.timestep_spacing == "leading":
        init = (init**2 + 1) ** 0.5
    return Plan(
        timesteps=torch.from_numpy(timesteps.astype(np.float32)),
        sigmas=sigmas[:-1],
        sigmas_next=sigmas[1:],
        init_noise_sigma=float(init),
    )


def _karras_sigmas(sigma_min: float, sigma_max: float, steps: int) -> np.ndarray:
    """Noise levels evenly spaced in sigma^(1/7) (Karras et al. 2022, eq. 5, rho = 7)."""
    ramp = np.linspace(0, 1, steps)
    min_inv_rho, max_inv_rho = sigma_min ** (1 / 7.0), sigma_max ** (1 / 7.0)
    return (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** 7.0


def _sigma_to_t(sigmas: np.ndarray, log_sigma_of_t: np.ndarray) -> np.ndarray:
    """Fractional training timestep of each sigma, interpolating linearly in log sigma."""
    log_sigma = np.log(np.maximum(sigmas, 1e-10))
    dists = log_sigma - log_sigma_of_t[:, None]
    low = np.cumsum(dists >= 0, axis=0).argmax(axis=0).clip(max=len(log_sigma_of_t) - 2)
    lo, hi = log_sigma_of_t[low], log_sigma_of_t[low + 1]
    w = np.clip((lo - log_sigma) / (lo - hi), 0, 1)
    return (1 - w) * low + w * (low + 1)


# --- denoisers ---------------------------------------------------------------------------------

Denoiser = Callable[[Tensor, Tensor, Tensor], Tensor]  # (x, sigma, timestep) -> x0
# (step index, x after the step, the step's x0 estimate), k-diffusion's callback with `denoised`
Callback = Callable[[int, Tensor, Tensor], None]


def to_network_space(x: Tensor, sigma: Tensor | float) -> Tensor:
    """x_t = x / sqrt(1 + sigma^2): sigma-space x as the variance-preserving network input."""
    return x / (sigma**2 + 1) ** 0.5


def to_epsilon(prediction: Tensor, x_t: Tensor, abar: Tensor, prediction_type: str) -> Tensor:
    """The noise ε that a network's output implies at x_t = √ᾱ x0 + √(1−ᾱ) ε, whatever the network
    predicts: ε itself, v = √ᾱ ε − √(1−ᾱ) x0 (Salimans & Ho 2022), or x0."""
    if prediction_type == "epsilon":
        return prediction
    if prediction_type == "v_prediction":
        return abar.sqrt() * prediction + (1 - abar).sqrt() * x_t
    if prediction_type == "sample":
        return (x_t - abar.sqrt() * prediction) / (1 - abar).sqrt()
    raise ValueError(f"unknown prediction type {prediction_type!r}")


def to_x0(prediction: Tensor, x_t: Tensor, abar: Tensor, prediction_type: str) -> Tensor:
    """The clean sample x0 that a network's output implies at x_t (the inverse of `to_epsilon`'s
    forward process), computed directly: through ε it would cancel at high noise."""
    if prediction_type == "epsilon":
        return (x_t - (1 - abar).sqrt() * prediction) / abar.sqrt()
    if prediction_type == "v_prediction":
        return abar.sqrt() * x_t - (1 - abar).sqrt() * prediction
    if prediction_type == "sample":
        return prediction
    raise ValueError(f"unknown prediction type {prediction_type!r}")


def model_denoiser(
    model_fn: Callable[[Tensor, Tensor], Tensor], schedule: NoiseSchedule
) -> Denoiser:
    """Wrap a network predicting eps, v or x0 from x_t as a sigma-space denoiser (Karras 2022),
    ᾱ = 1 / (1 + σ²). An ε network's x0 is x − σ ε in sigma space (as diffusers' Euler computes
    it); v and x0 networks go through `to_x0`."""
    prediction_type = schedule.prediction_type

    def denoiser(x: Tensor, sigma: Tensor, timestep: Tensor) -> Tensor:
        x_t = to_network_space(x, sigma)
        out = model_fn(x_t, timestep)
        if prediction_type == "epsilon":
            return x - sigma * out
        return to_x0(out, x_t, 1 / (sigma**2 + 1), prediction_type)

    return denoiser


def classifier_free_guidance(
    net: Callable[[Tensor, Tensor, Tensor], Tensor],
    cond: Tensor,
    uncond: Tensor | None,
    scale: float,
) -> Callable[[Tensor, Tensor], Tensor]:
    """Classifier-free guidance (Ho & Salimans 2022): uncond + scale * (cond - uncond), one call.
    At scale <= 1 (a guidance-distilled model's setting) the conditional branch alone, one call
    of half the batch, as diffusers does."""
    if uncond is None or scale <= 1:
        return lambda x_t, timestep: net(x_t, timestep, cond)
    if uncond.shape != cond.shape:
        raise ValueError(
            f"uncond must have the shape of cond {tuple(cond.shape)}, got {tuple(uncond.shape)}"
        )
    context = torch.cat([uncond, cond])  # negative first, like diffusers

    def model_fn(x_t: Tensor, timestep: Tensor) -> Tensor:
        pred_uncond, pred_cond = net(torch.cat([x_t, x_t]), timestep, context).chunk(2)
        return pred_uncond + scale * (pred_cond - pred_uncond)

    return model_fn


# --- samplers ----------------------------------------------------------------------------------


def _noise(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """N(0, I) like diffusers' randn_tensor: drawn on the generator's device, then moved to x's."""
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


def _ancestral_step(sigma: Tensor, sigma_next: Tensor, eta: float = 1.0) -> tuple[Tensor, Tensor]:
    """Split a step to sigma_next into a deterministic part to sigma_down and noise of sigma_up."""
    sigma_up = eta * (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5
    return (sigma_next**2 - sigma_up**2) ** 0.5, sigma_up


def _steps(plan: Plan):
    """(i, timestep, sigma, sigma_next) for each step of the plan."""
    rows = zip(plan.timesteps, plan.sigmas, plan.sigmas_next, strict=True)
    return ((i, t, sigma, sigma_next) for i, (t, sigma, sigma_next) in enumerate(rows))


def _clip(x0: Tensor, clip_range: float | None) -> Tensor:
    return x0 if clip_range is None else x0.clamp(-clip_range, clip_range)


def sample_ddim(
    denoiser: Denoiser,
    x: Tensor,
    plan: Plan,
    *,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """DDIM (Song et al. 2020): x0 + sigma_down * eps + sigma_up * noise; eta = 0 is Euler."""
    for i, t, sigma, sigma_next in _steps(plan):
        if i > 0 and plan.sigmas_next[i - 1] != sigma:
            # diffusers' DDIM landed at sigmas_next[i - 1] but now reads that same x_t as sigma's
            x = to_network_space(x, plan.sigmas_next[i - 1]) * (sigma**2 + 1) ** 0.5
        x0 = denoiser(x, sigma, t)
        eps = (x - x0) / sigma  # from the unclipped x0, as diffusers does
        sigma_down, sigma_up = _ancestral_step(sigma, sigma_next, eta)
        x = _clip(x0, plan.clip_sample_range) + sigma_down * eps
        if eta > 0:
            x = x + sigma_up * _noise(x, generator)
        if callback is not None:
            callback(i, x, x0)
    return x


def sample_ddpm(
    denoiser: Denoiser,
    x: Tensor,
    plan: Plan,
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """DDPM ancestral sampling (Ho et al. 2020): posterior mean given x0, fixed-small variance."""
    for i, t, sigma, sigma_next in _steps(plan):
        x0 = _clip(denoiser(x, sigma, t), plan.clip_sample_range)
        sigma_down, sigma_up = _ancestral_step(sigma, sigma_next)
        x = x0 + sigma_down * (x - x0) / sigma
        if t > 0:  # diffusers draws no noise at t == 0
            x = x + sigma_up * _noise(x, generator)
        if callback is not None:
            callback(i, x, x0)
    return x


def sample_euler(
    denoiser: Denoiser, x: Tensor, plan: Plan, *, callback: Callback | None = None
) -> Tensor:
    """Euler's method on the probability-flow ODE dx/dsigma = (x - x0) / sigma (Karras 2022)."""
    for i, t, sigma, sigma_next in _steps(plan):
        x0 = denoiser(x, sigma, t)
        x = x + (x - x0) / sigma * (sigma_next - sigma)
        if callback is not None:
            callback(i, x, x0)
    return x


def sample_euler_ancestral(
    denoiser: Denoiser,
    x: Tensor,
    plan: Plan,
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Euler ancestral (k-diffusion): Euler step down to sigma_down, then noise up to sigma_next."""
    for i, t, sigma, sigma_next in _steps(plan):
        x0 = denoiser(x, sigma, t)
        sigma_down, sigma_up = _ancestral_step(sigma, sigma_next)
        x = x + (x - x0) / sigma * (sigma_down - sigma)
        x = x + _noise(x, generator) * sigma_up  # drawn on every step, the last one included
        if callback is not None:
            callback(i, x, x0)
    return x


def sample_dpmpp_2m(
    denoiser: Denoiser, x: Tensor, plan: Plan, *, callback: Callback | None = None
) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022), midpoint; first order on the first and the last step."""
    last = len(plan.sigmas) - 1
    x0_prev = h_prev = None
    for i, t, sigma, sigma_next in _steps(plan):
        x0 = denoiser(x, sigma, t)
        h = sigma.log() - sigma_next.log()  # step in log-SNR lambda = -log(sigma); inf at sigma 0
        d = x0 if x0_prev is None or i == last else x0 + (x0 - x0_prev) * (h / (2 * h_prev))
        x = (sigma_next / sigma) * x - torch.expm1(-h) * d
        x0_prev, h_prev = x0, h
        if callback is not None:
            callback(i, x, x0)
    return x


def lcm_boundary(timestep: Tensor, scaling: float) -> tuple[Tensor, Tensor]:
    """LCM's boundary condition (Luo et al. 2023, after consistency models): f(x, t) =
    c_skip x + c_out x0(x, t) with σ_data = 0.5 and the timestep scaled by `scaling`, so that
    f is the identity at t = 0."""
    scaled = timestep * scaling
    c_skip = 0.25 / (scaled**2 + 0.25)
    c_out = scaled / (scaled**2 + 0.25) ** 0.5
    return c_skip, c_out


def sample_lcm(
    denoiser: Denoiser,
    x: Tensor,
    plan: Plan,
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Multistep latent-consistency sampling (Luo et al. 2023, as diffusers' LCMScheduler): each
    step maps x_t to the consistency function's clean estimate c_skip x_t + c_out x0, then, but for
    the last step, noises it afresh to the next timestep."""
    last = len(plan.timesteps) - 1
    for i, t, sigma, sigma_next in _steps(plan):
        x0 = _clip(denoiser(x, sigma, t), plan.clip_sample_range)
        c_skip, c_out = lcm_boundary(t, plan.timestep_scaling)
        x = c_out * x0 + c_skip * to_network_space(x, sigma)  # sigma 0: the two spaces agree
        if i < last:
            x = x + sigma_next * _noise(x, generator)
        if callback is not None:
            callback(i, x, x0)
    return x


def sample(
    sampler: str,
    denoiser: Denoiser,
    x: Tensor,
    plan: Plan,
    *,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Run `sampler` from x (sigma space, at plan.sigmas[0]); returns x at plan.sigmas_next[-1]."""
    _check_sampler(sampler)
    if eta != 0.0 and sampler != "ddim":
        raise ValueError(f"eta applies to the ddim sampler only, got eta={eta} for {sampler!r}")
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    if sampler == "ddim":
        return sample_ddim(denoiser, x, plan, eta=eta, generator=generator, callback=callback)
    if sampler == "ddpm":
        return sample_ddpm(denoiser, x, plan, generator=generator, callback=callback)
    if sampler == "euler":
        return sample_euler(denoiser, x, plan, callback=callback)
    if sampler == "euler-a":
        return sample_euler_ancestral(denoiser, x, plan, generator=generator, callback=callback)
    if sampler == "lcm":
        return sample_lcm(denoiser, x, plan, generator=generator, callback=callback)
    return sample_dpmpp_2m(denoiser, x, plan, callback=callback)


def _check_sampler(sampler: str) -> None:
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; expected one of {SAMPLERS}")
