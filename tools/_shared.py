"""What the scripts in tools/ share: the repository root, logging, timing on a busy machine, the
machine's description, the sections of docs/benchmarks.md, and shipping a trained model.

Not a tool: the tools import it by name (`from _shared import ...`), which works because
`python tools/NAME.py` puts tools/ first on sys.path. No tool imports another tool. Importing this
module is cheap (no torch, no diffusers); what needs them imports them when called.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# An SD 1.x-shaped U-Net at ~0.4x SD's width (~142M parameters): the mid-size U-Net the image and
# video benchmarks measure against diffusers.
SD_MID_UNET = dict(
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    layers_per_block=2,
    cross_attention_dim=768,
    attention_head_dim=8,  # SD 1.x's legacy name: 8 heads per level
    norm_num_groups=32,
    sample_size=32,
)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- a shared machine -----------------------------------------------------------------------------
# Other processes on the machine (a test suite, say) slow a run by far more than their share: with
# OpenMP threads on every core, one busy neighbour can make a U-Net call 10x slower. Every timed
# interval therefore also records the share of the machine's CPU time others used during it; runs
# above --max-contention are repeated, and medians are taken over the clean ones.


def _machine_busy_s() -> float | None:
    """CPU seconds the whole machine has been busy (all cores, steal included), from /proc/stat."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait


def _own_cpu_s() -> float:
    """CPU seconds of this process (all threads) and of its finished children."""
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def timed(fn):
    """(fn's result, wall seconds, share of the machine's CPU others used meanwhile)."""
    busy, own = _machine_busy_s(), _own_cpu_s()
    start = time.perf_counter()
    out = fn()
    wall = time.perf_counter() - start
    busy_after, own_after = _machine_busy_s(), _own_cpu_s()
    if busy is None or busy_after is None:
        return out, wall, 0.0
    others = max(0.0, (busy_after - busy) - (own_after - own))
    return out, wall, others / (wall * (os.cpu_count() or 1))


def wait_quiet(max_share: float, max_wait: float) -> float:
    """Wait (up to max_wait seconds) for a second in which others use <= max_share of the CPU."""
    start = time.perf_counter()
    while time.perf_counter() - start < max_wait:
        if timed(lambda: time.sleep(1.0))[2] <= max_share:
            break
    return time.perf_counter() - start


class Samples:
    """Timings with the contention each saw; statistics prefer the clean ones."""

    def __init__(self, max_share: float):
        self.max_share = max_share
        self.runs: list[tuple[float, float]] = []  # (seconds, others' share)

    def add(self, seconds: float, share: float) -> bool:
        self.runs.append((seconds, share))
        return share <= self.max_share

    @property
    def clean(self) -> list[float]:
        return [s for s, share in self.runs if share <= self.max_share]

    def median(self) -> float:
        return statistics.median(self.clean or [s for s, _ in self.runs])

    def summary(self) -> dict:
        return {
            "median_s": self.median(),
            "min_s": min(s for s, _ in self.runs),
            "clean": len(self.clean),
            "runs": [{"s": s, "others_share": share} for s, share in self.runs],
        }


def interleaved(contenders, command, repeats: int, max_share: float):
    """Run each contender's `command(contender)` as a subprocess, interleaved (so drift on the
    machine hits every contender alike), until each has `repeats` runs that others disturbed by at
    most `max_share` of the CPU (or 3x as many rounds have run). Returns ({contender: Samples},
    {contender: [finished processes]}); a failing run ends the tool, showing its stderr."""
    samples = {c: Samples(max_share) for c in contenders}
    done: dict = {c: [] for c in contenders}
    for _ in range(repeats * 3):
        pending = [c for c in contenders if len(samples[c].clean) < repeats]
        if not pending:
            break
        for c in pending:
            cmd = command(c)
            wait_quiet(max_share, 30)
            proc, seconds, share = timed(
                lambda cmd=cmd: subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            )
            if proc.returncode:
                sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
            samples[c].add(seconds, share)
            done[c].append(proc)
            log(f"{c}: {seconds:.2f} s (others {share:.0%})")
    return samples, done


def status_mb(key: str) -> float:
    """A VmRSS/VmHWM line of /proc/self/status, in MiB."""
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{key}:\s+(\d+) kB", text, re.M).group(1)) / 1024


# --- the machine and the report -------------------------------------------------------------------


