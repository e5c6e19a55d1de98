"""Prompt → mesh on the world's primitives: the fast path and the quality path against the truth.

    python tools/bench_mesh.py                      # 5 solids × 3 colours, fast and quality, 2 jobs
    python tools/bench_mesh.py --modes fast         # one mode (results accumulate, resumable)
    python tools/bench_mesh.py --report             # only rewrite the tables from the results

For every colour × solid prompt (`a red cube`) and mode, `text_to_mesh` with the shipped models:
- fast: the multi-view model's four views → the feed-forward reconstructor → a mesh (`--fast`);
- quality: score distillation with the multi-view model, starting from the fast result (the CLI's
  default);
- multiview / single-view: score distillation from a sphere with the multi-view model, or one view
  at a time with the image model (the earlier default and its comparison);
- fast-5k / quality-5k: fast and quality decimated to 5000 faces (`--faces 5000`).
Each exported mesh is compared with the world's ground-truth primitive: volume IoU and Chamfer
distance, whether it is watertight and how many connected pieces it has, and the 3D oracle's
reading of the mesh rendered from 8 novel cameras (elevation 15°, azimuths 22.5° + 45°k: off the
training grid). A prompt is recognised when the most common reading is its solid and colour; its
colour is right when the most common colour is. Each job's wall time covers prompt → .glb written
(load, generate or optimise, marching cubes, texture, export). Writes docs/mesh_results.json, the
"Text to mesh" section of docs/benchmarks.md and of the multi-view model card, and README
turntables (docs/images/). Results recorded by earlier versions stay in the JSON and the tables
say which.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import tempfile
import time
from pathlib import Path

from _shared import ROOT, write_section

RESULTS = ROOT / "docs" / "mesh_results.json"
BENCHMARKS = ROOT / "docs" / "benchmarks.md"
CARD = ROOT / "spacetime" / "assets" / "default-multiview" / "MODEL_CARD.md"
IMAGES = ROOT / "docs" / "images"
SECTION = "## Text to mesh"
MODES = ("fast", "quality", "multiview", "single-view", "fast-5k", "quality-5k")
DECIMATED = 5000  # faces in the -5k modes
SUMMARY_ONLY = ("single-view", "fast-5k", "quality-5k")  # not in the per-prompt table
DEFAULT_MODES = ("fast", "quality")
LABELS = {"fast": "fast", "quality": "quality", "multiview": "SDS from a sphere",
          "single-view": "single-view", "fast-5k": f"fast, `--faces {DECIMATED}`",
          "quality-5k": f"quality, `--faces {DECIMATED}`"}  # fmt: skip
SOLIDS = ("sphere", "cube", "cylinder", "cone", "torus")
COLOURS = ("red", "blue", "yellow")
PREVIEWS = ("a red cube", "a blue sphere", "a yellow cone", "a red torus", "a blue cylinder")


def novel_cameras():
    from spacetime.world.primitives import Camera

    return [Camera(15.0, 22.5 + 45.0 * k) for k in range(8)]


def run_job(job: tuple[str, str, int, int]) -> dict:
    """One prompt in one mode → metrics (runs in a worker process)."""
    import numpy as np
    import torch
    import trimesh

    from spacetime.eval.oracle3d import read_view_set
    from spacetime.threed.export import write_mesh
    from spacetime.threed.metrics import compare, render_views
    from spacetime.threed.pipeline import text_to_mesh
    from spacetime.world.captions import parse_primitive_caption
    from spacetime.world.primitives import Primitive

    prompt, mode, threads, seed = job
    torch.set_num_threads(threads)
    spec = parse_primitive_caption(prompt)
    started = time.perf_counter()
    options = {
        "fast": dict(fast=True),
        "quality": dict(init="fast"),
        "multiview": dict(init="sphere"),
        "single-view": dict(single_view=True),
        "fast-5k": dict(fast=True, faces=DECIMATED),
        "quality-5k": dict(init="fast", faces=DECIMATED),
    }[mode]
    mesh = text_to_mesh(prompt, seed=seed, **options)
    glb = ROOT / "runs" / "bench-mesh" / f"{mode}-{spec.colour}-{spec.shape}.glb"
    glb.parent.mkdir(parents=True, exist_ok=True)
    write_mesh(mesh, glb)
    seconds = time.perf_counter() - started
    metrics = compare(mesh, Primitive(spec.shape, spec.colour))
    welded = trimesh.Trimesh(mesh.vertices, mesh.faces)  # merges duplicate vertices
    cameras = novel_cameras()
    reading = read_view_set(render_views(mesh, cameras), cameras)
    result = {
        "prompt": prompt,
        "mode": mode,
        "iou": round(metrics.iou, 4),
        "chamfer": round(metrics.chamfer, 4),
        "read_colour": reading.colour,
        "read_shape": reading.shape,
        "recognised": reading.colour == spec.colour and reading.shape == spec.shape,
        "colour_right": reading.colour == spec.colour,
        # on the surface itself: a textured mesh's vertices are split along its UV seams
        "watertight": bool(welded.is_watertight),
        "components": len(welded.split(only_watertight=False)),
        # smoothness: the mean angle between neighbouring faces, in degrees (0 on a plane)
        "wrinkle_deg": round(float(np.degrees(welded.face_adjacency_angles).mean()), 2),
        "views_right": sum(
            v.colour == spec.colour and v.shape == spec.shape for v in reading.views
        ),
        "faces": len(mesh.faces),
        "seconds": round(seconds, 1),
        "threads": threads,
        "seed": seed,
    }
    if mode in ("quality", "fast") and prompt in PREVIEWS:
        from spacetime.media import write_video
        from spacetime.threed.rasterise import turntable

        name = f"mesh_{mode}_{spec.colour}_{spec.shape}.gif"
        write_video(IMAGES / name, turntable(mesh, frames=24, resolution=96), fps=12)
        result["preview"] = f"docs/images/{name}"
    return result


def load_results() -> dict[str, dict]:
    return json.loads(RESULTS.read_text()) if RESULTS.exists() else {}


def report(results: dict[str, dict], machine: str) -> str:
    prompts = sorted({r["prompt"] for r in results.values()}, key=_order)
    summary = []
    for mode in MODES:
        done = [r for r in results.values() if r["mode"] == mode]
        if not done:
            continue
        times = sorted(r["seconds"] for r in done)
        faces = sorted(r["faces"] for r in done if "faces" in r)
        faces = f"{faces[len(faces) // 2]:,}" if faces else "not recorded"
        wrinkles = [r["wrinkle_deg"] for r in done if "wrinkle_deg" in r]
        wrinkles = f"{sum(wrinkles) / len(wrinkles):.2f}°" if wrinkles else "not recorded"
        solid = [r for r in done if "watertight" in r]
        one = (
            f"{sum(r['watertight'] and r['components'] == 1 for r in solid)} / {len(solid)}"
            if solid
            else "not recorded"
        )
        colour = sum(r.get("colour_right", r["read_colour"] in r["prompt"]) for r in done)
        summary.append(
            f"| {LABELS[mode]} | {len(done)} | {sum(r['recognised'] for r in done) / len(done):.0%} | "
            f"{colour} / {len(done)} | {one} | "
            f"{sum(r['iou'] for r in done) / len(done):.3f} | "
            f"{sum(r['chamfer'] for r in done) / len(done):.3f} | "
            f"{wrinkles} | {faces} | {times[len(times) // 2]:.1f} s |"
        )
    shown = [
        m for m in MODES if any(r["mode"] == m for r in results.values()) and m not in SUMMARY_ONLY
    ]
    rows = []
    for prompt in prompts:
        cells = [prompt]
        for mode in shown:
            r = results.get(f"{mode}|{prompt}")
            if r is None:
                cells += ["—"] * 3
                continue
            tick = "✓" if r["recognised"] else "✗"
            solid = (
                ("1 watertight" if r["watertight"] else "1 open")
                if r.get("components") == 1
                else f"{r['components']} pieces"
                if "components" in r
                else "—"
            )
            cells += [f"{r['iou']:.2f} / {r['chamfer']:.3f}", solid,
                      f"{tick} {r['read_colour']} {r['read_shape']} ({r['views_right']}/8)"]  # fmt: skip
        rows.append("| " + " | ".join(cells) + " |")
    head = " | ".join(
        f"{LABELS[m]}: IoU / Chamfer | {LABELS[m]}: pieces | {LABELS[m]}: reading" for m in shown
    )
    previews = sorted(r["preview"] for r in results.values() if r.get("preview"))
    gallery = " ".join(f"![{Path(p).stem}](images/{Path(p).name})" for p in previews)
    return f"""{SECTION}

