"""End to end: the same seed gives diffusers' AnimateDiffPipeline clip, to 8-bit precision."""

import json

import numpy as np
import pytest
import tiny
import torch

from spacetime.pipelines.video import VideoPipeline

# AnimateDiff's own sampling setup (linear betas, linspace spacing), as diffusers' docs use it.
ANIMATEDIFF_SCHEDULE = dict(beta_schedule="linear", timestep_spacing="linspace", steps_offset=1)
DIFFUSERS_SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "euler-a": "EulerAncestralDiscreteScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
}


@pytest.fixture(scope="module")
def animatediff(tmp_path_factory):
    """A tiny SD folder with AnimateDiff's schedule, a trained-looking MotionAdapter, and
    diffusers' AnimateDiffPipeline over both, loaded from disk."""
    from diffusers import AnimateDiffPipeline, MotionAdapter

    root = tmp_path_factory.mktemp("animatediff")
    tiny.sd_pipeline(root / "sd")
    config = root / "sd" / "scheduler" / "scheduler_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), **ANIMATEDIFF_SCHEDULE}))
    tiny.motion_adapter(root / "motion")
    ref = AnimateDiffPipeline.from_pretrained(
        str(root / "sd"), motion_adapter=MotionAdapter.from_pretrained(str(root / "motion"))
    )
    ref.set_progress_bar_config(disable=True)
    return root / "sd", root / "motion", ref


def diffusers_clips(pipe, scheduler: str, prompt, seed: int, **kw) -> np.ndarray:
    import diffusers

    cls = getattr(diffusers, DIFFUSERS_SCHEDULERS[scheduler])
    pipe.scheduler = cls.from_config(pipe.scheduler.config)
    frames = pipe(
        prompt, generator=torch.Generator("cpu").manual_seed(seed), output_type="np", **kw
    ).frames
    return (np.asarray(frames) * 255).round().astype(np.uint8)


def close_pixels(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of 8-bit values within 3/255."""
    assert a.shape == b.shape
    return float((np.abs(a.astype(int) - b.astype(int)) <= 3).mean())


@pytest.mark.parametrize("scheduler", ["ddim", "euler-a", "dpm++"])
def test_same_seed_same_clip_as_diffusers_animatediff(animatediff, scheduler):
    sd, motion, ref = animatediff
    want = diffusers_clips(
        ref, scheduler, "a red circle", seed=5, negative_prompt="blue", num_frames=12,
        num_inference_steps=8, guidance_scale=6.0, height=32, width=40,
    )  # fmt: skip
    pipe = VideoPipeline.from_pretrained(sd, precision="fp32", motion=motion)
    got = pipe(
        "a red circle", "blue", frames=12, steps=8, guidance=6.0, height=32, width=40, seed=5,
        scheduler=scheduler,
    )  # fmt: skip
    assert got.shape == (1, 12, 32, 40, 3) and got.dtype == np.uint8
    assert want.std() > 10  # not a flat clip that anything would match
    assert close_pixels(got, want) >= 0.99


def test_a_batch_of_prompts_matches(animatediff):
    # diffusers' AnimateDiffPipeline ignores num_videos_per_prompt (always 1), so only prompts batch
    sd, motion, ref = animatediff
    prompts, negatives = ["a red circle", "a green square"], ["blue", "red"]
    want = diffusers_clips(
        ref, "ddim", prompts, seed=2, negative_prompt=negatives, num_frames=6,
        num_inference_steps=5, guidance_scale=3.0, height=32, width=32,
    )  # fmt: skip
    pipe = VideoPipeline.from_pretrained(sd, precision="fp32", motion=motion)
    got = pipe(prompts, negatives, frames=6, steps=5, guidance=3.0, height=32, width=32, seed=2)
    assert got.shape == (2, 6, 32, 32, 3)
    assert close_pixels(got, want) >= 0.99


@pytest.mark.parametrize(("scheduler", "fast"), [("ddim", False), ("dpm++", True)])
def test_free_init_matches_diffusers(animatediff, scheduler, fast):
    from spacetime.free_init import FreeInit

    sd, motion, ref = animatediff
    ref.enable_free_init(num_iters=2, use_fast_sampling=fast, method="butterworth", order=4)
    try:
        want = diffusers_clips(
            ref, scheduler, "a red circle", seed=1, negative_prompt="blue", num_frames=8,
            num_inference_steps=6, guidance_scale=6.0, height=32, width=32,
        )  # fmt: skip
    finally:
        ref.disable_free_init()
    pipe = VideoPipeline.from_pretrained(sd, precision="fp32", motion=motion)
    kw = dict(frames=8, steps=6, guidance=6.0, height=32, width=32, seed=1, scheduler=scheduler)
    got = pipe("a red circle", "blue", free_init=FreeInit(iterations=2, fast=fast), **kw)
    assert close_pixels(got, want) >= 0.99
    # The second pass changes the clip: the test would notice FreeInit being skipped.
    assert close_pixels(pipe("a red circle", "blue", **kw), want) < 0.9
