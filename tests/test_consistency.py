"""Latent consistency distillation: the loss equals one written with diffusers' own DDIM and LCM
schedulers and U-Net; the teacher is the frozen model; the student saves as a LoRA diffusers reads."""

import numpy as np
import pytest
import tiny
import torch

from spacetime.errors import CheckpointError
from spacetime.train.config import make_config
from spacetime.train.consistency import ConsistencyTask


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lcd") / "sd"
    tiny.sd_pipeline(folder)
    return folder


def config(folder, **overrides):
    return make_config({"task": "lcm", "base": str(folder), "rank": 4, "alpha": 4.0,
                        "batch_size": 3, "guidance": 6.0, "targets": ["to_q", "to_v", "conv1"],
                        **overrides})  # fmt: skip


def test_the_loss_is_lcm_distillation_as_written_with_diffusers(sd):
    """x_t, the guided DDIM step of the teacher (diffusers' DDIMScheduler over a 50-step grid),
    LCMScheduler's boundary scalings, the online target and the pseudo-Huber loss."""
    from diffusers import DDIMScheduler, LCMScheduler, UNet2DConditionModel

    task = ConsistencyTask(config(sd))
    loss_module = task.build()
    with torch.no_grad():  # a non-zero student, so student and teacher differ
        for up in loss_module.lora.up:
            up.normal_(0, 0.05, generator=torch.Generator().manual_seed(0))
    batch = task.batch(step=3, rank=0, world_size=1)
    got = loss_module(**batch)

    unet = UNet2DConditionModel.from_pretrained(str(sd / "unet"))
    text = task.components.text_encoder.model
    ddim = DDIMScheduler.from_pretrained(str(sd / "scheduler"))
    ddim.set_timesteps(50)
    lcm = LCMScheduler.from_config(ddim.config)
    abar = ddim.alphas_cumprod
    with torch.no_grad():
        context, uncond = text(batch["ids"]), text(batch["uncond_ids"])

        def consistency(x, t, eps):
            c_skip, c_out = zip(
                *(lcm.get_scalings_for_boundary_condition_discrete(int(s)) for s in t), strict=True
            )
            c_skip, c_out = (torch.tensor(c).float().view(-1, 1, 1, 1) for c in (c_skip, c_out))
            a = abar[t].view(-1, 1, 1, 1)
            return c_skip * x + c_out * (x - (1 - a).sqrt() * eps) / a.sqrt()

        x0, t, noise = batch["x0"], batch["t"], batch["noise"]
        x_t = ddim.add_noise(x0, noise, t)
        pred = consistency(x_t, t, loss_module.unet(x_t, t, context))  # the student, LoRA on
        eps_u = unet(x_t, t, uncond).sample
        eps_c = unet(x_t, t, context).sample
        guided = eps_u + 6.0 * (eps_c - eps_u)
        x_prev = torch.stack([ddim.step(guided[i : i + 1], int(t[i]), x_t[i : i + 1]).prev_sample[0]
                              for i in range(len(t))])  # fmt: skip
        t_prev = (t - 20).clamp(min=0)
        target = consistency(x_prev, t_prev, loss_module.unet(x_prev, t_prev, context))
        want = (torch.sqrt((pred - target) ** 2 + 1e-6) - 1e-3).mean()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)
    assert set(batch["t"].tolist()) <= set(range(19, 1000, 20))


def test_the_teacher_is_the_frozen_model(sd):
    task = ConsistencyTask(config(sd))
    loss_module = task.build()
    x, t = torch.randn(1, 4, 8, 8), torch.tensor([499])
    context = torch.randn(1, 7, 32)
    before = loss_module.unet(x, t, context)
    with torch.no_grad():
        for up in loss_module.lora.up:
            up.fill_(0.1)
    with loss_module.lora.disabled():
        assert torch.equal(loss_module.unet(x, t, context), before)
    assert not torch.allclose(loss_module.unet(x, t, context), before)


def test_a_distilled_student_saves_as_a_lora_diffusers_reads(sd, tmp_path):
    from diffusers import LCMScheduler, StableDiffusionPipeline

    from spacetime.pipelines.image import ImagePipeline
    from spacetime.train.loop import train

    cfg = config(sd, steps=2, lr=0.05, warmup=0, ema_decay=0.0, checkpoint_every=2)
    model = train(cfg, ConsistencyTask(cfg), tmp_path / "run", progress=False)
    ref = StableDiffusionPipeline.from_pretrained(str(sd), safety_checker=None)
    ref.scheduler = LCMScheduler.from_config(ref.scheduler.config)
    ref.set_progress_bar_config(disable=True)
    ref.load_lora_weights(str(model))
    want = ref("a red circle", num_inference_steps=4, guidance_scale=1.0, height=32, width=32,
               generator=torch.Generator().manual_seed(0), output_type="np").images  # fmt: skip
    pipe = ImagePipeline.from_pretrained(sd, precision="fp32")
    pipe.load_lora(model)
    got = pipe("a red circle", steps=4, guidance=1.0, height=32, width=32, seed=0,
               scheduler="lcm")  # fmt: skip
    want = (want * 255).round().astype(np.uint8)
    assert (np.abs(got.astype(int) - want.astype(int)) <= 3).mean() >= 0.99


def test_a_student_starts_from_a_saved_lora(sd, tmp_path):
    """init_lora: the saved factors start the student (its scale folded in), the other layers start
    fresh; a LoRA naming layers the student does not train is refused."""
    from spacetime.formats.lora import save_lora
    from spacetime.models.lora import LoraFactors

    first = ConsistencyTask(config(sd)).build().lora
    with torch.no_grad():
        for up in first.up:
            up.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))
    saved = {n: f for n, f in first.factors().items() if "conv1" not in n}
    save_lora(tmp_path / "start.safetensors", saved, alpha=8.0)  # scale 2, the student's 1

    started = ConsistencyTask(config(sd, init_lora=str(tmp_path / "start.safetensors"))).build()
    for name, down, up in zip(started.lora.names, started.lora.down, started.lora.up, strict=True):
        if name in saved:
            torch.testing.assert_close(down, saved[name].down)
            torch.testing.assert_close(up, saved[name].up * 2.0)
        else:
            assert not up.any()  # fresh: up is zero

    one = next(iter(saved.values()))
    extra = {**saved, "unet.no.such.layer": LoraFactors(one.down.clone(), one.up.clone(), 1.0, "")}
    save_lora(tmp_path / "extra.safetensors", extra, alpha=4.0)
    with pytest.raises(CheckpointError, match="not trained here: unet.no.such.layer"):
        ConsistencyTask(config(sd, init_lora=str(tmp_path / "extra.safetensors"))).build()
    fatter = {n: LoraFactors(torch.cat([f.down, f.down]), torch.cat([f.up, f.up], 1), 1.0, n)
              for n, f in saved.items()}  # fmt: skip
    save_lora(tmp_path / "rank8.safetensors", fatter, alpha=8.0)
    with pytest.raises(CheckpointError, match="the student's are"):
        ConsistencyTask(config(sd, init_lora=str(tmp_path / "rank8.safetensors"))).build()
