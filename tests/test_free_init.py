"""FreeInit: the low-pass filter and frequency mix against diffusers' FreeInitMixin, and requests."""

import pytest
import torch

from spacetime.errors import SpacetimeError
from spacetime.free_init import METHODS, FreeInit, mix_frequencies
from spacetime.pipelines.diffusion import GenerationRequest


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("stops", [(0.25, 0.25), (0.4, 0.1), (0.0, 0.25)])
def test_low_pass_filter_equals_diffusers(method, stops):
    from diffusers.pipelines.free_init_utils import FreeInitMixin

    spatial, temporal = stops
    want = FreeInitMixin()._get_free_init_freq_filter(
        (1, 4, 8, 6, 10), "cpu", method, 3, spatial, temporal
    )[0, 0]
    got = FreeInit(method=method, order=3, spatial_stop=spatial, temporal_stop=temporal).low_pass(
        8, 6, 10
    )
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    if spatial:
        assert got[4, 3, 5] == 1  # the zero frequency passes whole


def test_frequency_mix_equals_diffusers_and_keeps_the_extremes():
    from diffusers.pipelines.free_init_utils import FreeInitMixin

    g = torch.Generator().manual_seed(0)
    low, high = torch.randn(2, 4, 8, 6, 6, generator=g), torch.randn(2, 4, 8, 6, 6, generator=g)
    gain = FreeInit().low_pass(8, 6, 6)
    want = FreeInitMixin()._apply_freq_filter(low, high, gain)
    torch.testing.assert_close(mix_frequencies(low, high, gain), want, rtol=1e-5, atol=1e-6)
    ones, zeros = torch.ones(8, 6, 6), torch.zeros(8, 6, 6)
    torch.testing.assert_close(mix_frequencies(low, high, ones), low, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mix_frequencies(low, high, zeros), high, rtol=1e-5, atol=1e-5)
    # A clip's mean over frames and pixels is its zero frequency: it comes from `low` alone.
    mixed = mix_frequencies(low, high, gain)
    torch.testing.assert_close(mixed.mean((2, 3, 4)), low.mean((2, 3, 4)), rtol=1e-4, atol=1e-5)


def test_passes_and_coarse_to_fine_steps():
    req = lambda **kw: GenerationRequest(("a",), (), steps=20, **kw)  # noqa: E731
    assert req(frames=16).passes() == [20]
    assert req(frames=16, free_init=FreeInit()).passes() == [20, 20, 20]
    assert req(frames=16, free_init=FreeInit(fast=True)).passes() == [6, 13, 20]
    assert req(frames=1, free_init=FreeInit()).passes() == [20]  # an image has no frames to mix


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (dict(iterations=0), "iterations must be >= 1"),
        (dict(method="box"), "method must be one of butterworth, gaussian, ideal"),
        (dict(spatial_stop=1.5), "spatial_stop must be in"),
        (dict(temporal_stop=-0.1), "temporal_stop must be in"),
    ],
)
def test_bad_settings_are_refused(kw, message):
    with pytest.raises(SpacetimeError, match=message):
        FreeInit(**kw)
