"""Inflation: a clip through the inflated U-Net equals the 2D U-Net frame by frame at init; typed
per-family specs, their serialisation, and what an inflated U-Net can do."""

import json

import pytest
import tiny
import torch

from spacetime.formats.diffusers import build_unet
from spacetime.models.inflate import (
    AnimateDiff,
    ModelScope,
    MVDream,
    freeze_spatial,
    inflate,
    is_temporal,
    spec_from_dict,
    spec_to_dict,
)
from spacetime.models.unet import UNetConfig

# One spec per temporal family (MVDream's multi-view inflation is tested in test_multiview.py).
SPECS = {
    "animatediff": AnimateDiff(heads=2),
    "animatediff-2-layers": AnimateDiff(heads=4, layers=2),
    "modelscope": ModelScope(head_dim=8),
    "modelscope-2-layers": ModelScope(heads=4, head_dim=16, layers=2),
}


def unet2d(name="sd1"):
    ref = tiny.unet(name)
    return build_unet(UNetConfig.from_diffusers(dict(ref.config)), ref.state_dict())


@pytest.mark.parametrize("spec", sorted(SPECS))
@pytest.mark.parametrize("config", ["sd1", "sd2"])
def test_inflated_equals_parent_frame_by_frame_at_init(spec, config):
    parent = unet2d(config)
    video = inflate(parent, SPECS[spec])
    g = torch.Generator().manual_seed(0)
    clip = torch.randn(2, 4, 5, 8, 8, generator=g)
    ctx = torch.randn(2, 7, 32, generator=g)
    with torch.no_grad():
        got = video(clip, torch.tensor([10, 700]), ctx)
        for t in range(clip.shape[2]):
            want = parent(clip[:, :, t], torch.tensor([10, 700]), ctx)
            torch.testing.assert_close(got[:, :, t], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("spec", sorted(SPECS))
def test_inflation_adds_layers_and_keeps_every_spatial_key(spec):
    parent = unet2d("sd1")
    video = inflate(parent, SPECS[spec])
    spatial, everything = set(parent.state_dict()), set(video.state_dict())
    assert spatial < everything
    added = everything - spatial
    assert added and all(is_temporal(k) for k in added)
    assert not any(is_temporal(k) for k in spatial)
    assert parent.transformer_in is None and parent.inflation is None  # the parent is untouched
    assert not any(b.motion_modules or b.temp_attentions for b in parent.down_blocks)
    assert video.inflation == SPECS[spec]


def test_animatediff_places_a_module_after_each_resnet_and_in_the_mid_block():
    video = inflate(unet2d("sd1"), AnimateDiff(heads=4, layers=2))
    # one per resnet in down/up blocks (2 down, 3 up here), one in the mid block
    assert len(video.down_blocks[0].motion_modules) == 2
    assert len(video.up_blocks[0].motion_modules) == 3
    assert len(video.mid_block.motion_modules) == 1
    assert video.transformer_in is None and not any(b.temp_attentions for b in video.down_blocks)
    # v1 has no mid-block module
    assert not inflate(unet2d("sd1"), AnimateDiff.v1()).mid_block.motion_modules


def test_modelscope_places_a_temporal_attention_after_each_spatial_one_and_transformer_in():
    video = inflate(unet2d("sd1"), ModelScope(heads=4, head_dim=16, layers=2))
    # one temporal conv per resnet, one temporal attention per spatial attention (sd1: attention
    # in the first level only and the mid block), transformer_in after conv_in: `heads` heads of
    # head_dim each
    assert [len(b.temp_convs) for b in video.down_blocks] == [2, 2]
    assert [len(b.temp_attentions) for b in video.down_blocks] == [2, 0]
    assert [len(b.temp_attentions) for b in video.up_blocks] == [0, 3]
    assert len(video.mid_block.temp_attentions) == 1
    assert video.transformer_in.proj_in.weight.shape == (4 * 16, 32)
    assert not any(b.motion_modules for b in video.down_blocks)


@pytest.mark.parametrize("spec", ["animatediff-2-layers", "modelscope"])
def test_temporal_layers_mix_frames_once_trained(spec):
    video = inflate(unet2d("sd1"), SPECS[spec])
    trainable = freeze_spatial(video)
    assert trainable and all(p.requires_grad for p in trainable)
    assert not video.conv_in.weight.requires_grad
    with torch.no_grad():
        for p in trainable:
            p.add_(torch.randn_like(p) * 0.05)
        clip = torch.randn(1, 4, 4, 8, 8)
        ctx = torch.randn(1, 7, 32)
        base = video(clip, 500, ctx)
        changed = clip.clone()
        changed[:, :, 0] += 1.0  # perturb only frame 0
        out = video(changed, 500, ctx)
    assert (out[:, :, 3] - base[:, :, 3]).abs().max() > 1e-4  # frame 3 now sees frame 0


def test_too_many_frames_for_the_motion_module_is_a_clear_error():
    video = inflate(unet2d("sd1"), AnimateDiff(heads=2, max_frames=4))
    with pytest.raises(ValueError, match="exceeds the 4 positions"):
        video(torch.randn(1, 4, 6, 8, 8), 500, torch.randn(1, 7, 32))


def test_matches_diffusers_unet_motion_model():
    """AnimateDiff-style inflation loads a diffusers UNetMotionModel's weights and computes the same."""
    from diffusers import MotionAdapter, UNetMotionModel

    from spacetime.formats.weights import load_into

    ref2d = tiny.unet("sd1")
    adapter = MotionAdapter(
        block_out_channels=(32, 64), motion_layers_per_block=2, motion_norm_num_groups=8,
        motion_num_attention_heads=2, motion_max_seq_length=32, use_motion_mid_block=True,
    )  # fmt: skip
    ref = tiny.randomize(UNetMotionModel.from_unet2d(ref2d, motion_adapter=adapter), 5)
    ours = inflate(unet2d("sd1"), AnimateDiff(heads=2))
    # diffusers stores the sinusoidal frame positions; they are a pure function, rebuilt here.
    load_into(ours, {k: v for k, v in ref.state_dict().items() if not k.endswith(".pe")}, "unet")
    clip, ctx = torch.randn(2, 4, 6, 8, 8), torch.randn(2, 7, 32)
    with torch.no_grad():
        # diffusers' AnimateDiff pipeline repeats the prompt per frame before calling the U-Net
        want = ref(clip, 500, ctx.repeat_interleave(6, dim=0)).sample
        got = ours(clip, torch.tensor(500), ctx)
    assert ((got - want).abs().max() / want.abs().max()).item() < 1e-4


FAMILY_SPECS = [
    AnimateDiff(),
    AnimateDiff.v1(),
    AnimateDiff(heads=2, max_frames=24, mid_block=False, reads_text=True, pixel_positions=True),
    ModelScope(),
    ModelScope(head_dim=8),
    MVDream(),
    MVDream(heads=2, head_dim=8, camera_hidden=64),
]


@pytest.mark.parametrize("spec", FAMILY_SPECS, ids=repr)
def test_specs_round_trip_through_plain_dicts(spec):
    values = spec_to_dict(spec)
    assert values["family"] == type(spec).family
    assert json.loads(json.dumps(values)) == values  # plain JSON, as in a U-Net's config.json
    assert spec_from_dict(values) == spec and type(spec_from_dict(values)) is type(spec)


def test_spec_dicts_name_an_unknown_family_or_key():
    assert spec_to_dict(MVDream(heads=2, head_dim=8, camera_hidden=64)) == {
        "family": "mvdream", "heads": 2, "head_dim": 8, "camera_hidden": 64, "layers": 1,
    }  # fmt: skip
    assert AnimateDiff.v2() == AnimateDiff() and AnimateDiff.v1() == AnimateDiff(
        max_frames=24, mid_block=False
    )
    with pytest.raises(ValueError, match="inflation family must be one of animatediff, "
                       "modelscope, mvdream, got 'svd'"):  # fmt: skip
        spec_from_dict({"family": "svd", "heads": 8})
    with pytest.raises(ValueError, match="family must be one of .*, got None"):
        spec_from_dict({"heads": 8})
    with pytest.raises(ValueError, match=r"unknown mvdream inflation keys: max_frames \(known: "):
        spec_from_dict({"family": "mvdream", "max_frames": 32})


@pytest.mark.parametrize(
    "spec, cameras, positions",
    [
        (None, False, None),
        (AnimateDiff(heads=2), False, 32),
        (AnimateDiff.v1(), False, 24),
        (ModelScope(head_dim=8), False, None),
        (MVDream(heads=2), True, None),
    ],
    ids=["image", "animatediff", "animatediff-v1", "modelscope", "mvdream"],
)
def test_what_a_unet_can_do_is_read_off_its_inflation(spec, cameras, positions):
    unet = unet2d("sd1") if spec is None else inflate(unet2d("sd1"), spec)
    assert unet.inflation == spec
    assert unet.takes_cameras is cameras
    assert unet.frame_positions == positions
