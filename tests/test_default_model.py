"""The embedded default model: used without --model, reads its own prompts, warns on others."""

import numpy as np
import pytest

from spacetime.eval import read_image
from spacetime.formats.load import default_model
from spacetime.image import main
from spacetime.world import parse_caption

pytestmark = pytest.mark.skipif(default_model("image") is None, reason="no default model shipped")


def test_default_model_draws_what_it_is_asked(tmp_path, capsys):
    from spacetime.pipelines.image import load_pipeline

    pipe = load_pipeline(default_model("image"))
    prompts = ["a red circle", "a blue square on a yellow background", "a white triangle"]
    images = pipe(prompts, steps=20, scheduler="dpm++", guidance=5.0, seed=0)
    assert images.shape == (3, 64, 64, 3)
    for prompt, image in zip(prompts, images, strict=True):
        want, got = parse_caption(prompt), read_image(image)
        assert (got.colour, got.shape, got.background) == (want.colour, want.shape, want.background)


def test_cli_without_model_uses_the_default_and_warns_on_unknown_words(tmp_path, capsys):
    out = tmp_path / "z.png"
    main(["a red zebra", "--steps", "2", "--out", str(out)])
    err = capsys.readouterr().err
    assert out.is_file()
    assert "warning: the model does not know 'zebra'" in err and "circle" in err


def test_default_model_is_small_and_documented():
    folder = default_model("image")
    total = sum(p.stat().st_size for p in folder.rglob("*.safetensors"))
    assert total <= 25e6
    card = (folder / "MODEL_CARD.md").read_text()
    for needle in ("python -m spacetime.train", "Seed", "PSNR", "Wall time"):
        assert needle in card


def test_shipped_video_vae_flickers_less_than_frame_by_frame():
    """The shipped temporal decoder, decoding as the video pipeline does, on held-out clips:
    at least 30% less flicker than the image VAE frame by frame, and no worse PSNR."""
    import torch

    from spacetime.eval.video_vae import evaluate_decoder, heldout_clips
    from spacetime.formats.load import load_components
    from spacetime.formats.video_vae import load_video_vae

    folder = default_model("video-vae")
    assert folder is not None and (folder / "MODEL_CARD.md").is_file()
    assert sum(p.stat().st_size for p in folder.rglob("*.safetensors")) <= 10e6
    image_vae = load_components(default_model("image")).vae.float().eval()
    video_vae = load_video_vae(folder).float().eval()
    # the decoder's own config says how it decodes a 12-frame clip: 8-frame windows keeping 4
    assert video_vae.config.decode_window == 8
    windows = video_vae.config.decode_windows(12)
    assert windows == {"chunk_frames": 4, "context_frames": 2}
    clips = heldout_clips(6, 12, seed=1)
    encode = lambda x: image_vae.encode(x, sample=False)  # noqa: E731
    with torch.no_grad():
        per_frame = evaluate_decoder(image_vae.decode, encode, clips)
        temporal = evaluate_decoder(lambda z: video_vae.decode(z, **windows), encode, clips)
    assert temporal["flicker_levels"] <= 0.7 * per_frame["flicker_levels"]
    assert temporal["psnr_db"] >= per_frame["psnr_db"]


def test_shipped_multiview_model_draws_the_prompt_from_every_side():
    """The shipped multi-view model: ≤ 15 MB, documented, and a generated 4-view set of a trained
    colour × solid reads back as that prompt through the 3D oracle."""
    from spacetime.eval.oracle3d import read_view_set
    from spacetime.pipelines.multiview import MultiViewPipeline, default_cameras

    folder = default_model("multiview")
    assert folder is not None and "Wall time" in (folder / "MODEL_CARD.md").read_text()
    assert sum(p.stat().st_size for p in folder.rglob("*.safetensors")) <= 15e6
    pipe = MultiViewPipeline.from_pretrained(folder, precision="fp32")
    views = pipe("a red cube", steps=20, scheduler="dpm++", seed=0)[0]
    reading = read_view_set(views, default_cameras())
    assert (reading.colour, reading.shape) == ("red", "cube")


def test_shipped_motion_module_moves_held_out_prompts_their_way():
    """The shipped motion module (≤ 15 MB, documented, used by default): held-out colour × shape ×
    direction prompts, one per direction, move the way the prompt says with colour and shape
    held."""
    from spacetime.eval.oracle import read_clips
    from spacetime.eval.text_to_video import heldout_clip_prompts
    from spacetime.free_init import FreeInit
    from spacetime.pipelines.video import VideoPipeline
    from spacetime.world import parse_clip_caption

    folder = default_model("motion")
    assert folder is not None and "Wall time" in (folder / "MODEL_CARD.md").read_text()
    assert sum(p.stat().st_size for p in folder.rglob("*.safetensors")) <= 15e6
    held_out = heldout_clip_prompts()
    prompts = [
        next(p for p in held_out if f"moving {d} " in p) for d in ("left", "right", "up", "down")
    ]
    kw = dict(frames=16, steps=20, scheduler="dpm++", guidance=7.5, seed=0)
    pipe = VideoPipeline.from_pretrained(precision="fp32")  # the world model: motion by default
    assert any(".motion_modules." in k for k in pipe.components.unet.state_dict())
    # and FreeInit, as its model card measures it, read from the package's own config.json
    assert pipe.free_init == FreeInit(iterations=3)
    clips = [pipe(p, **kw)[0] for p in prompts]
    for prompt, reading in zip(prompts, read_clips(np.stack(clips)), strict=True):
        assert reading.direction == parse_clip_caption(prompt).direction, prompt
        assert reading.colour_constant and reading.shape_constant, prompt
