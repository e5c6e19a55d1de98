"""Original single-file checkpoints: key mapping (checked against diffusers' own converter and
reader), configs from shapes, safe file I/O, and the built-in CLIP tokenizer."""

from __future__ import annotations

import json
import pickle

import pytest
import tiny
import torch

from spacetime.errors import CheckpointError
from spacetime.formats import original as of
from spacetime.formats.original import (
    diffusers_to_original,
    infer_configs,
    infer_unet_config,
    original_to_diffusers,
    read_single_file,
    write_single_file,
)
from spacetime.formats.tokenizer import clip_tokenizer

diffusers = pytest.importorskip("diffusers")
from diffusers.loaders import single_file_utils as dsf  # noqa: E402

# (U-Net, VAE) pairs: SD1-style conv proj_in + upsampler at `.1.conv`, 2 levels of 2 layers;
# SD2-style linear proj_in, per-level heads, upsamplers at `.2.conv`, 3 levels of 1 layer.
CASES = [("sd1", "f4"), ("sd2", "f8-shift")]
SD15_PROMPT_IDS = [49406, 320, 1125, 539, 320, 2368, 49407]  # "a photo of a cat", SD 1.5


def clip_state_dict(model) -> dict[str, torch.Tensor]:
    """CLIPTextModel weights keyed as its files are (`text_model.*`) in any transformers version."""
    return {
        k if k.startswith("text_model.") else f"text_model.{k}": v
        for k, v in model.state_dict().items()
    }


def for_model(model, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`sd` keyed for this transformers version (>= 5.6 flattened CLIPTextModel)."""
    if any(k.startswith("text_model.") for k in model.state_dict()):
        return sd
    return {k.removeprefix("text_model."): v for k, v in sd.items()}


def plain(value):
    return json.loads(json.dumps(value))


def assert_same(got: dict, expected: dict) -> None:
    assert sorted(got) == sorted(expected)
    for key, tensor in expected.items():
        assert got[key].dtype == tensor.dtype, key
        assert torch.equal(got[key], tensor), key


@pytest.fixture(scope="module", params=CASES, ids=["-".join(c) for c in CASES])
def models(request):
    unet_name, vae_name = request.param
    unet, vae, text = tiny.unet(unet_name), tiny.vae(vae_name), tiny.text_encoder()
    weights = {
        "unet": unet.state_dict(),
        "vae": vae.state_dict(),
        "text_encoder": clip_state_dict(text),
    }
    configs = {
        "unet": dict(unet.config),
        "vae": dict(vae.config),
        "text_encoder": text.config.to_diff_dict(),
    }
    return {"modules": (unet, vae, text), "weights": weights, "configs": configs}


# --- key mapping ------------------------------------------------------------------------------


def test_round_trip_is_bit_identical_both_ways(models):
    weights = models["weights"]
    original = diffusers_to_original(**weights)
    back = original_to_diffusers(original)
    for name in weights:
        assert_same(back[name], weights[name])
    assert_same(diffusers_to_original(**back), original)


def test_original_layout_is_the_one_diffusers_reads(models):
    unet, vae, _ = models["modules"]
    original = diffusers_to_original(**models["weights"])
    ours = original_to_diffusers(original)
    assert_same(ours["unet"], dsf.convert_ldm_unet_checkpoint(original, unet.config))
    assert_same(ours["vae"], dsf.convert_ldm_vae_checkpoint(original, vae.config))
    theirs = dsf.convert_ldm_clip_checkpoint(original)
    assert torch.equal(theirs.pop("text_model.embeddings.position_ids"), torch.arange(77)[None])
    assert_same(ours["text_encoder"], theirs)


def test_flattened_clip_keys_and_stray_entries(models):
    weights = models["weights"]
    _, _, text = models["modules"]
    flat = {k.removeprefix("text_model."): v for k, v in weights["text_encoder"].items()}
    original = diffusers_to_original(weights["unet"], weights["vae"], flat)
    assert_same(original, diffusers_to_original(**weights))
    # EMA copies and schedule buffers sit beside the networks in real files: ignored
    extra = {**original, "model_ema.decay": torch.tensor(0.999), "alphas_cumprod": torch.ones(1000)}
    assert_same(original_to_diffusers(extra)["unet"], weights["unet"])


def sd15_components(sd2: bool = False):
    """Full-size SD 1.5 (or SD 2.1 U-Net) networks on the meta device: real shapes, no memory."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    unet_cfg = dict(
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=1024 if sd2 else 768,
        attention_head_dim=[5, 10, 20, 20] if sd2 else 8,
        use_linear_projection=sd2,
        sample_size=96 if sd2 else 64,
    )
    vae_cfg = dict(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        sample_size=512,
    )
    # openai/clip-vit-large-patch14's text tower, as in SD 1.5's text_encoder/config.json
    clip_l = CLIPTextConfig(
        hidden_size=768, intermediate_size=3072, num_attention_heads=12, projection_dim=768
    )
    with torch.device("meta"):
        unet = UNet2DConditionModel(**unet_cfg)
        vae = AutoencoderKL(**vae_cfg)
        text = CLIPTextModel(clip_l)
    return unet, vae, text


