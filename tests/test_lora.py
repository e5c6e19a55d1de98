"""LoRA: files in each layout give diffusers' images and clips (two adapters at different weights,
unfused and fused); unfusing restores the weights bit for bit; a file that does not fit changes
nothing."""

import json

import numpy as np
import pytest
import tiny
import torch
from safetensors.torch import save_file

from spacetime.checks import parse_lora_arg
from spacetime.errors import CheckpointError, SpacetimeError
from spacetime.formats import lora as lora_format
from spacetime.formats.lora import read_lora
from spacetime.pipelines.image import ImagePipeline
from spacetime.pipelines.video import VideoPipeline

STYLE = ("attn", "proj_in", "proj_out", "ff.net", "resnets.0.conv1", "conv_shortcut")  # incl. convs
TEXT = ("self_attn", "mlp.fc1")
MOTION = ("motion_modules",)
IMAGE = dict(steps=3, guidance=5.0, height=32, width=32, seed=1)
CLIP = dict(frames=6, steps=2, guidance=5.0, height=32, width=32, seed=2)
LOG = {}  # max |Δ| per parity case, in 8-bit levels, printed at the end of the module


def layers(model: torch.nn.Module, words) -> dict[str, torch.Size]:
    """Weight shapes of the linear/conv layers whose names contain one of `words`."""
    return {
        name: m.weight.shape
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear | torch.nn.Conv2d) and any(w in name for w in words)
    }


