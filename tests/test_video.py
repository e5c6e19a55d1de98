"""Video: motion adapters load, a one-frame clip equals the image pipeline, media writers, CLI."""

import numpy as np
import pytest
import tiny
import torch
from PIL import Image

from spacetime.formats.load import load_components
from spacetime.formats.motion import load_motion_adapter, save_motion_adapter
from spacetime.media import write_video
from spacetime.models.inflate import AnimateDiff, inflate
from spacetime.pipelines.image import load_pipeline
from spacetime.pipelines.video import VideoPipeline
from spacetime.video import main


@pytest.fixture(scope="module")
def model_and_motion(tmp_path_factory):
    root = tmp_path_factory.mktemp("video")
    tiny.sd_pipeline(root / "sd")
    unet = inflate(load_components(root / "sd").unet, AnimateDiff(heads=2, max_frames=24))
    tiny.randomize(unet, 3, 0.02)  # motion modules no longer identity
    save_motion_adapter(unet, root / "motion")
    return root / "sd", root / "motion", unet


def test_motion_adapter_round_trips(model_and_motion):
    sd, motion, unet = model_and_motion
    loaded = load_motion_adapter(load_components(sd).unet, motion)
    mine = {k: v for k, v in unet.state_dict().items() if ".motion_modules." in k}
    theirs = loaded.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in mine.items())


def test_diffusers_reads_our_motion_adapter(model_and_motion):
    from diffusers import MotionAdapter

    _, motion, unet = model_and_motion
    adapter = MotionAdapter.from_pretrained(str(motion))
    ours = {k: v for k, v in unet.state_dict().items() if ".motion_modules." in k}
    theirs = {k: v for k, v in adapter.state_dict().items() if not k.endswith(".pe")}
    assert ours.keys() == theirs.keys()


def test_one_frame_clip_equals_the_image_pipeline_at_init(model_and_motion, tmp_path):
    sd, _, _ = model_and_motion
    components = load_components(sd)
    components.unet = inflate(components.unet, AnimateDiff(heads=2))
    video = VideoPipeline(components, precision="fp32")
    image = load_pipeline(sd, precision="fp32")
    kw = dict(steps=3, seed=4, height=32, width=32)
    clip = video("a red circle", frames=1, **kw)
    assert clip.shape == (1, 1, 32, 32, 3)
    assert np.array_equal(clip[:, 0], image("a red circle", **kw))


def test_clip_generation_has_frames(model_and_motion):
    sd, motion, _ = model_and_motion
    pipe = VideoPipeline.from_pretrained(sd, precision="fp32", motion=motion)
    clip = pipe("a red circle", frames=5, steps=2, seed=0, height=32, width=32)
    assert clip.shape == (1, 5, 32, 32, 3) and clip.dtype == np.uint8


def count_frames(path):
    """(frames, width, height) of a written clip."""
    if path.suffix == ".mp4":
        import av

        with av.open(str(path)) as container:
            decoded = list(container.decode(video=0))
        return len(decoded), decoded[0].width, decoded[0].height
    with Image.open(path) as im:
        return im.n_frames, im.width, im.height


@pytest.mark.parametrize("name", ["clip.mp4", "clip.gif", "clip.webp", "frames"])
def test_media_writers(tmp_path, name):
    frames = np.random.default_rng(0).integers(0, 255, (6, 32, 48, 3), dtype=np.uint8)
    out = tmp_path / name
    write_video(out, frames, fps=8)
    if name == "frames":
        assert sorted(p.name for p in out.iterdir())[:2] == ["frame_0000.png", "frame_0001.png"]
        assert np.array_equal(np.asarray(Image.open(out / "frame_0003.png")), frames[3])
    else:
        assert count_frames(out) == (6, 48, 32)
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary left behind


