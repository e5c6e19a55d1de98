"""Video: motion adapters load, a one-frame clip equals the image pipeline, media writers, CLI."""

import numpy as np
import pytest
import tiny
import torch
from PIL import Image

from spacetime.formats.load import load_components
from spacetime.formats.motion import load_motion_adapter, save_motion_adapter
from spacetime.media import write_video
from spacetime.models.inflate import InflationSpec, inflate
from spacetime.pipelines.image import load_pipeline
from spacetime.pipelines.video import VideoPipeline
from spacetime.video import main


@pytest.fixture(scope="module")
def model_and_motion(tmp_path_factory):
    root = tmp_path_factory.mktemp("video")
    tiny.sd_pipeline(root / "sd")
    unet = inflate(load_components(root / "sd").unet, InflationSpec(heads=2, max_frames=24))
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
    components.unet = inflate(components.unet, InflationSpec(heads=2))
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
    (long enough to be decoded in windows) come out as frame-by-frame decoding gives them."""
    from spacetime.formats.video_vae import save_video_vae
    from spacetime.models.video_vae import VideoVAE

    sd, motion, _ = model_and_motion
    save_video_vae(VideoVAE.from_image_vae(load_components(sd).vae), tmp_path / "vvae")
    kw = dict(frames=12, steps=2, height=32, width=32, seed=3)
    per_frame = VideoPipeline.from_pretrained(sd, precision="fp32", motion=motion)("a cat", **kw)
    video = VideoPipeline.from_pretrained(
        sd, precision="fp32", motion=motion, vae=tmp_path / "vvae"
    )
    assert type(video.components.vae) is VideoVAE
    clip = video("a cat", **kw)
    assert np.abs(clip.astype(int) - per_frame).max() <= 1
    # --vae-per-frame's spelling keeps the image VAE
    kept = VideoPipeline.from_pretrained(sd, precision="fp32", motion=motion, vae="per-frame")
    assert type(kept.components.vae) is not VideoVAE


@pytest.mark.parametrize("train_text", [False, True])
def test_motion_training_exports_a_loadable_adapter(tmp_path, train_text):
    """Two steps of the motion task on world clips; only motion modules (and, when asked, the text
    encoder, which then ships with the adapter and replaces the base one) change."""
    from spacetime.formats.load import default_model
    from spacetime.train.config import make_config
    from spacetime.train.loop import train
    from spacetime.train.tasks import MotionTask

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

    sd, _, _ = model_and_motion
    spec = InflationSpec(heads=8, max_frames=positions, mid_block_motion=mid)
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
    assert (inferred.max_frames, inferred.mid_block_motion) == (positions, mid)
    assert animatediff.version(inferred) == expected
    # Through the loader (AnimateDiff uses 8 heads; this tiny test model's channels allow it)
    save_file(original, str(tmp_path / "mm.safetensors"))
    loaded = load_motion_adapter(load_components(sd).unet, tmp_path / "mm.safetensors")
    assert loaded.inflation.heads == 8
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in motion.items())


def test_text_reading_motion_modules(model_and_motion, tmp_path):
    """motion_text: identity at init, the prompt reaches the motion modules, and the adapter
    records it so that it loads back as the same model."""
    from spacetime.formats.motion import TEXT_KEY
    from spacetime.formats.weights import read_json

    sd, _, _ = model_and_motion
    image = load_components(sd).unet
    unet = inflate(image, InflationSpec(heads=2, motion_text=True))
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


def test_space_time_attention_motion_adapter(model_and_motion, tmp_path):
    """Joint (t h w) attention with frame positions: identity at init, order-aware once trained
    (frames swapped give different outputs, which per-pixel-free attention without positions would
    only permute), and it rides in the motion adapter and loads back as the same model."""
    from spacetime.formats.motion import SPACE_TIME_KEY
    from spacetime.formats.weights import read_json

    sd, _, _ = model_and_motion
    image = load_components(sd).unet
    spec = InflationSpec(heads=2, view_attention=True, view_heads=2, view_frames=16)
    unet = inflate(image, spec)
    dim = image.config.cross_attention_dim
    x, t, ctx = torch.randn(1, 4, 5, 4, 4), torch.tensor([300]), torch.randn(1, 6, dim)
    with torch.no_grad():
        frames = torch.stack([image(x[:, :, i], t, ctx) for i in range(5)], 2)
        torch.testing.assert_close(unet(x, t, ctx), frames, atol=1e-5, rtol=1e-5)
        for block in [*unet.down_blocks, unet.mid_block, *unet.up_blocks]:
            tiny.randomize(block.view_attentions, 5, 0.05)
        out = unet(x, t, ctx)
        assert not torch.allclose(out, frames, atol=1e-4)
        swapped = unet(x[:, :, [1, 0, 2, 3, 4]], t, ctx)[:, :, [1, 0, 2, 3, 4]]
        assert not torch.allclose(swapped, out, atol=1e-5)  # frame positions break the symmetry
    save_motion_adapter(unet, tmp_path / "m")
    assert read_json(tmp_path / "m" / "config.json")[SPACE_TIME_KEY] == 16
    loaded = load_motion_adapter(image, tmp_path / "m")
    assert loaded.inflation.view_frames == 16
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, t, ctx), out)


def test_motion_modules_that_know_pixel_positions(model_and_motion, tmp_path):
    """motion_pixel_positions: identity at init; once trained, a clip that is the same at every
    pixel is no longer treated the same at every pixel; the adapter records it and loads back."""
    from spacetime.formats.motion import PIXEL_KEY
    from spacetime.formats.weights import read_json

    sd, _, _ = model_and_motion
    image = load_components(sd).unet
    unet = inflate(image, InflationSpec(heads=2, motion_text=True, motion_pixel_positions=True))
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
    from spacetime.train.tasks import MotionTask

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


def test_init_motion_fine_tunes_a_trained_package(tmp_path):
    """init_motion starts from a motion package (modules, inflation spec, text encoder) instead of
    fresh modules, and the fine-tuned package again carries its text encoder."""
    from spacetime.formats.load import default_model
    from spacetime.train.config import make_config
    from spacetime.train.tasks import MotionTask

    base, package = default_model("image"), default_model("motion")
    if package is None:
        pytest.skip("no default motion module shipped")
    with pytest.raises(ValueError, match="re-draw the words init_motion learned"):
        make_config(dict(task="motion", base=str(base), train_text=True, motion_word_std=2.0,
                         init_motion=str(package)))  # fmt: skip
    cfg = make_config(dict(task="motion", base=str(base), init_motion=str(package)))
    task = MotionTask(cfg)
    module = task.build()
    shipped = VideoPipeline.from_pretrained(base, precision="fp32", motion=package).components
    assert module.unet.inflation == shipped.unet.inflation
    got, want = module.unet.state_dict(), shipped.unet.state_dict()
    assert all(torch.equal(v, got[k]) for k, v in want.items())
    text = module.text_model.state_dict()
    assert all(torch.equal(v, text[k]) for k, v in shipped.text_encoder.model.state_dict().items())
    assert not any(p.requires_grad for p in module.text_model.parameters())  # train_text off
    task.export(module, tmp_path)
    assert (tmp_path / "motion" / "text_encoder").is_dir()


def test_text_preservation_lines_motion_captions_up_with_their_still_captions():
    """Dropping "moving <direction>" from a caption's tokens gives its still caption's tokens, and
    the preservation term is zero exactly when the trained encoder still reads them as the base
    one does (a fresh run, before its first step, on captions without motion words)."""
    from spacetime.formats.load import default_model
    from spacetime.train.config import make_config
    from spacetime.train.tasks import MotionTask, still_alignment

    base = default_model("image")
    with pytest.raises(ValueError, match="text_preservation needs train_text"):
        make_config(dict(task="motion", base=str(base), text_preservation=1.0))
    cfg = make_config(
        dict(task="motion", base=str(base), train_text=True, text_preservation=1.0, batch_size=2,
             frames=4, caption_dropout=0.0)
    )  # fmt: skip
    task = MotionTask(cfg)
    tokenize = task.base.text_encoder.tokenize
    captions = ["a red circle moving left on a blue background", "a cube", ""]
    ids = tokenize(captions)
    still_ids, keep = still_alignment(tokenize, captions, ids)
    assert keep.sum(1).tolist() == [ids.shape[1] - 2] * 3
    for row in range(3):
        assert ids[row][keep[row]].tolist() == still_ids[row][: ids.shape[1] - 2].tolist()
    assert still_ids[0].tolist() == tokenize(["a red circle on a blue background"])[0].tolist()

    loss = task.build()
    batch = task.batch(0, 0, 1)
    assert set(batch) >= {"still_ids", "keep"}
    x0, t, noise = batch["x0"], batch["t"], batch["noise"]
    loss.preservation = 0.0
    plain = loss(batch["ids"], x0, t, noise, batch["still_ids"], batch["keep"])
    loss.preservation = 1.0
    with_motion = loss(batch["ids"], x0, t, noise, batch["still_ids"], batch["keep"])
    assert with_motion > plain  # states after the motion words differ from the still caption's
    ids = tokenize(["a red circle", "a cube"])
    still_ids, keep = still_alignment(tokenize, ["a red circle", "a cube"], ids)
    torch.testing.assert_close(loss(ids, x0, t, noise, still_ids, keep), loss(ids, x0, t, noise))


def test_motion_modules_trained_on_shared_noise_sample_from_it(
    model_and_motion, tmp_path, monkeypatch
):
    """A package trained on PYoCo mixed noise records its share; the pipeline draws every clip's
    starting noise (FreeInit restarts too) with that share, and a fine-tune inherits it."""
    import spacetime.sampling
    from spacetime.formats.motion import SHARED_NOISE_KEY
    from spacetime.formats.weights import read_json
    from spacetime.free_init import FreeInit
    from spacetime.train.config import make_config
    from spacetime.train.tasks import MotionTask

    sd, _, _ = model_and_motion
    unet = inflate(load_components(sd).unet, InflationSpec(heads=2, shared_noise=0.5))
    save_motion_adapter(unet, tmp_path / "m")
    assert read_json(tmp_path / "m" / "config.json")[SHARED_NOISE_KEY] == 0.5
    assert (
        load_motion_adapter(load_components(sd).unet, tmp_path / "m").inflation.shared_noise == 0.5
    )

    asked = []
    real = spacetime.sampling.clip_noise

    def recording(shape, shared=0.0, generator=None):
        asked.append((len(shape), shared))
        return real(shape, shared, generator)

    monkeypatch.setattr(spacetime.sampling, "clip_noise", recording)
    pipe = VideoPipeline.from_pretrained(sd, precision="fp32", motion=tmp_path / "m")
    kw = dict(steps=2, seed=0, height=32, width=32)
    pipe("a red circle", frames=3, free_init=FreeInit(iterations=2), **kw)
    assert asked == [(5, 0.5), (5, 0.5)]

    package = dict(task="motion", base=str(sd), init_motion=str(tmp_path / "m"))
    assert MotionTask(make_config(package)).shared_noise == 0.5
    assert MotionTask(make_config({**package, "shared_noise": 0.0})).shared_noise == 0.0
    assert MotionTask(make_config({**package, "init_motion": ""})).shared_noise == 0.0


@pytest.mark.parametrize("shared", [0.0, 0.9])
def test_motion_batches_draw_the_configured_shared_noise(model_and_motion, shared):
    """The motion task's training noise shares `shared_noise` of its variance across frames."""
    from spacetime.train.config import make_config
    from spacetime.train.tasks import MotionTask

    sd, _, _ = model_and_motion
    cfg = dict(task="motion", base=str(sd), batch_size=8, frames=6, shared_noise=shared)
    noise = MotionTask(make_config(cfg)).batch(0, 0, 1)["noise"]  # (b, c, t, h, w)
    frames = noise.permute(2, 0, 1, 3, 4).reshape(6, -1)
    corr = torch.corrcoef(frames)[~torch.eye(6, dtype=torch.bool)]
    assert torch.allclose(corr, torch.tensor(shared), atol=0.1)


