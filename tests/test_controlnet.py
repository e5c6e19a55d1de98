"""ControlNet and SparseCtrl: the same seed gives diffusers' StableDiffusionControlNetPipeline,
AnimateDiffControlNetPipeline and AnimateDiffSparseControlNetPipeline outputs (tiny random
models, 8-bit precision), and every checkpoint layout loads into the one ControlNet."""

import json

import numpy as np
import pytest
import tiny
import torch
from in_process import run_cli
from PIL import Image
from test_animatediff_parity import ANIMATEDIFF_SCHEDULE, close_pixels

from spacetime.control import Control
from spacetime.errors import ArgumentValueError, CheckpointError
from spacetime.formats.controlnet import load_controlnet, save_controlnet
from spacetime.formats.original import unet_diffusers_to_original
from spacetime.models.controlnet import ControlNet
from spacetime.models.unet import UNetConfig
from spacetime.pipelines.image import ImagePipeline
from spacetime.pipelines.video import VideoPipeline

SIZE = 32  # pixels; the f4 VAE's latents are 8x8
CONTROL = dict(  # a ControlNetModel over the tiny sd1 U-Net's encoder
    block_out_channels=(32, 64),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    cross_attention_dim=32,
    attention_head_dim=4,
    norm_num_groups=8,
    layers_per_block=2,
    conditioning_embedding_out_channels=(8, 8, 16),  # two stride-2 convs: 32 px -> 8 latents
)


def tiny_controlnet(seed: int, **overrides):
    from diffusers import ControlNetModel

    torch.manual_seed(seed)
    return tiny.randomize(ControlNetModel(**{**CONTROL, **overrides}), seed, 0.1)


