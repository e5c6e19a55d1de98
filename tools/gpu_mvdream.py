"""MVDream's published weights on a lent GPU: `python -m spacetime.mesh PROMPT --model CKPT`, which
distils with threestudio's MVDream recipe (spacetime picks it for weights of this layout), timed,
with the GPU's peak memory.

    python tools/gpu_mvdream.py                               # SD-2.1-base-sized random weights
    python tools/gpu_mvdream.py --model sd-v2.1-base-4view.pt --steps 2000
    python tools/gpu_mvdream.py --dry-run                     # tiny random weights, CPU, 2 steps

Without --model it writes random weights of sd-v2.1-base-4view's sizes in MVDream's original
single-file layout (an SD 2.1-base U-Net with the camera MLP, SD's VAE, OpenCLIP ViT-H's 24-block
text tower and the schedule buffers; weights in fp16, ~2.6 GB), so the run goes through the same
loader as the published file. Random weights measure speed and memory, not quality: their mesh
is noise. The mesh command runs in this process (spacetime.mesh.main), so the peak memory covers
it; the checkpoint is loaded once more beforehand to time loading alone. Sized to finish in
about 8 minutes on one H100 (default 500 steps). Results: docs/mvdream_gpu.json and the
"## Measured on a lent GPU" section of docs/mvdream.md (not with --dry-run). With
`--device cpu` (and few steps) the same full-size run checks loading and the recipe where no GPU
is lent: docs/mvdream_cpu.json and the "## Full size on a CPU" section, with the peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from _shared import ROOT, log, machine, write_section

RESULTS = {"gpu": ROOT / "docs" / "mvdream_gpu.json", "cpu": ROOT / "docs" / "mvdream_cpu.json"}
DOC = ROOT / "docs" / "mvdream.md"
SECTION = "## Measured on a lent GPU"
CPU_SECTION = "## Full size on a CPU"
PROMPT = "a DSLR photo of a corgi wearing a top hat"
# MVDream-threestudio's configs/mvdream-sd21.yaml prompt_processor.negative_prompt
NEGATIVE = (
    "ugly, bad anatomy, blurry, pixelated obscure, unnatural colors, poor lighting, dull, and "
    "unclear, cropped, lowres, low quality, artifacts, duplicate, morbid, mutilated, poorly drawn "
    "face, deformed, dehydrated, bad proportions"
)

# (U-Net, VAE, text) sizes: sd-v2.1-base-4view's, and a tiny stand-in that checks the script.
SIZES = {
    "sd21-base": (
        dict(block_out_channels=(320, 640, 1280, 1280), attention=(True, True, True, False),
             heads=(5, 10, 20, 20), layers_per_block=2, cross_attention_dim=1024,
             use_linear_projection=True, sample_size=32),
        dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2),
        dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
             num_attention_heads=16, hidden_act="gelu"),
    ),
    "tiny": (
        dict(block_out_channels=(64, 128), attention=(True, True), heads=(1, 2),
             layers_per_block=1, cross_attention_dim=64, use_linear_projection=True,
             sample_size=32),
        dict(block_out_channels=(32, 32, 64, 64), layers_per_block=1),
        dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=1,
             hidden_act="gelu"),
    ),
}  # fmt: skip


def build_checkpoint(path: Path, size: str, device: str) -> dict:
    """Random weights of `size` in MVDream's original layout at `path`, weights in fp16."""
    import torch

    from spacetime.formats import mvdream
    from spacetime.formats.diffusers import Components
    from spacetime.models.clip import CLIPTextConfig, CLIPTextModel
    from spacetime.models.inflate import MVDream, inflate
    from spacetime.models.text import TextEncoder
    from spacetime.models.unet import UNet2DCondition, UNetConfig
    from spacetime.models.vae import AutoencoderKL, VAEConfig
    from spacetime.sampling import NoiseSchedule

    unet_cfg, vae_cfg, text_cfg = SIZES[size]
    torch.manual_seed(0)
    with torch.device(device):
        unet = inflate(UNet2DCondition(UNetConfig(**unet_cfg)), MVDream.published())
        vae = AutoencoderKL(VAEConfig(**vae_cfg))
        text = CLIPTextModel(CLIPTextConfig(**text_cfg))
        with torch.no_grad():  # a trained camera MLP is not zero: give it weights to run
            unet.camera_embed[2].weight.normal_(0, 0.02)
    components = Components(
        unet, vae, TextEncoder(mvdream.open_clip_tokenizer(), text), NoiseSchedule()
    )
    mvdream.save_original(components, path, half=True)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    return {"unet_params": count(unet), "vae_params": count(vae), "text_params": count(text)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--model", type=Path, help="an MVDream checkpoint or port folder (default: random)"
    )
    p.add_argument("--steps", type=int, default=500, help="distillation steps (default 500)")
    p.add_argument("--prompt", default=PROMPT)
    p.add_argument("--device", default="cuda")
    p.add_argument("--resolution", type=int, default=128, help="marching-cubes lattice (128)")
    p.add_argument("--workdir", type=Path, default=None, help="where the checkpoint is written")
    p.add_argument("--dry-run", action="store_true", help="tiny weights, CPU, 2 steps; no docs")
    args = p.parse_args()
    if args.dry_run:
        args.device, args.steps, args.resolution = "cpu", 2, 16

    import torch

    from spacetime import mesh
    from spacetime.threed.pipeline import load_model, recipe_for

    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: run on a lent GPU, or pass --dry-run")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="gpu-mvdream-"))
    work.mkdir(parents=True, exist_ok=True)
    device = torch.cuda.get_device_name() if cuda else machine()["cpu"]
    result: dict = {"device": device, "steps": args.steps}
    model = args.model
    if model is None:
        size = "tiny" if args.dry_run else "sd21-base"
        model = work / f"mvdream-{size}-random.safetensors"
        started = time.perf_counter()
        result.update(build_checkpoint(model, size, args.device), weights=f"random ({size})")
        result["build_s"] = round(time.perf_counter() - started, 1)
        log(f"wrote {model} ({model.stat().st_size / 2**30:.2f} GiB) in {result['build_s']} s")
        if cuda:
            torch.cuda.empty_cache()
    else:
        result["weights"] = str(model)

    started = time.perf_counter()
    components = load_model(model, args.device)
    result["load_s"] = round(time.perf_counter() - started, 1)
    recipe = recipe_for(components)
    result["recipe"] = {"sds": asdict(recipe.sds), "cameras": asdict(recipe.cameras)}
    del components
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()

    out = work / "mesh.glb"
    argv = [args.prompt, "--model", str(model), "--steps", str(args.steps), "--out", str(out),
            "--negative-prompt", NEGATIVE, "--device", args.device,
            "--resolution", str(args.resolution)]  # fmt: skip
    log(f"python -m spacetime.mesh {' '.join(repr(a) for a in argv)}")
    started = time.perf_counter()
    mesh.main(argv)
    if cuda:
        torch.cuda.synchronize()
    result["mesh_command_s"] = round(time.perf_counter() - started, 1)
    result["per_step_s"] = round((result["mesh_command_s"] - result["load_s"]) / args.steps, 3)
    if cuda:
        result["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    else:  # Linux reports the peak resident set in KiB
        result["peak_rss_gib"] = round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2
        )
    result["mesh_bytes"] = out.stat().st_size
    result["machine"] = machine()
    print(json.dumps(result, indent=2))
    if not args.dry_run:
        kind = "gpu" if cuda else "cpu"
        RESULTS[kind].write_text(json.dumps(result, indent=2) + "\n")
        write_section(DOC, report(result), SECTION if cuda else CPU_SECTION)


def report(r: dict) -> str:
    cuda = "peak_gpu_memory_gib" in r
    memory = (
        f", peak GPU memory {r['peak_gpu_memory_gib']} GiB"
        if cuda
        else f", peak resident memory {r['peak_rss_gib']} GiB (building the file included)"
    )
    device = "" if cuda else " --device cpu"
    return (
        f"{SECTION if cuda else CPU_SECTION}\n\n"
        f"`python tools/gpu_mvdream.py --steps {r['steps']}{device}` on {r['device']} "
        f"({r['machine']['date']}, torch {r['machine']['torch']}), weights: {r['weights']}.\n\n"
        f"| phase | seconds |\n|---|---|\n"
        f"| load the checkpoint | {r['load_s']} |\n"
        f"| `python -m spacetime.mesh` ({r['steps']} steps, load to .glb) | {r['mesh_command_s']} |\n"
        f"| per step (command less loading) | {r['per_step_s']} |\n\n"
        f"fp32 throughout{memory}. Raw numbers: "
        f"docs/{RESULTS['gpu' if cuda else 'cpu'].name}.\n"
    )


if __name__ == "__main__":
    main()
