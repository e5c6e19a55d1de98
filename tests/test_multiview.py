"""Multi-view model (MVDream): identity at init, cross-view mixing, cameras, save/load, pipeline."""

import json

import numpy as np
import pytest
import tiny
import torch

from spacetime.errors import SpacetimeError
from spacetime.formats.diffusers import build_unet, save_diffusers
from spacetime.formats.load import load_components
from spacetime.models.inflate import (
    VIEW_KEYS,
    AnimateDiff,
    MVDream,
    inflate,
    is_temporal,
    spec_from_dict,
    spec_to_dict,
)
from spacetime.models.unet import UNetConfig
from spacetime.pipelines.multiview import MultiViewPipeline
from spacetime.threed.cameras import camera_matrices
from spacetime.world.primitives import Camera, orbit

SPEC = MVDream(heads=2)


def unet2d(name="sd1"):
    ref = tiny.unet(name)
    return build_unet(UNetConfig.from_diffusers(dict(ref.config)), ref.state_dict())


def cameras(batch: int, views: int = 4) -> torch.Tensor:
    """(b, v, 4, 4): an orbit per set, each set at its own elevation."""
    return torch.stack([camera_matrices(orbit(views, elevation=10.0 * i)) for i in range(batch)])


def randomize_views(unet, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if any(key in name for key in VIEW_KEYS):
                p.add_(torch.randn(p.shape, generator=g) * 0.2)
    return unet


@pytest.mark.parametrize("config", ["sd1", "sd2"])
def test_inflated_equals_parent_view_by_view_at_init(config):
    parent = unet2d(config)
    multi = inflate(parent, SPEC)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 4, 8, 8, generator=g)
    ctx = torch.randn(2, 7, 32, generator=g)
    t = torch.tensor([10, 700])
    with torch.no_grad():
        got = multi(x, t, ctx, cameras=cameras(2))
        folded = multi(x, t, ctx, cameras=cameras(2).flatten(0, 1))  # (b·v, 4, 4) is the same
        without = multi(x, t, ctx)  # no cameras: no camera term
        for v in range(x.shape[2]):
            want = parent(x[:, :, v], t, ctx)
            torch.testing.assert_close(got[:, :, v], want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(folded, got, rtol=0, atol=0)
    torch.testing.assert_close(without, got, rtol=1e-5, atol=1e-5)


def test_inflation_adds_view_layers_and_keeps_every_spatial_key():
    parent = unet2d("sd1")
    multi = inflate(parent, SPEC)
    spatial, everything = set(parent.state_dict()), set(multi.state_dict())
    added = everything - spatial
    assert spatial < everything and all(is_temporal(k) for k in added)
    assert {k for k in added if k.startswith("camera_embed.")} == {
        f"camera_embed.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")
    }
    # one cross-view attention beside each spatial attention (sd1: first level and mid block)
    assert [len(b.view_attentions) for b in multi.down_blocks] == [2, 0]
    assert [len(b.view_attentions) for b in multi.up_blocks] == [0, 3]
    assert len(multi.mid_block.view_attentions) == 1
    assert parent.camera_embed is None and not parent.down_blocks[0].view_attentions
    narrow = inflate(parent, MVDream(heads=2, head_dim=4, camera_hidden=8))
    assert narrow.down_blocks[0].view_attentions[0].proj_in.weight.shape == (8, 32)
    assert narrow.camera_embed[0].weight.shape == (8, 16)


def test_views_attend_to_each_other_and_cameras_condition_once_trained():
    multi = randomize_views(inflate(unet2d("sd1"), SPEC))
    g = torch.Generator().manual_seed(1)
    x, ctx, cams = torch.randn(1, 4, 4, 8, 8, generator=g), torch.randn(1, 7, 32), cameras(1)
    with torch.no_grad():
        base = multi(x, 500, ctx, cameras=cams)
        changed = x.clone()
        changed[:, :, 0] += 1.0  # perturb only view 0
        other_view = multi(changed, 500, ctx, cameras=cams)
        moved = multi(x, 500, ctx, cameras=cameras(1, 4).roll(1, dims=1))
        without = multi(x, 500, ctx)
    assert (other_view[:, :, 3] - base[:, :, 3]).abs().max() > 1e-4  # view 3 sees view 0
    assert (moved - base).abs().max() > 1e-4
    assert (without - base).abs().max() > 1e-4


