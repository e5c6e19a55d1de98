"""Every save → load round trip, checked by loading what was written and comparing outputs.

The shipped default models stand in for real checkpoints: small, trained, and of each kind."""

import os
import stat
from pathlib import Path

import pytest
import torch

from spacetime.formats.diffusers import save_diffusers
from spacetime.formats.load import default_model, load_components
from spacetime.formats.motion import load_motion_adapter, save_motion_adapter
from spacetime.formats.single_file import save_single_file
from spacetime.formats.video_vae import load_video_vae, save_video_vae
from spacetime.pipelines.image import ImagePipeline


def modes(root: Path) -> set[str]:
    """The permission bits of everything under `root` (and of `root` itself, if a folder)."""
    paths = [root, *root.rglob("*")] if root.is_dir() else [root]
    return {stat.filemode(p.stat().st_mode) for p in paths}


def new_file_modes() -> tuple[str, str]:
    """What open() and mkdir() give a new file and folder under this process's umask."""
    mask = os.umask(0o022)
    os.umask(mask)
    return (
        stat.filemode(stat.S_IFREG | (0o666 & ~mask)),
        stat.filemode(stat.S_IFDIR | (0o777 & ~mask)),
    )


def images(model) -> torch.Tensor:
    pipe = ImagePipeline(load_components(model), precision="fp32")
    return pipe("a red circle", steps=1, seed=4, height=32, width=32)


def test_single_file_to_folder_and_back_gives_the_same_images(tmp_path):
    shipped = default_model("image")
    want = images(shipped)
    single = save_single_file(load_components(shipped), tmp_path / "one.safetensors")
    folder = save_diffusers(load_components(single), tmp_path / "folder")
    # the folder carries every file model_index.json lists, the tokenizer's included
    assert sorted(p.name for p in (folder / "tokenizer").iterdir()) == sorted(
        p.name for p in (shipped / "tokenizer").iterdir()
    )
    again = save_single_file(load_components(folder), tmp_path / "again.safetensors")
    for model in (single, folder, again):
        assert (images(model) == want).all(), model
    file_mode, dir_mode = new_file_modes()
    assert modes(folder) == {file_mode, dir_mode}
    assert modes(single) == modes(again) == {file_mode}


def test_motion_module_round_trips(tmp_path):
    motion = default_model("motion")
    unet = load_motion_adapter(load_components(default_model("image")).unet, motion)
    save_motion_adapter(unet, tmp_path / "motion")
    again = load_motion_adapter(load_components(default_model("image")).unet, tmp_path / "motion")
    g = torch.Generator().manual_seed(0)
    x, context = torch.randn(1, 4, 6, 8, 8, generator=g), torch.randn(1, 77, 64, generator=g)
    with torch.no_grad():
        assert torch.equal(unet(x, 400, context), again(x, 400, context))


def test_video_vae_round_trips(tmp_path):
    vae = load_video_vae(default_model("video-vae"))
    again = load_video_vae(save_video_vae(vae, tmp_path / "vae"))
    z = torch.randn(1, 4, 5, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(vae.decode(z), again.decode(z))
    file_mode, dir_mode = new_file_modes()
    assert modes(tmp_path / "vae") == {file_mode, dir_mode}


def test_multiview_model_round_trips(tmp_path):
    from spacetime.pipelines.multiview import orbit
    from spacetime.threed.cameras import camera_matrices

    shipped = load_components(default_model("multiview"))
    again = load_components(save_diffusers(shipped, tmp_path / "mv")).unet
    assert again.inflation == shipped.unet.inflation
    g = torch.Generator().manual_seed(2)
    x, context = torch.randn(1, 4, 4, 8, 8, generator=g), torch.randn(1, 77, 64, generator=g)
    cams = camera_matrices(orbit(4, elevation=10.0))[None]
    theirs = again.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in shipped.unet.state_dict().items())
    with torch.no_grad():  # cross-view attention kernels may sum in another order: not bitwise
        torch.testing.assert_close(
            shipped.unet(x, 300, context, cameras=cams), again(x, 300, context, cameras=cams)
        )


@pytest.mark.parametrize("name", ["tokenizer.json", "tokenizer_config.json"])
def test_a_damaged_tokenizer_file_is_one_clear_error(tmp_path, name):
    from spacetime.errors import CheckpointError

    folder = save_diffusers(load_components(default_model("image")), tmp_path / "m")
    (folder / "tokenizer" / name).write_text('{"model": ')
    with pytest.raises(CheckpointError, match=f"damaged tokenizer in {folder / 'tokenizer'}"):
        load_components(folder)


@pytest.mark.parametrize(
    "index, message",
    [
        ("{", "corrupt JSON in"),
        ("[]", "corrupt JSON in"),
        ('{"weight_map": {}}', "damaged shard index"),
        (
            '{"weight_map": {"conv_in.weight": "../../elsewhere.safetensors"}}',
            "damaged shard index",
        ),
    ],
)
def test_a_damaged_shard_index_is_one_clear_error(tmp_path, index, message):
    from spacetime.errors import CheckpointError

    folder = save_diffusers(load_components(default_model("image")), tmp_path / "m")
    (folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    (folder / "unet" / "diffusion_pytorch_model.safetensors.index.json").write_text(index)
    with pytest.raises(CheckpointError, match=message) as e:
        load_components(folder)
    assert "index.json" in str(e.value) and "\n" not in str(e.value)
