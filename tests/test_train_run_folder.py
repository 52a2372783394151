"""The run folder: new/resume rules, last/ and best/ written as units that survive a crash at any moment,
and a training state that is read without running code."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from dcmp_cli.cli.app import app
from dcmp_cli.training import trainer as trainer_module
from dcmp_cli.training.atomic_folder import (
    leftovers,
    recover_folder,
    write_folder_atomic,
)
from dcmp_cli.training.config import TrainConfig
from dcmp_cli.training.run_folder import RunFolderError, RunPaths, prepare_run
from dcmp_cli.training.state import load_state
from dcmp_cli.training.trainer import train

from helpers import tiny_train_config, write_pairs

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_pairs(tmp_path_factory.mktemp("run-folder-data") / "pairs")


def tiny_config(data: Path, **values) -> TrainConfig:
    return tiny_train_config(data, **{"tensorboard": False, **values})


# --- folders replaced as one unit ------------------------------------------------------------------------

#: Runs write_folder_atomic(TARGET, write) and dies (os._exit, like kill -9) at the named point.
_CRASH = """
import os, pathlib, sys
from dcmp_cli.training import atomic_folder

target, point = pathlib.Path(sys.argv[1]), sys.argv[2]
renames = 0
real_rename = pathlib.Path.rename

def rename(self, dst):
    global renames
    renames += 1
    if point == f"rename{renames}":
        os._exit(9)
    return real_rename(self, dst)

pathlib.Path.rename = rename
if point == "remove-old":
    atomic_folder._remove = lambda path: os._exit(9)

def write(folder):
    (folder / "state.pt").write_text("new")
    if point == "write":
        (folder / "net.safetensors").write_text("ne")
        os._exit(9)
    (folder / "net.safetensors").write_text("new")

atomic_folder.write_folder_atomic(target, write)
"""


@pytest.mark.parametrize(
    "point, expected",
    [
        ("write", "old"),
        ("rename1", "old"),
        ("rename2", "new"),
        ("rename3", "new"),
        ("remove-old", "new"),
        ("none", "new"),
    ],
)
def test_a_killed_write_leaves_one_complete_unit(tmp_path, point, expected):
    """rename1: partial -> ready; rename2: last -> old; rename3: ready -> last."""
    target = tmp_path / "last"
    target.mkdir()
    for name in ("state.pt", "net.safetensors"):
        (target / name).write_text("old")
    (target / ".state.x1y2.tmp.pt").write_text("left by an older dcmp")
    proc = subprocess.run(
        [sys.executable, "-c", _CRASH, str(target), point], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == (0 if point == "none" else 9), proc.stderr
    recover_folder(target)
    assert {p.name: p.read_text() for p in target.iterdir()} == {"state.pt": expected, "net.safetensors": expected}
    assert leftovers(target) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["last"]


def test_a_failed_write_keeps_the_old_folder(tmp_path):
    target = tmp_path / "best"

    def write(folder: Path) -> None:
        (folder / "a").write_text("1")

    write_folder_atomic(target, write)

    def broken(folder: Path) -> None:
        (folder / "a").write_text("2")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_folder_atomic(target, broken)
    assert (target / "a").read_text() == "1" and sorted(p.name for p in tmp_path.iterdir()) == ["best"]


def test_a_crash_while_saving_last_leaves_it_consistent_and_resume_cleans_up(dataset, tmp_path, monkeypatch):
    config = tiny_config(dataset, iters=2, checkpoint_every_iters=1)
    real = trainer_module.save_state
    calls = []

    def failing_second(path, state):
        calls.append(state["step"])
        if len(calls) == 2:  # networks of iteration 2 are already in the unit folder
            (path.parent / "half-written").write_text("x")
            raise OSError("no space left on device")
        real(path, state)

    monkeypatch.setattr(trainer_module, "save_state", failing_second)
    run = tmp_path / "run"
    with pytest.raises(OSError, match="no space left"):
        train(config, run)
    monkeypatch.undo()
    paths = RunPaths(run)
    state = load_state(paths.state)
    assert calls == [1, 2] and state["step"] == 1
    exported = load_file(str(paths.network(paths.last, "dcmpnet-tiny", "dehaze")))
    assert all(torch.equal(exported[k], state["dehaze"][k]) for k in exported)  # networks of iteration 1, too
    assert sorted(p.name for p in paths.last.iterdir()) == [
        "dcmpnet-tiny-dehaze.safetensors",
        "dcmpnet-tiny-depth.safetensors",
        "state.pt",
    ]
    assert leftovers(paths.last) == []

    (paths.last / ".state.k9l0.tmp.pt").write_text("left by a killed older dcmp")  # the reported leftover
    (run / ".last.partial-abc123").mkdir()  # and one of a killed write
    result = train(config, run, resume=True)
    assert result.step == 2 and load_state(paths.state)["step"] == 2
    assert not list(run.glob(".last*")) and not list(paths.last.glob(".*"))


# --- the training state --------------------------------------------------------------------------------


class _TouchOnUnpickle:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_a_state_file_with_code_is_refused_without_running(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "last" / "state.pt"
    path.parent.mkdir()
    torch.save({"format": "dcmp-train-state", "version": 1, "rng": _TouchOnUnpickle(marker)}, path)
    with pytest.raises(RunFolderError) as info:
        load_state(path)
    message = str(info.value)
    assert "Python objects other than tensors" in message and "weights_only" not in message and "\n" not in message
    assert not marker.exists()


# --- new run or resume -------------------------------------------------------------------------------------


def test_new_and_resume_rules_say_what_to_do_without_naming_options(dataset, tmp_path):
    config = tiny_config(dataset, iters=2)
    with pytest.raises(RunFolderError) as info:
        prepare_run(tmp_path / "empty", config, resume=True)
    assert info.value.problem == "nothing_to_resume"
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps(config.to_dict()))
    with pytest.raises(RunFolderError) as info:
        prepare_run(tmp_path / "run", config, resume=False)
    assert info.value.problem == "exists"
    with pytest.raises(RunFolderError) as changed:
        prepare_run(tmp_path / "run", config.with_values(lr_dehaze=1e-3), resume=True)
    assert changed.value.problem == "recipe_changed" and "lr_dehaze" in str(changed.value)
    for error in (info.value, changed.value):
        assert "--" not in str(error)
    # Where and how it runs may change; None resumes with the saved config as it is.
    assert prepare_run(tmp_path / "run", config.with_values(log_every=5), resume=True).log_every == 5
    assert prepare_run(tmp_path / "run", None, resume=True) == config
    # The command adds its options.
    result = runner.invoke(app, ["train", "--data", str(dataset), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "--resume continues it; --out names another folder" in " ".join(result.output.split())
