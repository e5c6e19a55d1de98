"""End to end: the same seed gives diffusers' StableDiffusionPipeline image, to 8-bit precision."""

import numpy as np
import pytest
import tiny
import torch

from spacetime.errors import CheckpointError, SpacetimeError
from spacetime.pipelines.image import ImagePipeline, load_pipeline

DIFFUSERS_SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "euler": "EulerDiscreteScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "euler-a": "EulerAncestralDiscreteScheduler",
    "lcm": "LCMScheduler",
}


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    from diffusers import StableDiffusionPipeline

    folder = tmp_path_factory.mktemp("sd") / "tiny-sd"
    tiny.sd_pipeline(folder)
    # Reload from disk: an in-memory scheduler config carries `_use_default_values`, which makes
    # diffusers' from_config swap in another class's defaults (e.g. linspace spacing).
    ref = StableDiffusionPipeline.from_pretrained(str(folder), safety_checker=None)
    ref.set_progress_bar_config(disable=True)
    return folder, ref


def diffusers_images(pipe, scheduler: str, prompt, seed: int, **kw) -> np.ndarray:
    import diffusers

    cls = getattr(diffusers, DIFFUSERS_SCHEDULERS[scheduler])
    pipe.scheduler = cls.from_config(pipe.scheduler.config)
    out = pipe(
        prompt, generator=torch.Generator("cpu").manual_seed(seed), output_type="np", **kw
    ).images
    return (out * 255).round().astype(np.uint8)