def factors(shapes: dict, rank: int, seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Random (down, up) per layer, large enough to change the image."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in shapes.items():
        down = torch.randn((rank, *shape[1:]), generator=g) * 0.3
        up = torch.randn((shape[0], rank, *(1,) * (len(shape) - 2)), generator=g) * 0.3
        out[name] = down, up
    return out


def write_peft(folder, unet: dict, text: dict, unet_alpha: float, text_alpha: float):
    """A PEFT/diffusers LoRA written by diffusers itself, with its adapter config as metadata
    (an alpha_pattern included)."""
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig

    def packed(parts):
        return {
            f"{name}.lora_{ab}.weight": t
            for name, (down, up) in parts.items()
            for ab, t in (("A", down), ("B", up))
        }

    def config(parts, alpha, pattern):
        rank = next(iter(parts.values()))[0].shape[0]
        cfg = LoraConfig(
            r=rank, lora_alpha=alpha, target_modules=list(parts), alpha_pattern=pattern
        )
        return cfg.to_dict()

    StableDiffusionPipeline.save_lora_weights(
        str(folder), unet_lora_layers=packed(unet), text_encoder_lora_layers=packed(text),
        unet_lora_adapter_metadata=config(unet, unet_alpha, {"attn2.to_k": 2.0}),
        text_encoder_lora_adapter_metadata=config(text, text_alpha, {}),
    )  # fmt: skip
    return folder / "pytorch_lora_weights.safetensors"


def write_kohya(path, unet: dict, text: dict, alpha: float, names=None, te="lora_te_"):
    """A kohya/A1111 file; `names` maps U-Net layers to other spellings (the CompVis layout)."""
    sd = {}
    for prefix, parts in (("lora_unet_", unet), (f"{te}text_model_", text)):
        for name, (down, up) in parts.items():
            key = prefix + (names or {}).get(name, name).replace(".", "_")
            sd[f"{key}.lora_down.weight"], sd[f"{key}.lora_up.weight"] = down, up
            sd[f"{key}.alpha"] = torch.tensor(alpha)
    save_file(sd, str(path))
    return path


def motion_original_key(name: str) -> str:
    """A diffusers motion-module layer name in the original AnimateDiff layout's nesting."""
    block, _, rest = name.partition(".motion_modules.")
    index, _, rest = rest.partition(".")
    attn = {"attn1": "attention_blocks.0", "attn2": "attention_blocks.1"}
    for new, old in attn.items():
        rest = rest.replace(f".{new}.", f".{old}.")
    return f"{block}.motion_modules.{index}.temporal_transformer.{rest}"


def write_motion(path, parts: dict, original: bool):
    """A motion LoRA (no alpha) in the original AnimateDiff layout, or in diffusers' (as its
    conversion script writes it: renamed, under `unet.`)."""
    sd = {}
    for name, (down, up) in parts.items():
        attention, _, proj = name.rpartition(".to_")
        proj = proj.removesuffix(".0")  # to_out.0 is the attention processor's to_out_lora
        key = f"{attention}.processor.to_{proj}_lora"
        key = motion_original_key(key) if original else f"unet.{key}"
        sd[f"{key}.down.weight"], sd[f"{key}.up.weight"] = down, up
    save_file(sd, str(path))
    return path


def pixels(images) -> np.ndarray:
    return (np.asarray(images) * 255).round().astype(np.uint8)


def max_diff(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape
    return int(np.abs(a.astype(int) - b.astype(int)).max())


def assert_same_pixels(case: str, got: np.ndarray, want: np.ndarray, base: np.ndarray):
    """Equal to 8-bit precision (as the pipelines' parity tests), and not the LoRA-free output."""
    LOG[case] = max_diff(got, want)
    assert (np.abs(got.astype(int) - want.astype(int)) <= 3).mean() >= 0.99, LOG[case]
    assert max_diff(got, base) > 30  # the adapters change the picture: a no-op would fail


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    print("\nLoRA parity, max |Δ| in 8-bit levels:", LOG)


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    """A tiny SD folder and, for its layers, a PEFT file (U-Net + text encoder, alpha in the
    metadata) and a kohya file (U-Net incl. resnet convs + text encoder, per-layer alpha)."""
    from diffusers import StableDiffusionPipeline

    root = tmp_path_factory.mktemp("lora")
    ref = tiny.sd_pipeline(root / "sd")
    unet, text = layers(ref.unet, STYLE), layers(ref.text_encoder, TEXT)
    peft = write_peft(root / "peft", factors(unet, 4, 0), factors(text, 4, 1), 8.0, 2.0)
    kohya = write_kohya(root / "kohya.safetensors", factors(unet, 2, 2), factors(text, 2, 3), 1.0)

    def reference():
        pipe = StableDiffusionPipeline.from_pretrained(str(root / "sd"), safety_checker=None)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    return root, peft, kohya, reference


def diffusers_image(pipe) -> np.ndarray:
    out = pipe(
        "a red circle", num_inference_steps=3, guidance_scale=5.0, height=32, width=32,
        generator=torch.Generator("cpu").manual_seed(1), output_type="np",
    )  # fmt: skip
    return pixels(out.images)


def test_two_adapters_match_diffusers_unfused_and_fused(sd):
    root, peft, kohya, reference = sd
    ref = reference()
    base = diffusers_image(ref)
    ref.load_lora_weights(str(peft), adapter_name="style")
    ref.load_lora_weights(str(kohya), adapter_name="kohya")
    ref.set_adapters(["style", "kohya"], [0.7, -0.5])
    want = diffusers_image(ref)
    ref.fuse_lora()
    want_fused = diffusers_image(ref)

    pipe = ImagePipeline.from_pretrained(root / "sd", precision="fp32")
    assert max_diff(pipe("a red circle", **IMAGE), base) <= 1
    assert pipe.load_lora(peft, name="style", weight=0.7) == "style"
    pipe.load_lora(kohya, name="kohya", weight=-0.5)
    assert_same_pixels("image, PEFT 0.7 + kohya -0.5", pipe("a red circle", **IMAGE), want, base)
    pipe.fuse_lora()
    got = pipe("a red circle", **IMAGE)
    assert_same_pixels("image, same fused", got, want_fused, base)


def test_switching_weights_reads_nothing_and_weight_zero_costs_nothing(sd, monkeypatch):
    root, peft, kohya, _ = sd
    pipe = ImagePipeline.from_pretrained(root / "sd", precision="fp32")
    base = pipe("a red circle", **IMAGE)
    pipe.load_lora(peft, weight=0.7)
    pipe.load_lora(kohya, weight=-0.5)
    both = pipe("a red circle", **IMAGE)

    def no_reads(*_):
        raise AssertionError("switching weights must not read files")

    monkeypatch.setattr(lora_format, "read_weights_file", no_reads)
    pipe.set_lora_weights({"peft": 0, "kohya": 0})
    assert np.array_equal(pipe("a red circle", **IMAGE), base)
    hooked = [n for n, m in pipe.components.unet.named_modules() if m._forward_hooks]
    assert hooked == []  # no active adapter: no side branch runs at all
    pipe.set_lora_weights({"peft": 0.7, "kohya": -0.5})
    assert np.array_equal(pipe("a red circle", **IMAGE), both)


def test_fuse_unfuse_restores_every_weight_bit_for_bit_in_bf16(sd):
    root, peft, kohya, _ = sd
    pipe = ImagePipeline.from_pretrained(root / "sd", precision="bf16")
    unet, text = pipe.components.unet, pipe.components.text_encoder.model
    before = [{k: v.clone() for k, v in net.state_dict().items()} for net in (unet, text)]
    g = torch.Generator().manual_seed(0)
    x, context = (
        torch.randn(s, generator=g, dtype=torch.bfloat16) for s in ((1, 4, 4, 4), (1, 7, 32))
    )
    base = unet(x, 500, context).float()
    pipe.load_lora(peft, name="style", weight=0.7)
    pipe.load_lora(kohya, name="kohya", weight=-0.5)
    layer = pipe.lora._layers["unet.down_blocks.0.resnets.0.conv1"]
    assert layer.factors["kohya"].down.dtype == torch.bfloat16  # the pipeline's precision
    unfused = unet(x, 500, context).float()
    pipe.fuse_lora()
    pipe.set_lora_weights({"style": 0.3})  # refolded from the originals, not on top
    pipe.set_lora_weights({"style": 0.7})
    fused = unet(x, 500, context).float()
    # bf16 rounds a fused weight once and a side branch's output at every layer: close only
    assert (fused - unfused).norm() < 0.2 * (unfused - base).norm()
    conv = unet.get_submodule("down_blocks.0.resnets.0.conv1").weight
    assert not torch.equal(conv, before[0]["down_blocks.0.resnets.0.conv1.weight"])
    assert conv.is_contiguous(memory_format=torch.channels_last)  # the layout oneDNN wants
    pipe.unfuse_lora()
    for net, old in zip((unet, text), before, strict=True):
        assert all(torch.equal(v, old[k]) for k, v in net.state_dict().items())
    assert torch.equal(unet(x, 500, context).float(), unfused)
    pipe.unload_lora()
    assert pipe.lora.weights == {} and torch.equal(unet(x, 500, context).float(), base)


# CompVis names of layers of the tiny SD 1.x U-Net (2 levels, 2 layers per block, attention in
# the first), written out by hand as the original checkpoints name them.
COMPVIS = {
    "down_blocks.0.attentions.1.proj_in": "input_blocks.2.1.proj_in",
    "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_out.0": (
        "input_blocks.1.1.transformer_blocks.0.attn2.to_out.0"
    ),
    "down_blocks.1.resnets.0.conv1": "input_blocks.4.0.in_layers.2",
    "down_blocks.0.downsamplers.0.conv": "input_blocks.3.0.op",
    "mid_block.resnets.1.time_emb_proj": "middle_block.2.emb_layers.1",
    "mid_block.attentions.0.transformer_blocks.0.ff.net.2": (
        "middle_block.1.transformer_blocks.0.ff.net.2"
    ),
    "up_blocks.0.resnets.2.conv_shortcut": "output_blocks.2.0.skip_connection",
    "up_blocks.0.upsamplers.0.conv": "output_blocks.2.1.conv",
    "up_blocks.1.attentions.2.transformer_blocks.0.attn1.to_q": (
        "output_blocks.5.1.transformer_blocks.0.attn1.to_q"
    ),
    "conv_in": "input_blocks.0.0",
    "time_embedding.linear_1": "time_embed.0",
}


def test_kohya_files_in_the_compvis_layout_read_as_in_diffusers_names(sd, tmp_path):
    root, *_ = sd
    pipe = ImagePipeline.from_pretrained(root / "sd", precision="fp32")
    shapes = {n: pipe.components.unet.get_submodule(n).weight.shape for n in COMPVIS}
    parts = factors(shapes, 3, 7)
    compvis = write_kohya(tmp_path / "compvis.safetensors", parts, {}, 1.5, names=COMPVIS)
    plain = write_kohya(tmp_path / "plain.safetensors", parts, {}, 1.5)
    names = pipe.lora.layer_names()
    a, b = read_lora(compvis, names), read_lora(plain, names)
    assert sorted(a) == sorted(b) == sorted(f"unet.{n}" for n in COMPVIS)
    for key in a:
        assert torch.equal(a[key].down, b[key].down) and a[key].scale == b[key].scale == 0.5
    pipe.load_lora(compvis)  # every layer fits


@pytest.fixture(scope="module")
def animatediff(sd):
    """The tiny SD with a random MotionAdapter, and motion LoRAs for its attentions in the
    original and in diffusers' layout (rank 8, no alpha)."""

    root, *_ = sd
    adapter = tiny.motion_adapter(root / "motion")
    parts = factors(layers(adapter, (".to_",)), 8, 11)
    original = write_motion(root / "zoom-original.safetensors", parts, original=True)
    diffusers = write_motion(root / "zoom-diffusers.safetensors", parts, original=False)
    return root / "motion", original, diffusers


def test_motion_lora_and_a_spatial_lora_match_diffusers_clips(sd, animatediff):
    from diffusers import AnimateDiffPipeline, MotionAdapter

    root, peft, _, _ = sd
    motion, original, converted = animatediff
    ref = AnimateDiffPipeline.from_pretrained(
        str(root / "sd"), motion_adapter=MotionAdapter.from_pretrained(str(motion))
    )
    ref.set_progress_bar_config(disable=True)

    def clip():
        out = ref(
            "a red circle", num_frames=6, num_inference_steps=2, guidance_scale=5.0, height=32,
            width=32, generator=torch.Generator("cpu").manual_seed(2), output_type="np",
        )  # fmt: skip
        return pixels(out.frames)

    base = clip()
    ref.load_lora_weights(str(peft), adapter_name="style")
    ref.load_lora_weights(str(converted), adapter_name="zoom")
    ref.set_adapters(["style", "zoom"], [0.55, 1.2])
    want = clip()
    ref.fuse_lora()
    want_fused = clip()

    pipe = VideoPipeline.from_pretrained(root / "sd", precision="fp32", motion=motion)
    pipe.load_lora(peft, name="style", weight=0.55)
    pipe.load_lora(original, name="zoom", weight=1.2)
    assert_same_pixels(
        "clip, PEFT 0.55 + motion LoRA 1.2", pipe("a red circle", **CLIP), want, base
    )
    pipe.fuse_lora()
    assert_same_pixels("clip, same fused", pipe("a red circle", **CLIP), want_fused, base)
    # diffusers' layout of the same motion LoRA reads to the same layers
    names = pipe.lora.layer_names()
    a, b = read_lora(original, names), read_lora(converted, names)
    assert sorted(a) == sorted(b) and all(torch.equal(a[k].up, b[k].up) for k in a)
    assert all(f.scale == 1.0 for f in a.values())


def test_a_multiview_model_takes_image_loras_beside_its_view_layers(sd):
    from spacetime.formats.load import load_components
    from spacetime.models.inflate import MVDream, inflate
    from spacetime.pipelines.multiview import MultiViewPipeline

    root, peft, kohya, _ = sd
    components = load_components(root / "sd")
    components.unet = tiny.randomize(inflate(components.unet, MVDream(heads=2)), 4, 0.02)
    pipe = MultiViewPipeline(components, precision="fp32")
    unet = components.unet
    g = torch.Generator().manual_seed(0)
    x, context = torch.randn(1, 4, 4, 4, 4, generator=g), torch.randn(1, 7, 32, generator=g)
    cameras = torch.eye(4).expand(1, 4, 4, 4)
    base = unet(x, 500, context, cameras=cameras)
    pipe.load_lora(peft, weight=0.7)
    pipe.load_lora(kohya, weight=-0.5)
    unfused = unet(x, 500, context, cameras=cameras)
    pipe.fuse_lora()
    fused = unet(x, 500, context, cameras=cameras)
    assert (unfused - base).abs().max() > 0.1
    assert torch.allclose(fused, unfused, atol=1e-4)


# --- bad input: one clear error, and the model as it was ------------------------------------------


def untouched(pipe, before) -> bool:
    unet = pipe.components.unet
    return (
        pipe.lora.weights == {}
        and not any(m._forward_hooks for m in unet.modules())
        and all(torch.equal(v, before[k]) for k, v in unet.state_dict().items())
    )


@pytest.fixture
def image_pipe(sd):
    pipe = ImagePipeline.from_pretrained(sd[0] / "sd", precision="fp32")
    return pipe, {k: v.clone() for k, v in pipe.components.unet.state_dict().items()}


def test_a_motion_lora_on_an_image_model_names_the_keys(image_pipe, animatediff):
    pipe, before = image_pipe
    with pytest.raises(CheckpointError, match=r"match no layer.*motion_modules"):
        pipe.load_lora(animatediff[1])
    assert untouched(pipe, before)


def test_an_sdxl_lora_is_refused(image_pipe, tmp_path):
    pipe, before = image_pipe
    down = torch.ones(2, 32)
    save_file(
        {"lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": down},
        str(tmp_path / "xl.safetensors"),
    )
    with pytest.raises(CheckpointError, match="SDXL.*lora_te1_text_model"):
        pipe.load_lora(tmp_path / "xl.safetensors")
    assert untouched(pipe, before)


@pytest.mark.parametrize("defect", ["in_features", "rank"])
def test_a_layer_that_does_not_fit_changes_nothing(image_pipe, tmp_path, defect):
    pipe, before = image_pipe
    parts = factors(layers(pipe.components.unet, STYLE), 4, 0)
    last = list(parts)[-1]  # every layer before it fits: nothing of them may stay attached
    down, up = parts[last]
    parts[last] = (down[:, :-1], up) if defect == "in_features" else (down, up[:, :2])
    parts[last] = tuple(t.contiguous() for t in parts[last])
    path = write_kohya(tmp_path / "bad.safetensors", parts, {}, 1.0)
    expected = rf"1 of {len(parts)} layers do not fit.*lora_unet_{last.replace('.', '_')}"
    with pytest.raises(CheckpointError, match=expected):
        pipe.load_lora(path)
    assert untouched(pipe, before)


def test_a_model_file_is_not_a_lora(image_pipe, tmp_path):
    pipe, before = image_pipe
    save_file({"conv_in.weight": torch.ones(32, 4, 3, 3)}, str(tmp_path / "unet.safetensors"))
    with pytest.raises(CheckpointError, match="not a LoRA key: 'conv_in.weight'"):
        pipe.load_lora(tmp_path / "unet.safetensors")
    assert untouched(pipe, before)


def test_names_are_checked(image_pipe, sd):
    pipe, _ = image_pipe
    pipe.load_lora(sd[1], name="style")
    with pytest.raises(SpacetimeError, match="already loaded"):
        pipe.load_lora(sd[1], name="style")
    assert pipe.load_lora(sd[1]) == "peft"  # diffusers' file name: named for its folder
    assert pipe.load_lora(sd[1]) == "peft-2"  # a name seen twice
    with pytest.raises(SpacetimeError, match="no LoRA named 'typo'"):
        pipe.set_lora_weights({"typo": 1.0})
    for bad in (float("nan"), float("inf"), "0.5"):  # a weight that would poison the model
        with pytest.raises(SpacetimeError, match="LoRA 'style' weight must be a"):
            pipe.set_lora_weights({"style": bad})
        with pytest.raises(SpacetimeError, match="LoRA 'bad' weight must be a"):
            pipe.load_lora(sd[1], name="bad", weight=bad)
    assert "bad" not in pipe.lora.weights and pipe.lora.weights["style"] == 1.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("style.safetensors", ("style.safetensors", 1.0)),
        ("style.safetensors:0.6", ("style.safetensors", 0.6)),
        ("dir/zoom.ckpt:-1.2", ("dir/zoom.ckpt", -1.2)),
        ("C:\\loras\\a.safetensors", ("C:\\loras\\a.safetensors", 1.0)),
        ("C:\\loras\\a.safetensors:.5", ("C:\\loras\\a.safetensors", 0.5)),
        ("zoom-in", ("zoom-in", 1.0)),
    ],
)
def test_parse_lora_arg(text, expected):
    assert parse_lora_arg(text) == expected


