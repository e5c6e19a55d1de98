"""Training on your own media: a folder of captioned videos and images, or the same in webdataset
tar shards, gives the same batches; clips take frames by stride, resized and centre-cropped; bad
files are skipped and counted; a motion LoRA trains on the folder and resumes to the same weights."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import tiny
import torch
import yaml

from spacetime.errors import ConfigError
from spacetime.media import write_image, write_video
from spacetime.train.media_data import MediaData, index_media


def gradient_clip(frames: int, height: int, width: int, shift: int) -> np.ndarray:
    """uint8 (t, h, w, 3): a bar that moves right one pixel-block per frame."""
    clip = np.zeros((frames, height, width, 3), np.uint8)
    for t in range(frames):
        x = (shift + 4 * t) % width
        clip[t, :, x : x + 8, 0] = 255
        clip[t, :, :, 2] = 40 * (t % 5)
    return clip


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """A folder: three mp4s (one 80x64, captioned by captions.csv, .txt and metadata.jsonl), a GIF,
    a PNG, a corrupt mp4, a 2-frame mp4, and a video without a caption; and the captioned files
    again as one webdataset tar shard."""
    root = tmp_path_factory.mktemp("media")
    folder = root / "clips"
    (folder / "sub").mkdir(parents=True)
    write_video(folder / "a.mp4", gradient_clip(12, 64, 80, 0), fps=8)
    write_video(folder / "sub" / "b.mp4", gradient_clip(12, 64, 64, 8), fps=8)
    write_video(folder / "c.mp4", gradient_clip(12, 72, 64, 16), fps=8)
    write_video(folder / "d.gif", gradient_clip(12, 64, 64, 24), fps=8)
    write_image(folder / "e.png", gradient_clip(1, 64, 64, 0)[0])
    (folder / "broken.mp4").write_bytes(b"\x00not a video" * 100)
    write_video(folder / "short.mp4", gradient_clip(2, 64, 64, 0), fps=8)
    write_video(folder / "uncaptioned.mp4", gradient_clip(12, 64, 64, 0), fps=8)
    (folder / "captions.csv").write_text("file,caption\na.mp4,a red bar moving right\n")
    (folder / "sub" / "b.txt").write_text("a second bar\n")
    (folder / "metadata.jsonl").write_text(
        "".join(
            json.dumps({"file_name": n, "text": f"clip {n}"}) + "\n"
            for n in ("c.mp4", "d.gif", "e.png", "broken.mp4", "short.mp4")
        )  # fmt: skip
    )
    shard = root / "shard-000.tar"
    with tarfile.open(shard, "w") as tar:
        for item in index_media(str(folder)):
            key = item.name.replace("/", "_").rsplit(".", 1)[0]
            suffix = item.name.rsplit(".", 1)[1]
            tar.add(folder / item.name, arcname=f"{key}.{suffix}")
            caption = root / f"{key}.txt"
            caption.write_text(item.caption)
            tar.add(caption, arcname=f"{key}.txt")
    return folder, root / "shard-{000..000}.tar"


def test_a_folder_is_indexed_with_its_captions(media):
    folder, _ = media
    items = {item.name: item.caption for item in index_media(str(folder))}
    assert items == {
        "a.mp4": "a red bar moving right", "sub/b.mp4": "a second bar", "c.mp4": "clip c.mp4",
        "d.gif": "clip d.gif", "e.png": "clip e.png", "broken.mp4": "clip broken.mp4",
        "short.mp4": "clip short.mp4",
    }  # fmt: skip


def test_clips_take_frames_by_stride_resized_and_centre_cropped(media, capsys):
    folder, _ = media
    data = MediaData(str(folder), size=32, frame_stride=2)
    clips, captions = data.clips(seed=0, step=0, batch_size=8, frames=4)
    assert clips.shape == (8, 3, 4, 32, 32) and clips.dtype == torch.float32
    assert clips.min() >= -1 and clips.max() <= 1
    assert set(captions) <= {"a red bar moving right", "a second bar", "clip c.mp4", "clip d.gif"}
    # the bar moves 4 px per source frame, so 8 px (4 at half size) per sampled frame
    centre = [clips[0, 0, t].mean(0).argmax().item() for t in range(4)]
    assert all(2 <= b - a <= 6 for a, b in zip(centre, centre[1:], strict=False)), centre
    data.clips(seed=0, step=1, batch_size=16, frames=4)
    assert data.summary() == {"media_files": 7, "media_skipped": 2}  # broken, short
    err = capsys.readouterr().err
    assert "skipping broken.mp4" in err and "skipping short.mp4: 2 frames, 7 needed" in err


def test_tar_shards_give_the_folders_batches(media):
    folder, shards = media
    from_folder = MediaData(str(folder), size=32)
    from_tar = MediaData(str(shards), size=32)
    for step in range(2):
        a, b = from_folder.images(0, step, 6), from_tar.images(0, step, 6)
        assert a[1] == b[1] and torch.equal(a[0], b[0])


def test_bad_sources_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="no such folder, tar file or shards"):
        index_media(str(tmp_path / "missing-{000..003}.tar"))
    with pytest.raises(ConfigError, match="no captioned images or videos"):
        index_media(str(tmp_path))
    (tmp_path / "captions.csv").write_text("path,words\nx.mp4,hi\n")
    with pytest.raises(ConfigError, match="needs columns file"):
        index_media(str(tmp_path))


def test_a_motion_lora_trains_on_the_folder_and_resumes_to_the_same_weights(media, tmp_path):
    from safetensors.torch import load_file

    from spacetime.train.loop import train
    from spacetime.train.lora import LoRATask

    folder, _ = media
    root = tiny.animatediff(tmp_path / "models")

    def run(out, **extra):
        cfg = lora_config(root, folder, **extra)
        return train(cfg, LoRATask(cfg), out, progress=False)

    straight = run(tmp_path / "a")
    run(tmp_path / "b", stop_after=2)
    resumed = run(tmp_path / "b")
    a, b = (load_file(str(m / "pytorch_lora_weights.safetensors")) for m in (straight, resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert all("motion_modules" in k for k in a)
    export = json.loads((tmp_path / "a" / "export.json").read_text())
    assert export["media_files"] == 7


def test_media_and_world_data_exclude_each_other(tmp_path):
    from spacetime.train.config import make_config

    with pytest.raises(ConfigError, match="not both"):
        make_config({"task": "lora", "base": "x", "motion": "m", "data": "zoom-in",
                     "media": str(tmp_path)})  # fmt: skip
    with pytest.raises(ConfigError, match="or give media"):
        make_config({"task": "lora", "base": "x", "motion": "m"})


def lora_config(root, folder, **extra):
    from spacetime.train.config import make_config

    return make_config({"task": "lora", "base": str(root / "sd"), "motion": str(root / "motion"),
                        "media": str(folder), "media_size": 32, "frames": 4, "frame_stride": 2,
                        "rank": 4, "alpha": 4.0, "steps": 4, "batch_size": 2, "lr": 0.05,
                        "warmup": 0, "ema_decay": 0.0, "checkpoint_every": 2, **extra})  # fmt: skip


def test_the_latent_cache_gives_the_batches_the_pixels_give(media, tmp_path):
    """A step's batch through the cache (encoded once) equals the batch encoded from pixels: the
    same files, starts, captions, noise and timesteps, and latents sampled alike."""
    from spacetime.train.lora import LoRATask

    folder, _ = media
    root = tiny.animatediff(tmp_path / "models")
    plain = LoRATask(lora_config(root, folder))
    cached = LoRATask(lora_config(root, folder, latent_cache=str(tmp_path / "cache")))
    for step in range(3):
        a, b = plain.batch(step, 0, 1), cached.batch(step, 0, 1)
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-4)
    assert (tmp_path / "cache" / "cache.json").is_file()
    assert cached.data.summary() == plain.data.summary()  # the same files skipped

    again = LoRATask(lora_config(root, folder, latent_cache=str(tmp_path / "cache")))
    torch.testing.assert_close(again.batch(5, 0, 1)["x0"], plain.batch(5, 0, 1)["x0"],
                               rtol=1e-4, atol=1e-4)  # fmt: skip


def test_a_latent_cache_of_other_settings_or_another_vae_is_refused(media, tmp_path):
    from spacetime.train.lora import LoRATask

    folder, _ = media
    root = tiny.animatediff(tmp_path / "models")
    cache = str(tmp_path / "cache")
    LoRATask(lora_config(root, folder, latent_cache=cache)).batch(0, 0, 1)
    with pytest.raises(ConfigError, match="made with media_size 32, this run has 24"):
        LoRATask(lora_config(root, folder, latent_cache=cache, media_size=24)).batch(0, 0, 1)
    other = LoRATask(lora_config(root, folder, latent_cache=cache))
    with torch.no_grad():
        next(other.components.vae.parameters()).add_(0.01)
    with pytest.raises(ConfigError, match="made with vae"):
        other.batch(0, 0, 1)
    with pytest.raises(ConfigError, match="latent_cache caches media"):
        lora_config(root, "", latent_cache=cache, data="zoom-in")


def train_command(config: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "spacetime.train", str(config), "--out", str(out), "--quiet"]


def test_training_on_media_resumes_after_sigkill_and_runs_on_two_processes(media, tmp_path):
    """The LoRA task on the folder of clips, through the CLI: killed after its first checkpoint,
    then restarted, it ends with the uninterrupted run's weights; under torchrun (2 processes,
    gloo) it splits each batch and ends close to one process's weights."""
    from safetensors.torch import load_file

    folder, _ = media
    root = tiny.animatediff(tmp_path / "models")
    cfg = lora_config(root, folder, steps=6, checkpoint_every=1, threads=1,
                      latent_cache=str(tmp_path / "cache"))  # fmt: skip
    config = tmp_path / "lora.yaml"
    config.write_text(yaml.safe_dump({"task": "lora", **{
        k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}}))  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    straight = subprocess.run(train_command(config, tmp_path / "a"), env=env, capture_output=True,
                              text=True, timeout=300)  # fmt: skip
    assert straight.returncode == 0, straight.stderr[-3000:]

    proc = subprocess.Popen(train_command(config, tmp_path / "b"), env=env,
                            stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and not list((tmp_path / "b" / "checkpoints").glob("step_*")):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "b" / "model").exists(), "the run finished before it could be killed"
    resumed = subprocess.run(train_command(config, tmp_path / "b"), env=env, capture_output=True,
                             text=True, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    weights = "model/pytorch_lora_weights.safetensors"
    a, b = (load_file(str(tmp_path / run / weights)) for run in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", "29519", *train_command(config, tmp_path / "c")[1:]],
                         env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    c = load_file(str(tmp_path / "c" / weights))
    for key in a:
        torch.testing.assert_close(c[key], a[key], rtol=1e-3, atol=1e-4)


def test_a_text_to_image_model_trains_on_the_folder_with_its_captions_words(media, tmp_path):
    from spacetime.formats.load import default_model
    from spacetime.pipelines.image import ImagePipeline
    from spacetime.train.config import make_config
    from spacetime.train.loop import train
    from spacetime.train.text_to_image import TextToImageTask

    folder, _ = media
    vae = default_model("image") / "vae"
    cfg = make_config({"task": "text2image", "vae": str(vae), "media": str(folder),
                       "media_size": 32, "steps": 2, "batch_size": 2, "warmup": 0,
                       "checkpoint_every": 2})  # fmt: skip
    model = train(cfg, TextToImageTask(cfg), tmp_path / "run", progress=False)
    pipe = ImagePipeline.from_pretrained(model, precision="fp32")
    text = pipe.components.text_encoder
    assert not text.unknown_words("a red bar moving right") and text.unknown_words("a cube")
    assert pipe("a second bar", steps=2, height=32, width=32).shape == (1, 32, 32, 3)
    assert json.loads((tmp_path / "run" / "export.json").read_text())["media_files"] == 7