def test_mp4_is_h264_yuv420p(tmp_path):
    import av

    write_video(tmp_path / "c.mp4", np.zeros((4, 30, 30, 3), np.uint8), fps=8)  # odd-safe size
    with av.open(str(tmp_path / "c.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--frames", "0"], "frames must be >= 1"),
        (["--out", "clip.avi"], "extension must be one of"),
        (["--fps", "0"], "fps must be >= 1"),
        (["--out", "/proc/nope/clip.mp4"], "cannot write"),
        (["--free-init", "-1"], "free_init must be >= 0"),
        (["--free-init-fast"], "--free-init-fast needs --free-init N"),
    ],
)
def test_cli_bad_input_is_one_line_and_writes_nothing(
    model_and_motion, tmp_path, capsys, monkeypatch, flags, message
):
    sd, motion, _ = model_and_motion
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["a red circle", "--model", str(sd), "--motion", str(motion), *flags])
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_cli_writes_a_gif(model_and_motion, tmp_path, capsys):
    sd, motion, _ = model_and_motion
    out = tmp_path / "c.gif"
    main(["a red circle", "--model", str(sd), "--motion", str(motion), "--frames", "4",
          "--steps", "2", "--height", "32", "--width", "32", "--out", str(out)])  # fmt: skip
    assert "wrote" in capsys.readouterr().out and out.is_file()


def test_free_init_is_a_pipeline_default_that_calls_override(model_and_motion):
    from spacetime.free_init import FreeInit

    sd, motion, _ = model_and_motion
    pipe = VideoPipeline.from_pretrained(sd, precision="fp32", motion=motion)
    assert pipe.free_init is None  # models given by path sample as diffusers does by default
    kw = dict(frames=6, steps=3, height=32, width=32, seed=4)
    calls = []
    plain = pipe("a red circle", **kw)
    twice = pipe("a red circle", free_init=FreeInit(2), progress=lambda *c: calls.append(c), **kw)
    assert calls == [(k, 6) for k in range(1, 7)]  # one bar over both passes
    assert np.abs(plain.astype(int) - twice.astype(int)).max() > 10
    pipe.enable_free_init(iterations=2)
    np.testing.assert_array_equal(pipe("a red circle", **kw), twice)
    np.testing.assert_array_equal(pipe("a red circle", free_init=None, **kw), plain)
    pipe.disable_free_init()
    np.testing.assert_array_equal(pipe("a red circle", **kw), plain)
    one = []  # an image has no frames to mix: one pass
    pipe(
        "a red circle",
        **{**kw, "frames": 1},
        free_init=FreeInit(2),
        progress=lambda *c: one.append(c),
    )
    assert one == [(k, 3) for k in range(1, 4)]


def test_on_step_counts_steps_across_free_init_passes(model_and_motion):
    from spacetime.free_init import FreeInit

    sd, motion, _ = model_and_motion
    pipe = VideoPipeline.from_pretrained(sd, precision="fp32", motion=motion)
    req = pipe.request(
        "a red circle", frames=4, steps=3, height=32, width=32, seed=2, scheduler="dpm++",
        free_init=FreeInit(2),
    )  # fmt: skip
    seen = []
    latents = pipe.sample_latents(req, on_step=lambda k, _t, x0: seen.append((k, x0)))
    assert [k for k, _ in seen] == list(range(6))
    assert seen[0][1].shape == latents.shape == (1, 4, 4, 8, 8)  # (b, c, t, h, w)
    torch.testing.assert_close(seen[-1][1], latents)  # the last pass ends on its last estimate


def test_cli_needs_a_motion_module_for_an_image_model(model_and_motion, tmp_path, capsys):
    sd, _, _ = model_and_motion
    with pytest.raises(SystemExit) as e:
        main(["a red circle", "--model", str(sd), "--out", str(tmp_path / "c.mp4")])
    assert e.value.code == 2 and "give --motion" in capsys.readouterr().err
    assert not (tmp_path / "c.mp4").exists()


def test_cli_vae_flags_exclude_each_other(model_and_motion, tmp_path, capsys):
    sd, motion, _ = model_and_motion
    with pytest.raises(SystemExit) as e:
        main(["a red circle", "--model", str(sd), "--motion", str(motion), "--vae", str(sd),
              "--vae-per-frame", "--out", str(tmp_path / "c.gif")])  # fmt: skip
    assert e.value.code == 2 and "exclude each other" in capsys.readouterr().err


