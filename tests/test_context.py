"""Sliding context windows for long clips, and the chunked VAE decode."""

import numpy as np
import pytest
import tiny
import torch

import spacetime.pipelines.diffusion as diffusion
from spacetime.context import ContextWindows, windowed
from spacetime.errors import SpacetimeError
from spacetime.formats.load import load_components
from spacetime.models.inflate import AnimateDiff, inflate
from spacetime.pipelines.video import VideoPipeline
from spacetime.video import main

KW = dict(steps=2, seed=3, height=32, width=32, guidance=4.0)


@pytest.mark.parametrize(
    "frames, overlap", [(16, 4), (16, 0), (16, 15), (8, 2), (1, 0), (5, 3), (4, 1)]
)
@pytest.mark.parametrize("total", [1, 7, 16, 17, 24, 33, 64, 100])
def test_windows_cover_every_frame_and_overlap_enough(total, frames, overlap):
    windows = ContextWindows(frames, overlap)
    starts = windows.starts(total)
    assert starts[0] == 0 and starts == sorted(set(starts))
    if total <= frames:
        assert starts == [0]
        return
    assert starts[-1] + frames == total  # the last window ends at the last frame
    covered = np.zeros(total, int)
    for s in starts:
        covered[s : s + frames] += 1
    assert covered.min() >= 1
    assert all(a + frames - b >= overlap for a, b in zip(starts, starts[1:], strict=False))
    # as few windows as that allows
    assert len(starts) == 1 + -(-(total - frames) // (frames - overlap))


def test_default_window_is_16_frames_overlapping_by_4():
    assert ContextWindows() == ContextWindows(16, 4)
    assert ContextWindows().starts(64) == [0, 12, 24, 36, 48]
    assert ContextWindows().starts(24) == [0, 8]


def test_weights_taper_and_blend_to_one():
    windows = ContextWindows(8, 4)
    assert windows.weights().tolist() == [1, 2, 3, 4, 4, 3, 2, 1]
    x = torch.randn(2, 4, 20, 3, 3)
    calls = []

    def ones(x_t, t, ctx, frames=slice(None)):
        calls.append(x_t.shape[2])
        return torch.ones_like(x_t)

    # normalised weights sum to one on every frame, so a constant prediction stays constant
    torch.testing.assert_close(windowed(ones, windows)(x, None, None), torch.ones_like(x))
    assert calls == [8] * len(windows.starts(20))
    # a network that treats frames independently is unchanged by windowing
    per_frame = lambda x_t, t, ctx, frames=None: x_t * 2 + 1  # noqa: E731
    torch.testing.assert_close(windowed(per_frame, windows)(x, None, None), per_frame(x, 0, 0))


def test_overlaps_cross_fade_linearly():
    windows = ContextWindows(8, 4)  # 12 frames: windows [0, 8) and [4, 12)

    def first_or_second(x_t, t, ctx, frames):
        return torch.full_like(x_t, float(x_t[0, 0, 0, 0, 0] > 0))

    x = torch.cat([-torch.ones(1, 1, 4, 1, 1), torch.ones(1, 1, 8, 1, 1)], dim=2)
    got = windowed(first_or_second, windows)(x, None, None).flatten().tolist()
    assert got[:4] == [0] * 4 and got[8:] == [1] * 4
    assert got[4:8] == pytest.approx([1 / 5, 2 / 5, 3 / 5, 4 / 5])  # no step between windows


def test_clips_within_the_window_take_the_plain_call():
    x = torch.randn(1, 4, 16, 2, 2)
    out = torch.randn(1, 4, 16, 2, 2)
    assert windowed(lambda *_: out, ContextWindows())(x, None, None) is out


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    folder = tmp_path_factory.mktemp("context") / "sd"
    tiny.sd_pipeline(folder)
    return folder


def video_pipe(folder, max_frames: int, trained: bool = True) -> VideoPipeline:
    components = load_components(folder)
    components.unet = inflate(components.unet, AnimateDiff(heads=2, max_frames=max_frames))
    if trained:  # motion modules that mix frames, so windows change the result
        tiny.randomize(components.unet, 3, 0.02)
    return VideoPipeline(components, precision="fp32")


@pytest.mark.parametrize("scheduler", ["ddim", "dpm++", "euler-a"])
def test_a_24_frame_clip_runs_past_a_16_frame_motion_module(tiny_sd, scheduler):
    pipe = video_pipe(tiny_sd, max_frames=16)
    with pytest.raises(ValueError, match="exceeds the 16 positions"):  # what windows avoid
        pipe.components.unet(torch.randn(1, 4, 24, 8, 8), 500, torch.randn(1, 77, 32))
    windows = pipe.context_windows(pipe.request("a red circle", frames=24, **KW))
    assert windows == ContextWindows(16, 4) and windows.starts(24) == [0, 8]
    clip = pipe("a red circle", frames=24, scheduler=scheduler, **KW)
    assert clip.shape == (1, 24, 32, 32, 3) and clip.dtype == np.uint8
    assert clip.std() > 0


def test_frames_within_the_window_are_bit_identical_to_no_windows(tiny_sd):
    pipe = video_pipe(tiny_sd, max_frames=32)
    plain = pipe("a red circle", frames=12, **KW)
    assert pipe.context_windows(pipe.request("a", frames=12, context_frames=12)) is None
    assert np.array_equal(pipe("a red circle", frames=12, context_frames=12, **KW), plain)
    assert np.array_equal(pipe("a red circle", frames=12, context_frames=16, **KW), plain)


def test_a_window_of_the_full_length_equals_no_windowing(tiny_sd):
    pipe = video_pipe(tiny_sd, max_frames=32)
    plain = pipe("a red circle", frames=24, **KW)  # 24 <= 32 positions: one call by default
    assert np.array_equal(pipe("a red circle", frames=24, context_frames=24, **KW), plain)
    windowed_clip = pipe("a red circle", frames=24, context_frames=8, context_overlap=2, **KW)
    assert not np.array_equal(windowed_clip, plain)  # trained motion modules: windows matter


def test_windows_leave_a_frame_independent_model_unchanged(tiny_sd):
    """At initialisation motion modules are the identity: windows must then change nothing."""
    pipe = video_pipe(tiny_sd, max_frames=32, trained=False)
    plain = pipe("a red circle", frames=20, **KW)
    windowed_clip = pipe("a red circle", frames=20, context_frames=8, context_overlap=3, **KW)
    assert np.abs(windowed_clip.astype(int) - plain.astype(int)).max() <= 1


def test_chunked_decode_equals_one_call(tiny_sd, monkeypatch):
    pipe = video_pipe(tiny_sd, max_frames=32)
    latents = torch.randn(2, 4, 19, 8, 8, generator=torch.Generator().manual_seed(0))
    chunked = pipe.decode(latents)
    monkeypatch.setattr(diffusion, "DECODE_CHUNK", 1000)
    whole = pipe.decode(latents)
    assert chunked.shape == (2, 19, 32, 32, 3) and np.array_equal(chunked, whole)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(context_frames=0), "context_frames must be >= 1, got 0"),
        (dict(context_frames=8, context_overlap=8), "smaller than context_frames=8, got 8"),
        (dict(context_overlap=-1), "context_overlap must be >= 0, got -1"),
        (dict(context_frames=40), "context_frames=40 exceeds the 32 frame positions"),
        (dict(frames=40, context_overlap=16), "smaller than context_frames=16, got 16"),
    ],
)
def test_bad_windows_are_clear_errors(tiny_sd, kwargs, message):
    pipe = video_pipe(tiny_sd, max_frames=32)
    with pytest.raises(SpacetimeError, match=message):
        pipe("a red circle", **{"frames": 24, **KW, **kwargs})


def test_cli_flags(tiny_sd, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["a red circle", "--model", str(tiny_sd), "--context-frames", "8",
              "--context-overlap", "9"])  # fmt: skip
    err = capsys.readouterr().err
    assert e.value.code == 2 and "context_overlap" in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "--context-frames" in out and "--context-overlap" in out


def test_to_uint8_in_chunks_equals_rounding_whole():
    from spacetime.pipelines.diffusion import to_uint8

    x = torch.randn(2, 3, 19, 5, 6, generator=torch.Generator().manual_seed(0)) * 1.2
    whole = ((x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 4, 1).numpy() * 255).round()
    assert (to_uint8(x) == whole.astype("uint8")).all()
    assert (to_uint8(x[:, :, 0]) == whole[:, 0].astype("uint8")).all()


def test_large_blocks_go_back_to_the_os_on_glibc():
    import sys

    from spacetime.memory import return_large_blocks

    assert return_large_blocks() == sys.platform.startswith("linux")