`python tools/bench_mesh.py` on {machine}: every prompt through `text_to_mesh` (default settings,
seed 0) with the shipped models. *fast*: the multi-view model's four views read by the
feed-forward reconstructor (`--fast`); *quality*: score distillation starting from the fast result
(the CLI's default); either with `--faces {DECIMATED}`: decimated to about {DECIMATED} faces
(summary only); *SDS from a sphere*: score distillation from the initial sphere, as the CLI
did before (recorded 2026-11-26, before the surface cleanup: watertightness and pieces were not
recorded then); *single-view*: DreamFusion-style SDS on the image model. IoU and Chamfer (world
units; the primitives fit the unit ball) against the world's ground-truth primitive; *pieces*:
connected components of the exported mesh, and whether it is watertight; *wrinkle*: the mean
angle between neighbouring faces (0 on a plane; marching cubes' tessellation of a smooth solid
at 128^3 gives about 1°; fewer, larger faces meet at larger angles, so compare it between meshes
of one face count); the 3D oracle reads the
mesh rendered from 8 novel cameras (elevation 15°, azimuths 22.5° + 45°k) and a prompt counts as
recognised when the most common reading is its colour and solid. Time: prompt → .glb written,
{_threads(results)}.

| mode | prompts | recognised | colour right | one watertight piece | mean IoU | mean Chamfer | mean wrinkle | median faces | median time |
|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(summary)}