def test_parse_lora_arg_refuses_infinite_weights():
    with pytest.raises(SpacetimeError, match="finite"):
        parse_lora_arg("a.safetensors:inf")


def test_cli_flags_stack_loras_as_the_python_api_does(tmp_path):
    """`--lora PATH:WEIGHT` (repeatable) on the default world model gives the pipeline's image for
    the same adapters; `--motion-lora` refuses a file that is not a motion LoRA."""
    from PIL import Image

    from spacetime import image, video

    pipe = ImagePipeline.from_pretrained(precision="fp32")
    unet, text = pipe.components.unet, pipe.components.text_encoder.model
    style = write_kohya(tmp_path / "style.safetensors", factors(layers(unet, STYLE), 4, 3),
                        factors(layers(text, TEXT), 4, 4), alpha=2.0)  # fmt: skip
    tint = write_kohya(tmp_path / "tint.safetensors", factors(layers(unet, ("attn2",)), 2, 5),
                       {}, alpha=2.0)  # fmt: skip
    run = dict(steps=4, seed=3)
    plain = pipe("a red circle", **run)[0]
    pipe.load_lora(style, weight=0.6)
    pipe.load_lora(tint, weight=-0.4)
    want = pipe("a red circle", **run)[0]
    assert max_diff(want, plain) > 30

    out = tmp_path / "lora.png"
    flags = ["--lora", f"{style}:0.6", "--lora", f"{tint}:-0.4", "--precision", "fp32"]
    image.main(["a red circle", "--steps", "4", "--seed", "3", *flags, "--out", str(out)])
    assert np.array_equal(np.asarray(Image.open(out).convert("RGB")), want)

    with pytest.raises(SystemExit) as exit_:
        video.main(["a red circle moving right", "--motion-lora", str(style), "--frames", "2",
                    "--steps", "1", "--out", str(tmp_path / "c.gif")])  # fmt: skip
    assert exit_.value.code == 2 and not (tmp_path / "c.gif").exists()


