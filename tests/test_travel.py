"""Prompt travel: a {frame: prompt} clip gives diffusers' AnimateDiffPipeline frames with
enable_free_noise and the same prompt dictionary; key frames are checked; long clips travel
through context windows."""

import numpy as np
import pytest
import tiny
import torch

from spacetime.errors import ArgumentValueError, SpacetimeError
from spacetime.pipelines.video import VideoPipeline
from spacetime.travel import travel

TRAVEL = {0: "a red circle", 3: "a blue square", 5: "a green triangle"}


@pytest.fixture(scope="module")
def animatediff(tmp_path_factory):
    return tiny.animatediff(tmp_path_factory.mktemp("travel"))


@pytest.mark.parametrize("guidance", [5.0, 1.0])
def test_prompt_travel_matches_diffusers_free_noise(animatediff, guidance):
    from diffusers import AnimateDiffPipeline, MotionAdapter

    ref = AnimateDiffPipeline.from_pretrained(
        str(animatediff / "sd"),
        motion_adapter=MotionAdapter.from_pretrained(str(animatediff / "motion")),
    )
    ref.enable_free_noise(context_length=8, context_stride=4)  # one window: the whole clip
    ref.set_progress_bar_config(disable=True)
    out = ref(
        prompt=TRAVEL, negative_prompt="blurry", num_frames=8, num_inference_steps=3,
        guidance_scale=guidance, height=32, width=32, output_type="np",
        generator=torch.Generator("cpu").manual_seed(4),
    )  # fmt: skip
    want = (np.asarray(out.frames) * 255).round().astype(np.uint8)

    pipe = VideoPipeline.from_pretrained(
        animatediff / "sd", precision="fp32", motion=animatediff / "motion"
    )
    got = pipe(dict(reversed(TRAVEL.items())), "blurry", frames=8, steps=3, guidance=guidance,
               height=32, width=32, seed=4)  # fmt: skip
    assert got.shape == want.shape == (1, 8, 32, 32, 3)
    assert (np.abs(got.astype(int) - want.astype(int)) <= 3).mean() >= 0.99
    still = pipe("a red circle", "blurry", frames=8, steps=3, guidance=guidance, height=32,
                 width=32, seed=4)  # fmt: skip
    assert np.abs(got.astype(int) - still.astype(int)).max() > 10  # the prompt did travel


def test_travel_interpolates_linearly_and_holds_the_last_prompt():
    e = torch.stack([torch.full((2, 3), v) for v in (0.0, 4.0, 10.0)])
    per_frame = travel(e, [0, 4, 6], 9)
    assert per_frame[:, 0, 0].tolist() == [0, 1, 2, 3, 4, 7, 10, 10, 10]
    assert travel(e[:1], [0], 3)[:, 0, 0].tolist() == [0, 0, 0]
    assert travel(e[:2], [0, 2], 3)[:, 0, 0].tolist() == [0, 2, 4]  # a key at the last frame


def test_long_clips_travel_through_context_windows(animatediff):
    """Past one window each window takes its own frames' embeddings: the travelling clip differs
    from a still prompt where the prompt has changed, and is deterministic."""
    pipe = VideoPipeline.from_pretrained(
        animatediff / "sd", precision="fp32", motion=animatediff / "motion"
    )
    run = dict(frames=12, steps=2, guidance=3.0, height=32, width=32, seed=1, context_frames=8,
               context_overlap=4)  # fmt: skip
    moving = pipe({0: "a red circle", 10: "a blue square"}, **run)[0]
    still = pipe("a red circle", **run)[0]
    again = pipe({0: "a red circle", 10: "a blue square"}, **run)[0]
    assert np.array_equal(moving, again)
    assert np.abs(moving[-1].astype(int) - still[-1].astype(int)).max() > 30


@pytest.mark.parametrize(
    ("prompt", "frames", "message"),
    [
        ({2: "a", 5: "b"}, 8, "the first key frame must be 0"),
        ({0: "a", 8: "b"}, 8, r"key frame 8 is past the clip's last frame \(7; frames=8\)"),
        ({0: "a", -1: "b"}, 8, "prompt travel key frame must be >= 0, got -1"),
        ({0: "a", 2.5: "b"}, 8, "prompt travel key frame must be an integer, got 2.5"),
        ({0: "a", 3: 7}, 8, "the prompt at frame 3 must be a string, got 7"),
    ],
)
def test_bad_key_frames_are_refused(animatediff, prompt, frames, message):
    pipe = VideoPipeline.from_pretrained(animatediff / "sd", precision="fp32")
    with pytest.raises(SpacetimeError, match=message):
        pipe.request(prompt, frames=frames)
    with pytest.raises(ArgumentValueError, match="key frames must increase, got 4 then 2"):
        pipe.request(["a", "b", "c"], frames=8, key_frames=(0, 4, 2))


def test_the_command_line_travels_as_the_api_does(animatediff, tmp_path):
    from PIL import Image

    from spacetime import video

    pipe = VideoPipeline.from_pretrained(
        animatediff / "sd", precision="fp32", motion=animatediff / "motion"
    )
    run = dict(frames=6, steps=2, guidance=3.0, height=32, width=32, seed=2)
    want = pipe({0: "a red circle", 4: "a blue square"}, **run)[0]
    common = ["--model", str(animatediff / "sd"), "--motion", str(animatediff / "motion"),
              "--frames", "6", "--steps", "2", "--guidance", "3", "--height", "32", "--width",
              "32", "--seed", "2", "--precision", "fp32"]  # fmt: skip
    (tmp_path / "travel.yaml").write_text('0: a red circle\n"4": a blue square\n')
    for way in (["--prompt-at", "0", "a red circle", "--prompt-at", "4", "a blue square"],
                ["--prompt-file", str(tmp_path / "travel.yaml")]):  # fmt: skip
        out = tmp_path / way[0].strip("-")
        video.main([*way, *common, "--out", f"{out}/"])
        got = np.stack([np.asarray(Image.open(f)) for f in sorted(out.glob("frame_*.png"))])
        assert np.array_equal(got, want), way


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["a red circle", "--prompt-at", "0", "x"], "give one of: a prompt, --prompt-at"),
        ([], "give one of: a prompt, --prompt-at"),
        (["--prompt-at", "0", "a", "--prompt-at", "0", "b"],
         "--prompt-at key frames must increase, got 0 then 0"),
        (["--prompt-at", "4", "a", "--prompt-at", "2", "b"],
         "--prompt-at key frames must increase, got 4 then 2"),
        (["--prompt-at", "0", "a", "--prompt-at", "16", "b"],
         r"key frame 16 is past the clip's last frame \(15; frames=16\)"),
        (["--prompt-at", "2", "a"], "the first key frame must be 0"),
        (["--prompt-at", "zero", "a"], "a key frame must be an integer, got 'zero'"),
        (["--prompt-file", "{tmp}/missing.yaml"], "--prompt-file .*missing.yaml"),
        (["--prompt-file", "{tmp}/list.yaml"], "expected a mapping of key frames to prompts"),
    ],
)  # fmt: skip
def test_bad_travel_flags_are_refused_before_anything_loads(tmp_path, capsys, flags, message):
    import re

    from spacetime import video

    (tmp_path / "list.yaml").write_text("- a red circle\n")
    flags = [f.replace("{tmp}", str(tmp_path)) for f in flags]
    with pytest.raises(SystemExit) as exit_:
        video.main([*flags, "--out", str(tmp_path / "c.gif")])
    assert exit_.value.code == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "c.gif").exists()
