"""python -m spacetime.batch JOBS.jsonl --out DIR — many generations, in one process or many.

Each line of JOBS is one JSON job: {"task": "image" | "video" | "mesh", "prompt": ..., "seed": ...,
"out": "name.png"} plus any long option of that task's command line, dashes written as
underscores ("negative_prompt", "frames"). Every job is checked against its command's own parser
before anything runs. Under `accelerate launch` or `torchrun` the jobs are split over the
processes by accelerate's process state (index i goes to process i mod N); every output is
written atomically and then recorded as one line of DIR/manifest-rankR.jsonl (job, seed, options,
the files' SHA-256, seconds). A restart skips the jobs the manifests record as done; a failing
job records its error there and the batch goes on.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import io
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from spacetime.cli import EXIT_INTERRUPTED, Parser, entry_point, run

TASKS = {"image": ".png", "video": ".mp4", "mesh": ".glb"}  # task → default suffix of `out`
TASK_ARTICLE = {"image": "an", "video": "a", "mesh": "a"}
FIXED = ("task", "prompt", "seed", "out")  # keys every job may have besides its task's options
BATCH_OWNED = ("out",)  # options the batch sets itself


def parser() -> Parser:
    p = Parser(
        prog="python -m spacetime.batch",
        description="Run a file of image, video and mesh jobs, resumably, on one process or on "
        "every process of `accelerate launch` / `torchrun` (jobs split by process index).",
    )
    p.add_argument(
        "jobs",
        type=Path,
        help='a JSON-lines file, one job per line: {"task": "image", "prompt": "a red circle", '
        '"seed": 1, "out": "red.png", "steps": 30}; keys are the task command\'s long options '
        "with underscores for dashes; seed defaults to the job's number (its line, from 0, "
        "blank lines not counted), out to NNNNNN.png/.mp4/.glb by that number",
    )
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="folder for the outputs (each job's out is relative to it) and the manifests",
    )
    return p


@dataclass(frozen=True)
class Job:
    """One line of the jobs file, checked: its command-line arguments and output path."""

    index: int  # the line number, from 0
    task: str
    argv: tuple[str, ...]  # for the task's main(), without --out
    out: Path  # relative to the batch's folder
    seed: int
    options: dict  # the line as given, for the manifest
    key: str  # SHA-256 of the canonical line: a changed job is a new job

    def record(self, **fields) -> dict:
        return {"job": self.index, "key": self.key, "task": self.task, "seed": self.seed,
                "out": str(self.out), "options": self.options, **fields}  # fmt: skip


def read_jobs(path: Path) -> list[Job]:
    """Every job of the file, each checked against its task's parser; a bad line raises an
    ArgumentValueError naming its line number, before any job runs."""
    from spacetime.errors import ArgumentValueError

    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ArgumentValueError(f"jobs file {path}: {e}") from None
    jobs, outs = [], {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            job = parse_job(line, len(jobs))
        except ArgumentValueError as e:
            raise ArgumentValueError(f"{path} line {number}: {e}") from None
        if job.out in outs:
            raise ArgumentValueError(
                f"{path} line {number}: out {job.out} is also line {outs[job.out]}'s"
            )
        outs[job.out] = number
        jobs.append(job)
    if not jobs:
        raise ArgumentValueError(f"jobs file {path} has no jobs")
    return jobs


def parse_job(line: str, index: int) -> Job:
    from spacetime.errors import ArgumentValueError

    try:
        fields = json.loads(line)
    except ValueError as e:
        raise ArgumentValueError(f"not JSON ({e})") from None
    if not isinstance(fields, dict):
        raise ArgumentValueError("a job is a JSON object")
    task = fields.get("task")
    if task not in TASKS:
        raise ArgumentValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    options = task_options(task)
    unknown = sorted(set(fields) - set(FIXED) - set(options))
    if unknown:
        raise ArgumentValueError(
            f"{unknown[0]!r} is no option of {task}; valid: "
            f"{', '.join(sorted({*FIXED, *options} - {'task'}))}"
        )
    seed = fields.get("seed", index)
    out = Path(str(fields.get("out", f"{index:06d}{TASKS[task]}")))
    if out.is_absolute() or ".." in out.parts:
        raise ArgumentValueError(f"out must be a path inside --out, got {out}")
    if out.suffix.lower() not in out_suffixes(task):
        known = ", ".join(s or "a folder (frames)" for s in out_suffixes(task))
        raise ArgumentValueError(f"out {out}: {TASK_ARTICLE[task]} {task} job writes {known}")
    argv = [] if fields.get("prompt") is None else [str(fields["prompt"])]
    argv += ["--seed", str(seed)]
    for name, value in fields.items():
        if name not in FIXED:
            argv += options[name].argv(value)
    checking_parser(task).parse_args([*argv, "--out", str(out)])
    key = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()
    return Job(index, task, tuple(argv), out, seed, fields, key)


def out_suffixes(task: str) -> tuple[str, ...]:
    if task == "image":
        from spacetime.media import IMAGE_SUFFIXES

        return IMAGE_SUFFIXES
    if task == "video":
        from spacetime.media import VIDEO_SUFFIXES

        return (*VIDEO_SUFFIXES, "")
    from spacetime.threed.export import MESH_SUFFIXES

    return MESH_SUFFIXES


@dataclass(frozen=True)
class Option:
    """A long option of a task's command line, as a job's key sets it."""

    flag: str
    kind: str  # "flag" (store_true), "list" (append), or "value"

    def argv(self, value) -> list[str]:
        from spacetime.errors import ArgumentValueError

        if self.kind == "flag":
            if not isinstance(value, bool):
                raise ArgumentValueError(f"{self.flag} takes true or false, got {value!r}")
            return [self.flag] if value else []
        if self.kind == "list":
            values = value if isinstance(value, list) else [value]
            out = []
            for v in values:  # --prompt-at takes two values per use: a list of pairs
                out += [self.flag, *(map(str, v) if isinstance(v, list) else [str(v)])]
            return out
        return [self.flag, str(value)]


@functools.cache
def checking_parser(task: str) -> argparse.ArgumentParser:
    """The task's own parser, whose errors are raised (naming the value) rather than printed."""
    from spacetime.errors import ArgumentValueError

    def refuse(message: str):
        raise ArgumentValueError(message)

    parser = load_task(task).parser()
    parser.error = refuse
    return parser