# --- training: spacetime trains a LoRA, diffusers reads it back ------------------------------------


def train_lora(out, **overrides):
    """A few large steps of the LoRA task (EMA off, so the export is the last weights)."""
    from spacetime.train.config import make_config
    from spacetime.train.loop import train
    from spacetime.train.lora import LoRATask

    defaults = dict(task="lora", rank=4, alpha=8.0, steps=3, batch_size=2, lr=0.05, warmup=0,
                    ema_decay=0.0, checkpoint_every=2)  # fmt: skip
    cfg = make_config({**defaults, **overrides})
    return train(cfg, LoRATask(cfg), out, progress=False)


def test_a_trained_image_lora_gives_diffusers_image(sd, tmp_path):
    """An inverted-colours LoRA trained by spacetime on the tiny SD: diffusers' load_lora_weights
    reads the saved folder and gives spacetime's image."""
    from safetensors import safe_open

    root, *_, reference = sd
    model = train_lora(tmp_path / "run", base=str(root / "sd"), data="inverted",
                       targets=["to_q", "to_k", "to_v", "to_out.0", "conv1"])  # fmt: skip
    with safe_open(str(model / "pytorch_lora_weights.safetensors"), "pt") as f:
        keys = set(f.keys())
        config = json.loads(f.metadata()["lora_adapter_metadata"])
    assert all(k.startswith("unet.") and k.endswith((".lora_A.weight", ".lora_B.weight"))
               for k in keys)  # fmt: skip
    assert any(".resnets.0.conv1." in k for k in keys) and config["unet.r"] == 4
    assert config["unet.lora_alpha"] == 8.0 and len(config["unet.target_modules"]) * 2 == len(keys)

    ref = reference()
    base = diffusers_image(ref)
    ref.load_lora_weights(str(model))
    want = diffusers_image(ref)
    pipe = ImagePipeline.from_pretrained(root / "sd", precision="fp32")
    assert pipe.load_lora(model) == "model"  # a diffusers LoRA folder is named for the folder
    assert_same_pixels("trained image LoRA read by diffusers", pipe("a red circle", **IMAGE),
                       want, base)  # fmt: skip


