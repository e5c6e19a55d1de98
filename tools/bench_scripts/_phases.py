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

    def mark(self, name: str) -> None:
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

    def report(self, profile: dict | None = None) -> None:
        print("BENCH_PHASES " + json.dumps(self), file=sys.stderr)
        if profile is not None:
            print("BENCH_PROFILE " + json.dumps(profile), file=sys.stderr)
