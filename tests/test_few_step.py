"""Few-step checkpoints end to end: AnimateLCM (its motion module, original or diffusers layout,
plus its spatial LCM LoRA, LCM with linear betas) and AnimateDiff-Lightning (a MotionAdapter state
dict in one file, trailing Euler with linear betas, guidance 1) give diffusers' AnimateDiffPipeline
clips for the same seed, with tiny random checkpoints in each layout."""

import numpy as np
import pytest
import tiny
import torch
from safetensors.torch import save_file

from spacetime.errors import ArgumentValueError, CheckpointError
from spacetime.formats.animatediff import diffusers_to_original
from spacetime.models.inflate import AnimateDiff
from spacetime.pipelines.video import VideoPipeline

PROMPT = "a red circle moving right"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A tiny SD folder; a tiny MotionAdapter as a folder, as an original-layout .ckpt and as a
    bare diffusers state dict; a kohya LoRA on the U-Net (AnimateLCM's spatial LoRA's stand-in)."""

    root = tmp_path_factory.mktemp("few-step")
    tiny.sd_pipeline(root / "sd")
    adapter = tiny.motion_adapter(root / "motion", heads=8, seed=7)
    sd = {k: v.contiguous() for k, v in adapter.state_dict().items()}
    save_file(sd, str(root / "lightning_4step_diffusers.safetensors"))
    spec = AnimateDiff(heads=8, layers=1, max_frames=32, mid_block=True)
    original = diffusers_to_original({k: v for k, v in sd.items() if not k.endswith(".pe")}, spec)
    torch.save(original, str(root / "AnimateLCM_t2v.ckpt"))

    g = torch.Generator().manual_seed(3)
    lora = {}
    unet = tiny.unet()  # the same layers as the SD folder's U-Net
    for name, m in unet.named_modules():
        if isinstance(m, torch.nn.Linear) and name.endswith(("to_q", "to_v", "ff.net.2")):
            key = "lora_unet_" + name.replace(".", "_")
            lora[f"{key}.lora_down.weight"] = torch.randn(4, m.in_features, generator=g) * 0.3
            lora[f"{key}.lora_up.weight"] = torch.randn(m.out_features, 4, generator=g) * 0.3
            lora[f"{key}.alpha"] = torch.tensor(2.0)
    save_file(lora, str(root / "lcm_lora.safetensors"))
    return root


def reference(root, scheduler: str, **overrides):
    import diffusers
    from diffusers import AnimateDiffPipeline, MotionAdapter

    pipe = AnimateDiffPipeline.from_pretrained(
        str(root / "sd"), motion_adapter=MotionAdapter.from_pretrained(str(root / "motion"))
    )
    cls = getattr(diffusers, scheduler)
    pipe.scheduler = cls.from_config(pipe.scheduler.config, **overrides)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def frames(pipe, steps: int, guidance: float) -> np.ndarray:
    out = pipe(
        PROMPT, num_frames=6, num_inference_steps=steps, guidance_scale=guidance, height=32,
        width=32, generator=torch.Generator("cpu").manual_seed(5), output_type="np",
    )  # fmt: skip
    return (np.asarray(out.frames) * 255).round().astype(np.uint8)


def assert_close(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    assert (np.abs(got.astype(int) - want.astype(int)) <= 3).mean() >= 0.99


@pytest.mark.parametrize("motion", ["AnimateLCM_t2v.ckpt", "motion"])
@pytest.mark.parametrize(("steps", "guidance"), [(4, 1.0), (6, 2.0)])
def test_animatelcm_matches_diffusers(checkpoints, motion, steps, guidance):
    """AnimateLCM's card: LCMScheduler with linear betas, its LoRA at 0.8, 4-8 steps."""
    ref = reference(checkpoints, "LCMScheduler", beta_schedule="linear")
    ref.load_lora_weights(str(checkpoints / "lcm_lora.safetensors"), adapter_name="lcm")
    ref.set_adapters(["lcm"], [0.8])
    want = frames(ref, steps, guidance)

    pipe = VideoPipeline.from_pretrained(
        checkpoints / "sd", precision="fp32", motion=checkpoints / motion
    )
    pipe.set_schedule(beta_schedule="linear")
    pipe.load_lora(checkpoints / "lcm_lora.safetensors", weight=0.8)
    got = pipe(PROMPT, frames=6, steps=steps, guidance=guidance, height=32, width=32, seed=5,
               scheduler="lcm")  # fmt: skip
    assert_close(got, want)


