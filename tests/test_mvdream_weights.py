"""MVDream's published weights (Shi et al. 2023): the original single file and the diffusers-style
port load into spacetime's multi-view U-Net, every tensor accounted for; one view without cameras
is SD's U-Net (checked against diffusers), four views share one self-attention (checked against
diffusers' attention run on the views' tokens side by side), and cameras enter in MVDream's frame.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import tiny
import torch
from einops import rearrange

from spacetime.errors import SpacetimeError
from spacetime.formats import mvdream
from spacetime.formats.diffusers import Components, build_text_encoder, build_unet, build_vae
from spacetime.formats.load import load_components
from spacetime.models.inflate import MVDream, inflate, spec_from_dict, spec_to_dict
from spacetime.models.temporal import to_mvdream_frame
from spacetime.models.unet import UNetConfig
from spacetime.models.vae import VAEConfig
from spacetime.sampling import NoiseSchedule
from spacetime.threed.cameras import camera_matrices
from spacetime.world.primitives import Camera

diffusers = pytest.importorskip("diffusers")
from diffusers.loaders import single_file_utils as dsf  # noqa: E402

# SD 2.1-base in miniature, as MVDream's sd-v2-base.yaml builds it: linear proj_in/out, 64-wide
# heads (1, 2, 2 per level), attention in all but the last level, 32 norm groups, OpenCLIP text.
UNET = dict(
    block_out_channels=(64, 128, 128),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=128,
    attention_head_dim=[1, 2, 2],
    use_linear_projection=True,
    layers_per_block=1,
    sample_size=32,
)
VAE = dict(
    block_out_channels=(32, 32, 64, 64),
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    layers_per_block=1,
    latent_channels=4,
    sample_size=64,
)
# OpenCLIP's text tower as transformers runs it: GELU, the full CLIP vocabulary; the checkpoint
# holds one more block (MVDream reads the penultimate layer).
TEXT = dict(
    vocab_size=49408, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
    num_attention_heads=2, hidden_act="gelu", max_position_embeddings=77,
)  # fmt: skip
# Keys of sd-v2.1-base-4view.pt as MVDream's code names them (LatentDiffusionInterface:
# model.diffusion_model = MultiViewUNetModel, first_stage_model, cond_stage_model =
# FrozenOpenCLIPEmbedder, register_schedule's buffers).
REAL_NAMES = [
    "model.diffusion_model.time_embed.0.weight",
    "model.diffusion_model.camera_embed.0.weight",
    "model.diffusion_model.camera_embed.2.bias",
    "model.diffusion_model.input_blocks.0.0.weight",
    "model.diffusion_model.input_blocks.1.1.proj_in.weight",
    "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight",
    "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.ff.net.0.proj.weight",
    "model.diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_k.weight",
    "model.diffusion_model.output_blocks.0.0.skip_connection.weight",
    "model.diffusion_model.out.2.weight",
    "first_stage_model.encoder.down.0.block.0.conv1.weight",
    "first_stage_model.decoder.mid.attn_1.q.weight",
    "first_stage_model.quant_conv.weight",
    "cond_stage_model.model.token_embedding.weight",
    "cond_stage_model.model.positional_embedding",
    "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight",
    "cond_stage_model.model.transformer.resblocks.2.mlp.c_proj.bias",
    "cond_stage_model.model.ln_final.weight",
    "cond_stage_model.model.text_projection",
    "cond_stage_model.model.logit_scale",
    "alphas_cumprod",
    "posterior_mean_coef2",
]
LAST_BLOCK = "cond_stage_model.model.transformer.resblocks.2."
UNUSED = ("cond_stage_model.model.text_projection", "cond_stage_model.model.logit_scale")


def mvdream_get_camera(elevation: float, azimuth: float) -> np.ndarray:
    """MVDream's camera_utils (create_camera_to_world_matrix, convert_opengl_to_blender,
    normalize_camera), restated: the 4x4 its U-Net was trained to read."""
    e, a = np.radians(elevation), np.radians(azimuth)
    position = np.array([np.cos(e) * np.sin(a), np.sin(e), np.cos(e) * np.cos(a)])
    forward = -position / np.linalg.norm(position)
    right = np.cross(forward, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([right, up, -forward], axis=1)
    c2w[:3, 3] = position
    flip_yz = np.array([[1, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]])
    c2w = flip_yz @ c2w
    c2w[:3, 3] /= np.linalg.norm(c2w[:3, 3]) + 1e-8
    return c2w


class ViewsInSelfAttention:
    """diffusers' attention processor run on all views' tokens at once for self-attention
    (MVDream's BasicTransformerBlock3D), per view for cross-attention."""

    def __init__(self, views: int):
        from diffusers.models.attention_processor import AttnProcessor2_0

        self.views, self.inner = views, AttnProcessor2_0()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, *args, **kwargs):
        if encoder_hidden_states is not None:
            return self.inner(attn, hidden_states, encoder_hidden_states)
        wide = rearrange(hidden_states, "(b v) n c -> b (v n) c", v=self.views)
        return rearrange(self.inner(attn, wide), "b (v n) c -> (b v) n c", v=self.views)