def test_colour_slips_recolour_one_run_of_frames():
    """A slipped clip equals the clip except for one run of 1..max_run frames, in which the
    object has one other colour, never the background's."""
    from spacetime import world
    from spacetime.train.tasks import colour_slips

    clips = world.sample_clips(np.random.default_rng(0), 24, "train", 6)
    frames, mask = colour_slips(clips, np.random.default_rng(1), 3)
    clean = world.render_clips(clips)
    changed = (frames != clean).any(axis=(2, 3, 4))
    np.testing.assert_array_equal(changed, mask)
    for clip, slipped, run in zip(clips, frames, mask, strict=True):
        idx = np.flatnonzero(run)
        assert 1 <= len(idx) <= 3 and np.all(np.diff(idx) == 1)  # one contiguous run
        # the object's centre pixel in each slipped frame shows one colour of the palette
        centres = clip.centres()
        colours = {tuple(slipped[k, int(centres[k][1]), int(centres[k][0])].tolist()) for k in idx}
        assert len(colours) == 1
        new = colours.pop()
        assert new not in (world.COLOURS[clip.colour], world.BACKGROUNDS.get(clip.background))
        assert new in world.COLOURS.values()
    assert mask.sum(1).max() > 1  # runs longer than one frame do occur
    # nearest=1: the palette colour closest to the object's in RGB that is not the background
    frames, mask = colour_slips(clips, np.random.default_rng(1), 3, nearest=1)
    for clip, slipped, run in zip(clips, frames, mask, strict=True):
        k = np.flatnonzero(run)[0]
        x, y = clip.centres()[k]
        rgb = np.array(world.COLOURS[clip.colour])
        others = [c for c in world.COLOURS if c not in (clip.colour, clip.background)]
        near = min(others, key=lambda c: np.linalg.norm(np.array(world.COLOURS[c]) - rgb))
        assert tuple(slipped[k, int(y), int(x)].tolist()) == world.COLOURS[near]