def control_images(n: int, seed: int) -> list[np.ndarray]:
    """uint8 images with structure: bright rectangles on dark, different per image."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n):
        image = np.zeros((SIZE, SIZE, 3), np.uint8)
        y, x = rng.integers(0, SIZE // 2, 2)
        image[y : y + SIZE // 2, x : x + SIZE // 2] = rng.integers(128, 256, 3)
        images.append(image)
    return images


def to_uint8(frames) -> np.ndarray:
    return (np.asarray(frames) * 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    root = tmp_path_factory.mktemp("controlnet")
    tiny.sd_pipeline(root / "sd")
    for i, seed in enumerate((11, 12)):
        tiny_controlnet(seed).save_pretrained(str(root / f"cn{i}"))
    return root


def reference(sd, name: str):
    import diffusers

    pipe_cls = getattr(diffusers, name)
    nets = [diffusers.ControlNetModel.from_pretrained(str(sd / f"cn{i}")) for i in range(2)]
    return pipe_cls, nets


def test_image_matches_diffusers_controlnet_pipeline(sd):
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline

    ref = StableDiffusionControlNetPipeline.from_pretrained(
        str(sd / "sd"), controlnet=ControlNetModel.from_pretrained(str(sd / "cn0")),
        safety_checker=None, requires_safety_checker=False,
    )  # fmt: skip
    ref.set_progress_bar_config(disable=True)
    image = control_images(1, 0)[0]
    kw = dict(num_inference_steps=6, guidance_scale=6.0, controlnet_conditioning_scale=0.8)
    want = to_uint8(
        ref("a red circle", image=Image.fromarray(image), negative_prompt="blue", output_type="np",
            generator=torch.Generator().manual_seed(3), **kw).images
    )  # fmt: skip
    plain = to_uint8(
        ref("a red circle", image=Image.fromarray(image), negative_prompt="blue", output_type="np",
            generator=torch.Generator().manual_seed(3), **{**kw, "controlnet_conditioning_scale": 0.0}).images
    )  # fmt: skip
    pipe = ImagePipeline.from_pretrained(sd / "sd", precision="fp32")
    net = load_controlnet(sd / "cn0")
    got = pipe(
        "a red circle", "blue", steps=6, guidance=6.0, seed=3,
        controls=[Control(net, image, scale=0.8)],
    )  # fmt: skip
    assert got.shape == (1, SIZE, SIZE, 3)  # the control image's size by default
    assert np.abs(want.astype(int) - plain.astype(int)).max() > 20  # the control matters
    assert close_pixels(got, want) >= 0.99


def test_several_controlnets_with_start_end_and_guess_mode_match(sd):
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline

    nets = [ControlNetModel.from_pretrained(str(sd / f"cn{i}")) for i in range(2)]
    ref = StableDiffusionControlNetPipeline.from_pretrained(
        str(sd / "sd"), controlnet=nets, safety_checker=None, requires_safety_checker=False
    )
    ref.set_progress_bar_config(disable=True)
    images = control_images(2, 1)
    pipe = ImagePipeline.from_pretrained(sd / "sd", precision="fp32")
    ours = [load_controlnet(sd / f"cn{i}") for i in range(2)]
    for guess in (False, True):
        want = to_uint8(
            ref("a red circle", image=[Image.fromarray(i) for i in images], num_inference_steps=8,
                guidance_scale=4.0, controlnet_conditioning_scale=[0.7, 1.3],
                control_guidance_start=[0.0, 0.25], control_guidance_end=[0.75, 1.0],
                guess_mode=guess, output_type="np", generator=torch.Generator().manual_seed(4)).images
        )  # fmt: skip
        controls = [
            Control(ours[0], images[0], scale=0.7, end=0.75, guess_mode=guess),
            Control(ours[1], images[1], scale=1.3, start=0.25, guess_mode=guess),
        ]
        got = pipe("a red circle", steps=8, guidance=4.0, seed=4, controls=controls)
        assert close_pixels(got, want) >= 0.99, f"guess_mode={guess}"


@pytest.fixture(scope="module")
def animatediff(sd):

    config = sd / "sd" / "scheduler" / "scheduler_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), **ANIMATEDIFF_SCHEDULE}))
    tiny.motion_adapter(sd / "motion")
    return sd


def test_clip_matches_diffusers_animatediff_controlnet_pipeline(animatediff):
    from diffusers import AnimateDiffControlNetPipeline, ControlNetModel, MotionAdapter

    root = animatediff
    ref = AnimateDiffControlNetPipeline.from_pretrained(
        str(root / "sd"), motion_adapter=MotionAdapter.from_pretrained(str(root / "motion")),
        controlnet=ControlNetModel.from_pretrained(str(root / "cn0")),
    )  # fmt: skip
    ref.set_progress_bar_config(disable=True)
    frames = control_images(8, 2)
    want = to_uint8(
        ref("a red circle", negative_prompt="blue", num_frames=8, num_inference_steps=6,
            guidance_scale=6.0, conditioning_frames=[Image.fromarray(f) for f in frames],
            height=SIZE, width=SIZE, output_type="np",
            generator=torch.Generator().manual_seed(5)).frames
    )  # fmt: skip
    pipe = VideoPipeline.from_pretrained(root / "sd", precision="fp32", motion=root / "motion")
    control = Control(load_controlnet(root / "cn0"), np.stack(frames))
    got = pipe("a red circle", "blue", frames=8, steps=6, guidance=6.0, seed=5, controls=[control])
    assert got.shape == (1, 8, SIZE, SIZE, 3)
    assert close_pixels(got, want) >= 0.99


def tiny_sparsectrl(seed: int, rgb: bool):
    from diffusers import SparseControlNetModel

    torch.manual_seed(seed)
    net = SparseControlNetModel(
        block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlockMotion", "DownBlockMotion"),
        cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8, layers_per_block=2,
        motion_num_attention_heads=8, motion_max_seq_length=32,  # AnimateDiff's 8 heads
        conditioning_channels=4 if rgb else 3, use_simplified_condition_embedding=rgb,
        conditioning_embedding_out_channels=(8, 8, 16),
    )  # fmt: skip
    return tiny.randomize(net, seed, 0.1)


@pytest.mark.parametrize("variant", ["scribble", "rgb"])
def test_sparsectrl_matches_diffusers(animatediff, tmp_path, variant):
    from diffusers import AnimateDiffSparseControlNetPipeline, AutoencoderKL, MotionAdapter

    root, rgb = animatediff, variant == "rgb"
    tiny_sparsectrl(21, rgb).save_pretrained(str(tmp_path / "sparse"))
    # diffusers encodes RGB key frames with a posterior *sample* from the global RNG; a VAE whose
    # posterior is (numerically) a point makes that sample the mean spacetime uses
    vae = AutoencoderKL.from_pretrained(str(root / "sd" / "vae"))
    with torch.no_grad():
        vae.quant_conv.bias[4:] = -30.0
    vae.save_pretrained(str(root / "sd" / "vae-point"))
    from diffusers import SparseControlNetModel

    ref = AnimateDiffSparseControlNetPipeline.from_pretrained(
        str(root / "sd"), vae=vae, motion_adapter=MotionAdapter.from_pretrained(str(root / "motion")),
        controlnet=SparseControlNetModel.from_pretrained(str(tmp_path / "sparse")),
    )  # fmt: skip
    ref.set_progress_bar_config(disable=True)
    keys = control_images(2, 3)
    want = to_uint8(
        ref("a red circle", negative_prompt="blue", num_frames=8, num_inference_steps=6,
            guidance_scale=6.0, conditioning_frames=[Image.fromarray(k) for k in keys],
            controlnet_frame_indices=[0, 5], controlnet_conditioning_scale=1.5,
            height=SIZE, width=SIZE, output_type="np",
            generator=torch.Generator().manual_seed(6)).frames
    )  # fmt: skip
    pipe = VideoPipeline.from_pretrained(root / "sd", precision="fp32", motion=root / "motion")
    from spacetime.formats.diffusers import build_vae
    from spacetime.formats.weights import read_component
    from spacetime.models.vae import VAEConfig

    folder = root / "sd" / "vae-point"
    pipe.components.vae = build_vae(
        VAEConfig.from_diffusers(json.loads((folder / "config.json").read_text())),
        read_component(folder, "diffusion_pytorch_model"),
    )
    net = load_controlnet(tmp_path / "sparse")
    assert net.control_config.sparse and net.frame_positions == 32
    control = Control(net, np.stack(keys), scale=1.5, key_frames=(0, 5))
    got = pipe("a red circle", "blue", frames=8, steps=6, guidance=6.0, seed=6, controls=[control])
    assert close_pixels(got, want) >= 0.99


# -- checkpoint layouts ----------------------------------------------------------------------------


def residuals_of(net, x, t, context, condition, **kw):
    """Diffusers' or spacetime's ControlNet output as one flat tensor."""
    if isinstance(net, ControlNet):
        out = net(x, t, context, condition, **kw)
        return torch.cat([r.flatten() for r in (*out.down, out.mid)])
    down, mid = net(x, t, context, condition, return_dict=False, **kw)
    return torch.cat([r.flatten() for r in (*down, mid)])


def test_original_single_file_loads_as_diffusers_reads_it(tmp_path):
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint
    from safetensors.torch import save_file

    # the paper's condition encoder (16, 32, 96, 256: input_hint_block.0 ... 14)
    ref = tiny_controlnet(13, conditioning_embedding_out_channels=(16, 32, 96, 256))
    sd = ref.state_dict()
    encoder = {k: v for k, v in sd.items() if not k.startswith("controlnet_")}
    original = unet_diffusers_to_original(encoder, "control_model.")
    hint = {"conv_in": 0, "conv_out": 14} | {f"blocks.{i}": 2 * (i + 1) for i in range(6)}
    for key, value in sd.items():
        name, _, kind = key.rpartition(".")
        if key.startswith("controlnet_cond_embedding."):
            original[f"control_model.input_hint_block.{hint[name.split('.', 1)[1]]}.{kind}"] = value
        elif key.startswith("controlnet_down_blocks."):
            original[f"control_model.zero_convs.{name.split('.')[1]}.0.{kind}"] = value
        elif key.startswith("controlnet_mid_block."):
            original[f"control_model.middle_block_out.0.{kind}"] = value
    # the layout is the published one: diffusers' own converter reads it back exactly
    converted = convert_controlnet_checkpoint(dict(original), {"layers_per_block": 2})
    assert converted.keys() == sd.keys()
    assert all(torch.equal(converted[k], sd[k]) for k in sd)
    save_file({k: v.contiguous() for k, v in original.items()}, str(tmp_path / "cn.safetensors"))
    torch.save({k[len("control_model.") :]: v for k, v in original.items()}, tmp_path / "cn.pth")

    g = torch.Generator().manual_seed(0)
    x, context = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 5, 32, generator=g)
    condition = torch.rand(2, 3, 64, 64, generator=g)
    want = residuals_of(ref, x, 500, context, condition, conditioning_scale=0.9)
    like = UNetConfig.from_diffusers(tiny.UNET_CONFIGS["sd1"])  # single files lack the heads
    for name in ("cn.safetensors", "cn.pth"):  # with and without the control_model. prefix
        net = load_controlnet(tmp_path / name, like)
        assert net.control_config.embedding_channels == (16, 32, 96, 256)
        got = residuals_of(net, x, 500, context, condition, scale=0.9)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("variant", ["rgb", "scribble"])
def test_sparsectrl_original_file_loads(tmp_path, variant):
    """AnimateDiff's SparseCtrl files: its SparseControlNetModel's names, motion modules nested
    under temporal_transformer. with attention_blocks/norms/ff_norm, under "controlnet"."""
    rgb = variant == "rgb"
    ref = tiny_sparsectrl(22, rgb=rgb).eval()
    original = {}
    for key, value in ref.state_dict().items():
        if ".motion_modules." in key:
            head, tail = key.split(".motion_modules.", 1)
            index, rest = tail.split(".", 1)
            for new, old in ((".attn1.", ".attention_blocks.0."), (".norm1.", ".norms.0."),
                             (".norm3.", ".ff_norm.")):  # fmt: skip
                rest = ("." + rest).replace(new, old)[1:]
            rest = rest.replace("pos_embed.pe", "pos_encoder.pe")
            key = f"{head}.motion_modules.{index}.temporal_transformer.{rest}"
        original[key] = value
    torch.save({"controlnet": original}, tmp_path / f"v3_sd15_sparsectrl_{variant}.ckpt")
    like = UNetConfig.from_diffusers(tiny.UNET_CONFIGS["sd1"])
    net = load_controlnet(tmp_path / f"v3_sd15_sparsectrl_{variant}.ckpt", like)
    cfg = net.control_config
    assert cfg.sparse and cfg.conditioning_channels == (4 if rgb else 3)
    assert cfg.embedding_channels == (() if rgb else (8, 8, 16))

    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 4, 6, 8, 8, generator=g)
    context = torch.randn(1, 5, 32, generator=g)
    side = 8 if rgb else 32  # latents, or pixels
    condition = torch.randn(1, cfg.conditioning_channels, 6, side, side, generator=g)
    mask = torch.zeros(1, 1, 6, side, side)
    mask[:, :, [0, 4]] = 1
    # diffusers' pipeline hands the network one context per frame
    per_frame = context.repeat_interleave(6, dim=0)
    want = ref(x, 300, per_frame, condition, conditioning_mask=mask, return_dict=False)
    want = torch.cat([r.flatten() for r in (*want[0], want[1])])
    out = net(x, 300, context, condition, mask=mask)
    got = torch.cat([r.flatten() for r in (*out.down, out.mid)])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_saved_controlnet_loads_in_diffusers(tmp_path):
    from diffusers import ControlNetModel

    ref = tiny_controlnet(14)
    ref.save_pretrained(str(tmp_path / "ref"))
    net = load_controlnet(tmp_path / "ref")
    save_controlnet(net, tmp_path / "ours")
    again = ControlNetModel.from_pretrained(str(tmp_path / "ours")).eval()
    g = torch.Generator().manual_seed(2)
    args = (torch.randn(1, 4, 8, 8, generator=g), 10, torch.randn(1, 5, 32, generator=g),
            torch.rand(1, 3, 32, 32, generator=g))  # fmt: skip
    torch.testing.assert_close(residuals_of(again, *args), residuals_of(ref, *args))
    with pytest.raises(CheckpointError, match="exists"):
        save_controlnet(net, tmp_path / "ours")


def test_bad_controls_are_refused(animatediff):
    sd = animatediff
    net = load_controlnet(sd / "cn0")
    image = control_images(1, 0)[0]
    with pytest.raises(ArgumentValueError, match="start < end"):
        Control(net, image, start=0.6, end=0.5)
    with pytest.raises(ArgumentValueError, match="key frames apply to a SparseCtrl"):
        Control(net, image, key_frames=(0,))
    with pytest.raises(Exception, match="uint8 RGB"):
        Control(net, image.astype(np.float32))
    pipe = VideoPipeline.from_pretrained(sd / "sd", precision="fp32", motion=sd / "motion")
    with pytest.raises(ArgumentValueError, match="one control image or one per frame"):
        pipe("a red circle", frames=8, steps=2, controls=[Control(net, np.stack([image] * 3))])
    with pytest.raises(CheckpointError, match="not a ControlNet"):
        torch.save({"time_embed.0.weight": torch.zeros(1)}, sd / "bad.pth")
        load_controlnet(sd / "bad.pth")


# -- preprocessors -----------------------------------------------------------------------------


def noisy_scene(seed: int, height: int = 80, width: int = 96) -> np.ndarray:
    from PIL import ImageDraw

    image = Image.new("RGB", (width, height), (30, 40, 50))
    draw = ImageDraw.Draw(image)
    draw.ellipse((10, 10, 50, 60), fill=(200, 30, 40))
    draw.polygon([(60, 10), (90, 70), (40, 75)], fill=(20, 180, 90))
    rng = np.random.default_rng(seed)
    return np.clip(np.asarray(image) + rng.normal(0, 12, (height, width, 3)), 0, 255).astype(
        np.uint8
    )


@pytest.mark.parametrize("thresholds", [(100, 200), (50, 120), (20, 60)])
def test_canny_is_opencvs(thresholds):
    cv2 = pytest.importorskip("cv2")  # the test extra installs it; spacetime does not need it
    from spacetime.preprocess import canny

    for seed in range(3):
        image = noisy_scene(seed)
        want = cv2.Canny(image, *thresholds) > 0
        got = canny(image, *thresholds)
        assert got.shape == image.shape and set(np.unique(got)) <= {0, 255}
        assert want.sum() > 100 and np.array_equal(got[..., 0] > 0, want)


def test_mask_is_the_world_layout():
    from spacetime.preprocess import mask, preprocessor
    from spacetime.world import Scene

    for background in (None, "white", "blue"):
        image = Scene("triangle", "red", background, (30.0, 22.0), 12.0).render()
        silhouette = mask(image)[..., 0] > 0
        drawn = Scene("triangle", "white", "black", (30.0, 22.0), 12.0).render()[..., 0] > 127
        assert (silhouette == drawn).mean() > 0.98 and silhouette.mean() > 0.03
    with pytest.raises(Exception, match="controlnet_aux"):
        preprocessor("depth")


# -- the command lines ------------------------------------------------------------------------------


def test_image_cli_with_a_controlnet_and_canny(sd, tmp_path, capsys):
    from spacetime.image import main
    from spacetime.media import read_image
    from spacetime.preprocess import canny

    picture = noisy_scene(0, SIZE, SIZE)
    Image.fromarray(picture).save(tmp_path / "in.png")
    out = tmp_path / "out.png"
    args = ["a red circle", "--model", sd / "sd", "--steps", 3, "--precision", "fp32",
            "--control", sd / "cn0", "--control-image", tmp_path / "in.png", "--preprocess",
            "canny", "--control-scale", 0.7, "--out", out]  # fmt: skip
    code, stdout, stderr = run_cli(main, args, capsys)
    assert code == 0, stderr
    pipe = ImagePipeline.from_pretrained(sd / "sd", precision="fp32")
    want = pipe(
        "a red circle",
        steps=3,
        controls=[Control(load_controlnet(sd / "cn0"), canny(picture), 0.7)],
    )
    assert np.array_equal(read_image(out), want[0])


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--control", "CN"], "1 --control but 0 conditions"),
        (["--control-image", "IMG"], "0 --control but 1 conditions"),
        (["--guess-mode"], "--guess-mode applies to ControlNets"),
        (["--control", "CN", "--control-image", "IMG", "--control-scale", 1, "--control-scale", 2],
         "--control-scale takes one value for all"),
        (["--control", "CN", "--control-image", "IMG", "--control-start", 0.5, "--control-end", 0.4],
         "0 <= start < end <= 1"),
        (["--control", "nowhere", "--control-image", "IMG"], "nor a shipped ControlNet"),
        (["--control", "CN", "--keyframe", "0:IMG"], "is a ControlNet network: give it --control-image"),
        (["--control", "CN", "--keyframe", "x:IMG"], "N:IMAGE"),
    ],
)  # fmt: skip
def test_control_flags_refuse_bad_input(animatediff, tmp_path, capsys, extra, message):
    from spacetime.video import main

    Image.fromarray(control_images(1, 0)[0]).save(tmp_path / "c.png")
    swap = {"CN": animatediff / "cn0", "IMG": tmp_path / "c.png"}
    args = ["a red circle", "--model", animatediff / "sd", "--motion", animatediff / "motion",
            "--steps", 2, "--frames", 8, "--out", tmp_path / "x.mp4",
            *(str(swap.get(a, a)).replace("IMG", str(tmp_path / "c.png")) for a in extra)]  # fmt: skip
    code, _, stderr = run_cli(main, args, capsys)
    assert code == 2 and message in stderr, stderr
    assert not (tmp_path / "x.mp4").exists()


def test_long_clips_run_the_controlnet_window_by_window(animatediff, tmp_path):
    """With motion modules that start as the identity, frames are independent: windows must then
    give the whole clip's frames, which holds only if each window reads its own control frames."""
    from diffusers import MotionAdapter

    adapter = MotionAdapter.from_pretrained(str(animatediff / "motion"))
    with torch.no_grad():
        for name, p in adapter.named_parameters():
            if "proj_out" in name:
                p.zero_()
    adapter.save_pretrained(str(tmp_path / "identity"))
    pipe = VideoPipeline.from_pretrained(
        animatediff / "sd", precision="fp32", motion=tmp_path / "identity"
    )
    net = load_controlnet(animatediff / "cn0")
    with torch.no_grad():  # a random network barely reads its image: make the image count
        net.controlnet_cond_embedding.conv_out.weight.mul_(30)
    control = Control(net, np.stack(control_images(12, 7)))
    kw = dict(frames=12, steps=6, guidance=5.0, seed=8, controls=[control])
    whole = pipe("a red circle", **kw)
    windows = pipe("a red circle", context_frames=8, context_overlap=4, **kw)
    shuffled = pipe(
        "a red circle", **{**kw, "controls": [Control(net, control.image[::-1].copy())]}
    )
    assert np.abs(whole.astype(int) - windows.astype(int)).max() <= 1
    assert np.abs(whole.astype(int) - shuffled.astype(int)).max() > 20  # the frames' own controls