def text_state_dict(model) -> dict[str, torch.Tensor]:
    return {k if k.startswith("text_model.") else f"text_model.{k}": v
            for k, v in model.state_dict().items()}  # fmt: skip


def reference_vae():
    from diffusers import AutoencoderKL

    torch.manual_seed(1)
    return tiny.randomize(AutoencoderKL(**VAE), 1, 0.02)


def camera_weights() -> dict[str, torch.Tensor]:
    """A trained-looking camera MLP (a fresh one's last layer is zero) for the tiny U-Net."""
    g = torch.Generator().manual_seed(3)
    temb = UNET["block_out_channels"][0] * 4
    shapes = {
        "0.weight": (temb, 16),
        "0.bias": (temb,),
        "2.weight": (temb, temb),
        "2.bias": (temb,),
    }
    return {f"camera_embed.{k}": torch.randn(s, generator=g) * 0.1 for k, s in shapes.items()}


@pytest.fixture(scope="module")
def reference():
    """The diffusers / transformers networks the test checkpoint is made of, plus a camera MLP."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = tiny.randomize(UNet2DConditionModel(**UNET), 0)
    text = CLIPTextModel(CLIPTextConfig(**TEXT)).eval()
    return SimpleNamespace(unet=unet, vae=reference_vae(), text=text, camera=camera_weights())


def spacetime_components(ref) -> Components:
    unet = inflate(
        build_unet(UNetConfig.from_diffusers(dict(ref.unet.config)), ref.unet.state_dict()),
        MVDream.published(),
    )
    unet.camera_embed.load_state_dict(
        {k.removeprefix("camera_embed."): v for k, v in ref.camera.items()}
    )
    vae = build_vae(VAEConfig.from_diffusers(dict(ref.vae.config)), ref.vae.state_dict())
    text = build_text_encoder(
        ref.text.config.to_dict(), text_state_dict(ref.text), mvdream.open_clip_tokenizer()
    )
    return Components(unet.eval(), vae.eval(), text, NoiseSchedule())


@pytest.fixture(scope="module")
def checkpoint(reference) -> dict[str, torch.Tensor]:
    """A tiny sd-v2.1-base-4view.pt state dict: every key the published file has."""
    sd = mvdream.to_original(spacetime_components(reference))
    g = torch.Generator().manual_seed(4)
    for key in sd:  # real in published files, never run: random here, and it must stay unused
        if key.startswith(LAST_BLOCK) or key in UNUSED:
            sd[key] = torch.randn(sd[key].shape, generator=g)
    return sd


@pytest.fixture(scope="module")
def loaded(checkpoint) -> Components:
    return mvdream.components_from_original(checkpoint)


def sets(batch: int = 2, views: int = 4) -> tuple[torch.Tensor, list[list[Camera]]]:
    """(b, v, 4, 4) spacetime cameras: an orbit per set, each at its own elevation and start."""
    cams = [
        [Camera(15.0 * (i + 1), 45.0 * i + 360.0 * k / views) for k in range(views)]
        for i in range(batch)
    ]
    return torch.stack([camera_matrices(c) for c in cams]), cams


# --- (a) key coverage ---------------------------------------------------------------------------


def test_the_layout_is_the_published_one(reference, checkpoint):
    assert set(REAL_NAMES) <= set(checkpoint)
    # diffusers' own converters read it as an SD 2.x checkpoint (U-Net, VAE, OpenCLIP text)
    plain = {k: v for k, v in checkpoint.items() if ".camera_embed." not in k}
    theirs = dsf.convert_ldm_unet_checkpoint(plain, reference.unet.config)
    assert sorted(theirs) == sorted(reference.unet.state_dict())
    assert all(torch.equal(theirs[k], v) for k, v in reference.unet.state_dict().items())
    theirs = dsf.convert_ldm_vae_checkpoint(checkpoint, reference.vae.config)
    assert all(torch.equal(theirs[k], v) for k, v in reference.vae.state_dict().items())
    theirs = dsf.convert_open_clip_checkpoint(reference.text, checkpoint)
    ours = text_state_dict(reference.text)
    # diffusers drops the last block by a list of full-size names (resblocks.23): here it is 2
    extra = {k for k in theirs if "position_ids" not in k} - set(ours)
    assert set(ours) <= set(theirs) and {k.split(".")[3] for k in extra} == {"2"}
    assert all(torch.equal(theirs[k], v) for k, v in ours.items())


def test_every_key_is_read_and_every_parameter_set(checkpoint, loaded):
    """Parameters are the file's tensors (assigned, not copied): each file key is read into
    exactly the parameters it maps to, or is one of the documented unused ones."""
    params = [
        p
        for module in (loaded.unet, loaded.vae, loaded.text_encoder.model)
        for p in module.state_dict().values()
    ]
    storage = {p.untyped_storage().data_ptr() for p in params}
    file_storage = {v.untyped_storage().data_ptr() for v in checkpoint.values()}
    assert len(file_storage) == len(checkpoint)  # one storage per key: a shared one would not tell
    read = {k for k, v in checkpoint.items() if v.untyped_storage().data_ptr() in storage}
    unused = {k for k in checkpoint if k.startswith(LAST_BLOCK) or k in UNUSED}
    unused |= set(mvdream.SCHEDULE_BUFFERS)  # checked against SD's schedule, not loaded
    assert read == set(checkpoint) - unused
    assert len(unused) == 12 + 2 + len(mvdream.SCHEDULE_BUFFERS)  # one OpenCLIP block: 12 tensors
    assert all(p.untyped_storage().data_ptr() in file_storage for p in params)
    assert loaded.unet.inflation == MVDream.published()
    assert loaded.unet.config.sample_size == 32 and loaded.unet.config.heads == (1, 2, 2)
    assert loaded.text_encoder.model.config.num_hidden_layers == 2


def test_full_size_layout_on_the_meta_device():
    """SD 2.1-base-sized: the 4-view U-Net's 690 keys and OpenCLIP ViT-H's 24 blocks map both
    ways with real shapes (no memory: everything on the meta device)."""
    from diffusers import UNet2DConditionModel

    from spacetime.formats.weights import build_empty
    from spacetime.models.clip import CLIPTextConfig, CLIPTextModel
    from spacetime.models.text import TextEncoder

    full = dict(
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=1024, attention_head_dim=[5, 10, 20, 20], use_linear_projection=True,
    )  # fmt: skip
    with torch.device("meta"):
        ref = UNet2DConditionModel(**full)
    cfg = UNetConfig.from_diffusers(dict(ref.config))
    unet = build_empty(lambda: inflate(build_unet(cfg, ref.state_dict()), MVDream.published()))
    ldm = mvdream.unet_to_original(unet)
    assert len(ldm) == len(ref.state_dict()) + 4 == 690
    assert ldm["camera_embed.0.weight"].shape == (1280, 16)
    assert ldm["input_blocks.1.1.proj_in.weight"].shape == (320, 320)  # linear, as SD 2.x
    again = mvdream.build_multiview_unet(ldm)
    assert again.config.heads == (5, 10, 20, 20) and again.config.cross_attention_dim == 1024
    assert again.config.sample_size == 32 and again.config.use_linear_projection
    vit_h = CLIPTextConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                           num_attention_heads=16, hidden_act="gelu")  # fmt: skip
    text = TextEncoder(None, build_empty(lambda: CLIPTextModel(vit_h)))
    open_clip = mvdream.clip_to_open_clip(text)
    assert open_clip["transformer.resblocks.23.attn.in_proj_weight"].shape == (3072, 1024)
    config, weights = mvdream.open_clip_to_clip(open_clip)
    assert (config["num_hidden_layers"], config["num_attention_heads"]) == (23, 16)
    assert len(weights) == len(text.model.state_dict())


# --- (b) one view, no cameras: SD's U-Net -----------------------------------------------------


def test_one_view_without_cameras_is_the_sd_unet(reference, loaded):
    g = torch.Generator().manual_seed(5)
    x, ctx = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 77, 128, generator=g)
    t = torch.tensor([30, 800])
    with torch.no_grad():
        want = reference.unet(x, t, ctx).sample
        image = loaded.unet(x, t, ctx)
        one_view = loaded.unet(rearrange(x, "b c h w -> b c 1 h w"), t, ctx)
    torch.testing.assert_close(image, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(one_view[:, :, 0], want, rtol=1e-5, atol=1e-5)
    # the text encoder stops at OpenCLIP's penultimate block, and pads with "!" (id 0)
    ids = loaded.text_encoder.tokenize(["a red cube"])
    assert ids[0, :6].tolist() == [49406, 320, 736, 11353, 49407, 0] and ids.shape == (1, 77)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.text_encoder.model(ids), reference.text(ids).last_hidden_state, rtol=0, atol=1e-5
        )


# --- (c) four views: one self-attention, cameras in MVDream's frame ------------------------------


def test_cameras_enter_in_mvdream_frame():
    for elevation, azimuth in [(15, 0), (15, 90), (30, 225), (-10, 300)]:
        ours = to_mvdream_frame(camera_matrices([Camera(elevation, azimuth, distance=2.7)]))
        want = torch.from_numpy(mvdream_get_camera(elevation, azimuth)).float()
        torch.testing.assert_close(ours[0], want, rtol=0, atol=1e-6)


def test_four_views_share_one_self_attention(reference, loaded):
    from diffusers import UNet2DConditionModel

    views = 4
    wide = UNet2DConditionModel(
        **UNET, class_embed_type="projection", projection_class_embeddings_input_dim=16
    ).eval()
    wide.load_state_dict({
        **reference.unet.state_dict(),
        **{k.replace("camera_embed.0", "class_embedding.linear_1")
            .replace("camera_embed.2", "class_embedding.linear_2"): v
           for k, v in reference.camera.items()},
    })  # fmt: skip
    processors = {
        name: ViewsInSelfAttention(views) if ".attn1." in name else ViewsInSelfAttention(1)
        for name in wide.attn_processors
    }
    wide.set_attn_processor(processors)
    g = torch.Generator().manual_seed(6)
    x = torch.randn(2, 4, views, 8, 8, generator=g)
    ctx = torch.randn(2, 77, 128, generator=g)
    t = torch.tensor([50, 600])
    cameras, cams = sets(2, views)
    labels = torch.tensor(
        np.stack([mvdream_get_camera(c.elevation, c.azimuth).reshape(16) for s in cams for c in s])
    ).float()
    with torch.no_grad():
        want = wide(
            rearrange(x, "b c v h w -> (b v) c h w"), t.repeat_interleave(views),
            ctx.repeat_interleave(views, 0), class_labels=labels,
        ).sample  # fmt: skip
        got = loaded.unet(x, t, ctx, cameras=cameras)
        without = loaded.unet(x, t, ctx)
        nudged = x.clone()
        nudged[:, :, 0] += 1.0  # only view 0 changes
        other = loaded.unet(nudged, t, ctx, cameras=cameras)
    torch.testing.assert_close(
        got, rearrange(want, "(b v) c h w -> b c v h w", v=views), rtol=1e-5, atol=1e-5
    )
    assert (without - got).abs().max() > 1e-3  # cameras condition every view
    assert (other[:, :, 3] - got[:, :, 3]).abs().max() > 1e-3  # view 3 sees view 0


# --- (d) files and folders ----------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_published_file_loads_through_load_components(checkpoint, loaded, tmp_path, suffix):
    path = tmp_path / f"sd-v2.1-base-4view{suffix}"
    if suffix == ".pt":
        torch.save(checkpoint, path)  # as published: a plain state dict, read weights_only
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in checkpoint.items()}, str(path))
    components = load_components(path)
    assert_same_model(components, loaded)


def assert_same_model(a: Components, b: Components) -> None:
    for part in ("unet", "vae"):
        mine, theirs = getattr(a, part).state_dict(), getattr(b, part).state_dict()
        assert sorted(mine) == sorted(theirs)
        assert all(torch.equal(v, theirs[k]) for k, v in mine.items()), part
    assert a.unet.inflation == b.unet.inflation == MVDream.published()
    assert a.unet.config == b.unet.config and a.schedule == b.schedule
    prompt = ["a red cube"]
    assert torch.equal(a.text_encoder.tokenize(prompt), b.text_encoder.tokenize(prompt))
    with torch.no_grad():
        torch.testing.assert_close(
            a.text_encoder.encode(prompt), b.text_encoder.encode(prompt), rtol=0, atol=0
        )


def write_port(root, reference, checkpoint, unet_names: str):
    """The diffusers-style port (ashawkey/mvdream-sd2.1-diffusers' layout): diffusers and
    transformers folders, and a `MultiViewUNetModel` unet/ with LDM (or diffusers) names."""
    from diffusers import DDIMScheduler
    from safetensors.torch import save_file

    from spacetime.formats.tokenizer import clip_tokenizer

    index = {
        "_class_name": "MVDreamPipeline", "_diffusers_version": "0.25.0",
        "feature_extractor": [None, None], "image_encoder": [None, None],
        "scheduler": ["diffusers", "DDIMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["mv_unet", "MultiViewUNetModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }  # fmt: skip
    root.mkdir()
    (root / "model_index.json").write_text(json.dumps(index))
    unet_config = {
        "_class_name": "MultiViewUNetModel", "_diffusers_version": "0.25.0", "image_size": 32,
        "in_channels": 4, "model_channels": 64, "out_channels": 4, "num_res_blocks": 1,
        "attention_resolutions": [1, 2], "channel_mult": [1, 2, 2], "num_head_channels": 64,
        "transformer_depth": 1, "context_dim": 128, "use_checkpoint": False, "camera_dim": 16,
        "ip_dim": 0, "ip_weight": 1.0,
    }  # fmt: skip
    (root / "unet").mkdir()
    (root / "unet" / "config.json").write_text(json.dumps(unet_config))
    prefix = "model.diffusion_model."
    unet = {k[len(prefix) :]: v for k, v in checkpoint.items() if k.startswith(prefix)}
    if unet_names == "diffusers":
        unet = {**reference.unet.state_dict(), **reference.camera}
    save_file(
        {k: v.half() for k, v in unet.items()},
        str(root / "unet" / "diffusion_pytorch_model.safetensors"),
    )
    reference.vae.save_pretrained(str(root / "vae"))
    reference.text.save_pretrained(str(root / "text_encoder"))
    tokenizer = clip_tokenizer(None)
    tokenizer.pad_token = "!"  # SD 2.x's tokenizer/ (OpenCLIP pads with id 0)
    tokenizer.save_pretrained(str(root / "tokenizer"))
    DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon",
    ).save_pretrained(str(root / "scheduler"))  # fmt: skip
    return root


@pytest.mark.parametrize("unet_names", ["ldm", "diffusers"])
def test_diffusers_style_port_loads(reference, checkpoint, loaded, tmp_path, unet_names):
    root = write_port(tmp_path / "mvdream-sd2.1-diffusers", reference, checkpoint, unet_names)
    port = load_components(root)
    assert port.unet.inflation == MVDream.published() and port.unet.config == loaded.unet.config
    ours, theirs = port.unet.state_dict(), loaded.unet.state_dict()
    assert sorted(ours) == sorted(theirs)
    assert all(torch.equal(v, theirs[k].half().float()) for k, v in ours.items())  # fp16 files
    assert port.text_encoder.tokenizer.pad_id == 0
    prompt = ["a red cube"]
    assert torch.equal(port.text_encoder.tokenize(prompt), loaded.text_encoder.tokenize(prompt))
    with torch.no_grad():
        torch.testing.assert_close(
            port.text_encoder.encode(prompt), loaded.text_encoder.encode(prompt), rtol=0, atol=1e-6
        )
    assert port.schedule.alphas_cumprod.equal(loaded.schedule.alphas_cumprod)


def test_spacetime_saves_and_reloads_the_published_layout(loaded, tmp_path):
    from spacetime.formats.diffusers import save_diffusers

    config = spec_to_dict(MVDream.published())
    assert config["views_in_self_attention"] and config["camera_frame"] == "mvdream"
    assert spec_from_dict(config) == MVDream.published()
    assert "camera_frame" not in spec_to_dict(MVDream())  # older configs stay as they were
    again = load_components(save_diffusers(loaded, tmp_path / "saved"))
    assert_same_model(again, loaded)
    assert again.text_encoder.tokenizer.pad_id == 0
    written = mvdream.save_original(loaded, tmp_path / "mv.safetensors")
    assert_same_model(load_components(written), loaded)


# --- (e) bad input ------------------------------------------------------------------------------


def test_bad_checkpoints_are_named(checkpoint, tmp_path):
    cam = "model.diffusion_model.camera_embed."
    no_cameras = {k: v for k, v in checkpoint.items() if not k.startswith(cam)}
    with pytest.raises(SpacetimeError, match="not an MVDream U-Net: it lacks the camera MLP"):
        mvdream.components_from_original(no_cameras)
    half = {k: v for k, v in checkpoint.items() if not k.startswith(cam + "2.")}
    with pytest.raises(SpacetimeError, match=r"missing camera_embed\.2\.weight, camera_embed\.2"):
        mvdream.components_from_original(half)
    stray = {**checkpoint, "model_ema.decay": torch.tensor(0.999)}
    with pytest.raises(SpacetimeError, match="MVDream checkpoint: unexpected keys model_ema.decay"):
        mvdream.components_from_original(stray)
    extra = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn3.to_q.weight"
    with pytest.raises(
        SpacetimeError,
        match=r"unexpected keys input_blocks\.1\.1\.transformer_blocks\.0\.attn3\.to_q",
    ):
        mvdream.components_from_original({**checkpoint, extra: torch.zeros(64, 64)})
    odd_text = {
        **checkpoint,
        "cond_stage_model.model.transformer.resblocks.0.ls_1.gamma": torch.ones(128),
    }
    with pytest.raises(SpacetimeError, match=r"unexpected keys .*resblocks\.0\.ls_1\.gamma"):
        mvdream.components_from_original(odd_text)
    wrong_camera = {**checkpoint, cam + "0.weight": torch.zeros(256, 12)}
    with pytest.raises(SpacetimeError, match=r"shape mismatch for camera_embed\.0\.weight"):
        mvdream.components_from_original(wrong_camera)
    linear = {**checkpoint, "alphas_cumprod": NoiseSchedule(beta_schedule="linear").alphas_cumprod}
    with pytest.raises(SpacetimeError, match="alphas_cumprod are not SD's scaled-linear"):
        mvdream.components_from_original(linear)
    # through the file loader, the error names the file
    path = tmp_path / "broken.pt"
    torch.save(half, path)
    with pytest.raises(SpacetimeError, match=rf"{path.name}.*missing camera_embed\.2\.weight"):
        load_components(path)


def test_bad_port_folders_are_named(reference, checkpoint, tmp_path):
    root = write_port(tmp_path / "port", reference, checkpoint, "ldm")
    config_path = root / "unet" / "config.json"
    config = json.loads(config_path.read_text())
    for change, message in [
        ({"ip_dim": 16}, r"ip_dim=16 \(ImageDream's image prompt\)"),
        ({"num_frames": 4}, "unsupported MultiViewUNetModel config keys: num_frames"),
        ({"context_dim": 1024}, "config context_dim gives 1024, the weights 128"),
    ]:
        config_path.write_text(json.dumps({**config, **change}))
        with pytest.raises(SpacetimeError, match=message):
            load_components(root)
    config_path.write_text(json.dumps(config))
    from safetensors.torch import save_file

    prefix = "model.diffusion_model."
    unet = {k[len(prefix) :]: v for k, v in checkpoint.items()
            if k.startswith(prefix) and ".camera_embed." not in f".{k[len(prefix):]}"}  # fmt: skip
    save_file(unet, str(root / "unet" / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(SpacetimeError, match="not an MVDream U-Net"):
        load_components(root)


def test_spec_refuses_sizes_of_layers_it_does_not_add():
    with pytest.raises(ValueError, match="with views_in_self_attention there are none"):
        MVDream(views_in_self_attention=True, heads=4)
    with pytest.raises(ValueError, match="camera_frame must be one of world, mvdream"):
        MVDream(camera_frame="blender")


# --- the distillation recipe ----------------------------------------------------------------------


def test_published_weights_distil_with_threestudios_recipe(loaded):
    from spacetime.threed.guidance import rescaled_epsilon
    from spacetime.threed.pipeline import MVDREAM_RECIPE, make_guidance, recipe_for
    from spacetime.threed.sds import timestep_range

    guide = make_guidance(loaded, "a red cube")
    assert guide.cfg == MVDREAM_RECIPE.sds and guide.where == MVDREAM_RECIPE.cameras
    assert recipe_for(loaded, single_view=True).sds.guidance == 100.0
    assert guide.image_size == 256  # renders are encoded at MVDream's 256 px
    # threestudio: min/max_step_percent [0, 0.98, 0.02, 8000], [0, 0.98, 0.50, 8000] of 10000
    sds = MVDREAM_RECIPE.sds
    assert timestep_range(sds, 0, 10001, 1000) == (979, 979)
    halfway = timestep_range(sds, 4000, 10001, 1000)  # 4000 of 8000 annealing steps
    assert halfway == pytest.approx((0.50 * 999, 0.74 * 999), abs=1)
    assert timestep_range(sds, 9000, 10001, 1000) == (round(0.02 * 999), round(0.5 * 999))
    lo, hi = MVDREAM_RECIPE.cameras.distance
    assert (lo, hi) == pytest.approx(
        (0.8 / math.tan(math.radians(22.5)), 1 / math.tan(math.radians(22.5)))
    )
    # recon_std_rescale: x0 takes rescale x the conditional x0's spread, per set of views
    g = torch.Generator().manual_seed(7)
    z_t, eps, eps_cond = (torch.randn(1, 4, 4, 8, 8, generator=g) for _ in range(3))
    abar = torch.tensor(0.3)
    x0_of = lambda e: (z_t - (1 - abar).sqrt() * e) / abar.sqrt()  # noqa: E731
    torch.testing.assert_close(rescaled_epsilon(eps, eps_cond, z_t, abar, 0.0), eps)
    full = x0_of(rescaled_epsilon(eps, eps_cond, z_t, abar, 1.0))
    torch.testing.assert_close(full.std(), x0_of(eps_cond).std(), rtol=1e-4, atol=0)
    half = x0_of(rescaled_epsilon(eps, eps_cond, z_t, abar, 0.5))
    torch.testing.assert_close(half, 0.5 * full + 0.5 * x0_of(eps), rtol=1e-4, atol=1e-5)


def test_a_short_distillation_runs_on_the_published_layout(loaded):
    from spacetime.threed.field import FieldConfig
    from spacetime.threed.optimise import OptimiseConfig, optimise
    from spacetime.threed.pipeline import make_guidance

    guide = make_guidance(loaded, "a red cube")
    small = FieldConfig(resolution=32, levels=2)
    field = optimise(guide, OptimiseConfig(steps=1, resolution=8, samples=8, grid=small))
    assert all(torch.isfinite(g).all() for g in field.grids)


def test_sd15_4view_layout_loads():
    """sd-v1.5-4view: SD 1.5's U-Net (conv proj_in, 8 heads, 768-wide text) with the camera MLP
    and OpenAI CLIP under cond_stage_model.transformer, read at its last layer."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from spacetime.formats.clip_tokenizer import Tokenizer
    from spacetime.formats.tokenizer import clip_tokenizer

    torch.manual_seed(0)
    unet = tiny.randomize(UNet2DConditionModel(**{
        **UNET, "cross_attention_dim": 768, "attention_head_dim": 8, "use_linear_projection": False,
    }), 8)  # fmt: skip
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=768, intermediate_size=128, num_hidden_layers=1,
        num_attention_heads=12, max_position_embeddings=77,
    )).eval()  # fmt: skip
    ref = SimpleNamespace(unet=unet, vae=reference_vae(), text=text, camera=camera_weights())
    components = spacetime_components(ref)
    components.text_encoder = build_text_encoder(
        text.config.to_dict(), text_state_dict(text), Tokenizer.wrap(clip_tokenizer(None))
    )
    sd = mvdream.to_original(components)
    assert "cond_stage_model.transformer.text_model.embeddings.position_ids" in sd
    loaded = mvdream.components_from_original(sd)
    assert loaded.unet.config.heads == (8, 8, 8) and not loaded.unet.config.use_linear_projection
    g = torch.Generator().manual_seed(9)
    x, ctx = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 77, 768, generator=g)
    ids = loaded.text_encoder.tokenize(["a red cube"])
    assert ids[0, 5] == 49407  # OpenAI CLIP pads with its end token
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.unet(x, 400, ctx), unet(x, 400, ctx).sample, rtol=1e-5, atol=1e-5
        )
        torch.testing.assert_close(
            loaded.text_encoder.model(ids), text(ids).last_hidden_state, rtol=0, atol=1e-5
        )
