"""The SVD-style video VAE equals diffusers' AutoencoderKLTemporalDecoder on the same weights, starts
as the image VAE frame by frame, and decodes in windows and tiles without changing the result."""

import json
from itertools import pairwise

import pytest
import tiny
import torch
from einops import rearrange
from torch import nn

from spacetime.errors import CheckpointError, SpacetimeError
from spacetime.formats.diffusers import build_vae
from spacetime.formats.video_vae import load_video_vae, save_video_vae
from spacetime.formats.weights import read_component
from spacetime.models.presets import TINY_VAE
from spacetime.models.vae import AutoencoderKL, VAEConfig
from spacetime.models.video_vae import VideoVAE, VideoVAEConfig, temporal_windows
from spacetime.windows import crossfade, spread

# diffusers fixes 32 norm groups, so channels are multiples of 32. "l1": the mid block's attention
# never runs; "l3": its third resnet never runs (diffusers' own quirks, reproduced).
CONFIGS = {
    "f4-l2": dict(block_out_channels=(32, 32, 64), layers_per_block=2),
    "f2-l1": dict(block_out_channels=(32, 64), layers_per_block=1),
    "f2-l3": dict(block_out_channels=(32, 32), layers_per_block=3),
}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def diffusers_vae(name: str = "f4-l2", seed: int = 0):
    """A tiny random AutoencoderKLTemporalDecoder; mix factors spread so both paths matter."""
    from diffusers import AutoencoderKLTemporalDecoder

    kwargs = CONFIGS[name]
    torch.manual_seed(seed)
    ref = AutoencoderKLTemporalDecoder(
        **kwargs,
        down_block_types=["DownEncoderBlock2D"] * len(kwargs["block_out_channels"]),
        sample_size=16,
        scaling_factor=0.3,
    )
    tiny.randomize(ref, seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name_, p in ref.named_parameters():
            if name_.endswith("mix_factor"):
                p.copy_(torch.randn(1, generator=g) * 2)
    return ref


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """(diffusers model, ours loaded from its save_pretrained folder) per config."""
    out = {}
    for name in CONFIGS:
        ref = diffusers_vae(name)
        folder = tmp_path_factory.mktemp(name)
        ref.save_pretrained(str(folder))
        out[name] = ref, load_video_vae(folder)
    return out


def diffusers_decode(ref, z: torch.Tensor) -> torch.Tensor:
    """diffusers decodes (b t) frames with num_frames = t; back to (b, 3, t, h, w)."""
    frames = z.shape[2]
    flat = rearrange(z, "b c t h w -> (b t) c h w") / ref.config.scaling_factor
    out = ref.decode(flat, num_frames=frames).sample
    return rearrange(out, "(b t) c h w -> b c t h w", t=frames)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_decode_matches_diffusers(loaded, name):
    ref, ours = loaded[name]
    assert set(ours.state_dict()) == set(ref.state_dict())
    f = ours.config.downscale
    z = torch.randn(2, 4, 5, 16 // f, 16 // f, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert rel_err(ours.decode(z), diffusers_decode(ref, z)) < 1e-5


def test_encode_matches_diffusers(loaded):
    ref, ours = loaded["f4-l2"]
    x = torch.rand(2, 3, 3, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    sf = ref.config.scaling_factor
    with torch.no_grad():
        dist = ref.encode(rearrange(x, "b c t h w -> (b t) c h w")).latent_dist
        want = rearrange(dist.mean * sf, "(b t) c h w -> b c t h w", t=3)
        assert rel_err(ours.encode(x, sample=False), want) < 1e-5
        got = ours.encode(x, generator=torch.Generator().manual_seed(3))
        want = dist.sample(generator=torch.Generator().manual_seed(3)) * sf
        assert rel_err(got, rearrange(want, "(b t) c h w -> b c t h w", t=3)) < 1e-5


def test_saved_folder_loads_in_diffusers(loaded, tmp_path):
    from diffusers import AutoencoderKLTemporalDecoder

    ref, ours = loaded["f4-l2"]
    save_video_vae(ours, tmp_path / "vae")
    again = AutoencoderKLTemporalDecoder.from_pretrained(str(tmp_path / "vae")).eval()
    z = torch.randn(1, 4, 4, 4, 4)
    with torch.no_grad():
        assert rel_err(diffusers_decode(again, z), diffusers_decode(ref, z)) < 1e-6
    assert VideoVAEConfig.from_diffusers(dict(again.config)) == ours.config
    with pytest.raises(CheckpointError, match="exists"):
        save_video_vae(ours, tmp_path / "vae")


def test_config_refuses_other_models():
    with pytest.raises(ValueError, match="AutoencoderKLTemporalDecoder"):
        VideoVAEConfig.from_diffusers({"_class_name": "AutoencoderKL"})
    with pytest.raises(ValueError, match="bogus"):
        VideoVAEConfig.from_diffusers({"bogus": 1})
    with pytest.raises(ValueError, match="down_block_types"):
        VideoVAEConfig.from_diffusers({"down_block_types": ["CrossAttnDownBlock2D"]})


def test_load_names_missing_keys(loaded, tmp_path):
    _, ours = loaded["f2-l1"]
    save_video_vae(ours, tmp_path / "vae")
    cfg = json.loads((tmp_path / "vae" / "config.json").read_text())
    cfg["layers_per_block"] = 2
    (tmp_path / "vae" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="missing keys: decoder"):
        load_video_vae(tmp_path / "vae")


def sd_image_vae() -> AutoencoderKL:
    ref = tiny.vae("f8-shift")
    return build_vae(VAEConfig.from_diffusers(dict(ref.config)), ref.state_dict())


IMAGE_VAES = {
    "world-like": lambda: tiny.randomize(AutoencoderKL(TINY_VAE), 4),  # 4 groups, 1 layer
    "sd-shift": sd_image_vae,
    "no-mid-attention": lambda: tiny.randomize(
        AutoencoderKL(VAEConfig(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
                                mid_block_add_attention=False)), 5
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(IMAGE_VAES))
def test_from_image_vae_equals_per_frame_decoding(name, tmp_path):
    vae = IMAGE_VAES[name]()
    video = VideoVAE.from_image_vae(vae)
    f = vae.config.downscale
    z = torch.randn(2, 4, 3, 4, 4)
    x = torch.rand(1, 3, 2, 4 * f, 4 * f) * 2 - 1
    with torch.no_grad():
        want = vae.decode(z)
        assert rel_err(video.decode(z), want) < 1e-5
        assert rel_err(video.decode(z, chunk_frames=1, context_frames=0), want) < 1e-5
        assert rel_err(video.encode(x, sample=False), vae.encode(x, sample=False)) < 1e-6
        # Our extras (post-quant conv, groups, mid block, shift) survive a save and load.
        save_video_vae(video, tmp_path / "vae")
        again = load_video_vae(tmp_path / "vae")
        assert again.config == video.config
        assert rel_err(again.decode(z), want) < 1e-5


class FrameGroupNorm(nn.Module):
    """GroupNorm with per-frame statistics: leaves only the convolutions coupling frames."""

    def __init__(self, norm: nn.GroupNorm):
        super().__init__()
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.shape[2]
        out = self.norm(rearrange(x, "b c t h w -> (b t) c h w"))
        return rearrange(out, "(b t) c h w -> b c t h w", t=frames)


def frame_local(vae: VideoVAE) -> VideoVAE:
    for module in vae.modules():
        if hasattr(module, "temporal_res_block"):
            block = module.temporal_res_block
            block.norm1, block.norm2 = FrameGroupNorm(block.norm1), FrameGroupNorm(block.norm2)
    return vae


@pytest.fixture(scope="module")
def local(loaded):
    """The f2-l1 model with frame-local temporal norms (radius 11)."""
    _, ours = loaded["f2-l1"]
    copy = VideoVAE(ours.config).eval()
    copy.load_state_dict(ours.state_dict())
    return frame_local(copy)


def test_temporal_radius_is_the_receptive_field(local):
    r = local.temporal_radius
    assert r == 2 * (1 + 2 * 2) + 1  # one mid resnet runs, two levels of two, time_conv_out
    assert VideoVAEConfig().temporal_radius == 29  # SD-sized SVD decoder
    z = torch.randn(1, 4, 2 * r + 5, 2, 2)
    bumped = z.clone()
    bumped[:, :, r + 2] += 1.0
    with torch.no_grad():
        changed = (local.decode(bumped) - local.decode(z)).abs().amax(dim=(0, 1, 3, 4)) > 0
    assert changed.nonzero().flatten().tolist() == list(range(2, 2 * r + 3))


def test_chunked_decode_is_exact_with_radius_context(local):
    r = local.temporal_radius
    z = torch.randn(1, 4, 2 * r + 6, 2, 2)
    with torch.no_grad():
        whole = local.decode(z)
        chunked = local.decode(z, chunk_frames=5)
        blind = local.decode(z, chunk_frames=5, context_frames=0)
    assert rel_err(chunked, whole) < 1e-5
    assert rel_err(blind, whole) > 0.1  # windows without context do see their edges


def test_chunked_decode_of_svd_weights_is_close(loaded):
    # Temporal GroupNorms pool the frames decoded together, so a trained SVD decoder chunked at
    # the radius is close to, not equal to, whole-clip decoding; short context crossfades.
    # The pooled statistics steady with the frame size: 1.5% at 4x4 latents, 0.7% at 8x8.
    _, ours = loaded["f2-l1"]
    z = torch.randn(1, 4, 30, 8, 8, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        whole = ours.decode(z)
        assert rel_err(ours.decode(z, chunk_frames=8), whole) < 0.03
        assert rel_err(ours.decode(z, chunk_frames=8, context_frames=3), whole) < 0.15


@pytest.mark.parametrize(
    "frames,chunk,context,overlap", [(30, 8, 3, 3), (17, 8, 4, 4), (9, 4, 11, 0), (5, 2, 2, 1)]
)
def test_temporal_blend_weights_sum_to_one(frames, chunk, context, overlap):
    windows = temporal_windows(frames, chunk, context, overlap)
    weights = crossfade([kept for _, kept in windows])
    total = torch.zeros(frames)
    for ((d0, d1), (k0, k1)), w in zip(windows, weights, strict=True):
        assert d0 <= k0 < k1 <= d1 and d0 >= 0 and d1 <= frames
        assert (w > 0).all() and (w <= 1).all()
        total[k0:k1] += w
    torch.testing.assert_close(total, torch.ones(frames))


@pytest.mark.parametrize("size,tile,overlap", [(15, 8, 2), (40, 16, 4), (9, 8, 7), (8, 8, 2)])
def test_spatial_blend_weights_sum_to_one(size, tile, overlap):
    tiles = spread(size, tile, overlap)
    assert tiles[0][0] == 0 and tiles[-1][1] == size
    assert all(hi - lo == min(tile, size) for lo, hi in tiles)
    assert all(a[1] - b[0] >= overlap for a, b in pairwise(tiles))
    total = torch.zeros(size)
    for (lo, hi), w in zip(tiles, crossfade(tiles), strict=True):
        total[lo:hi] += w
    torch.testing.assert_close(total, torch.ones(size))


def test_windows_and_tiles_assemble_exactly(loaded, monkeypatch):
    # With a decoder that maps each latent pixel to its own f x f pixels, windows and tiles see
    # no edges: any difference from whole-clip decoding would be the assembly's.
    _, ours = loaded["f4-l2"]
    f = ours.config.downscale

    def pointwise(z):
        return torch.nn.functional.interpolate(z[:, :3], scale_factor=(1, f, f)) * 2

    monkeypatch.setattr(ours, "_decode", pointwise)
    z = torch.randn(2, 4, 7, 9, 13)
    whole = ours.decode(z)
    for kwargs in [
        dict(tile=4),
        dict(tile=5, tile_overlap=3),
        dict(chunk_frames=3, context_frames=1, tile=6, tile_overlap=2),
        dict(chunk_frames=2, context_frames=2, overlap_frames=1),
    ]:
        out = ours.decode(z, **kwargs)
        assert out.shape == (2, 3, 7, 9 * f, 13 * f)
        torch.testing.assert_close(out, whole, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def world_video_vae():
    from spacetime.formats.load import default_model

    folder = default_model("image")
    if folder is None:
        pytest.skip("no default model shipped")
    vae = build_vae(
        VAEConfig.from_diffusers(json.loads((folder / "vae" / "config.json").read_text())),
        read_component(folder / "vae", "diffusion_pytorch_model"),
    )
    return VideoVAE.from_image_vae(vae.eval())


def test_tiled_decode_is_close(world_video_vae):
    # Tiles see their own GroupNorm statistics, attention and borders (as in diffusers' tiled
    # decoding): not equal to whole-frame decoding, but reconstructing world frames (2x2
    # mosaics, 128 px) as well.
    from spacetime.world.clips import sample_clip_batch

    vae = world_video_vae
    assert vae.temporal_radius == 21
    frames = torch.from_numpy(sample_clip_batch(0, 4, frames=3)[0]).float() / 127.5 - 1
    x = rearrange(frames, "(i j) t h w c -> 1 c t (i h) (j w)", i=2)
    with torch.no_grad():
        z = vae.encode(x, sample=False)
        whole = vae.decode(z)
        assert torch.equal(vae.decode(z, tile=16), whole)
        tiled = vae.decode(z, chunk_frames=2, tile=12, tile_overlap=4)
    assert tiled.shape == whole.shape == x.shape
    assert (tiled - x).abs().mean() < 1.25 * (whole - x).abs().mean()


def test_images_are_one_frame_clips(loaded):
    _, ours = loaded["f4-l2"]
    z = torch.randn(2, 4, 4, 4)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.equal(ours.decode(z), ours.decode(z[:, :, None])[:, :, 0])
        assert ours.encode(x, sample=False).shape == (2, 4, 4, 4)


def test_channels_last_move_keeps_outputs(loaded):
    _, ours = loaded["f2-l1"]
    copy = VideoVAE(ours.config).eval()
    copy.load_state_dict(ours.state_dict())
    copy.to("cpu", torch.float32, memory_format=torch.channels_last)
    assert copy.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    z = torch.randn(1, 4, 3, 8, 8)
    with torch.no_grad():
        assert rel_err(copy.decode(z), ours.decode(z)) < 1e-5


def test_bad_inputs_name_the_expected_shape(loaded):
    _, ours = loaded["f4-l2"]
    with pytest.raises(
        SpacetimeError, match=r"expected latents \(b, 4, t, h, w\).*got \(2, 3, 8, 8\)"
    ):
        ours.decode(torch.randn(2, 3, 8, 8))
    with pytest.raises(SpacetimeError, match=r"got \(8, 8\)"):
        ours.decode(torch.randn(8, 8))
    with pytest.raises(SpacetimeError, match=r"got \(1, 4, 0, 8, 8\)"):
        ours.decode(torch.randn(1, 4, 0, 8, 8))
    with pytest.raises(SpacetimeError, match=r"frames \(b, 3, t, h, w\).*multiples of 4.*got"):
        ours.encode(torch.randn(1, 3, 2, 16, 10))
    with pytest.raises(SpacetimeError, match="chunk_frames=0"):
        ours.decode(torch.randn(1, 4, 3, 4, 4), chunk_frames=0)
    with pytest.raises(SpacetimeError, match="overlap_frames=3"):
        ours.decode(torch.randn(1, 4, 3, 4, 4), chunk_frames=4, context_frames=1, overlap_frames=3)
    with pytest.raises(SpacetimeError, match="tile_overlap=8"):
        ours.decode(torch.randn(1, 4, 3, 4, 4), tile=8, tile_overlap=8)


def test_decode_windows_come_from_the_decoders_config(tmp_path):
    """A decoder records the clip length it trained on (decode_window): longer clips decode in
    windows of that length keeping the middle half; without one, whole clips, as diffusers."""
    assert VideoVAEConfig(decode_window=8).decode_windows(12) == {
        "chunk_frames": 4, "context_frames": 2,
    }  # fmt: skip
    assert VideoVAEConfig(decode_window=8).decode_windows(8) == {}
    assert VideoVAEConfig(decode_window=16).decode_windows(17) == {
        "chunk_frames": 8, "context_frames": 4,
    }  # fmt: skip
    assert VideoVAEConfig().decode_window is None and VideoVAEConfig().decode_windows(100) == {}
    with pytest.raises(ValueError, match="decode_window must be a multiple of 4, got 6"):
        VideoVAEConfig(decode_window=6)
    cfg = VideoVAEConfig(decode_window=8)
    assert cfg.to_diffusers()["decode_window"] == 8
    assert "decode_window" not in VideoVAEConfig().to_diffusers()  # diffusers' own configs
    assert VideoVAEConfig.from_diffusers(cfg.to_diffusers()) == cfg


def test_video_vae_training_records_its_clip_length_as_the_decode_window(tmp_path):
    """One step of the video_vae task: the exported decoder decodes in windows of its training
    clip length; the image VAE that encodes batches stays frozen outside the trained module."""
    from spacetime.formats.load import default_model
    from spacetime.train.config import make_config
    from spacetime.train.loop import train
    from spacetime.train.video_vae import VideoVAETask

    base = default_model("image")
    if base is None:
        pytest.skip("no default image model shipped")
    cfg = make_config(dict(task="video_vae", vae=str(base), frames=4, steps=1, batch_size=1,
                           checkpoint_every=1, warmup=1, threads=1))  # fmt: skip
    task = VideoVAETask(cfg)
    assert task.frozen() == [task.image_vae]
    out = train(cfg, task, tmp_path / "run", progress=False)
    vae = load_video_vae(out / "vae")
    assert vae.config.decode_window == 4
    assert vae.config.decode_windows(12) == {"chunk_frames": 2, "context_frames": 1}
