"""Depth teachers: checkpoints load; programs (torch.export, TorchScript) only when trusted, and a crafted
archive never runs its code without that trust, whatever its file name."""

from __future__ import annotations

import contextlib
import io
import json
import pathlib
import zipfile
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from dcmp_cli.cli.app import app
from dcmp_cli.core.checkpoint import CheckpointError, read_checkpoint
from dcmp_cli.training.teacher import TeacherError, load_teacher, normalise_per_sample

from helpers import synthetic_hazy, write_png

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()
CPU = torch.device("cpu")


class TouchOnUnpickle:
    """Unpickling this creates ``marker``: a stand-in for any code a crafted file could run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def _conv() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Conv2d(3, 1, 3, padding=1)


def _export(conv: torch.nn.Module, path: Path) -> Path:
    dynamic = torch.export.Dim.DYNAMIC
    exported = torch.export.export(
        conv, (torch.rand(2, 3, 16, 16),), dynamic_shapes={"input": {0: dynamic, 2: dynamic, 3: dynamic}}
    )
    torch.export.save(exported, path)
    return path


def crafted_export(path: Path, marker: Path) -> Path:
    """A torch.export archive whose weight is marked pickled and unpickles to ``TouchOnUnpickle(marker)``."""
    source = zipfile.ZipFile(io.BytesIO(_export(_conv(), path).read_bytes()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for info in source.infolist():
            data = source.read(info.filename)
            if info.filename.endswith("data/weights/model_weights_config.json"):
                config = json.loads(data)
                config["config"]["weight"]["use_pickle"] = True
                data = json.dumps(config).encode()
            elif info.filename.endswith("data/weights/weight_0"):
                payload = io.BytesIO()
                torch.save(TouchOnUnpickle(marker), payload)
                data = payload.getvalue()
            archive.writestr(info, data)
    path.write_bytes(out.getvalue())
    return path


def test_the_crafted_archive_does_run_code_when_torch_loads_it(tmp_path):
    """The check below is only meaningful if the crafted file is live: torch.export.load runs it."""
    marker = tmp_path / "ran"
    evil = crafted_export(tmp_path / "control.pt2", marker)
    with contextlib.suppress(Exception):  # the archive is broken beyond its payload; what matters is that it ran
        torch.export.load(str(evil))
    assert marker.exists()


@pytest.mark.parametrize("name", ["teacher.pt2", "teacher.pth"])
def test_a_crafted_export_archive_is_refused_without_running(tmp_path, name):
    marker = tmp_path / "ran"
    evil = crafted_export(tmp_path / name, marker)
    with pytest.raises(TeacherError) as info:
        load_teacher(evil, CPU)
    message = str(info.value)
    assert info.value.needs_trust and "arbitrary code" in message and "trust_teacher_code" in message
    assert "\n" not in message and "weights_only" not in message and "--" not in message
    with pytest.raises(CheckpointError) as as_weights:  # nor does it run as a network checkpoint
        read_checkpoint(evil)
    assert "weights_only" not in str(as_weights.value) and "\n" not in str(as_weights.value)
    assert not marker.exists()


def test_dcmp_train_refuses_a_crafted_teacher_and_names_the_option(tmp_path):
    for i in range(2):
        clear, hazy, _ = synthetic_hazy(48, 64, seed=i)
        write_png(tmp_path / "data" / "hazy" / f"{i}.png", hazy)
        write_png(tmp_path / "data" / "GT" / f"{i}.png", clear)
    marker = tmp_path / "ran"
    evil = crafted_export(tmp_path / "teacher.pth", marker)
    result = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(tmp_path / "data"),
            "--out",
            str(tmp_path / "run"),
            "--depth-teacher",
            str(evil),
            "--preset",
            "dcmpnet-tiny",
            "-b",
            "2",
            "--patch-size",
            "32",
            "--workers",
            "0",
            "--device",
            "cpu",
            "--iters",
            "1",
        ],
    )
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    error = " ".join(line for line in lines if not line.startswith("note:"))
    assert error.startswith("error: refused to load the depth teacher") and "--trust-teacher-code" in error
    assert "weights_only" not in result.output
    assert not marker.exists()
    assert not (tmp_path / "run" / "last").exists()


def test_trusted_exported_and_torchscript_teachers(tmp_path):
    conv = _conv()
    exported = _export(conv, tmp_path / "teacher.pt2")
    clear = torch.rand(1, 3, 24, 24)
    raw = conv(clear)
    teacher = load_teacher(exported, CPU, input_range="unit", output="depth", trust_code=True)
    target = teacher(clear)
    assert target.shape == (1, 1, 24, 24) and not target.requires_grad
    # depth output -> disparity target, normalised per sample between its 1st and 99th percentiles
    torch.testing.assert_close(target, 1 - normalise_per_sample(raw.detach()))
    assert float((target > 0.99).float().mean()) <= 0.02 + 1e-6
    with pytest.warns(DeprecationWarning):  # PyTorch deprecates TorchScript; dcmp still reads it
        scripted = torch.jit.script(conv)
        scripted.save(str(tmp_path / "teacher.pt"))
    with pytest.raises(TeacherError, match="it is a TorchScript program, which can run arbitrary code") as info:
        load_teacher(tmp_path / "teacher.pt", CPU)
    assert info.value.needs_trust
    with pytest.warns(DeprecationWarning):
        legacy = load_teacher(tmp_path / "teacher.pt", CPU, input_range="unit", output="depth", trust_code=True)
    torch.testing.assert_close(legacy(clear), target)
