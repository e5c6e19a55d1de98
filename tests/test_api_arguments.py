"""The Python API names the bad argument with a SpacetimeError that is also a ValueError or
TypeError, before any sampling (and, for loaders, before any weights load)."""

import re

import pytest

from spacetime import load_pipeline
from spacetime.errors import ArgumentTypeError, ArgumentValueError, SpacetimeError
from spacetime.pipelines.video import VideoPipeline
from spacetime.threed import text_to_mesh


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline()  # the shipped model, as VideoPipeline.from_pretrained() defaults to


CALLS = [
    (dict(steps=2.5), ArgumentTypeError, "steps must be an integer, got 2.5"),
    (dict(steps="20"), ArgumentTypeError, "steps must be an integer, got '20'"),
    (dict(steps=True), ArgumentTypeError, "steps must be an integer, got True"),
    (dict(steps=1001), ArgumentValueError, "steps must be <= 1000 (the model's noise schedule)"),
    (dict(steps=51, scheduler="lcm"), ArgumentValueError, "the lcm sampler takes at most 50 steps"),
    (dict(guidance=float("nan")), ArgumentValueError, "guidance must be a finite number"),
    (dict(guidance="7"), ArgumentTypeError, "guidance must be a number, got '7'"),
    (dict(eta=float("inf")), ArgumentValueError, "eta must be a finite number, got inf"),
    (dict(eta=0.3, scheduler="euler"), ArgumentValueError, "eta applies to the ddim sampler"),
    (dict(karras=True), ArgumentValueError, "karras sigmas apply to euler, euler-a, dpm++"),
    (dict(karras=1), ArgumentTypeError, "karras must be True or False, got 1"),
    (dict(scheduler="lms"), ArgumentValueError, "scheduler must be one of ddim, ddpm"),
    (dict(seed=2**64), ArgumentValueError, "seed must be in [0, 18446744073709551615]"),
    (dict(seed=1.5), ArgumentTypeError, "seed must be an integer, got 1.5"),
    (dict(height=30), ArgumentValueError, "height must be a positive multiple of 8, got 30"),
    (dict(num_images=0), ArgumentValueError, "num_images must be >= 1, got 0"),
    (dict(clip_skip=-1), ArgumentValueError, "clip_skip must be >= 0, got -1"),
    (dict(clip_skip=99), ArgumentValueError, "clip_skip must be < "),
    (dict(frames=3), ArgumentTypeError, "frames: an ImagePipeline makes images"),
    (dict(stpes=3), ArgumentTypeError, "unknown option stpes"),
    (dict(precision="fp8"), ArgumentValueError, "precision must be one of auto, fp32"),
]


@pytest.mark.parametrize("kwargs, kind, message", CALLS, ids=[str(c[0]) for c in CALLS])
def test_pipeline_call_names_the_argument(pipe, kwargs, kind, message):
    with pytest.raises(kind, match=re.escape(message)):
        pipe("a red circle", **kwargs)


@pytest.mark.parametrize(
    "prompt, negative, message",
    [
        (123, None, "prompt must be a string or a list of strings, got 123"),
        (None, None, "prompt must be a string or a list of strings, got None"),
        (["a", 1], None, "prompt must be a string or a list of strings"),
        ("a", 5, "negative_prompt must be a string or a list of strings, got 5"),
    ],
)
def test_prompts_must_be_text(pipe, prompt, negative, message):
    with pytest.raises(ArgumentTypeError, match=message):
        pipe(prompt, negative)


@pytest.mark.parametrize(
    "call, kind, message",
    [
        (lambda: load_pipeline(123), ArgumentTypeError, "model must be a path or a hub id"),
        (lambda: load_pipeline(device="bogus"), ArgumentValueError, "device must be cpu, cuda"),
        (lambda: load_pipeline(precision="fp8"), ArgumentValueError, "precision must be one of"),
        (lambda: VideoPipeline.from_pretrained(device=7), ArgumentTypeError, "device must be a"),
        (lambda: text_to_mesh(None), ArgumentTypeError, "prompt must be a string, got None"),
        (lambda: text_to_mesh(""), ArgumentValueError, "the prompt is empty"),
        (lambda: text_to_mesh("a red cube", steps=2.5), ArgumentTypeError, "steps must be an"),
        (lambda: text_to_mesh("a red cube", steps=10**9), ArgumentValueError, "steps must be in"),
        (lambda: text_to_mesh("a red cube", guidance=float("nan")), ArgumentValueError, "finite"),
        (lambda: text_to_mesh("a red cube", resolution=4), ArgumentValueError, "resolution"),
        (lambda: text_to_mesh("a red cube", texture_size=100), ArgumentValueError, "texture_size"),
        (lambda: text_to_mesh("a red cube", texture_size="1k"), ArgumentTypeError, "texture_size"),
        (lambda: text_to_mesh("a red cube", model=3), ArgumentTypeError, "model must be a path"),
        (lambda: text_to_mesh("a red cube", device="gpu"), ArgumentValueError, "device must be"),
    ],
)
def test_loaders_and_text_to_mesh_name_the_argument(call, kind, message):
    with pytest.raises(kind, match=message) as error:
        call()
    assert isinstance(error.value, SpacetimeError)
    assert isinstance(error.value, ValueError if kind is ArgumentValueError else TypeError)


def test_load_pipeline_defaults_to_the_shipped_model(pipe):
    assert pipe("a red circle", steps=1, height=32, width=32).shape == (1, 32, 32, 3)
