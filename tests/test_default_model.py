"""The embedded default model: used without --model, reads its own prompts, warns on others."""

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
