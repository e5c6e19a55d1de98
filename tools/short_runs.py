"""Train every recipe in configs/ for a few steps and fingerprint the exported weights.

A refactor of the training code (configs, tasks, the loop) must leave every recipe training to the
same weights: run this before and after and compare the fingerprints.

    python tools/short_runs.py --steps 20 --json docs/short_runs.json
    python tools/short_runs.py --steps 20 --compare docs/short_runs.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

from _shared import ROOT

# Recipes read their inputs from earlier runs (runs/…); a short run takes the shipped ones instead.
STAND_INS = {"vae": "spacetime/assets/default-image"}
# Smaller batches keep the whole sweep to minutes on 2 CPU cores; the same for every run compared.
BATCH = 4


def fingerprint(folder: Path) -> str:
    """sha256 over every tensor (name, dtype, shape, bytes) of every safetensors file below folder."""
    from safetensors.numpy import load_file

    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*.safetensors")):
        digest.update(str(path.relative_to(folder)).encode())
        for name, array in sorted(load_file(path).items()):
            digest.update(f"{name}{array.dtype}{array.shape}".encode())
            digest.update(array.tobytes())
    return digest.hexdigest()


def run(config: Path, steps: int) -> dict:
    from spacetime.train.__main__ import main

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        sets = [f"steps={steps}", "stop_after=0", f"batch_size={BATCH}", "threads=2",
                f"checkpoint_every={steps}"]  # fmt: skip
        text = config.read_text()
        sets += [f"{k}={v}" for k, v in STAND_INS.items() if f"\n{k}:" in f"\n{text}"]
        started = time.time()
        main([str(config), "--out", str(out), "--quiet", *(a for s in sets for a in ("--set", s))])
        return {"weights": fingerprint(out / "model"), "seconds": round(time.time() - started, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20, help="training steps per recipe (default 20)")
    p.add_argument("--only", nargs="*", help="config stems to run (default: all in configs/)")
    p.add_argument("--json", type=Path, help="write the fingerprints here")
    p.add_argument("--compare", type=Path, help="fingerprints recorded earlier to compare with")
    args = p.parse_args()
    configs = sorted((ROOT / "configs").glob("*.yaml"))
    if args.only:
        configs = [c for c in configs if c.stem in args.only]
    results = {}
    for config in configs:
        results[config.stem] = run(config, args.steps)
        print(config.stem, json.dumps(results[config.stem]), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"steps": args.steps, "runs": results}, indent=2) + "\n")
    if args.compare:
        before = json.loads(args.compare.read_text())["runs"]
        same = {k: before.get(k, {}).get("weights") == v["weights"] for k, v in results.items()}
        for name, ok in same.items():
            print(f"{name}: {'same weights' if ok else 'DIFFERENT weights'}")
        sys.exit(0 if all(same.values()) else 1)


if __name__ == "__main__":
    main()