def test_a_trained_motion_lora_gives_diffusers_clip(sd, animatediff, tmp_path):
    """A zoom-in motion LoRA trained on the tiny AnimateDiff: only motion-module layers, and
    diffusers' AnimateDiffPipeline reads it back to spacetime's clip."""
    from diffusers import AnimateDiffPipeline, MotionAdapter

    root = sd[0]
    motion = animatediff[0]
    model = train_lora(tmp_path / "run", base=str(root / "sd"), motion=str(motion), frames=4,
                       data="zoom-in")  # fmt: skip
    ref = AnimateDiffPipeline.from_pretrained(
        str(root / "sd"), motion_adapter=MotionAdapter.from_pretrained(str(motion))
    )
    ref.set_progress_bar_config(disable=True)

    def clip():
        out = ref(
            "a red circle", num_frames=6, num_inference_steps=2, guidance_scale=5.0, height=32,
            width=32, generator=torch.Generator("cpu").manual_seed(2), output_type="np",
        )  # fmt: skip
        return pixels(out.frames)

    base = clip()
    ref.load_lora_weights(str(model), adapter_name="zoom")
    want = clip()
    pipe = VideoPipeline.from_pretrained(root / "sd", precision="fp32", motion=motion)
    pipe.load_lora(model, name="zoom", motion=True)  # refused if any layer were spatial
    assert_same_pixels("trained motion LoRA read by diffusers", pipe("a red circle", **CLIP),
                       want, base)  # fmt: skip


