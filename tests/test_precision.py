"""Precision choice: 'auto' resolves by hardware; bf16 autocast stays close to fp32."""

import numpy as np
import pytest
import tiny
import torch

from spacetime.pipelines.image import load_pipeline
from spacetime.precision import cpu_has_native_bf16, resolve_precision


def test_explicit_precisions_pass_through():
    for p in ("fp32", "bf16", "fp16"):
        assert resolve_precision(p, "cpu") == p


def test_auto_follows_the_hardware(monkeypatch):
    assert resolve_precision("auto", "cuda") == "fp16"
    expected = "bf16" if cpu_has_native_bf16() else "fp32"
    assert resolve_precision("auto", "cpu") == expected
    monkeypatch.setattr("spacetime.precision.cpu_has_native_bf16", lambda: False)
    assert resolve_precision("auto", "cpu") == "fp32"


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("int8", "cpu")


def test_bf16_autocast_is_close_to_fp32(tmp_path):
    tiny.sd_pipeline(tmp_path / "sd")
    kw = dict(steps=4, seed=0, scheduler="ddim")
    full = load_pipeline(tmp_path / "sd", precision="fp32")
    fp32 = full("a red circle", **kw).astype(float)
    autocast = full("a red circle", precision="bf16", **kw).astype(float)  # autocast over fp32
    bf16 = load_pipeline(tmp_path / "sd", precision="bf16")("a red circle", **kw).astype(float)
    for other in (autocast, bf16):
        mse = ((fp32 - other) ** 2).mean()
        assert 10 * np.log10(255**2 / max(mse, 1e-9)) > 25


def test_fp16_runs_on_cpu(tmp_path):
    tiny.sd_pipeline(tmp_path / "sd")
    pipe = load_pipeline(tmp_path / "sd", precision="fp16")
    assert next(pipe.components.unet.parameters()).dtype == torch.float16
    assert next(pipe.components.vae.parameters()).dtype == torch.float32  # force_upcast, as SD's
    assert pipe("a red circle", steps=2).shape == (1, 32, 32, 3)
