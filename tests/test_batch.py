"""Batch generation: jobs checked against their commands' parsers before any runs; outputs written
atomically with a manifest line each; a restart after a kill does every job once; two processes
(torchrun, gloo) give the files one process gives."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spacetime import batch
from spacetime.errors import ArgumentValueError

JOBS = [
    {"task": "image", "prompt": "a red circle", "out": "red.png", "steps": 2},
    {"task": "image", "prompt": "a blue square", "steps": 2, "num_images": 2, "seed": 7},
    {
        "task": "video",
        "prompt": "a red circle moving right",
        "frames": 4,
        "steps": 2,
        "free_init": 0,
        "out": "clips/right.gif",
    },  # fmt: skip
    {
        "task": "image",
        "prompt": "a green triangle",
        "steps": 2,
        "guidance": 1.0,
        "lora": ["lcm-image"],
        "scheduler": "lcm",
        "out": "green.png",
    },  # fmt: skip
]


def write_jobs(path: Path, jobs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(job) + "\n" for job in jobs))
    return path


def manifest(folder: Path) -> list[dict]:
    return [json.loads(line) for m in sorted(folder.glob("manifest-rank*.jsonl"))
            for line in m.read_text().splitlines()]  # fmt: skip


def test_jobs_become_their_commands_arguments(tmp_path):
    jobs = batch.read_jobs(write_jobs(tmp_path / "jobs.jsonl", JOBS))
    assert [job.out for job in jobs] == [Path("red.png"), Path("000001.png"),
                                         Path("clips/right.gif"), Path("green.png")]  # fmt: skip
    assert [job.seed for job in jobs] == [0, 7, 2, 3]  # the line number unless given
    assert jobs[1].argv == ("a blue square", "--seed", "7", "--steps", "2", "--num-images", "2")
    assert jobs[2].argv[-2:] == ("--free-init", "0")
    assert "--lora" in jobs[3].argv and "lcm-image" in jobs[3].argv


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"task": "image", "prompt": "x", "frames": 3}',
         r"line 2: 'frames' is no option of image; valid: .*negative_prompt"),
        ('{"task": "image", "prompt": "x", "steps": "many"}', r"line 2: .*--steps: invalid int"),
        ('{"task": "audio", "prompt": "x"}', "line 2: task must be one of image, video, mesh"),
        ('{"task": "image", "prompt": "x", "out": "red.png"}', "line 2: out red.png is also line 1"),
        ('{"task": "image", "prompt": "x", "out": "../x.png"}', "line 2: out must be a path inside"),
        ('{"task": "image", "prompt": "x", "karras": "yes"}', "--karras takes true or false"),
        ('{"task": "image", "prompt": "x", "out": "x.txt"}', "line 2: out x.txt: an image job writes .png"),
        ("not json", "line 2: not JSON"),
    ],
)  # fmt: skip
def test_a_bad_job_is_refused_before_any_runs(tmp_path, capsys, line, message):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps(JOBS[0]) + "\n" + line + "\n")
    with pytest.raises(ArgumentValueError, match=message):
        batch.read_jobs(jobs)
    with pytest.raises(SystemExit) as e:
        batch.main([str(jobs), "--out", str(tmp_path / "out")])
    assert e.value.code == 2
    assert not (tmp_path / "out").exists()


def test_a_batch_writes_each_output_with_a_manifest_line_and_a_restart_skips_them(tmp_path):
    failing = {"task": "image", "prompt": "a red circle", "steps": 100000}
    jobs = write_jobs(tmp_path / "jobs.jsonl", [*JOBS, failing])
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:  # one job fails: the batch goes on, then says so
        batch.main([str(jobs), "--out", str(out)])
    assert e.value.code == 2
    lines = manifest(out)
    assert [line["job"] for line in lines] == [0, 1, 2, 3, 4]
    assert "steps must be <= 1000" in lines[4]["error"]
    for line in lines[:4]:
        for name, digest in line["files"].items():
            assert batch.sha256(out / name) == digest
    assert set(lines[1]["files"]) == {"000001-0.png", "000001-1.png"}
    assert lines[1]["seed"] == 7 and lines[1]["options"]["num_images"] == 2

    write_jobs(jobs, JOBS)  # the failing job fixed away: nothing is left to run
    batch.main([str(jobs), "--out", str(out)])
    assert len(manifest(out)) == 5


def run_batch(jobs: Path, out: Path, *launcher: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # torchrun's default: the same numbers
    return subprocess.Popen([*launcher, "-m", "spacetime.batch", str(jobs), "--out", str(out)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def test_a_batch_killed_midway_ends_with_every_job_done_once(tmp_path):
    jobs = write_jobs(tmp_path / "jobs.jsonl", JOBS[:3])
    out = tmp_path / "out"
    process = run_batch(jobs, out, sys.executable)
    deadline = time.time() + 120
    while not manifest(out) and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert 1 <= len(manifest(out)) < 3, "the kill should land mid-batch"
    restarted = run_batch(jobs, out, sys.executable)
    assert restarted.wait(timeout=300) == 0, restarted.stderr.read().decode()
    lines = manifest(out)
    assert sorted(line["job"] for line in lines) == [0, 1, 2]
    assert not [p for p in out.rglob("*") if p.name.startswith(".spacetime-tmp-")]


def test_two_processes_write_the_files_one_process_writes(tmp_path):
    jobs = write_jobs(tmp_path / "jobs.jsonl", JOBS)
    one = run_batch(jobs, tmp_path / "one", sys.executable)
    assert one.wait(timeout=300) == 0, one.stderr.read().decode()
    two = run_batch(jobs, tmp_path / "two", sys.executable, "-m", "torch.distributed.run",
                    "--nproc_per_node", "2")  # fmt: skip
    assert two.wait(timeout=300) == 0, two.stderr.read().decode()
    by_rank = {m.name: [json.loads(x)["job"] for x in m.read_text().splitlines()]
               for m in (tmp_path / "two").glob("manifest-rank*.jsonl")}  # fmt: skip
    assert by_rank == {"manifest-rank0.jsonl": [0, 2], "manifest-rank1.jsonl": [1, 3]}
    files = {name: digest for line in manifest(tmp_path / "one") for name, digest in line["files"].items()}  # fmt: skip
    assert files == {
        name: digest
        for line in manifest(tmp_path / "two")
        for name, digest in line["files"].items()
    }
    assert len(files) == 5