def test_camera_errors_are_clear():
    with pytest.raises(ValueError, match="no camera conditioning"):
        unet2d()(torch.randn(1, 4, 2, 8, 8), 500, torch.randn(1, 7, 32), cameras=cameras(1, 2))
    multi = inflate(unet2d(), SPEC)
    with pytest.raises(ValueError, match=r"cameras must be \(b, v, 4, 4\)"):
        multi(torch.randn(1, 4, 2, 8, 8), 500, torch.randn(1, 7, 32), cameras=cameras(1, 3))
    with pytest.raises(ValueError, match="no camera conditioning"):  # motion modules take none
        inflate(unet2d(), AnimateDiff(heads=2))(
            torch.randn(1, 4, 2, 8, 8), 500, torch.randn(1, 7, 32), cameras=cameras(1, 2)
        )
    with pytest.raises(ValueError, match="unknown mvdream inflation keys: views"):
        spec_from_dict({"family": "mvdream", "views": 4})


@pytest.fixture(scope="module")
def multiview_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("multiview")
    tiny.sd_pipeline(root / "sd")
    components = load_components(root / "sd")
    components.unet = randomize_views(inflate(components.unet, SPEC), seed=3)
    save_diffusers(components, root / "mv")
    return root


def test_multiview_folder_round_trips(multiview_folder):
    config = json.loads((multiview_folder / "mv" / "unet" / "config.json").read_text())
    assert config["_class_name"] == "UNet2DConditionModel"
    assert config["spacetime_inflation"] == spec_to_dict(SPEC)
    assert spec_from_dict(config["spacetime_inflation"]) == SPEC
    saved = load_components(multiview_folder / "mv").unet
    assert saved.inflation == SPEC
    again = save_diffusers(load_components(multiview_folder / "mv"), multiview_folder / "mv2")
    reloaded = load_components(again).unet
    assert all(torch.equal(v, reloaded.state_dict()[k]) for k, v in saved.state_dict().items())
    x, ctx = torch.randn(1, 4, 4, 8, 8), torch.randn(1, 7, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded(x, 500, ctx, cameras=cameras(1)), saved(x, 500, ctx, cameras=cameras(1))
        )
    # the 2D folder is untouched by all this
    plain = load_components(multiview_folder / "sd").unet
    assert plain.camera_embed is None and plain.inflation is None and not plain.takes_cameras


def test_shipped_multiview_model_records_its_spec():
    """The shipped model's unet/config.json records its MVDream spec in the typed form."""
    from spacetime.formats.load import default_model
    from spacetime.models.presets import WORLD_MULTIVIEW

    folder = default_model("multiview")
    if folder is None:
        pytest.skip("no default multi-view model shipped")
    config = json.loads((folder / "unet" / "config.json").read_text())
    assert config["spacetime_inflation"] == spec_to_dict(WORLD_MULTIVIEW)
    assert MVDream(heads=2, head_dim=8, camera_hidden=64) == WORLD_MULTIVIEW
    unet = load_components(folder).unet
    assert unet.inflation == WORLD_MULTIVIEW and unet.takes_cameras and unet.frame_positions is None


def test_diffusers_still_reads_the_2d_part(multiview_folder):
    from diffusers import UNet2DConditionModel

    ref = UNet2DConditionModel.from_pretrained(str(multiview_folder / "mv" / "unet"))
    assert list(ref.config.block_out_channels) == [32, 64]


def test_pipeline_makes_views_with_cameras_in_both_guidance_branches(multiview_folder):
    pipe = MultiViewPipeline.from_pretrained(multiview_folder / "mv", precision="fp32")
    seen = []
    forward = pipe.components.unet.forward

    def spy(x, t, context, cameras=None):
        seen.append((x.shape[0], None if cameras is None else tuple(cameras.shape)))
        return forward(x, t, context, cameras=cameras)

    pipe.components.unet.forward = spy
    kw = dict(steps=2, seed=0, height=32, width=32)
    views = pipe(["a red cube", "a cat"], guidance=3.0, **kw)
    assert views.shape == (2, 4, 32, 32, 3) and views.dtype == np.uint8
    assert seen and all(s == (4, (4, 4, 4, 4)) for s in seen)  # [uncond, cond] × 2 prompts
    three = pipe("a red cube", cameras=[Camera(0, a) for a in (0, 120, 240)], **kw)
    assert three.shape == (1, 3, 32, 32, 3)
    one = pipe("a red cube", cameras=camera_matrices([Camera(20, 45)]), **kw)
    assert one.shape == (1, 1, 32, 32, 3)
    with pytest.raises(SpacetimeError, match="cameras for 3 sets"):
        pipe("a red cube", cameras=cameras(3), **kw)


def test_pipeline_refuses_a_model_without_cameras(multiview_folder):
    with pytest.raises(SpacetimeError, match="no camera conditioning"):
        MultiViewPipeline.from_pretrained(multiview_folder / "sd", precision="fp32")


def test_evaluation_plumbing(multiview_folder):
    from spacetime.eval.multiview import evaluate, primitive_prompts

    assert len(primitive_prompts("heldout")) == 4 and len(primitive_prompts("train")) == 36
    pipe = MultiViewPipeline.from_pretrained(multiview_folder / "mv", precision="fp32")
    metrics, views = evaluate(pipe, ["a red cube"], sets_per_prompt=2, steps=1, guidance=1.0)
    assert views.shape == (2, 4, 32, 32, 3)
    assert metrics["sets"] == 2 and 0 <= metrics["view_all"] <= 1 and "consistent" in metrics