# Shapes of tensors in the released v1-5-pruned-emaonly.safetensors.
SD15_ANCHORS = {
    "model.diffusion_model.time_embed.0.weight": (1280, 320),
    "model.diffusion_model.input_blocks.0.0.weight": (320, 4, 3, 3),
    "model.diffusion_model.input_blocks.1.1.proj_in.weight": (320, 320, 1, 1),
    "model.diffusion_model.input_blocks.3.0.op.weight": (320, 320, 3, 3),
    "model.diffusion_model.input_blocks.4.0.skip_connection.weight": (640, 320, 1, 1),
    "model.diffusion_model.input_blocks.11.0.emb_layers.1.weight": (1280, 1280),
    "model.diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_k.weight": (1280, 768),
    "model.diffusion_model.output_blocks.2.1.conv.weight": (1280, 1280, 3, 3),
    "model.diffusion_model.output_blocks.5.2.conv.weight": (1280, 1280, 3, 3),
    "model.diffusion_model.output_blocks.8.2.conv.weight": (640, 640, 3, 3),
    "model.diffusion_model.output_blocks.11.0.skip_connection.weight": (320, 640, 1, 1),
    "model.diffusion_model.out.2.weight": (4, 320, 3, 3),
    "first_stage_model.encoder.down.1.block.0.nin_shortcut.weight": (256, 128, 1, 1),
    "first_stage_model.encoder.mid.attn_1.q.weight": (512, 512, 1, 1),
    "first_stage_model.decoder.up.0.block.0.nin_shortcut.weight": (128, 256, 1, 1),
    "first_stage_model.decoder.up.3.upsample.conv.weight": (512, 512, 3, 3),
    "first_stage_model.quant_conv.weight": (8, 8, 1, 1),
    "cond_stage_model.transformer.text_model.embeddings.position_ids": (1, 77),
    "cond_stage_model.transformer.text_model.encoder.layers.11.mlp.fc1.weight": (3072, 768),
}


def test_full_size_sd15_layout_and_configs():
    unet, vae, text = sd15_components()
    original = diffusers_to_original(unet.state_dict(), vae.state_dict(), clip_state_dict(text))
    for key, shape in SD15_ANCHORS.items():
        assert tuple(original[key].shape) == shape, key
    assert sorted(original_to_diffusers(original)["unet"]) == sorted(
        dsf.convert_ldm_unet_checkpoint(original, unet.config)
    )
    configs = infer_configs(original)
    for field in [
        "block_out_channels",
        "down_block_types",
        "up_block_types",
        "layers_per_block",
        "cross_attention_dim",
        "attention_head_dim",
        "use_linear_projection",
        "in_channels",
        "out_channels",
        "sample_size",
    ]:
        assert plain(configs["unet"][field]) == plain(unet.config[field]), field
    for field in [
        "block_out_channels",
        "layers_per_block",
        "latent_channels",
        "in_channels",
        "out_channels",
    ]:
        assert plain(configs["vae"][field]) == plain(vae.config[field]), field
    assert configs["vae"]["scaling_factor"] == 0.18215
    for field in [
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "max_position_embeddings",
        "hidden_act",
        "projection_dim",
    ]:
        assert configs["text_encoder"][field] == getattr(text.config, field), field


def test_full_size_sd2_unet_config():
    unet, vae, text = sd15_components(sd2=True)
    original = diffusers_to_original(unet.state_dict(), vae.state_dict(), clip_state_dict(text))
    config = infer_unet_config(original)
    assert config["attention_head_dim"] == [5, 10, 20, 20]  # 64-d heads
    assert config["use_linear_projection"] and config["cross_attention_dim"] == 1024
    assert original["model.diffusion_model.input_blocks.1.1.proj_in.weight"].ndim == 2
    assert sorted(original_to_diffusers(original)["unet"]) == sorted(unet.state_dict())


