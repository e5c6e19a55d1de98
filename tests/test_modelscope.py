"""ModelScope text-to-video: diffusers' UNet3DConditionModel folders load into our one U-Net (an
inflated UNet2DCondition) and compute the same; a TextToVideoSDPipeline folder generates the same
clips as diffusers at the same seed."""

import json

import numpy as np
import pytest
import tiny
import torch

from spacetime.errors import CheckpointError
from spacetime.formats.diffusers import load_unet
from spacetime.models.inflate import ModelScope
from spacetime.pipelines.video import VideoPipeline

# Two families: attention in the first level, head width 8, two layers per block; and attention in
# the lower levels, head width 16, one layer per block, three levels (odd latent sizes upsample to
# their skip's size).
UNET3D_CONFIGS = {
    "a": dict(
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
        up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
        layers_per_block=2,
        sample_size=8,
    ),
    "b": dict(
        block_out_channels=(32, 64, 64),
        down_block_types=("DownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D"),
        up_block_types=("CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "UpBlock3D"),
        cross_attention_dim=24,
        attention_head_dim=16,
        norm_num_groups=16,
        norm_eps=1e-6,
        layers_per_block=1,
        sample_size=8,
    ),
}


def unet3d(name: str, seed: int = 0):
    """A tiny random diffusers UNet3DConditionModel, every parameter perturbed (zero-initialised
    temporal output convs included, so a mis-wired temporal layer cannot hide)."""
    from diffusers import UNet3DConditionModel

    torch.manual_seed(seed)
    return tiny.randomize(UNet3DConditionModel(**UNET3D_CONFIGS[name]), seed)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("name, size", [("a", (8, 8)), ("b", (12, 10))])
def test_unet3d_matches_diffusers(tmp_path, name, size):
    ref = unet3d(name)
    ref.save_pretrained(str(tmp_path / "unet"))
    ours = load_unet(tmp_path / "unet").eval()
    assert ours.inflation == ModelScope(head_dim=UNET3D_CONFIGS[name]["attention_head_dim"])
    assert ours.frame_positions is None and not ours.takes_cameras
    g = torch.Generator().manual_seed(1)
    clip = torch.randn(2, 4, 5, *size, generator=g)  # (b, c, t, h, w)
    ctx = torch.randn(2, 7, UNET3D_CONFIGS[name]["cross_attention_dim"], generator=g)
    t = torch.tensor([10, 700])
    with torch.no_grad():
        want = ref(clip, t, ctx).sample
        got = ours(clip, t, ctx)
    assert got.shape == want.shape == clip.shape
    assert rel_err(got, want) <= 1e-4


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(time_cond_proj_dim=16), "time_cond_proj_dim=16"),
        (dict(mid_block_scale_factor=2), "mid_block_scale_factor=2"),
        (dict(act_fn="gelu"), "act_fn='gelu'"),
        (dict(attention_head_dim=[8, 8]), r"attention_head_dim=\[8, 8\]"),
        (dict(attention_head_dim=12), "attention_head_dim=12 does not divide"),
        (dict(norm_num_groups=None), "norm_num_groups=None"),
        (dict(down_block_types=["CrossAttnDownBlockMotion", "DownBlock3D"]), "down_block_types"),
        (dict(up_block_types=["UpBlock3D", "UpBlock3D"]), "up_block_types"),
        (dict(some_new_option=True), "some_new_option"),
    ],
)
def test_unsupported_unet3d_config_names_the_key(tmp_path, change, message):
    ref = unet3d("a")
    ref.save_pretrained(str(tmp_path / "unet"))
    path = tmp_path / "unet" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    with pytest.raises(CheckpointError, match=message):
        load_unet(tmp_path / "unet")