# -- training ---------------------------------------------------------------------------------------


def test_a_fresh_controlnet_is_the_unets_encoder_and_adds_nothing(sd):
    pipe = ImagePipeline.from_pretrained(sd / "sd", precision="fp32")
    unet = pipe.components.unet
    net = ControlNet.from_unet(unet, pixels_per_latent=4)
    own = unet.state_dict()
    copied = {k: v for k, v in net.state_dict().items() if not k.startswith("controlnet_")}
    assert copied and all(torch.equal(v, own[k]) for k, v in copied.items())
    g = torch.Generator().manual_seed(0)
    x, context = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 5, 32, generator=g)
    control = net(x, 300, context, torch.rand(1, 3, 32, 32, generator=g))
    assert all(not r.any() for r in (*control.down, control.mid))  # zero convolutions
    torch.testing.assert_close(unet(x, 300, context, control=control), unet(x, 300, context))


def test_the_controlnet_task_trains_resumes_and_exports_for_diffusers(sd, tmp_path):
    from diffusers import ControlNetModel

    from spacetime.train.config import make_config
    from spacetime.train.controlnet import ControlNetTask
    from spacetime.train.loop import train

    cfg = make_config(dict(task="controlnet", base=str(sd / "sd"), condition="mask", steps=4,
                           batch_size=2, lr=0.01, warmup=0, ema_decay=0.0, checkpoint_every=2))  # fmt: skip
    model = train(cfg, ControlNetTask(cfg), tmp_path / "run", progress=False)
    ours = load_controlnet(model)
    assert any(p.abs().sum() > 0 for p in ours.controlnet_mid_block.parameters())  # it learned
    ref = ControlNetModel.from_pretrained(str(model)).eval()
    g = torch.Generator().manual_seed(3)
    args = (torch.randn(1, 4, 16, 16, generator=g), 10, torch.randn(1, 5, 32, generator=g),
            torch.rand(1, 3, 64, 64, generator=g))  # fmt: skip
    torch.testing.assert_close(
        residuals_of(ours, *args), residuals_of(ref, *args), atol=1e-5, rtol=1e-4
    )
    # stopped after 2 steps and resumed: the same weights as the uninterrupted run
    stop = make_config({**cfg.to_dict(), "stop_after": 2})
    train(stop, ControlNetTask(stop), tmp_path / "again", progress=False)
    again = train(cfg, ControlNetTask(cfg), tmp_path / "again", progress=False)
    resumed = load_controlnet(again).state_dict()
    assert all(torch.equal(v, resumed[k]) for k, v in ours.state_dict().items())


