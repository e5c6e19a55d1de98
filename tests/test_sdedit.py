"""SDEdit: image-to-image and video-to-video give diffusers' StableDiffusionImg2ImgPipeline and
AnimateDiffVideoToVideoPipeline outputs for the same seed and strength; bad input is refused."""

import numpy as np
import pytest
import tiny
import torch

from spacetime.errors import ArgumentTypeError, ArgumentValueError
from spacetime.pipelines.image import ImagePipeline
from spacetime.pipelines.video import VideoPipeline
from spacetime.sdedit import first_step


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from diffusers import MotionAdapter

    root = tmp_path_factory.mktemp("sdedit")
    tiny.sd_pipeline(root / "sd")
    torch.manual_seed(0)
    adapter = MotionAdapter(
        block_out_channels=(32, 64), motion_layers_per_block=2, motion_norm_num_groups=8,
        motion_num_attention_heads=2, motion_max_seq_length=32, use_motion_mid_block=True,
    )  # fmt: skip
    tiny.randomize(adapter, 5, 0.05)
    adapter.save_pretrained(str(root / "motion"))
    rng = np.random.default_rng(0)
    clip = rng.uniform(size=(6, 1, 1, 3)) * 255 * np.linspace(0.3, 1, 32)[None, :, None, None]
    clip = np.broadcast_to(clip, (6, 32, 32, 3)).astype(np.uint8).copy()
    return root, clip


def close(got, want) -> bool:
    return (
        got.shape == want.shape and (np.abs(got.astype(int) - want.astype(int)) <= 3).mean() >= 0.99
    )


@pytest.mark.parametrize(
    ("scheduler", "strength"), [("ddim", 0.6), ("euler", 0.75), ("dpm++", 1.0)]
)
def test_image_to_image_matches_diffusers(models, scheduler, strength):
    import diffusers
    from PIL import Image

    root, clip = models
    names = {"ddim": "DDIMScheduler", "euler": "EulerDiscreteScheduler",
             "dpm++": "DPMSolverMultistepScheduler"}  # fmt: skip
    ref = diffusers.StableDiffusionImg2ImgPipeline.from_pretrained(str(root / "sd"),
                                                                   safety_checker=None)  # fmt: skip
    ref.scheduler = getattr(diffusers, names[scheduler]).from_config(ref.scheduler.config)
    ref.set_progress_bar_config(disable=True)
    out = ref(["a red circle", "a blue square"], image=Image.fromarray(clip[0]), strength=strength,
              num_inference_steps=10, guidance_scale=4.0, num_images_per_prompt=2,
              generator=torch.Generator().manual_seed(3), output_type="np")  # fmt: skip
    want = (out.images * 255).round().astype(np.uint8)
    pipe = ImagePipeline.from_pretrained(root / "sd", precision="fp32")
    steps = []
    got = pipe(["a red circle", "a blue square"], image=clip[0], strength=strength, steps=10,
               guidance=4.0, num_images=2, seed=3, scheduler=scheduler,
               progress=lambda k, n: steps.append((k, n)))  # fmt: skip
    assert close(got, want)
    assert steps[-1] == (int(10 * strength), int(10 * strength))  # only the steps that run


def test_video_to_video_matches_diffusers(models):
    from diffusers import AnimateDiffVideoToVideoPipeline, MotionAdapter
    from PIL import Image

    root, clip = models
    ref = AnimateDiffVideoToVideoPipeline.from_pretrained(
        str(root / "sd"), motion_adapter=MotionAdapter.from_pretrained(str(root / "motion"))
    )
    ref.set_progress_bar_config(disable=True)
    out = ref(video=[Image.fromarray(f) for f in clip], prompt="a red circle moving right",
              strength=0.7, num_inference_steps=8, guidance_scale=5.0,
              generator=torch.Generator().manual_seed(9), output_type="np")  # fmt: skip
    want = (np.asarray(out.frames) * 255).round().astype(np.uint8)
    pipe = VideoPipeline.from_pretrained(root / "sd", precision="fp32", motion=root / "motion")
    got = pipe("a red circle moving right", video=clip, strength=0.7, steps=8, guidance=5.0,
               seed=9)  # fmt: skip
    assert got.shape == (1, 6, 32, 32, 3) and close(got, want)


def test_sizes_frames_and_resizing(models):
    root, clip = models
    pipe = VideoPipeline.from_pretrained(root / "sd", precision="fp32", motion=root / "motion")
    assert pipe("x", video=clip, frames=4, steps=2, seed=0).shape == (1, 4, 32, 32, 3)
    big = np.repeat(np.repeat(clip, 2, axis=1), 2, axis=2)[:, :, :60]  # 64 x 60: 64 x 56 out
    assert pipe("x", video=big, steps=2, seed=0).shape == (1, 6, 64, 56, 3)
    assert pipe("x", video=big, steps=2, seed=0, height=32, width=32).shape == (1, 6, 32, 32, 3)


def test_bad_input_is_refused(models):
    root, clip = models
    pipe = VideoPipeline.from_pretrained(root / "sd", precision="fp32", motion=root / "motion")
    for strength in (0.0, 1.5, float("nan")):
        with pytest.raises(ArgumentValueError, match="strength must be"):
            pipe("x", video=clip, strength=strength, steps=2)
    with pytest.raises(ArgumentValueError, match="strength 0.05 of 10 steps runs no step"):
        pipe("x", video=clip, strength=0.05, steps=10)
    with pytest.raises(ArgumentValueError, match="frames=8 but the video has 6"):
        pipe("x", video=clip, frames=8, steps=2)
    with pytest.raises(ArgumentTypeError, match="expected uint8 RGB pixels"):
        pipe("x", video=clip.astype(np.float32), steps=2)
    with pytest.raises(ArgumentValueError, match="strength applies to an input image or video"):
        pipe("x", strength=0.5, steps=2, frames=2)
    assert first_step(10, 0.75) == 3 and first_step(4, 1.0) == 0