@functools.cache
def task_options(task: str) -> dict[str, Option]:
    """{key: Option} for every long option of the task's parser but those the batch owns."""
    options = {}
    for action in checking_parser(task)._actions:
        long = [s for s in action.option_strings if s.startswith("--")]
        if not long or action.dest in (*BATCH_OWNED, "help", "seed"):
            continue
        if isinstance(action, argparse._StoreTrueAction):
            kind = "flag"
        elif isinstance(action, argparse._AppendAction):
            kind = "list"
        else:
            kind = "value"
        options[long[0][2:].replace("-", "_")] = Option(long[0], kind)
    return options


def load_task(task: str):
    import importlib

    return importlib.import_module(f"spacetime.{task}")


class Manifests:
    """The successful jobs the batch's manifests record, {key: files}, read incrementally: each
    manifest from where the last read stopped, whole lines only, so the progress bar of a batch of
    thousands reads only what is new. A line cut short by a kill is not whole: its job runs again."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.offsets: dict[Path, int] = {}
        self.done: dict[str, dict] = {}

    def read(self) -> dict[str, dict]:
        for manifest in self.folder.glob("manifest-rank*.jsonl"):
            start = self.offsets.get(manifest, 0)
            with open(manifest, "rb") as f:
                f.seek(start)
                data = f.read()
            end = data.rfind(b"\n") + 1
            self.offsets[manifest] = start + end
            for line in data[:end].splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if "files" in entry:
                    self.done[entry["key"]] = entry["files"]
        return self.done


def finished(folder: Path, jobs: list[Job]) -> set[int]:
    """The jobs the manifests record as done whose files are all still there."""
    done = Manifests(folder).read()
    return {
        job.index
        for job in jobs
        if job.key in done and all((folder / name).exists() for name in done[job.key])
    }


def run_job(job: Job, folder: Path, device: str | None) -> dict:
    """Run one job through its task's main(); its output lines and progress bars are swallowed.
    Returns {"files": {name: sha256}} or {"error": message}."""
    target = folder / job.out
    target.parent.mkdir(parents=True, exist_ok=True)
    argv = [*job.argv, "--out", str(target)]
    if device is not None and "device" not in job.options:
        argv += ["--device", device]
    before = set(target.parent.iterdir())
    err = io.StringIO()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            load_task(job.task).main(argv)
    except SystemExit as e:
        if e.code == EXIT_INTERRUPTED:
            raise KeyboardInterrupt from None
        lines = [line for line in err.getvalue().splitlines() if line.startswith("error: ")]
        return {"error": lines[-1][len("error: ") :] if lines else f"exit code {e.code}"}
    except Exception as e:  # a bug in one job must not stop the batch
        return {"error": f"{type(e).__name__}: {e}"}
    written = outputs(target, before)
    return {"files": {str(p.relative_to(folder)): sha256(p) for p in written}}


def outputs(target: Path, before: set[Path]) -> list[Path]:
    """What a job wrote: its out path (a file or a folder of frames), or the numbered files the
    image command writes for several images (out-0.png, out-1.png, …)."""
    if target.is_dir():
        return sorted(p for p in target.rglob("*") if p.is_file())
    if target.exists():
        return [target]
    new = set(target.parent.iterdir()) - before
    return sorted(p for p in new if p.stem.startswith(f"{target.stem}-") and p.is_file())


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def append_line(path: Path, entry: dict) -> None:
    """One manifest line, written whole and flushed to disk before the next job starts."""
    with open(path, "a") as f:
        f.write(json.dumps(entry) + "\n")
        f.flush()
        os.fsync(f.fileno())


def main(argv: list[str] | None = None) -> None:
    def body() -> None:
        args = parser().parse_args(argv)
        from spacetime.errors import ArgumentValueError

        jobs = read_jobs(args.jobs)
        args.out.mkdir(parents=True, exist_ok=True)
        import torch
        from accelerate import PartialState

        # torchrun's / accelerate's processes (gloo on CPU), or this one alone
        state = PartialState(cpu=not torch.cuda.is_available())
        rank, world = state.process_index, state.num_processes
        device = str(state.device) if state.device.type == "cuda" else None
        done = finished(args.out, jobs)
        mine = [job for job in jobs if job.index not in done][rank::world]
        manifest = args.out / f"manifest-rank{rank}.jsonl"
        bar = progress(len(jobs), len(done), state.is_main_process)
        manifests, keys = Manifests(args.out), {job.key for job in jobs}
        failed = 0
        for job in mine:
            started = time.perf_counter()
            result = run_job(job, args.out, device)
            failed += "error" in result
            append_line(manifest, job.record(**result, seconds=round(time.perf_counter() - started, 2)))  # fmt: skip
            if bar is not None:
                bar.update(max(0, len(keys & manifests.read().keys()) - bar.n))
        state.wait_for_everyone()
        all_done = finished(args.out, jobs)
        if bar is not None:
            bar.update(max(0, len(all_done) - bar.n))
            bar.close()
        if state.is_main_process:
            print(f"{len(all_done)} of {len(jobs)} jobs done; manifests in {args.out}")
        if failed or len(all_done) < len(jobs):
            raise ArgumentValueError(
                f"{len(jobs) - len(all_done)} of {len(jobs)} jobs failed: their errors are in "
                f"{args.out}/manifest-rank*.jsonl; run the batch again to retry them"
            )

    run(body)


def progress(total: int, done: int, show: bool):
    """One bar for the whole batch, on the main process: jobs done by every process."""
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=done, desc="batch", unit="job", file=sys.stderr)


script = entry_point(main)  # the console script

if __name__ == "__main__":
    script()
