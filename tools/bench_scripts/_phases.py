"""Timestamps per phase for the benchmark child scripts: each prints one `BENCH_PHASES {json}`
line on stderr (and, when profiled, one `BENCH_PROFILE {json}`) for the tool that runs it.

Standard library only, so importing it costs the phase it lands in nothing.
"""

from __future__ import annotations

import json
import sys
import time


class Phases(dict):
    """{phase: wall-clock time it ended}, from the script's own start."""

    def __init__(self, start: float):
        super().__init__(start=start)
        self.sync = None  # on CUDA, torch.cuda.synchronize: a phase ends when its kernels do

    def mark(self, name: str) -> None:
        if self.sync is not None:
            self.sync()
        self[name] = time.time()

    def after(self, name: str, fn):
        """`fn`, marking `name` each time it returns."""

        def wrapper(*args, **kwargs):
            out = fn(*args, **kwargs)
            self.mark(name)
            return out

        return wrapper

    def step(self, first: bool) -> None:
        """A sampling step ended: the first one, or (so far) the last."""
        self.mark("first_step" if first else "last_step")

    def report(self, profile: dict | None = None, **facts) -> None:
        """The timestamps, and `facts` (say, the CUDA memory peak) beside them."""
        print("BENCH_PHASES " + json.dumps({**self, **facts}), file=sys.stderr)
        if profile is not None:
            print("BENCH_PROFILE " + json.dumps(profile), file=sys.stderr)