@pytest.mark.parametrize("steps", [1, 2, 4, 8])
def test_animatediff_lightning_matches_diffusers(checkpoints, steps):
    """AnimateDiff-Lightning's card: its N-step MotionAdapter state dict loaded into a default
    MotionAdapter, Euler with trailing spacing and linear betas, guidance 1."""
    from diffusers import AnimateDiffPipeline, EulerDiscreteScheduler, MotionAdapter
    from safetensors.torch import load_file

    file = checkpoints / "lightning_4step_diffusers.safetensors"
    adapter = MotionAdapter.from_pretrained(str(checkpoints / "motion"))  # the same architecture
    adapter.load_state_dict(load_file(str(file)))
    ref = AnimateDiffPipeline.from_pretrained(str(checkpoints / "sd"), motion_adapter=adapter)
    ref.scheduler = EulerDiscreteScheduler.from_config(
        ref.scheduler.config, timestep_spacing="trailing", beta_schedule="linear"
    )
    ref.set_progress_bar_config(disable=True)
    want = frames(ref, steps, 1.0)

    pipe = VideoPipeline.from_pretrained(checkpoints / "sd", precision="fp32", motion=file)
    pipe.set_schedule(beta_schedule="linear", timestep_spacing="trailing")
    calls = []
    pipe.components.unet.register_forward_hook(lambda m, a, out: calls.append(len(a[0])))
    got = pipe(PROMPT, frames=6, steps=steps, guidance=1.0, height=32, width=32, seed=5,
               scheduler="euler")  # fmt: skip
    assert_close(got, want)
    assert calls == [1] * steps  # guidance 1: one U-Net call of one clip per step


def test_schedule_overrides_are_checked(checkpoints):
    pipe = VideoPipeline.from_pretrained(checkpoints / "sd", precision="fp32")
    with pytest.raises(ArgumentValueError, match="unknown schedule setting 'spacing'"):
        pipe.set_schedule(spacing="trailing")
    with pytest.raises(ArgumentValueError, match="beta_schedule='cosine' is not supported"):
        pipe.set_schedule(beta_schedule="cosine")
    assert pipe.components.schedule.beta_schedule == "scaled_linear"  # unchanged


def test_a_state_dict_that_is_no_motion_module_is_refused(checkpoints, tmp_path):
    save_file({"down_blocks.0.resnets.0.conv1.weight": torch.ones(1)}, str(tmp_path / "x.st"))
    (tmp_path / "x.st").rename(tmp_path / "x.safetensors")
    with pytest.raises(CheckpointError, match="is not an AnimateDiff motion module"):
        VideoPipeline.from_pretrained(checkpoints / "sd", motion=tmp_path / "x.safetensors")


def test_the_command_line_runs_lightning_as_the_api_does(checkpoints, tmp_path):
    """--motion FILE --scheduler euler --timestep-spacing trailing --beta-schedule linear
    --guidance 1: the frames (a PNG folder, lossless) equal the Python API's."""
    from PIL import Image

    from spacetime import video

    file = checkpoints / "lightning_4step_diffusers.safetensors"
    pipe = VideoPipeline.from_pretrained(checkpoints / "sd", precision="fp32", motion=file)
    pipe.set_schedule(beta_schedule="linear", timestep_spacing="trailing")
    want = pipe(PROMPT, frames=6, steps=4, guidance=1.0, height=32, width=32, seed=5,
                scheduler="euler")[0]  # fmt: skip
    out = tmp_path / "frames"
    video.main([PROMPT, "--model", str(checkpoints / "sd"), "--motion", str(file), "--frames", "6",
                "--steps", "4", "--guidance", "1", "--height", "32", "--width", "32", "--seed", "5",
                "--scheduler", "euler", "--timestep-spacing", "trailing", "--beta-schedule",
                "linear", "--precision", "fp32", "--out", f"{out}/"])  # fmt: skip
    got = np.stack([np.asarray(Image.open(f)) for f in sorted(out.glob("frame_*.png"))])
    assert np.array_equal(got, want)


def count_unet_calls(monkeypatch) -> list[int]:
    from spacetime.models.unet import UNet2DCondition

    calls, forward = [], UNet2DCondition.forward

    def counted(self, *args, **kwargs):
        calls.append(1)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(UNet2DCondition, "forward", counted)
    return calls


def cli_frames(folder) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.open(f)) for f in sorted(folder.glob("*.png"))])


def test_the_world_students_sample_in_4_unet_calls_as_their_cards_say(tmp_path, monkeypatch):
    """The shipped few-step students (lcm-video, lcm-image) with the flags their model cards give:
    one U-Net call per LCM step, and the API's frames for the same settings."""
    from PIL import Image

    from spacetime import image, video
    from spacetime.pipelines.image import ImagePipeline

    few = ["--scheduler", "lcm", "--steps", "4", "--guidance", "1", "--precision", "fp32"]
    pipe = VideoPipeline.from_pretrained(precision="fp32")
    pipe.load_lora("lcm-video")
    want = pipe(PROMPT, frames=4, steps=4, guidance=1.0, scheduler="lcm", seed=0,
                free_init=None)[0]  # fmt: skip
    calls = count_unet_calls(monkeypatch)
    video.main([PROMPT, "--lora", "lcm-video", "--free-init", "0", "--frames", "4", *few,
                "--out", f"{tmp_path}/clip/"])  # fmt: skip
    assert len(calls) == 4
    assert np.array_equal(cli_frames(tmp_path / "clip"), want)

    pipe = ImagePipeline.from_pretrained(precision="fp32")
    pipe.load_lora("lcm-image")
    want = pipe("a red circle", steps=4, guidance=1.0, scheduler="lcm", seed=0)[0]
    calls.clear()
    image.main(["a red circle", "--lora", "lcm-image", *few, "--out", f"{tmp_path}/a.png"])
    assert len(calls) == 4
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a.png")), want)
