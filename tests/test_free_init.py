"""FreeInit: the low-pass filter and frequency mix against diffusers' FreeInitMixin, and requests."""

import pytest
import torch

from spacetime.errors import SpacetimeError
from spacetime.free_init import METHODS, FreeInit, mix_frequencies
from spacetime.sampling import NoiseSchedule, add_noise


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


def test_coarse_to_fine_steps():
    assert [FreeInit().steps(20, i) for i in range(3)] == [20, 20, 20]
    assert [FreeInit(fast=True).steps(20, i) for i in range(3)] == [6, 13, 20]
    assert FreeInit().total_steps(20) == 60 and FreeInit(fast=True).total_steps(20) == 39
    assert FreeInit(iterations=1).total_steps(20) == 20


@pytest.mark.parametrize("free_init", [FreeInit(), FreeInit(fast=True, method="gaussian")])
def test_wrap_restarts_each_pass_from_the_last_sample_with_fresh_high_frequencies(free_init):
    """The wrapped pass runs `iterations` times: the first from the given noise, each later one
    from the last sample diffused to t = T with that same noise, its high frequencies drawn fresh
    from the generator; the last pass's sample is the result."""
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(1, 4, 6, 8, 8, generator=g)
    abar = NoiseSchedule().alphas_cumprod[-1]
    calls = []

    def sample_pass(x_T, steps):
        calls.append((x_T, steps))
        return torch.tanh(x_T) + steps  # any clean latents that depend on the start

    out = free_init.wrap(sample_pass, abar, torch.Generator().manual_seed(1))(noise, 20)
    assert [steps for _, steps in calls] == [free_init.steps(20, i) for i in range(3)]
    assert calls[0][0] is noise
    fresh, low_pass = torch.Generator().manual_seed(1), free_init.low_pass(6, 8, 8)
    latents = sample_pass(noise, calls[0][1])
    for x_T, steps in calls[1:3]:
        diffused = add_noise(latents, noise, abar)
        want = mix_frequencies(diffused, torch.randn(noise.shape, generator=fresh), low_pass)
        assert torch.equal(x_T, want)
        latents = torch.tanh(x_T) + steps
    assert torch.equal(out, latents)
    # the restarts keep the last sample's low frequencies: the mean over frames and pixels
    torch.testing.assert_close(
        calls[1][0].mean((2, 3, 4)),
        add_noise(torch.tanh(noise) + calls[0][1], noise, abar).mean((2, 3, 4)),
        rtol=1e-4, atol=1e-5,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (dict(iterations=0), "iterations must be >= 1"),
        (dict(method="box"), "method must be one of butterworth, gaussian, ideal"),
        (dict(spatial_stop=1.5), "spatial_stop must be in"),
        (dict(temporal_stop=-0.1), "temporal_stop must be in"),
        (dict(iterations=2.5), "iterations must be an integer, got 2.5"),
        (dict(iterations="3"), "iterations must be an integer, got '3'"),
        (dict(order=0), "order must be >= 1, got 0"),
        (dict(fast="yes"), "fast must be"),
        (dict(spatial_stop=float("nan")), "spatial_stop must be a finite number"),
    ],
)
def test_bad_settings_are_refused(kw, message):
    with pytest.raises(SpacetimeError, match=message):
        FreeInit(**kw)