| prompt | {head} |
|---|{"---|" * (3 * len(shown))}
{chr(10).join(rows)}

Held-out pairs (never rendered in training, nor shown to the reconstructor): blue cube, yellow
torus. Turntables: {gallery}
"""


def _order(prompt: str) -> tuple[int, str]:
    solid = prompt.split()[-1]
    return (SOLIDS.index(solid) if solid in SOLIDS else len(SOLIDS), prompt)


def _threads(results: dict[str, dict]) -> str:
    threads = sorted({r["threads"] for r in results.values()})
    return f"{'/'.join(map(str, threads))} torch thread(s) per job"


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(DEFAULT_MODES))
    p.add_argument("--solids", nargs="+", choices=SOLIDS, default=list(SOLIDS))
    p.add_argument("--colours", nargs="+", default=list(COLOURS))
    p.add_argument("--jobs", type=int, default=2, help="prompts run side by side")
    p.add_argument("--threads", type=int, default=1, help="torch threads per job")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--redo", action="store_true", help="rerun prompts that have results")
    p.add_argument("--report", action="store_true", help="only rewrite the tables")
    args = p.parse_args()

    from spacetime.world.captions import PrimitiveSpec, primitive_caption

    results = load_results()
    machine = f"{platform.processor() or platform.machine()}, {multiprocessing.cpu_count()} cores"
    if not args.report:
        jobs = [
            (primitive_caption(PrimitiveSpec(solid, colour)), mode, args.threads, args.seed)
            for mode in args.modes
            for solid in args.solids
            for colour in args.colours
        ]
        jobs = [j for j in jobs if args.redo or f"{j[1]}|{j[0]}" not in results]
        with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
            for r in pool.imap_unordered(run_job, jobs):
                results = {**load_results(), f"{r['mode']}|{r['prompt']}": r}
                with tempfile.NamedTemporaryFile("w", dir=RESULTS.parent, delete=False) as f:
                    f.write(json.dumps(results, indent=2) + "\n")
                Path(f.name).replace(RESULTS)
                print(json.dumps(r), flush=True)
    section = report(results, machine)
    write_section(BENCHMARKS, section, SECTION)
    if CARD.exists():
        write_section(CARD, section.replace("](images/", "](../../../docs/images/"), SECTION)
    print(section)


if __name__ == "__main__":
    main()