# -- the 3D oracle ---------------------------------------------------------------------------------


def test_oracle3d_reads_clean_renders():
    from spacetime.eval.oracle3d import CANDIDATES, read_primitives, read_view_set
    from spacetime.world.primitives import Primitive, render_primitive, sample_camera

    rng = np.random.default_rng(0)
    cameras = [sample_camera(rng) for _ in range(2)]
    jobs = [(c, p) for c in cameras for p in CANDIDATES]
    images = np.stack([render_primitive(Primitive(s, col), c) for c, (col, s) in jobs])
    noisy = np.clip(images + rng.normal(0, 8, images.shape), 0, 255).astype(np.uint8)
    readings = read_primitives(noisy, [c for c, _ in jobs])
    correct = [(r.colour, r.shape) == p for r, (_, p) in zip(readings, jobs, strict=True)]
    assert np.mean(correct) >= 0.99
    n = len(CANDIDATES)
    one_set = read_view_set(images[[3, n + 3]], cameras)
    assert (one_set.colour, one_set.shape, one_set.consistent) == (*CANDIDATES[3], True)
    with pytest.raises(ValueError, match="2 views but 1 cameras"):
        read_primitives(images[:2], cameras[:1])


# -- training ----------------------------------------------------------------------------------


def tiny_config(base, **overrides):
    from spacetime.train.config import make_config

    settings = dict(task="multiview", base=str(base), steps=2, batch_size=1, checkpoint_every=2,
                    warmup=1, azimuth_step=90.0, max_elevation=0.0, threads=1)  # fmt: skip
    return make_config({**settings, **overrides})


def test_view_sets_come_from_the_render_cache(tmp_path, monkeypatch):
    from spacetime.train.multiview import (
        ViewCache,
        ViewGrid,
        render_view_sets,
        sample_view_sets,
    )
    from spacetime.world.primitives import render_primitive

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    grid = ViewGrid(azimuth_step=45.0, elevations=(0.0, 30.0))
    sets = sample_view_sets(np.random.default_rng(0), 2, grid, views=4)
    assert all(np.diff(s.azimuths).tolist() in ([2, 2, 2], [2, 2, -6], [2, -6, 2], [-6, 2, 2])
               for s in sets)  # fmt: skip
    x, poses = render_view_sets(sets, ViewCache(grid))
    assert x.shape == (2, 3, 4, 64, 64) and poses.shape == (2, 4, 4, 4)
    assert len(list((tmp_path / "spacetime").glob("views-*/*.npy"))) == len(
        {s.primitive for s in sets}
    )
    s, k = sets[1], 2
    camera = s.cameras(grid)[k]
    want = render_primitive(s.primitive, camera)
    got = ((x[1, :, k].permute(1, 2, 0) + 1) * 127.5).round().to(torch.uint8).numpy()
    assert np.array_equal(got, want)
    assert torch.equal(poses[1, k], torch.from_numpy(camera.camera_to_world()).float())
    again, _ = render_view_sets(sets, ViewCache(grid))  # a fresh cache reads the files back
    assert torch.equal(again, x)
    with pytest.raises(ValueError, match="azimuth_step must divide the 90 degrees"):
        tiny_config("base", azimuth_step=40.0)


def test_multiview_training_exports_a_loadable_model(tmp_path, monkeypatch):
    """Two steps of the multiview task: batches are pure functions of the step; the export is a
    diffusers folder that loads inflated, with a retrained text encoder, and generates views."""
    from spacetime.formats.load import default_model
    from spacetime.models.presets import WORLD_MULTIVIEW
    from spacetime.train.loop import train
    from spacetime.train.multiview import MultiViewTask

    base = default_model("image")
    if base is None:
        pytest.skip("no default image model shipped")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cfg = tiny_config(base)
    task = MultiViewTask(cfg)
    first, again = task.batch(1, 0, 1), task.batch(1, 0, 1)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert first["x0"].shape == (1, 4, 4, 8, 8) and first["cameras"].shape == (1, 4, 4, 4)
    out = train(cfg, task, tmp_path / "run", progress=False)
    components = load_components(out)
    assert components.unet.inflation == WORLD_MULTIVIEW
    text = components.text_encoder.model.state_dict()
    base_text = load_components(base).text_encoder.model.state_dict()
    assert not all(torch.equal(v, text[k]) for k, v in base_text.items())
    views = MultiViewPipeline(components, precision="fp32")("a red cube", steps=2, seed=0)
    assert views.shape == (1, 4, 64, 64, 3)
