"""spacetime's U-Net, VAE and text encoder equal diffusers'/transformers' on the same weights."""

import pytest
import tiny
import torch

from spacetime.formats.clip_tokenizer import Tokenizer
from spacetime.formats.diffusers import build_text_encoder, build_unet, build_vae
from spacetime.models.attention import set_attention_backend, use_attention, xformers_available
from spacetime.models.unet import UNetConfig
from spacetime.models.vae import VAEConfig


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("name", sorted(tiny.UNET_CONFIGS))
def test_unet_matches_diffusers(name):
    ref = tiny.unet(name)
    ours = build_unet(UNetConfig.from_diffusers(dict(ref.config)), ref.state_dict())
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 16, 16, generator=g)
    ctx = torch.randn(2, 7, 32, generator=g)
    t = torch.tensor([10, 900])
    with torch.no_grad():
        expected = ref(x, t, ctx).sample
        got = ours(x, t, ctx)
    assert rel_err(got, expected) < 1e-5


def test_unet_odd_latent_size_matches_diffusers():
    ref = tiny.unet("sd2")
    ours = build_unet(UNetConfig.from_diffusers(dict(ref.config)), ref.state_dict())
    x, ctx = torch.randn(1, 4, 13, 10), torch.randn(1, 5, 32)
    with torch.no_grad():
        assert rel_err(ours(x, 500, ctx), ref(x, 500, ctx).sample) < 1e-5


def test_unet_config_round_trips_through_diffusers():
    from diffusers import UNet2DConditionModel

    for kwargs in tiny.UNET_CONFIGS.values():
        cfg = UNetConfig.from_diffusers(dict(UNet2DConditionModel(**kwargs).config))
        again = UNetConfig.from_diffusers(dict(UNet2DConditionModel(**cfg.to_diffusers()).config))
        assert again == cfg


def test_unet_refuses_unmodelled_features():
    with pytest.raises(ValueError, match="class_embed_type"):
        UNetConfig.from_diffusers({"class_embed_type": "timestep"})
    with pytest.raises(ValueError, match="bogus"):
        UNetConfig.from_diffusers({"bogus": 1})


def test_unet_clip_folds_frames_into_batch():
    ref = tiny.unet("sd1")
    ours = build_unet(UNetConfig.from_diffusers(dict(ref.config)), ref.state_dict())
    clip = torch.randn(2, 4, 3, 8, 8)
    ctx = torch.randn(2, 7, 32)
    with torch.no_grad():
        out = ours(clip, 250, ctx)
        frame1 = ours(clip[:, :, 1], 250, ctx)
    assert out.shape == clip.shape
    torch.testing.assert_close(out[:, :, 1], frame1, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(tiny.VAE_CONFIGS))
def test_vae_matches_diffusers(name):
    ref = tiny.vae(name)
    ours = build_vae(VAEConfig.from_diffusers(dict(ref.config)), ref.state_dict())
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    sf, shift = ref.config.scaling_factor, ref.config.shift_factor or 0.0
    with torch.no_grad():
        dist = ref.encode(x).latent_dist
        # Encoding: the posterior mean (scaled) and a sample from the same generator.
        assert rel_err(ours.encode(x, sample=False), (dist.mean - shift) * sf) < 1e-5
        got = ours.encode(x, generator=torch.Generator().manual_seed(3))
        want = (dist.sample(generator=torch.Generator().manual_seed(3)) - shift) * sf
        assert rel_err(got, want) < 1e-5
        z = torch.randn(2, 4, 32 // ours.config.downscale, 32 // ours.config.downscale)
        assert rel_err(ours.decode(z), ref.decode(z / sf + shift).sample) < 1e-5


def test_vae_decodes_clips_frame_by_frame():
    ref = tiny.vae("f4")
    ours = build_vae(VAEConfig.from_diffusers(dict(ref.config)), ref.state_dict())
    z = torch.randn(1, 4, 3, 8, 8)
    with torch.no_grad():
        clip = ours.decode(z)
        torch.testing.assert_close(clip[:, :, 2], ours.decode(z[:, :, 2]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("clip_skip", [None, 1])
def test_text_encoder_matches_transformers(tmp_path, clip_skip):
    tok = tiny.tokenizer(tmp_path / "tok")
    ref = tiny.text_encoder(vocab=len(tok))
    ours = build_text_encoder(ref.config.to_dict(), ref.state_dict(), Tokenizer.wrap(tok))
    prompts = ["a red circle", "an orange square on a white background"]
    ids = tok(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    with torch.no_grad():
        out = ref(ids.input_ids, output_hidden_states=True)
        want = out.last_hidden_state
        if clip_skip:
            want = getattr(ref, "text_model", ref).final_layer_norm(
                out.hidden_states[-(clip_skip + 1)]
            )
        got = ours.encode(prompts, clip_skip=clip_skip)
    assert got.shape == (2, 77, 32)
    assert rel_err(got, want) < 1e-5


def test_text_encoder_rejects_bad_clip_skip(tmp_path):
    tok = tiny.tokenizer(tmp_path / "tok")
    ref = tiny.text_encoder(vocab=len(tok))
    enc = build_text_encoder(ref.config.to_dict(), ref.state_dict(), Tokenizer.wrap(tok))
    with pytest.raises(ValueError, match="clip_skip"):
        enc.encode(["a"], clip_skip=5)


@pytest.mark.parametrize("backend", ["sliced", "xformers"])
def test_attention_backends_agree(backend):
    if backend == "xformers" and not (xformers_available() and torch.cuda.is_available()):
        pytest.skip("xformers needs CUDA and the xformers extra")
    device = "cuda" if backend == "xformers" else "cpu"
    ref = tiny.unet("sd2").to(device)
    ours = build_unet(UNetConfig.from_diffusers(dict(ref.config)), ref.state_dict()).to(device)
    x, ctx = torch.randn(1, 4, 16, 16, device=device), torch.randn(1, 7, 32, device=device)
    with torch.no_grad():
        sdpa = ours(x, 300, ctx)
        with use_attention(backend, slice_size=7):
            other = ours(x, 300, ctx)
    assert rel_err(other, sdpa) < 1e-5


def test_sliced_attention_honours_the_causal_mask(tmp_path):
    tok = tiny.tokenizer(tmp_path / "tok")
    ref = tiny.text_encoder(vocab=len(tok))
    ours = build_text_encoder(ref.config.to_dict(), ref.state_dict(), Tokenizer.wrap(tok))
    sdpa = ours.encode(["a red circle"])
    with use_attention("sliced", slice_size=5):
        assert rel_err(ours.encode(["a red circle"]), sdpa) < 1e-5


def test_attention_backend_validation():
    with pytest.raises(ValueError, match="attention backend"):
        set_attention_backend("flash")
    with pytest.raises(ValueError, match="slice_size"):
        set_attention_backend("sliced", slice_size=0)


def test_fast_tokenizer_matches_transformers(tmp_path):
    """tokenizer.json through `tokenizers` gives CLIPTokenizer's ids, truncation and padding."""
    tok = tiny.tokenizer(tmp_path / "tok")
    tok.save_pretrained(str(tmp_path / "saved"))
    fast = Tokenizer.from_folder(tmp_path / "saved")
    assert fast.fast
    prompts = ["a red circle", "An ORANGE square, on a white background!", "", "x" * 200]
    want = tok(prompts, padding="max_length", max_length=77, truncation=True).input_ids
    assert fast(prompts).tolist() == want