def test_unsupported_or_damaged_checkpoints_are_named(models):
    original = diffusers_to_original(**models["weights"])
    with pytest.raises(CheckpointError, match="label_emb"):
        original_to_diffusers(
            {**original, "model.diffusion_model.label_emb.0.0.weight": torch.ones(1)}
        )
    no_vae = {k: v for k, v in original.items() if not k.startswith("first_stage_model.")}
    with pytest.raises(CheckpointError, match="VAE: no weights"):
        original_to_diffusers(no_vae)
    open_clip = {k: v for k, v in original.items() if not k.startswith("cond_stage_model.")}
    open_clip["cond_stage_model.model.token_embedding.weight"] = torch.ones(1)
    with pytest.raises(CheckpointError, match="OpenCLIP"):
        original_to_diffusers(open_clip)
    assert of.unet_original_to_diffusers(open_clip).keys() == models["weights"]["unet"].keys()


# --- configs ----------------------------------------------------------------------------------


def test_configs_inferred_from_shapes(models):
    original = diffusers_to_original(**models["weights"])
    configs, expected = infer_configs(original), models["configs"]
    for name, fields in of._SHAPE_FIELDS.items():
        for field in fields:
            assert plain(configs[name][field]) == plain(expected[name][field]), (name, field)
    assert configs["unet"]["transformer_layers_per_block"] == 1


def test_stored_configs_win_but_must_fit_the_weights(models):
    original = diffusers_to_original(**models["weights"])
    stored = {of.CONFIGS_METADATA_KEY: json.dumps(models["configs"])}
    assert infer_configs(original, stored) == plain(models["configs"])
    stale = dict(models["configs"], vae={**models["configs"]["vae"], "latent_channels": 16})
    with pytest.raises(CheckpointError, match="vae.latent_channels"):
        infer_configs(original, {of.CONFIGS_METADATA_KEY: json.dumps(stale)})
    with pytest.raises(CheckpointError, match="not valid JSON"):
        infer_configs(original, {of.CONFIGS_METADATA_KEY: "{"})


def test_stored_config_covers_what_shapes_cannot(models):
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(**tiny.UNET_CONFIGS["sd1"], mid_block_type=None)  # no middle block
    weights = dict(models["weights"], unet=unet.state_dict())
    original = diffusers_to_original(**weights)
    assert_same(original_to_diffusers(original)["unet"], weights["unet"])
    with pytest.raises(CheckpointError, match="U-Net: cannot infer the config from shapes"):
        infer_configs(original)
    configs = dict(models["configs"], unet=dict(unet.config))
    metadata = {of.CONFIGS_METADATA_KEY: json.dumps(configs)}
    assert infer_configs(original, metadata) == plain(configs)
    with pytest.raises(CheckpointError, match="unknown component 'motion'"):
        infer_configs(original, {of.CONFIGS_METADATA_KEY: json.dumps({"motion": {}})})


# --- files ------------------------------------------------------------------------------------


def test_write_read_rebuild(models, tmp_path):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    path = tmp_path / "model.safetensors"
    write_single_file(path, **models["weights"], configs=models["configs"])
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]
    sd, metadata = read_single_file(path)
    parts, configs = original_to_diffusers(sd), infer_configs(sd, metadata)
    for name, weights in models["weights"].items():
        assert_same(parts[name], weights)
    assert configs == plain(models["configs"])

    # networks rebuilt from what was read compute what the originals compute
    unet, vae, text = models["modules"]
    unet2 = UNet2DConditionModel.from_config(configs["unet"]).eval()
    unet2.load_state_dict(parts["unet"])
    vae2 = AutoencoderKL.from_config(configs["vae"]).eval()
    vae2.load_state_dict(parts["vae"])
    text2 = CLIPTextModel(CLIPTextConfig(**configs["text_encoder"])).eval()
    text2.load_state_dict(for_model(text2, parts["text_encoder"]))
    g = torch.Generator().manual_seed(0)
    x, ctx, ids = (
        torch.randn(1, 4, 8, 8, generator=g),
        torch.randn(1, 5, 32, generator=g),
        torch.arange(7)[None],
    )
    with torch.no_grad():
        assert torch.equal(unet2(x, 10, ctx).sample, unet(x, 10, ctx).sample)
        assert torch.equal(vae2.decode(x[..., :4, :4]).sample, vae.decode(x[..., :4, :4]).sample)
        assert torch.equal(text2(ids).last_hidden_state, text(ids).last_hidden_state)


def test_diffusers_from_single_file_reads_our_file(tmp_path):
    from diffusers import StableDiffusionPipeline

    ref = tiny.sd_pipeline(tmp_path / "pipe", "sd2", "f4")
    path = tmp_path / "one.safetensors"
    configs = {"unet": dict(ref.unet.config), "vae": dict(ref.vae.config)}
    configs["text_encoder"] = ref.text_encoder.config.to_diff_dict()
    write_single_file(
        path, ref.unet.state_dict(), ref.vae.state_dict(), ref.text_encoder.state_dict(), configs
    )
    pipe = StableDiffusionPipeline.from_single_file(
        str(path), config=str(tmp_path / "pipe"), local_files_only=True, safety_checker=None
    )
    for name in ("unet", "vae", "text_encoder"):
        assert_same(getattr(pipe, name).state_dict(), getattr(ref, name).state_dict())