def test_a_fresh_temporal_decoder_decodes_as_the_image_vae(model_and_motion, tmp_path):
    """A video VAE grown from the model's VAE is the identity on its temporal paths, so clips
    (long enough to be decoded in the windows its config records) come out as frame-by-frame
    decoding gives them."""
    import dataclasses

    from spacetime.formats.video_vae import save_video_vae
    from spacetime.models.video_vae import VideoVAE

    sd, motion, _ = model_and_motion
    fresh = VideoVAE.from_image_vae(load_components(sd).vae)
    fresh.config = dataclasses.replace(fresh.config, decode_window=8)
    save_video_vae(fresh, tmp_path / "vvae")
    kw = dict(frames=12, steps=2, height=32, width=32, seed=3)
    per_frame = VideoPipeline.from_pretrained(sd, precision="fp32", motion=motion)("a cat", **kw)
    video = VideoPipeline.from_pretrained(
        sd, precision="fp32", motion=motion, vae=tmp_path / "vvae"
    )
    assert type(video.components.vae) is VideoVAE
    assert video.components.vae.config.decode_window == 8
    windows, decode = [], video.components.vae.decode
    video.components.vae.decode = lambda z, **args: windows.append(args) or decode(z, **args)
    clip = video("a cat", **kw)
    assert windows == [{"chunk_frames": 4, "context_frames": 2}]  # 12 frames: 8-frame windows
    assert np.abs(clip.astype(int) - per_frame).max() <= 1
    video("a cat", **{**kw, "frames": 8})
    assert windows[-1] == {}  # a clip within the window decodes whole
    # --vae-per-frame's spelling keeps the image VAE
    kept = VideoPipeline.from_pretrained(sd, precision="fp32", motion=motion, vae="per-frame")
    assert type(kept.components.vae) is not VideoVAE


def test_a_motion_package_records_the_free_init_it_samples_with(model_and_motion, tmp_path):
    """A motion package's config.json may record a FreeInit (spacetime_free_init): a pipeline
    loading that package samples with it by default, wherever the folder lives; a package
    without it samples in one pass; a bad record is a CheckpointError naming the key."""
    import dataclasses
    import json

    from spacetime.errors import CheckpointError
    from spacetime.formats.motion import FREE_INIT_KEY, motion_free_init
    from spacetime.formats.weights import read_json
    from spacetime.free_init import FreeInit

    sd, motion, unet = model_and_motion
    save_motion_adapter(unet, tmp_path / "m", free_init=FreeInit(iterations=2))
    config = read_json(tmp_path / "m" / "config.json")
    assert config[FREE_INIT_KEY] == dataclasses.asdict(FreeInit(iterations=2))
    assert motion_free_init(tmp_path / "m") == FreeInit(iterations=2)
    pipe = VideoPipeline.from_pretrained(sd, precision="fp32", motion=tmp_path / "m")
    assert pipe.free_init == FreeInit(iterations=2)
    # the same modules saved without it: one pass, as diffusers samples by default
    assert FREE_INIT_KEY not in read_json(motion / "config.json")
    assert motion_free_init(motion) is None
    plain = VideoPipeline.from_pretrained(sd, precision="fp32", motion=motion)
    assert plain.free_init is None
    kw = dict(frames=4, steps=2, height=32, width=32, seed=1)
    np.testing.assert_array_equal(
        pipe("a red circle", **kw), plain("a red circle", free_init=FreeInit(iterations=2), **kw)
    )
    for bad, message in [({"iterations": 0}, "iterations must be >= 1"), ({"iters": 2}, "iters")]:
        (tmp_path / "m" / "config.json").write_text(json.dumps({**config, FREE_INIT_KEY: bad}))
        with pytest.raises(CheckpointError, match=f"{FREE_INIT_KEY}=.*{message}"):
            VideoPipeline.from_pretrained(sd, precision="fp32", motion=tmp_path / "m")


def test_the_shipped_motion_package_samples_with_free_init_wherever_it_lives(tmp_path):
    """The world motion module's config.json records FreeInit(iterations=3), its model card's
    mode: the default pipeline samples with it, and so does a copy of the package elsewhere."""
    import shutil

    from spacetime.formats.load import default_model
    from spacetime.formats.motion import motion_free_init
    from spacetime.free_init import FreeInit

    base, package = default_model("image"), default_model("motion")
    if package is None:
        pytest.skip("no default motion module shipped")
    assert motion_free_init(package) == FreeInit(iterations=3)
    assert VideoPipeline.from_pretrained(precision="fp32").free_init == FreeInit(iterations=3)
    shutil.copytree(package, tmp_path / "copy")
    pipe = VideoPipeline.from_pretrained(base, precision="fp32", motion=tmp_path / "copy")
    assert pipe.free_init == FreeInit(iterations=3)