def test_a_lora_run_resumes_to_the_same_weights(sd, tmp_path):
    from safetensors.torch import load_file

    root = sd[0]
    run = dict(base=str(root / "sd"), data="inverted", steps=4)
    straight = train_lora(tmp_path / "a", **run)
    train_lora(tmp_path / "b", **run, stop_after=2)  # stops with a checkpoint at step 2
    resumed = train_lora(tmp_path / "b", **run)
    a, b = (load_file(str(m / "pytorch_lora_weights.safetensors")) for m in (straight, resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert max(v.abs().max() for k, v in a.items() if "lora_B" in k) > 0.01  # it trained


def test_lora_targets_that_match_nothing_are_refused(sd, tmp_path):
    with pytest.raises(SpacetimeError, match="no layer of the model matches the LoRA targets qkv"):
        train_lora(tmp_path / "run", base=str(sd[0] / "sd"), data="inverted", targets=["qkv"])
    assert not (tmp_path / "run" / "model").exists()


def test_loras_are_found_by_file_folder_or_shipped_name(sd, tmp_path):
    from spacetime.formats.lora_files import find_lora, shipped_loras

    peft = sd[1]
    assert find_lora(peft) == peft and find_lora(peft.parent) == peft
    assert find_lora("zoom-in") == shipped_loras()["zoom-in"]
    with pytest.raises(SpacetimeError, match=r"LoRA zoom-out: no such file, nor a shipped LoRA "
                                             r"\(shipped: .*zoom-in"):  # fmt: skip
        find_lora("zoom-out")
    with pytest.raises(SpacetimeError, match="a folder without pytorch_lora_weights"):
        find_lora(tmp_path)
