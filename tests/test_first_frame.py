"""A clip from a first frame: per-frame timesteps in the U-Net, the first frame kept exactly, the
training loss that only the other frames count in, and the checks."""

import numpy as np
import pytest
import tiny
import torch

from spacetime.errors import ArgumentValueError
from spacetime.formats.load import load_components
from spacetime.formats.motion import load_motion_adapter
from spacetime.pipelines.video import VideoPipeline


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tiny.animatediff(tmp_path_factory.mktemp("first"))


def test_per_frame_timesteps_equal_one_timestep_when_equal_and_differ_otherwise(models):
    unet = load_motion_adapter(load_components(models / "sd").unet, models / "motion")
    g = torch.Generator().manual_seed(0)
    x, context = torch.randn(2, 4, 5, 8, 8, generator=g), torch.randn(2, 7, 32, generator=g)
    same = unet(x, torch.tensor([300, 700]), context)
    per_frame = unet(x, torch.tensor([[300] * 5, [700] * 5]), context)
    torch.testing.assert_close(per_frame, same, rtol=1e-5, atol=1e-5)
    mixed = unet(x, torch.tensor([[0, 300, 300, 300, 300], [0] + [700] * 4]), context)
    assert (mixed[:, :, 0] - same[:, :, 0]).abs().max() > 1e-3
    with pytest.raises(ValueError, match=r"per-frame timesteps must be \(b, t\) = \(2, 5\)"):
        unet(x, torch.zeros(2, 4), context)


def test_the_clip_starts_from_the_image(models):
    pipe = VideoPipeline.from_pretrained(models / "sd", precision="fp32", motion=models / "motion")
    image = (np.random.default_rng(1).uniform(size=(32, 32, 3)) * 255).astype(np.uint8)
    clip = pipe("a red circle", first_frame=image, frames=5, steps=3, seed=0)[0]
    plain = pipe("a red circle", frames=5, height=32, width=32, steps=3, seed=0)[0]
    c = pipe.components
    x = torch.from_numpy(image).float().permute(2, 0, 1)[None] / 127.5 - 1
    roundtrip = ((c.vae.decode(c.vae.encode(x, sample=False))[0] + 1) * 127.5).clamp(0, 255)
    roundtrip = roundtrip.round().byte().permute(1, 2, 0).numpy()
    assert np.abs(clip[0].astype(int) - roundtrip.astype(int)).max() <= 1  # frame 0: the image
    assert np.abs(clip[1:].astype(int) - plain[1:].astype(int)).max() > 10  # the rest reacts
    with pytest.raises(ArgumentValueError, match="a first frame needs a clip"):
        pipe("a red circle", first_frame=image, frames=1, steps=2)


def test_the_first_frame_loss_counts_only_the_other_frames(models, tmp_path):
    from spacetime.train.config import make_config
    from spacetime.train.lora import LoRATask

    cfg = make_config({"task": "lora", "base": str(models / "sd"), "motion": str(models / "motion"),
                       "data": "first-frame", "frames": 4, "batch_size": 2})  # fmt: skip
    task = LoRATask(cfg)
    loss = task.build()
    batch = task.batch(0, 0, 1)
    with torch.no_grad():
        for up in loss.lora.up:
            up.normal_(0, 0.1, generator=torch.Generator().manual_seed(0))
        a = loss(**batch)
        other = dict(batch, noise=batch["noise"].clone())
        other["noise"][:, :, 0] += 1.0  # the first frame is given clean: its noise plays no part
        assert torch.equal(loss(**other), a)
        other["noise"][:, :, 1] += 1.0
        assert not torch.equal(loss(**other), a)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--first-frame", "{tmp}/none.png"], "cannot read image .*none.png"),
        (["--first-frame", "{tmp}/junk.png"], "cannot read image .*junk.png"),
    ],
)
def test_bad_first_frames_are_refused_before_weights_load(tmp_path, capsys, flags, message):
    import re

    from spacetime import video

    (tmp_path / "junk.png").write_bytes(b"not an image")
    flags = [f.replace("{tmp}", str(tmp_path)) for f in flags]
    with pytest.raises(SystemExit) as exit_:
        video.main(["a red circle moving right", *flags, "--out", str(tmp_path / "c.gif")])
    assert exit_.value.code == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "c.gif").exists()


def test_the_world_model_continues_a_first_frame_with_its_shipped_lora(tmp_path):
    """`--first-frame` on the default world model loads the shipped first-frame LoRA: the frames
    equal the API's with `load_lora("first-frame", motion=True)`."""
    from PIL import Image

    from spacetime import video
    from spacetime.world import Clip

    image = Clip("circle", "red", "right", None, (16.0, 32.0), 10.0, 2.0).render()[0]
    Image.fromarray(image).save(tmp_path / "first.png")
    pipe = VideoPipeline.from_pretrained(precision="fp32")
    assert pipe.load_lora("first-frame", motion=True) == "first-frame"
    want = pipe("a red circle moving right", first_frame=image, frames=4, steps=2, seed=0,
                free_init=None)[0]  # fmt: skip
    video.main(["a red circle moving right", "--first-frame", str(tmp_path / "first.png"),
                "--frames", "4", "--steps", "2", "--free-init", "0", "--precision", "fp32",
                "--out", f"{tmp_path}/out/"])  # fmt: skip
    got = np.stack([np.asarray(Image.open(f)) for f in sorted((tmp_path / "out").glob("*.png"))])
    assert np.array_equal(got, want)
