"""Time the UV atlas and the texture bake (spacetime.threed.texture) against the mesh's face count,
and, with --xatlas, xatlas's own chart segmentation on the same meshes for comparison.

    python tools/texture_timing.py [--size 1024] [--repeats 3] [--xatlas 80000]

Meshes are marching-cubes surfaces of the world's primitives at several lattice resolutions; the
`noisy` ones add noise to the signed distance (bumps, handles and slivers, as distillation leaves).
Prints a markdown table: faces, charts, seconds for the atlas (charts + packing), the bake, and the
whole texture_mesh (median of --repeats), and the share of the CPU that other processes took.
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np

from _shared import log, timed

MESHES = [  # (primitive, marching-cubes lattice, noise on the signed distance)
    ("torus", 96, 0.0),
    ("torus", 160, 0.0),
    ("sphere", 128, 0.02),
    ("cube", 160, 0.03),
    ("torus", 256, 0.0),
]


def build(shape: str, lattice: int, noise: float):
    import torch

    from spacetime.threed.export import extract_mesh
    from spacetime.threed.field import Field, FieldConfig
    from spacetime.world.primitives import Primitive

    field = Field.from_sdf(Primitive(shape, "red"), FieldConfig(resolution=64, levels=2))
    if noise:
        with torch.no_grad():
            grid = field.grids[-1][0]
            grid += noise * torch.randn(grid.shape, generator=torch.Generator().manual_seed(0))
    return extract_mesh(field, lattice)


def xatlas_charts(mesh) -> None:
    """xatlas's own segmentation, parametrisation and packing (what spacetime replaces)."""
    import xatlas

    atlas = xatlas.Atlas()
    atlas.add_mesh(np.asarray(mesh.vertices, np.float32), np.asarray(mesh.faces, np.uint32))
    atlas.generate()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=1024, help="texture side (default 1024)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--xatlas", type=int, default=0, help="also time xatlas's own charts up to this many faces"
    )
    args = p.parse_args()
    from spacetime.threed.atlas import unwrap
    from spacetime.threed.texture import bake, padding, texture_mesh

    def gradient(points):
        return (points + 1) / 2

    print("| mesh | faces | charts | atlas s | bake s | texture_mesh s | others' CPU | xatlas s |")
    print("|---|---|---|---|---|---|---|---|")
    for shape, lattice, noise in MESHES:
        mesh = build(shape, lattice, noise)
        vertices = np.asarray(mesh.vertices, np.float64)
        log(f"{shape} {lattice} noise {noise}: {len(mesh.faces)} faces")
        atlas_s, bake_s, total_s, shares = [], [], [], []
        for _ in range(args.repeats):
            atlas, seconds, share = timed(lambda m=mesh: unwrap(m, args.size, padding(args.size)))
            atlas_s.append(seconds)
            shares.append(share)
            _, seconds, share = timed(lambda a=atlas, v=vertices: bake(v, a, gradient, args.size))
            bake_s.append(seconds)
            shares.append(share)
            _, seconds, share = timed(lambda m=mesh: texture_mesh(m, gradient, args.size))
            total_s.append(seconds)
            shares.append(share)
        own = "-"
        if len(mesh.faces) <= args.xatlas:
            _, seconds, share = timed(lambda m=mesh: xatlas_charts(m))
            own = f"{seconds:.1f}"
            shares.append(share)
        name = f"{shape} {lattice}^3" + (f" noisy {noise}" if noise else "")
        print(
            f"| {name} | {len(mesh.faces)} | {atlas.charts} | {statistics.median(atlas_s):.2f} "
            f"| {statistics.median(bake_s):.2f} | {statistics.median(total_s):.2f} "
            f"| {max(shares):.0%} | {own} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
