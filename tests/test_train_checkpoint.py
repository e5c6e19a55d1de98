"""Training checkpoints hold no pickle: a planted payload in a run folder never runs."""

import io
import json
import math
from pathlib import Path

import pytest
import torch

from spacetime.errors import CheckpointError
from spacetime.train.__main__ import main
from spacetime.train.checkpoint import load_checkpoint, save_checkpoint
from spacetime.train.loop import checkpoints

TINY = ["--quiet", "--set", "task=vae", "--set", "preset=tiny", "--set", "batch_size=2",
        "--set", "checkpoint_every=1", "--set", "threads=1"]  # fmt: skip


class Payload:
    """Unpickling this writes a file: the stand-in for an attacker's code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "the payload ran"))


def plant(path: Path, marker: Path) -> None:
    data = io.BytesIO()
    torch.save(Payload(marker), data)
    path.write_bytes(data.getvalue())
    # The planted bytes are live: accelerate's load_state reads custom state exactly like this.
    torch.load(io.BytesIO(data.getvalue()), weights_only=False)
    assert marker.exists()
    marker.unlink()


def train_cli(out: Path, steps: int, capsys) -> tuple[int, str]:
    try:
        main([*TINY, "--set", f"steps={steps}", "--out", str(out)])
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def test_state_round_trips_types_tied_tensors_and_non_finite_numbers(tmp_path):
    w = torch.randn(3, 2)
    state = {
        "optimizer": {"state": {0: {"step": torch.tensor(4.0), "exp_avg": w}},
                      "param_groups": [{"betas": (0.9, 0.999), "params": [0], "foreach": None}]},
        "tied": {"a": w, "b": w},
        "loss": math.inf,
        "$odd": [1, "x", False],
    }  # fmt: skip
    save_checkpoint(tmp_path, state)
    back = load_checkpoint(tmp_path)
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert list(back["optimizer"]["state"]) == [0]  # int keys stay ints
    assert torch.equal(back["optimizer"]["state"][0]["exp_avg"], w)
    assert torch.equal(back["tied"]["a"], back["tied"]["b"])
    assert back["loss"] == math.inf and back["$odd"] == [1, "x", False]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json", "tensors.safetensors"]


def test_a_resumed_run_continues_from_its_checkpoint(tmp_path, capsys):
    assert train_cli(tmp_path / "run", 2, capsys)[0] == 0
    assert train_cli(tmp_path / "run", 3, capsys)[0] == 0
    log = (tmp_path / "run" / "log.jsonl").read_text()
    assert json.loads(log.splitlines()[-1])["step"] == 3
    assert json.loads((tmp_path / "run" / "export.json").read_text())["steps_done"] == 3


@pytest.mark.parametrize(
    "where, message",
    [
        ("custom_checkpoint_0.pkl", "refused to resume from"),  # accelerate's custom state file
        ("random_states_0.pkl", "refused to resume from"),
        ("optimizer.bin", "refused to resume from"),
        ("tensors.safetensors", "damaged checkpoint"),  # a pickle in place of the tensors
        ("state.json", "damaged checkpoint"),
    ],
)
def test_a_planted_pickle_payload_never_runs(tmp_path, capsys, where, message):
    run, marker = tmp_path / "run", tmp_path / "pwned"
    assert train_cli(run, 1, capsys)[0] == 0
    latest = checkpoints(run / "checkpoints")[-1]
    plant(latest / where, marker)
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    code, err = train_cli(run, 2, capsys)
    assert not marker.exists()
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert message in err and str(latest) in err
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before


def test_tampered_state_json_is_refused(tmp_path):
    save_checkpoint(tmp_path, {"w": torch.zeros(2)})
    state = tmp_path / "state.json"
    document = json.loads(state.read_text())
    document["state"]["w"] = {"$tensor": "/missing"}
    state.write_text(json.dumps(document))
    with pytest.raises(CheckpointError, match="no tensor '/missing'"):
        load_checkpoint(tmp_path)
    document["state"]["w"] = {"$class": "os.system"}
    state.write_text(json.dumps(document))
    with pytest.raises(CheckpointError, match="unknown tag"):
        load_checkpoint(tmp_path)