def test_video_cli_with_sparsectrl_key_frames(animatediff, tmp_path, capsys):
    from spacetime.media import read_video
    from spacetime.video import main

    tiny_sparsectrl(23, rgb=False).save_pretrained(str(tmp_path / "scribble"))
    keys = control_images(2, 9)
    for i, key in enumerate(keys):
        Image.fromarray(key).save(tmp_path / f"k{i}.png")
    out = tmp_path / "clip"  # a folder of frames: exact pixels
    args = ["a red circle", "--model", animatediff / "sd", "--motion", animatediff / "motion",
            "--frames", 8, "--steps", 3, "--precision", "fp32", "--control", tmp_path / "scribble",
            "--keyframe", f"0:{tmp_path / 'k0.png'}", "--keyframe", f"6:{tmp_path / 'k1.png'}",
            "--out", out]  # fmt: skip
    code, _, stderr = run_cli(main, args, capsys)
    assert code == 0, stderr
    pipe = VideoPipeline.from_pretrained(
        animatediff / "sd", precision="fp32", motion=animatediff / "motion"
    )
    control = Control(load_controlnet(tmp_path / "scribble"), np.stack(keys), key_frames=(0, 6))
    want = pipe("a red circle", frames=8, steps=3, controls=[control])[0]
    assert np.array_equal(read_video(out)[0], want)
    # the key frames must lie in the clip, and a ControlNet cannot take them
    code, _, stderr = run_cli(
        main, [*args[:-2], "--frames", 4, "--out", tmp_path / "x.mp4"], capsys
    )
    assert code == 2 and "within a clip of 4 frames" in stderr


def test_the_shipped_world_controlnet_places_the_object(tmp_path, capsys):
    """`--control world-mask` by name, as the README shows it: the object lands on the silhouette,
    in its shape, on a held-out prompt."""
    import math

    from spacetime.eval.oracle import read_image
    from spacetime.image import main
    from spacetime.media import read_image as read_file
    from spacetime.world import Scene, heldout_prompts, parse_caption

    prompt = heldout_prompts()[0]
    spec = parse_caption(prompt)
    where = Scene(spec.shape, "white", "black", (44.0, 20.0), 11.0)
    Image.fromarray(where.render()).save(tmp_path / "silhouette.png")
    out = tmp_path / "out.png"
    code, _, stderr = run_cli(main, [prompt, "--control", "world-mask", "--control-image",
                                      tmp_path / "silhouette.png", "--out", out], capsys)  # fmt: skip
    assert code == 0, stderr
    reading = read_image(read_file(out))
    assert reading.shape == spec.shape and math.dist(reading.centre, where.centre) <= 4
