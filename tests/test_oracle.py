"""The oracle reads world renders back: colour, shape, background, position, size and motion."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from spacetime.eval import read_clip, read_clips, read_image, read_images, score
from spacetime.world import (
    Clip,
    SceneSpec,
    render_clips,
    render_scenes,
    sample_clips,
    sample_scenes,
)
from spacetime.world.palette import DEFAULT_BACKGROUND


def degrade(images: np.ndarray, blur: float, noise: float, seed: int = 0) -> np.ndarray:
    """Gaussian blur (std in px) then Gaussian noise (std in 0-255 levels), as uint8 again."""
    x = rearrange(torch.from_numpy(images).float(), "... h w c -> (... c) 1 h w")
    if blur:
        r = math.ceil(3 * blur)
        k = torch.exp(-(torch.arange(-r, r + 1.0) ** 2) / (2 * blur**2))
        k = k / k.sum()
        x = F.pad(x, (r, r, r, r), mode="replicate")
        x = F.conv2d(F.conv2d(x, k.view(1, 1, 1, -1)), k.view(1, 1, -1, 1))
    x = x + noise * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    x = x.clamp(0, 255).round().to(torch.uint8)
    return rearrange(x, "(b c) 1 h w -> b h w c", c=3).reshape(images.shape).numpy()


@pytest.fixture(scope="module")
def scenes():
    rng = np.random.default_rng(123)
    return sample_scenes(rng, 900, "train") + sample_scenes(rng, 100, "heldout")


@pytest.mark.parametrize(("blur", "noise"), [(0.0, 0.0), (1.0, 10.0)])
def test_oracle_agrees_with_the_world(scenes, blur, noise):
    images = degrade(render_scenes(scenes), blur, noise) if blur or noise else render_scenes(scenes)
    readings = read_images(images)
    result = score(readings, scenes)
    for attribute in ("colour", "shape", "background", "position"):
        assert result[attribute] >= 0.99, (attribute, result)
    sizes = np.array([r.size - s.size for r, s in zip(readings, scenes, strict=True)])
    assert np.mean(np.abs(sizes) <= 2) >= 0.99
    if not (blur or noise):
        # Clean renders are read almost exactly.
        assert result["all"] == 1.0
        assert min(r.fit for r in readings) > 0.95


def test_oracle_accepts_float_and_channels_first(scenes):
    image = render_scenes(scenes[:1])[0]
    expected = read_image(image)
    as_float = torch.from_numpy(image).float() / 255
    assert read_image(rearrange(as_float, "h w c -> c h w")) == expected
    assert read_images(as_float.numpy()[None]) == [expected]
    with pytest.raises(ValueError, match="one image"):
        read_image(render_scenes(scenes[:2]))
    with pytest.raises(ValueError, match="shape"):
        read_image(np.zeros((64, 64), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"\(x \+ 1\) / 2"):
        read_image(as_float * 2 - 1)


def test_oracle_reports_no_object_on_a_blank_image():
    blank = np.broadcast_to(np.array(DEFAULT_BACKGROUND, dtype=np.uint8), (64, 64, 3))
    reading = read_image(blank)
    assert reading.shape is None and reading.colour is None and reading.centre is None
    assert reading.background is None  # the default dark background
    white = read_image(np.full((64, 64, 3), 245, dtype=np.uint8))
    assert white.background == "white" and white.shape is None


def test_oracle_ignores_a_stray_blob(scenes):
    scene = next(s for s in scenes if s.size > 12 and s.centre[0] < 32)
    image = scene.render().copy()
    image[60:62, 60:62] = 128  # a small artefact far from the object
    reading = read_image(image)
    assert (reading.shape, reading.colour) == (scene.shape, scene.colour)
    assert math.dist(reading.centre, scene.centre) < 0.5


def test_read_clip_reads_direction_on_every_clip():
    rng = np.random.default_rng(9)
    clips = sample_clips(rng, 24, "train") + sample_clips(rng, 8, "heldout")
    frames = render_clips(clips)
    for video in (frames, degrade(frames, 1.0, 10.0)):
        for clip, reading in zip(clips, read_clips(video), strict=True):
            assert reading.direction == clip.direction, clip
            assert abs(reading.speed - clip.speed) < 0.1
            assert reading.colour_constant and reading.shape_constant
            assert (reading.colour, reading.shape, reading.background) == (
                clip.colour,
                clip.shape,
                clip.background,
            )
    assert read_clip(frames[0]) == read_clips(frames[:1])[0]
    assert score(read_clips(frames), clips)["direction"] == 1.0


def test_read_clip_reports_a_still_object():
    still = Clip("circle", "red", "right", None, (30.0, 30.0), 10.0, 1e-3)
    reading = read_clip(still.render())
    assert reading.direction is None and reading.speed == 0.0


def test_score_counts_each_attribute():
    scenes = sample_scenes(np.random.default_rng(4), 2)
    readings = read_images(render_scenes(scenes))
    wrong = SceneSpec(
        scenes[1].shape, scenes[1].colour, "black" if scenes[1].background != "black" else None
    )
    result = score(readings, [scenes[0].spec, wrong])
    assert result == {"colour": 1.0, "shape": 1.0, "background": 0.5, "all": 0.5}
    assert score(readings, scenes)["position"] == 1.0
    with pytest.raises(ValueError, match="2 readings but 1 specs"):
        score(readings, scenes[:1])


def test_read_clip_reads_a_zoom_in_and_a_still_camera():
    from spacetime.world.zoom import render_zoom_clips, sample_zoom_clips

    clips = sample_zoom_clips(np.random.default_rng(3), 24)
    for video in (render_zoom_clips(clips), degrade(render_zoom_clips(clips), 1.0, 10.0)):
        for clip, reading in zip(clips, read_clips(video), strict=True):
            assert abs(reading.zoom / clip.zoom - 1) < 0.08, (clip, reading.zoom)
            assert reading.colour_constant and reading.shape_constant
    moving = sample_clips(np.random.default_rng(3), 8)
    assert all(abs(r.zoom - 1) < 0.05 for r in read_clips(render_clips(moving)))