def test_unet3d_weights_load_strictly(tmp_path):
    from safetensors.torch import load_file, save_file

    unet3d("a").save_pretrained(str(tmp_path / "unet"))
    weights = tmp_path / "unet" / "diffusion_pytorch_model.safetensors"
    sd = load_file(str(weights))
    del sd["transformer_in.proj_out.weight"]
    save_file(sd, str(weights))
    with pytest.raises(CheckpointError, match="missing keys: transformer_in.proj_out.weight"):
        load_unet(tmp_path / "unet")


# -- the text-to-video pipeline ----------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_t2v(tmp_path_factory):
    """A tiny diffusers TextToVideoSDPipeline saved to disk, and diffusers' own reload of it."""
    from diffusers import DDIMScheduler, TextToVideoSDPipeline

    root = tmp_path_factory.mktemp("t2v")
    folder = root / "tiny-t2v"
    tok = tiny.tokenizer(root / "tok")
    sched = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        clip_sample=False, set_alpha_to_one=False, steps_offset=1,
    )  # fmt: skip
    pipe = TextToVideoSDPipeline(
        vae=tiny.vae("f4"), text_encoder=tiny.text_encoder(vocab=len(tok)), tokenizer=tok,
        unet=unet3d("a"), scheduler=sched,
    )  # fmt: skip
    pipe.save_pretrained(str(folder))
    # Reload from disk: an in-memory scheduler config carries `_use_default_values`.
    ref = TextToVideoSDPipeline.from_pretrained(str(folder))
    ref.set_progress_bar_config(disable=True)
    return folder, ref


def diffusers_clips(pipe, prompt, seed: int, **kw) -> np.ndarray:
    out = pipe(
        prompt, generator=torch.Generator("cpu").manual_seed(seed), output_type="np", **kw
    ).frames
    return (np.asarray(out) * 255).round().astype(np.uint8)


def close_pixels(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of 8-bit values within 3/255."""
    assert a.shape == b.shape
    return float((np.abs(a.astype(int) - b.astype(int)) <= 3).mean())


def test_text_to_video_folder_loads_without_a_motion_module(tiny_t2v):
    folder, _ = tiny_t2v
    pipe = VideoPipeline.from_pretrained(folder, precision="fp32")
    assert isinstance(pipe.components.unet.inflation, ModelScope)
    assert pipe.components.unet.transformer_in is not None
    clip = pipe("a red circle", frames=4, steps=2, seed=0, height=32, width=32)
    assert clip.shape == (1, 4, 32, 32, 3) and clip.dtype == np.uint8


def test_same_seed_same_clip_as_diffusers(tiny_t2v):
    folder, ref = tiny_t2v
    kw = dict(num_frames=4, num_inference_steps=6, guidance_scale=5.0, height=32, width=32)
    want = diffusers_clips(ref, "a red circle", seed=7, negative_prompt="blue", **kw)
    got = VideoPipeline.from_pretrained(folder, precision="fp32")(
        "a red circle", "blue", frames=4, steps=6, guidance=5.0, height=32, width=32, seed=7,
        scheduler="ddim", precision="fp32",
    )  # fmt: skip
    assert got.shape == want.shape == (1, 4, 32, 32, 3)
    assert close_pixels(got, want) >= 0.99


def test_save_pretrained_writes_a_folder_diffusers_loads(tiny_t2v, tmp_path):
    from diffusers import TextToVideoSDPipeline

    folder, ref = tiny_t2v
    pipe = VideoPipeline.from_pretrained(folder, precision="fp32")
    pipe.save_pretrained(tmp_path / "saved")
    index = json.loads((tmp_path / "saved" / "model_index.json").read_text())
    assert index["_class_name"] == "TextToVideoSDPipeline"
    again = TextToVideoSDPipeline.from_pretrained(str(tmp_path / "saved"))
    assert again.unet.config.attention_head_dim == ref.unet.config.attention_head_dim
    theirs = again.unet.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in ref.unet.state_dict().items())
    assert theirs.keys() == ref.unet.state_dict().keys()