def test_ckpt_loads_weights_only(models, tmp_path):
    original = diffusers_to_original(**models["weights"])
    torch.save({"state_dict": original, "global_step": 7}, tmp_path / "model.ckpt")
    sd, metadata = read_single_file(tmp_path / "model.ckpt")
    assert_same(sd, original)
    assert metadata == {}
    torch.save(original, tmp_path / "model.pt", _use_new_zipfile_serialization=False)
    assert_same(read_single_file(tmp_path / "model.pt")[0], original)


class Payload:
    marker = None

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",)


@pytest.mark.parametrize("style", ["zip", "legacy"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, style):
    payload = Payload()
    payload.marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    if style == "zip":
        torch.save({"state_dict": {"w": torch.ones(2)}, "x": payload}, path)
    else:
        path.write_bytes(pickle.dumps({"state_dict": {"w": payload}}, protocol=2))
    with pytest.raises(CheckpointError, match="holds code, refused") as err:
        read_single_file(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert "weights_only" not in str(err.value)  # never the advice that would run the payload
    assert not payload.marker.exists()


def test_damaged_files_are_reported(models, tmp_path):
    path = tmp_path / "model.safetensors"
    write_single_file(path, **models["weights"], configs=models["configs"])
    data = path.read_bytes()
    torch.save({"w": torch.ones(100)}, tmp_path / "good.ckpt")
    ckpt = (tmp_path / "good.ckpt").read_bytes()
    damaged = {
        "cut-data.safetensors": data[: len(data) - 100],
        "cut-header.safetensors": data[:50],
        "garbage.safetensors": b"\xff" * 64,
        "empty.safetensors": b"",
        "cut.ckpt": ckpt[: len(ckpt) // 2],
        "garbage.ckpt": b"not a checkpoint" * 8,
    }
    for name, content in damaged.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointError, match="corrupt or truncated") as err:
            read_single_file(tmp_path / name)
        assert str(tmp_path / name) in str(err.value) and "\n" not in str(err.value), name
    with pytest.raises(CheckpointError, match="no such file"):
        read_single_file(tmp_path / "missing.safetensors")
    (tmp_path / "model.onnx").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="unknown checkpoint type '.onnx'"):
        read_single_file(tmp_path / "model.onnx")


def test_write_is_atomic(models, tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"previous")

    def fail_midway(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(of, "save_file", fail_midway)
    with pytest.raises(OSError, match="disk full"):
        write_single_file(path, **models["weights"], configs=models["configs"])
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]
    assert path.read_bytes() == b"previous"
    with pytest.raises(CheckpointError, match="JSON"):
        write_single_file(path, **models["weights"], configs={"unet": {"x": object()}})
    with pytest.raises(CheckpointError, match=r"\.safetensors"):
        write_single_file(tmp_path / "model.ckpt", **models["weights"], configs={})


# --- tokenizer --------------------------------------------------------------------------------


def test_builtin_clip_tokenizer_matches_sd15(tmp_path, monkeypatch):
    from spacetime.formats import tokenizer as tk

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    tk._builtin_dir.cache_clear()
    try:
        tok = clip_tokenizer(None)
        assert (tk._builtin_dir() / "vocab.json").is_file()
        assert tk._builtin_dir().is_relative_to(tmp_path / "cache" / "spacetime")
    finally:
        tk._builtin_dir.cache_clear()
    assert tok("a photo of a cat").input_ids == SD15_PROMPT_IDS
    assert len(tok) == 49408 and tok.model_max_length == 77
    assert tok.pad_token == tok.eos_token == "<|endoftext|>"
    padded = tok("a photo of a cat", padding="max_length", truncation=True).input_ids
    assert padded == SD15_PROMPT_IDS + [49407] * 70
    assert len(tok(" ".join(["cat"] * 100), truncation=True).input_ids) == 77

    tok.save_pretrained(tmp_path / "pipe" / "tokenizer")
    for folder in (tmp_path / "pipe", tmp_path / "pipe" / "tokenizer"):
        assert clip_tokenizer(folder)("a photo of a cat").input_ids == SD15_PROMPT_IDS
    with pytest.raises(CheckpointError, match="no such tokenizer folder"):
        clip_tokenizer(tmp_path / "nowhere")