def close_pixels(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of 8-bit values within 3/255."""
    assert a.shape == b.shape
    return float((np.abs(a.astype(int) - b.astype(int)) <= 3).mean())


@pytest.mark.parametrize("scheduler", ["ddim", "dpm++", "euler-a"])
def test_same_seed_same_image_as_diffusers(tiny_sd, scheduler):
    folder, ref = tiny_sd
    kw = dict(num_inference_steps=12, guidance_scale=5.0, height=32, width=48)
    want = diffusers_images(ref, scheduler, "a red circle", seed=7, negative_prompt="blue", **kw)
    pipe = load_pipeline(folder, precision="fp32")
    got = pipe(
        "a red circle", "blue", steps=12, guidance=5.0, height=32, width=48, seed=7,
        scheduler=scheduler, precision="fp32",
    )  # fmt: skip
    assert got.shape == (1, 32, 48, 3) and got.dtype == np.uint8
    assert close_pixels(got, want) >= 0.99


@pytest.mark.parametrize("guidance", [1.0, 0.5, 2.0])
def test_lcm_at_few_steps_matches_diffusers_and_guidance_1_is_one_branch(tiny_sd, guidance):
    """LCM-LoRA's and AnimateLCM's setting: 4 LCM steps; at guidance <= 1 the U-Net sees the
    conditional batch alone, once per step (diffusers does the same), above it both branches."""
    folder, ref = tiny_sd
    kw = dict(num_inference_steps=4, guidance_scale=guidance, height=32, width=32)
    want = diffusers_images(ref, "lcm", ["a red circle", "a cube"], seed=3, **kw)
    pipe = load_pipeline(folder, precision="fp32")
    batches = []
    pipe.components.unet.register_forward_hook(lambda m, args, out: batches.append(len(args[0])))
    got = pipe(["a red circle", "a cube"], steps=4, guidance=guidance, height=32, width=32,
               seed=3, scheduler="lcm")  # fmt: skip
    assert close_pixels(got, want) >= 0.99
    assert batches == [2 if guidance <= 1 else 4] * 4


def test_batches_and_images_per_prompt_match_diffusers(tiny_sd):
    folder, ref = tiny_sd
    prompts = ["a red circle", "a green square"]
    kw = dict(num_inference_steps=6, guidance_scale=3.0, height=32, width=32)
    want = diffusers_images(ref, "ddim", prompts, seed=3, num_images_per_prompt=2, **kw)
    got = load_pipeline(folder, precision="fp32")(
        prompts, steps=6, guidance=3.0, height=32, width=32, seed=3, num_images=2,
        precision="fp32",
    )  # fmt: skip
    assert got.shape == (4, 32, 32, 3)
    assert close_pixels(got, want) >= 0.99


@pytest.mark.parametrize("scheduler", ["ddim", "dpm++"])
def test_on_step_sees_each_steps_clean_estimate(tiny_sd, scheduler):
    folder, _ = tiny_sd
    pipe = load_pipeline(folder, precision="fp32")
    req = pipe.request("a red circle", steps=5, height=32, width=32, seed=1, scheduler=scheduler)
    seen = []
    latents = pipe.sample_latents(req, on_step=lambda k, _t, x0: seen.append((k, x0.clone())))
    assert [k for k, _ in seen] == list(range(5))
    assert all(x0.shape == latents.shape for _, x0 in seen)
    # The estimates sharpen towards the result. DPM-Solver++ ends at sigma 0, on its last
    # estimate; SD's DDIM ends one step short of it (at alphas_cumprod[0]).
    errors = [float((x0 - latents).abs().mean()) for _, x0 in seen]
    assert errors[0] > errors[-2] > errors[-1]
    if scheduler == "dpm++":
        torch.testing.assert_close(seen[-1][1], latents)


def test_default_size_comes_from_the_model(tiny_sd):
    folder, _ = tiny_sd
    pipe = load_pipeline(folder, precision="fp32")
    assert pipe.default_size == 8 * 4  # U-Net sample_size × VAE downscale
    assert pipe("a", steps=1, precision="fp32").shape == (1, 32, 32, 3)


def test_save_pretrained_round_trips_and_diffusers_loads_it(tiny_sd, tmp_path):
    from diffusers import StableDiffusionPipeline

    folder, _ = tiny_sd
    pipe = load_pipeline(folder, precision="fp32")
    pipe.save_pretrained(tmp_path / "saved")
    again = ImagePipeline.from_pretrained(tmp_path / "saved", precision="fp32")
    for a, b in zip(
        pipe.components.unet.state_dict().values(),
        again.components.unet.state_dict().values(),
        strict=True,
    ):
        assert torch.equal(a, b)
    ref = StableDiffusionPipeline.from_pretrained(str(tmp_path / "saved"), safety_checker=None)
    ref.set_progress_bar_config(disable=True)
    want = diffusers_images(
        ref, "ddim", "a red circle", seed=1, num_inference_steps=4, height=32, width=32
    )
    got = again("a red circle", steps=4, seed=1, height=32, width=32, precision="fp32")
    assert close_pixels(got, want) >= 0.99
    with pytest.raises(CheckpointError, match="exists"):
        pipe.save_pretrained(tmp_path / "saved")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(height=30), "height must be a positive multiple of 8"),
        (dict(width=0), "width must be a positive multiple of 8"),
        (dict(steps=0), "steps must be >= 1"),
        (dict(guidance=-1.0), "guidance must be >= 0"),
        (dict(scheduler="plms"), "scheduler must be one of"),
    ],
)
def test_bad_requests_name_the_value(tiny_sd, kwargs, message):
    folder, _ = tiny_sd
    with pytest.raises(SpacetimeError, match=message):
        load_pipeline(folder, precision="fp32")("a red circle", **kwargs)


def test_height_must_fit_the_vae(tiny_sd):
    folder, _ = tiny_sd
    pipe = load_pipeline(folder, precision="fp32")
    # 36 is a multiple of 4 (this VAE) but the request itself requires multiples of 8
    with pytest.raises(SpacetimeError, match="multiple of 8"):
        pipe("a", height=36, steps=1)


def test_wrong_shapes_name_key_and_both_shapes(tiny_sd, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    folder, _ = tiny_sd
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    weights = broken / "unet" / "diffusion_pytorch_model.safetensors"
    sd = load_file(str(weights))
    sd["conv_in.weight"] = torch.zeros(32, 4, 5, 5)
    save_file(sd, str(weights))
    with pytest.raises(
        CheckpointError, match=r"conv_in.weight: checkpoint \(32, 4, 5, 5\), model \(32, 4, 3, 3\)"
    ):
        load_pipeline(broken)
    del sd["conv_in.weight"]
    sd["extra.weight"] = torch.zeros(1)
    save_file(sd, str(weights))
    with pytest.raises(
        CheckpointError, match="missing keys: conv_in.weight; unexpected keys: extra.weight"
    ):
        load_pipeline(broken)


def test_missing_and_truncated_checkpoints(tiny_sd, tmp_path):
    import shutil

    folder, _ = tiny_sd
    with pytest.raises(CheckpointError, match="model not found"):
        load_pipeline(tmp_path / "nowhere")
    broken = tmp_path / "truncated"
    shutil.copytree(folder, broken)
    weights = broken / "vae" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_pipeline(broken)


def test_hub_id_offline_fails_at_once_naming_the_path(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match=r"some-org/some-model.*offline"):
        load_pipeline("some-org/some-model")


def test_weights_are_cast_once_and_more_precision_is_refused(tiny_sd):
    folder, _ = tiny_sd
    pipe = load_pipeline(folder, precision="bf16")
    assert next(pipe.components.unet.parameters()).dtype == torch.bfloat16
    assert pipe("a", steps=2, height=32, width=32).dtype == np.uint8
    with pytest.raises(SpacetimeError, match="holds bf16 weights"):
        pipe("a", steps=2, precision="fp32")