@pytest.mark.parametrize("train_text", [False, True])
def test_motion_training_exports_a_loadable_adapter(tmp_path, train_text):
    """Two steps of the motion task on world clips; only motion modules (and, when asked, the text
    encoder, which then ships with the adapter and replaces the base one) change."""
    from spacetime.formats.load import default_model
    from spacetime.train.config import make_config
    from spacetime.train.loop import train
    from spacetime.train.motion import MotionTask

    base = default_model("image")
    if base is None:
        pytest.skip("no default image model shipped")
    cfg = make_config(dict(task="motion", base=str(base), steps=2, batch_size=2, frames=4,
                           checkpoint_every=2, warmup=1, train_text=train_text))  # fmt: skip
    task = MotionTask(cfg)
    before = {k: v.clone() for k, v in task.base.unet.state_dict().items()}
    out = train(cfg, task, tmp_path / "run", progress=False)
    video = load_motion_adapter(load_components(base).unet, out / "motion")
    after = video.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())  # spatial weights frozen
    assert any(".motion_modules." in k for k in after)
    assert (out / "motion" / "text_encoder").is_dir() == train_text
    pipe = VideoPipeline.from_pretrained(base, precision="fp32", motion=out / "motion")
    text = pipe.components.text_encoder.model.state_dict()
    base_text = load_components(base).text_encoder.model.state_dict()
    assert train_text != all(torch.equal(v, text[k]) for k, v in base_text.items())


@pytest.mark.parametrize("mid, positions, expected", [(True, 32, "v2"), (False, 24, "v1")])
def test_original_animatediff_files_load_like_the_adapter(
    model_and_motion, tmp_path, mid, positions, expected
):
    from safetensors.torch import save_file

    from spacetime.formats import animatediff
    from spacetime.formats.motion import motion_free_init

    sd, _, _ = model_and_motion
    spec = AnimateDiff(heads=8, max_frames=positions, mid_block=mid)
    unet = tiny.randomize(inflate(load_components(sd).unet, spec), 7, 0.02)
    motion = {k: v for k, v in unet.state_dict().items() if ".motion_modules." in k}
    original = animatediff.diffusers_to_original(motion, spec)
    assert any(
        k.endswith("temporal_transformer.transformer_blocks.0.attention_blocks.1.pos_encoder.pe")
        for k in original
    )
    assert any(".norms.0." in k for k in original) and not any(".attn1." in k for k in original)
    back, inferred = animatediff.original_to_diffusers(original)
    assert back.keys() == motion.keys() and all(torch.equal(back[k], motion[k]) for k in motion)
    assert inferred == spec
    assert animatediff.version(inferred) == expected
    # Through the loader (AnimateDiff uses 8 heads; this tiny test model's channels allow it)
    save_file(original, str(tmp_path / "mm.safetensors"))
    loaded = load_motion_adapter(load_components(sd).unet, tmp_path / "mm.safetensors")
    assert loaded.inflation == spec and loaded.frame_positions == positions
    assert motion_free_init(tmp_path / "mm.safetensors") is None  # no config to record one
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in motion.items())


def test_text_reading_motion_modules(model_and_motion, tmp_path):
    """reads_text: identity at init, the prompt reaches the motion modules, and the adapter
    records it so that it loads back as the same model."""
    from spacetime.formats.motion import TEXT_KEY
    from spacetime.formats.weights import read_json

    sd, _, _ = model_and_motion
    image = load_components(sd).unet
    unet = inflate(image, AnimateDiff(heads=2, reads_text=True))
    dim = image.config.cross_attention_dim
    x, t = torch.randn(1, 4, 5, 4, 4), torch.tensor([300])
    ctx, other = torch.randn(1, 6, dim), torch.randn(1, 6, dim)
    with torch.no_grad():
        frames = torch.stack([image(x[:, :, i], t, ctx) for i in range(5)], 2)
        torch.testing.assert_close(unet(x, t, ctx), frames, atol=1e-5, rtol=1e-5)
        for block in [*unet.down_blocks, unet.mid_block, *unet.up_blocks]:
            tiny.randomize(block.motion_modules, 5, 0.05)
        # Same spatial path, different text only in what the motion modules read.
        assert not torch.allclose(unet(x, t, ctx), unet(x, t, other))
    save_motion_adapter(unet, tmp_path / "m")
    assert read_json(tmp_path / "m" / "config.json")[TEXT_KEY] is True
    loaded = load_motion_adapter(image, tmp_path / "m")
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, t, ctx), unet(x, t, ctx))