def cpu_name() -> str:
    """The CPU's model name from lscpu, else what platform knows."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        out = ""
    found = re.search(r"^Model name:\s*(.+)$", out, re.M)
    return found.group(1).strip() if found else platform.processor() or "unknown CPU"


def machine() -> dict:
    """The machine and the library versions a benchmark ran on."""
    import diffusers
    import torch
    import transformers

    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    isa = [f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f in flags.split()]
    return {
        "cpu": cpu_name(),
        "isa": isa,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def write_section(path: Path, section: str, name: str) -> None:
    """Replace the `## ` section called `name` in `path` (or append it); create the file if
    needed. Every benchmark in tools/ writes its section through this."""
    if path.exists():
        text = path.read_text()
    else:
        text = (
            "# Benchmarks\n\n"
            "Speed and memory of spacetime against its reference implementations, measured side by "
            "side in one run by the scripts in `tools/`. Each section names the machine and the "
            "command that produced it; ratios are the numbers to compare across machines.\n\n"
        )
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == name), None)
    if start is None:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
        rest = "".join(lines[end:])
        text = "".join(lines[:start]) + section + ("\n" + rest if rest else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.rstrip("\n") + "\n")


# --- shipping a trained model into spacetime/assets -----------------------------------------------


def wall_seconds(run: Path) -> float:
    """Training wall time summed over resumed segments (each restarts its clock)."""
    total, last = 0.0, 0.0
    for line in (run / "log.jsonl").read_text().splitlines():
        seconds = json.loads(line)["seconds"]
        if seconds < last:
            total += last
        last = seconds
    return round(total + last, 1)


def to_fp16(folder: Path) -> None:
    """Halve the shipped size: weights stored fp16, loaded back as fp32 by spacetime. Each file's
    metadata stays (a LoRA's adapter config, with its alpha, lives there)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    for path in folder.rglob("*.safetensors"):
        with safe_open(str(path), "pt") as f:
            metadata = f.metadata() or {"format": "pt"}
        sd = {k: v.half() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
        mode = path.stat().st_mode
        save_file(sd, str(path), metadata=metadata)
        path.chmod(mode)  # safetensors rewrites the file private (0600)


def size_mb(folder: Path) -> float:
    return round(sum(p.stat().st_size for p in folder.rglob("*.safetensors")) / 1e6, 2)


def stage(source: Path, dest: Path) -> Path:
    """A fp16 copy of a trained export beside `dest`, to evaluate exactly what will ship."""
    staging = dest.with_name(f".{dest.name}-staging")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging)
    to_fp16(staging)
    return staging


def publish(staging: Path, dest: Path, card: dict, card_text: str) -> None:
    """Write metrics.json and MODEL_CARD.md into the staged copy, then swap it in for `dest`."""
    (staging / "metrics.json").write_text(json.dumps(card, indent=2) + "\n")
    (staging / "MODEL_CARD.md").write_text(card_text)
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)


def ship_parser(doc: str, run: str) -> argparse.ArgumentParser:
    """The arguments every ship tool takes: the training run, and where it trained."""
    p = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--run", type=Path, default=Path(run), help="the training run's --out folder")
    p.add_argument(
        "--machine", default="this 2-core CPU", help="where the run trained, for the model card"
    )
    return p


def run_facts(run: Path, staging: Path, machine: str) -> dict:
    """What every model card records about a run: its config, wall time, machine, size, date."""
    return {
        "train_wall_seconds": wall_seconds(run),
        "machine": machine,
        "shipped_megabytes": size_mb(staging),
        "date": datetime.date.today().isoformat(),
        "config": json.loads((run / "config.json").read_text()),
    }


# --- the mid-size SD checkpoint the image and video benchmarks share ---------------------------------

# The checkpoint: an SD 1.x-shaped U-Net at ~0.4x SD's width (~142M parameters), SD's real VAE
# architecture and a CLIP ViT-L/14-sized text encoder, all with diffusers' default random init.
UNET = SD_MID_UNET
VAE = dict(
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
    scaling_factor=0.18215,
    sample_size=256,
)
TEXT = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    projection_dim=768,
    bos_token_id=49406,
    eos_token_id=49407,
    pad_token_id=49407,
)
SCHEDULER = dict(  # SD 1.5's DDIM configuration
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
)
BUILD_SEED = 0
SPEC_VERSION = 1  # bump when the build recipe changes, so cached checkpoints are rebuilt


# SD 1.5's own U-Net shape (~860M parameters): the GPU comparison's (tools/gpu_video.py)
SD15_UNET = dict(SD_MID_UNET, block_out_channels=(320, 640, 1280, 1280), sample_size=64)


def spec_hash(unet: dict = UNET) -> str:
    spec = json.dumps([unet, VAE, TEXT, SCHEDULER, BUILD_SEED, SPEC_VERSION], sort_keys=True)
    return hashlib.sha256(spec.encode()).hexdigest()[:12]


