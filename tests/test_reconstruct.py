"""The fast path's feed-forward reconstructor: lattice layout, field, save/load, training data."""

import numpy as np
import pytest
import torch

from spacetime.errors import CheckpointError, SpacetimeError
from spacetime.threed.export import extract_mesh
from spacetime.threed.field import FieldConfig, lattice_points
from spacetime.threed.metrics import compare
from spacetime.threed.reconstruct import (
    Reconstructor,
    ReconstructorConfig,
    load_reconstructor,
    save_reconstructor,
)
from spacetime.world.palette import COLOURS
from spacetime.world.primitives import HELDOUT_PRIMITIVES, Primitive

TINY = ReconstructorConfig(grid=16, colour_grid=8, width=8, latent=16)


def views(n=1, cfg=TINY, seed=0):
    return torch.rand(
        n,
        cfg.views,
        3,
        cfg.image_size,
        cfg.image_size,
        generator=torch.Generator().manual_seed(seed),
    )


def test_output_lattices_have_the_configured_sizes():
    sdf, colour = Reconstructor(TINY)(views(2))
    assert sdf.shape == (2, 16, 16, 16) and colour.shape == (2, 3, 8, 8, 8)
    assert sdf.abs().max() <= TINY.truncation  # a truncated signed distance


@pytest.mark.parametrize("shape, colour", [("cone", "red"), ("torus", "blue")])
def test_a_perfect_prediction_becomes_the_primitive_as_a_mesh(shape, colour, monkeypatch):
    """The decoder's lattice is read as the Field's (z, y, x) over [-1, 1]^3: a prediction equal to
    the primitive's truncated SDF must extract to that primitive, the right way up (the cone's
    apex on +y), in its colour."""
    cfg = ReconstructorConfig(grid=32, colour_grid=8, width=8, latent=16)
    model = Reconstructor(cfg)
    primitive = Primitive(shape, colour)
    sdf = primitive.sdf(lattice_points(cfg.grid)).clamp(-cfg.truncation, cfg.truncation)
    rgb = torch.tensor(COLOURS[colour], dtype=torch.float32) / 255
    logits = torch.logit(rgb.clamp(1e-3, 1 - 1e-3))[None, :, None, None, None].expand(1, 3, 8, 8, 8)
    monkeypatch.setattr(model, "forward", lambda v: (sdf[None], logits))
    field = model.field(views(cfg=cfg), FieldConfig(resolution=64))
    mesh = extract_mesh(field, resolution=64)
    metrics = compare(mesh, primitive)
    assert metrics.iou > 0.9, metrics
    upside_down = compare(mesh.copy().apply_transform(np.diag([1, -1, 1, 1])), primitive)
    if shape == "cone":
        assert upside_down.iou < metrics.iou - 0.2
    colours = np.asarray(mesh.visual.vertex_colors)[:, :3].astype(int)
    assert np.abs(colours - np.array(COLOURS[colour])).max() <= 2


def test_save_and_load_give_the_same_reconstruction(tmp_path):
    torch.manual_seed(0)
    model = Reconstructor(TINY).eval()
    save_reconstructor(model, tmp_path / "r")
    loaded = load_reconstructor(tmp_path / "r")
    assert loaded.config == TINY
    with torch.no_grad():
        for a, b in zip(model(views()), loaded(views()), strict=True):
            torch.testing.assert_close(a, b)


def test_bad_input_is_refused_clearly(tmp_path):
    model = Reconstructor(TINY)
    with pytest.raises(SpacetimeError, match="reads 4 views of 64x64 pixels"):
        model(torch.rand(1, 3, 3, 64, 64))
    with pytest.raises(SpacetimeError, match="one set of views at a time"):
        model.field(views(2))
    with pytest.raises(CheckpointError, match="holds no reconstructor"):
        load_reconstructor(tmp_path)
    with pytest.raises(ValueError, match="grid must be a power of two"):
        ReconstructorConfig(grid=24)


def test_training_batches_are_reproducible_and_leave_held_out_pairs_out(tmp_path, monkeypatch):
    from spacetime.train.config import ReconstructorTraining
    from spacetime.train.reconstructor import ReconstructorTask, training_primitives

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # the render cache
    assert not {(p.colour, p.shape) for p in training_primitives()} & HELDOUT_PRIMITIVES
    cfg = ReconstructorTraining(generated_share=0, batch_size=2, grid=16, width=8, latent=16,
                                max_elevation=0, elevation_step=30)  # fmt: skip
    task = ReconstructorTask(cfg)
    a, b = task.batch(3, 0, 1), task.batch(3, 0, 1)
    for key in a:
        torch.testing.assert_close(a[key], b[key])
    assert a["views"].shape == (2, 4, 3, 64, 64) and a["sdf"].shape == (2, 16, 16, 16)
    loss = task.build()(**a)
    loss.backward()
    assert torch.isfinite(loss)