def test_motion_modules_that_know_pixel_positions(model_and_motion, tmp_path):
    """pixel_positions: identity at init; once trained, a clip that is the same at every
    pixel is no longer treated the same at every pixel; the adapter records it and loads back."""
    from spacetime.formats.motion import PIXEL_KEY
    from spacetime.formats.weights import read_json

    sd, _, _ = model_and_motion
    image = load_components(sd).unet
    unet = inflate(image, AnimateDiff(heads=2, reads_text=True, pixel_positions=True))
    dim = image.config.cross_attention_dim
    x, t, ctx = torch.randn(1, 4, 5, 4, 4), torch.tensor([300]), torch.randn(1, 6, dim)
    with torch.no_grad():
        frames = torch.stack([image(x[:, :, i], t, ctx) for i in range(5)], 2)
        torch.testing.assert_close(unet(x, t, ctx), frames, atol=1e-5, rtol=1e-5)
        module = unet.down_blocks[0].motion_modules[0]
        tiny.randomize(module, 5, 0.05)
        flat = torch.randn(2 * 3, module.norm.num_channels, 1, 1).expand(-1, -1, 6, 6)
        out = module(flat.contiguous(), 3, ctx.expand(6, -1, -1))
        assert (out - out[..., :1, :1]).abs().amax() > 1e-3  # pixels told apart
        for block in [*unet.down_blocks, unet.mid_block, *unet.up_blocks]:
            tiny.randomize(block.motion_modules, 6, 0.05)
        want = unet(x, t, ctx)
    save_motion_adapter(unet, tmp_path / "m")
    assert read_json(tmp_path / "m" / "config.json")[PIXEL_KEY] is True
    loaded = load_motion_adapter(image, tmp_path / "m")
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, t, ctx), want)


def test_written_files_get_ordinary_permissions(tmp_path):
    """Atomic writes go through a private temporary file; the result must still be readable as
    any new file is (0666 less the umask), not left 0600."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        write_video(tmp_path / "c.gif", np.zeros((2, 8, 8, 3), np.uint8), fps=8)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "c.gif").stat().st_mode) == 0o644


def test_motion_word_std_gives_each_direction_its_own_text_state():
    """The image stage leaves the direction words' embeddings near-identical; motion_word_std
    re-draws them (and only them), so "left" and "right" become as far apart as two colours."""
    from spacetime.formats.load import default_model
    from spacetime.train.config import make_config
    from spacetime.train.motion import MotionTask

    base = default_model("image")
    if base is None:
        pytest.skip("no default image model shipped")
    with pytest.raises(ValueError, match="motion_word_std needs train_text"):
        make_config(dict(task="motion", base=str(base), motion_word_std=2.0))
    cfg = make_config(dict(task="motion", base=str(base), train_text=True, motion_word_std=2.0))
    task = MotionTask(cfg)
    before = task.base.text_encoder.model.embeddings.token_embedding.weight.clone()
    text = task.build().text_model
    after = text.embeddings.token_embedding.weight
    ids = task.base.text_encoder.tokenize(["moving left right up down"])[0][1:6]
    changed = (after != before).any(1).nonzero().flatten()
    assert changed.tolist() == sorted(ids.tolist())
    assert after[ids].norm(dim=1).min() > 10 * before[ids].norm(dim=1).max()
    with torch.no_grad():
        left, right, blue = (
            text(task.base.text_encoder.tokenize([p]))
            for p in ("a red square moving left", "a red square moving right",
                      "a blue square moving left")
        )  # fmt: skip
    assert (left - right).norm() > 0.5 * (left - blue).norm()
