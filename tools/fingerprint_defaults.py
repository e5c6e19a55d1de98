"""Fingerprint what the shipped default models make: an image, a clip, a multi-view set, a mesh.

A refactor of sampling, pipelines or model code that must not change outputs (the default models'
oracle figures rest on them) is checked by running this before and after and comparing:

    python tools/fingerprint_defaults.py --json before.json
    python tools/fingerprint_defaults.py --compare before.json

Uses only the long-standing Python API (load_pipeline, VideoPipeline, MultiViewPipeline,
text_to_mesh), so it runs on older checkouts too (PYTHONPATH=that-checkout).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path


def digest(array) -> str:
    import numpy as np

    array = np.ascontiguousarray(array)
    return hashlib.sha256(f"{array.dtype}{array.shape}".encode() + array.tobytes()).hexdigest()


def outputs(mesh_steps: int) -> dict[str, str]:
    """name → sha256 of each default output, at fixed seeds, fp32 (bit-reproducible here)."""
    from spacetime.formats.load import default_model
    from spacetime.pipelines.image import load_pipeline
    from spacetime.pipelines.multiview import MultiViewPipeline
    from spacetime.pipelines.video import VideoPipeline
    from spacetime.threed import text_to_mesh

    found = {}
    image = load_pipeline(default_model("image"), precision="fp32")
    found["image"] = digest(image("a red circle on a blue background", steps=20, seed=0))
    video = VideoPipeline.from_pretrained(precision="fp32")  # FreeInit, temporal decoder
    found["clip_16"] = digest(video("a red circle moving right", steps=10, seed=0, frames=16))
    found["clip_40_windows"] = digest(
        video("a blue square moving left", steps=4, seed=1, frames=40, free_init=None)
    )
    views = MultiViewPipeline.from_pretrained(precision="fp32")
    found["views"] = digest(views("a red cube", steps=20, seed=0))
    mesh = text_to_mesh("a blue sphere", steps=mesh_steps, seed=0, resolution=32)
    found["mesh"] = digest(mesh.vertices) + digest(mesh.faces)[:16]
    return found


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mesh-steps", type=int, default=40, help="SDS steps of the mesh (default 40)")
    p.add_argument("--json", type=Path, help="write the fingerprints here")
    p.add_argument("--compare", type=Path, help="fingerprints recorded earlier to compare with")
    args = p.parse_args()
    started = time.time()
    found = outputs(args.mesh_steps)
    print(json.dumps(found, indent=2), f"\n{time.time() - started:.0f} s", flush=True)
    if args.json:
        args.json.write_text(json.dumps(found, indent=2) + "\n")
    if args.compare:
        before = json.loads(args.compare.read_text())
        same = {k: before.get(k) == v for k, v in found.items()}
        for name, ok in same.items():
            print(f"{name}: {'same' if ok else 'DIFFERENT'}")
        sys.exit(0 if all(same.values()) else 1)


if __name__ == "__main__":
    main()