def build_checkpoint(workdir: Path, rebuild: bool = False, unet: dict = UNET) -> tuple[Path, dict]:
    """A random-weight diffusers StableDiffusionPipeline folder with U-Net `unet` (default the
    mid-size one), built once and cached."""
    folder = workdir / f"model-{spec_hash(unet)}"
    info_path = folder / "bench_info.json"
    if info_path.is_file() and not rebuild:
        return folder, json.loads(info_path.read_text())
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    log(f"building the random-weight checkpoint in {folder}")
    torch.manual_seed(BUILD_SEED)
    unet_config = unet
    unet = UNet2DConditionModel(**unet_config).eval()
    vae = AutoencoderKL(**VAE).eval()
    text = CLIPTextModel(CLIPTextConfig(**TEXT)).eval()
    tokenizer, tokenizer_source = _tokenizer(workdir)
    pipe = StableDiffusionPipeline(
        unet=unet, vae=vae, text_encoder=text, tokenizer=tokenizer,
        scheduler=DDIMScheduler(**SCHEDULER), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )  # fmt: skip
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    info = {
        "unet_params": count(unet),
        "vae_params": count(vae),
        "vae_decoder_params": count(vae.decoder) + count(vae.post_quant_conv),
        "text_params": count(text),
        "tokenizer": tokenizer_source,
        "spec": spec_hash(unet_config),
    }
    tmp = workdir / f".{folder.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(str(tmp))
    (tmp / "bench_info.json").write_text(json.dumps(info, indent=2) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder, info


def _tokenizer(workdir: Path):
    """OpenAI CLIP's tokenizer from spacetime's bundled vocabulary, else a character-level one."""
    try:
        from spacetime.formats.tokenizer import clip_tokenizer

        return clip_tokenizer(None), "OpenAI CLIP BPE (spacetime.formats.tokenizer)"
    except ImportError:
        pass
    import string

    from transformers import CLIPTokenizer

    folder = workdir / "char-tokenizer"
    folder.mkdir(parents=True, exist_ok=True)
    chars = sorted(set(string.ascii_lowercase + string.digits + ".,!?'- "))
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)
    return tok, "character-level (handwritten vocab)"


# --- whole-process clips, one child process per contender (tools/bench_scripts/*_video_phases.py) ---

BENCH_SCRIPTS = Path(__file__).resolve().parent / "bench_scripts"
CLIP_PROMPT = "a red circle moving right"


def motion_adapter(workdir: Path, unet: dict) -> tuple[Path, int]:
    """A random MotionAdapter at the U-Net's widths (AnimateDiff v2's layout), built once."""
    widths = "-".join(str(c) for c in unet["block_out_channels"])
    folder = workdir / f"motion-adapter-{widths}"
    info = folder / "bench_info.json"
    if info.is_file():
        return folder, json.loads(info.read_text())["params"]
    import torch
    from diffusers import MotionAdapter

    torch.manual_seed(1)
    adapter = MotionAdapter(
        block_out_channels=tuple(unet["block_out_channels"]),
        motion_layers_per_block=unet["layers_per_block"],
        motion_num_attention_heads=8,
        motion_norm_num_groups=32,
        motion_max_seq_length=32,
        use_motion_mid_block=True,
    )
    adapter.save_pretrained(str(folder))
    params = sum(p.numel() for p in adapter.parameters())
    info.write_text(json.dumps({"params": params}))
    return folder, params


def clip_command(
    lib: str, precision: str, model: Path, motion: Path, out: Path, run: dict,
    device: str = "cpu", profile: bool = False, extra: tuple[str, ...] = (),
) -> list[str]:  # fmt: skip
    """The child process that makes one clip with `lib` (spacetime | diffusers) and reports its
    phases; `run` holds frames, steps, height, width, guidance and seed."""
    flags = [str(v) for k, v in run.items() for v in (f"--{k}", v)]
    script = BENCH_SCRIPTS / f"{lib}_video_phases.py"
    cmd = [sys.executable, str(script), CLIP_PROMPT, "--model", str(model), "--motion", str(motion),
           "--precision", precision, "--device", device, "--out", str(out), *flags, *extra]  # fmt: skip
    if lib == "spacetime":
        cmd += ["--free-init", "0", "--scheduler", "ddim"]
    return cmd + (["--profile-unet"] if profile else [])


def parse_report(stderr: str, key: str) -> dict | None:
    """The JSON a child printed on stderr after `key` (BENCH_PHASES, BENCH_PROFILE)."""
    for line in stderr.splitlines():
        if line.startswith(key + " "):
            return json.loads(line[len(key) + 1 :])
    return None


def clip_phases(t: dict) -> dict:
    """Seconds per phase from a child's timestamps."""
    return {
        "imports": t["imported"] - t["start"],
        "loading": t["loaded"] - t["imported"],
        "text encoding": t["encoded"] - t["loaded"],
        "sampling": t["last_step"] - t["encoded"],
        "VAE decode": t["decoded"] - t["last_step"],
        "writing": t["saved"] - t["decoded"],
        "total": t["saved"] - t["start"],
    }