def test_repair_batches_noise_a_slipped_clip_and_keep_the_rest(model_and_motion):
    """With repair on, a repair_fraction share of clips is noised from latents that differ from
    x0 in one run of frames, at t in [repair_min, repair_max); the captions, x0 and noise are the
    batch the run would draw without repair, and the loss runs on it."""
    from spacetime.train.config import make_config
    from spacetime.train.tasks import MotionTask

    sd, _, _ = model_and_motion
    base = dict(task="motion", base=str(sd), batch_size=8, frames=6)
    plain = MotionTask(make_config(base)).batch(0, 0, 1)
    assert "seen" not in plain
    task = MotionTask(make_config({**base, "repair_fraction": 0.5, "repair_run": 2,
                                   "repair_min": 200, "repair_max": 300}))  # fmt: skip
    batch = task.batch(0, 0, 1)
    for key in ("ids", "x0", "noise"):
        assert torch.equal(batch[key], plain[key])
    slipped = (batch["seen"] != batch["x0"]).flatten(3).any(-1).any(1)  # (b, t)
    repaired = slipped.any(1)
    assert 0 < repaired.sum() < 8
    assert ((batch["t"] >= 200) & (batch["t"] < 300))[repaired].all()
    assert torch.equal(batch["t"][~repaired], plain["t"][~repaired])
    assert slipped.sum(1).max() <= 2
    loss = task.build()
    assert torch.isfinite(loss(batch["ids"], batch["x0"], batch["t"], batch["noise"],
                               seen=batch["seen"]))  # fmt: skip


def test_repair_captioned_only_leaves_uncaptioned_clips_alone(model_and_motion):
    """With repair_captioned_only, clips whose caption was dropped (the unconditional model) are
    never slipped, so the repair sits in what the caption adds, which guidance amplifies."""
    from spacetime.train.config import make_config
    from spacetime.train.tasks import MotionTask

    sd, _, _ = model_and_motion
    cfg = dict(task="motion", base=str(sd), batch_size=16, frames=6, caption_dropout=0.5,
               repair_fraction=1.0, repair_run=2)  # fmt: skip
    for only in (False, True):
        task = MotionTask(make_config({**cfg, "repair_captioned_only": only}))
        batch = task.batch(0, 0, 1)
        empty = (batch["ids"] == task.base.text_encoder.tokenize([""])).all(1)
        slipped = (batch["seen"] != batch["x0"]).flatten(1).any(1)
        assert 0 < empty.sum() < 16
        assert slipped[~empty].all()
        assert not slipped[empty].any() if only else slipped[empty].all()
