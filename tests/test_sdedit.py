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
    root = tiny.animatediff(tmp_path_factory.mktemp("sdedit"))
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


def test_the_command_lines_edit_as_the_api_does(models, tmp_path):
    """--init-image / --init-video with --strength: the API's output; the input's frame count,
    fps and size are the defaults."""
    from PIL import Image

    from spacetime import image, video
    from spacetime.media import read_video, write_video

    root, clip = models
    common = ["--model", str(root / "sd"), "--steps", "4", "--seed", "2", "--precision", "fp32"]
    pipe = ImagePipeline.from_pretrained(root / "sd", precision="fp32")
    want = pipe("a red circle", image=clip[0], strength=0.5, steps=4, seed=2)[0]
    Image.fromarray(clip[0]).save(tmp_path / "in.png")
    image.main(["a red circle", *common, "--init-image", str(tmp_path / "in.png"), "--strength",
                "0.5", "--out", str(tmp_path / "out.png")])  # fmt: skip
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out.png")), want)

    vpipe = VideoPipeline.from_pretrained(root / "sd", precision="fp32", motion=root / "motion")
    want = vpipe("a red circle", video=clip, steps=4, seed=2)[0]  # strength 0.8 by default
    write_video(tmp_path / "in.webp", clip, 5)  # lossless, 5 fps
    video.main(["a red circle", *common, "--motion", str(root / "motion"), "--init-video",
                str(tmp_path / "in.webp"), "--out", str(tmp_path / "out.webp")])  # fmt: skip
    got, fps = read_video(tmp_path / "out.webp")
    assert np.array_equal(got, want) and round(fps) == 5


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--strength", "0.5"], "--strength applies to an input"),
        (["--init-video", "{tmp}/none.mp4"], "no video at .*none.mp4"),
        (["--init-video", "{tmp}/empty"], "empty has no frames"),
        (["--init-video", "{tmp}/junk.mp4"], "cannot read video .*junk.mp4"),
        (["--init-video", "{tmp}/clip.gif", "--frames", "9"], "--frames 9 but .*clip.gif has 3"),
        (["--init-video", "{tmp}/clip.gif", "--strength", "0"], r"strength must be in \(0, 1\]"),
        (["--init-video", "{tmp}/clip.gif", "--strength", "0.01"], "runs no step"),
    ],
)
def test_bad_inputs_are_refused_before_weights_load(tmp_path, capsys, flags, message):
    import re

    from spacetime import video
    from spacetime.media import write_video

    (tmp_path / "empty").mkdir()
    (tmp_path / "junk.mp4").write_bytes(b"not a video")
    frames = np.zeros((3, 16, 16, 3), np.uint8) + np.arange(3, dtype=np.uint8)[:, None, None, None]
    write_video(tmp_path / "clip.gif", frames * 80, 4)  # distinct: a GIF merges equal frames
    flags = [f.replace("{tmp}", str(tmp_path)) for f in flags]
    with pytest.raises(SystemExit) as exit_:
        video.main(["a red circle", *flags, "--out", str(tmp_path / "c.gif")])
    assert exit_.value.code == 2, capsys.readouterr().err
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "c.gif").exists()
