"""What batch users see: prompt Ctrl-C, bounded memory, options checked up front, clear reports."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from dcmp_cli.cli.app import app, misplaced_option_hint
from dcmp_cli.core.batch import MAX_PENDING_SAVES, BatchInterrupted, Stages, run_batch
from dcmp_cli.data.image_io import write_image

from helpers import interrupting_dehazer, synthetic_hazy

runner = CliRunner()


def _folder(root: Path, count: int) -> Path:
    for i in range(count):
        write_image(root / f"img{i:02d}.png", synthetic_hazy(24, 32, seed=i)[1])
    return root


def test_ctrl_c_stops_after_the_writes_in_flight_and_a_rerun_finishes(tmp_path, monkeypatch):
    src = _folder(tmp_path / "in", 6)
    monkeypatch.setattr("dcmp_cli.core.loading.load_dehazer", lambda *a, **k: interrupting_dehazer(at=3))
    result = runner.invoke(app, ["dehaze", str(src), str(tmp_path / "out")])
    assert result.exit_code == 130
    assert "interrupted: 2 done, 4 left; re-run the same command to finish" in result.output
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["img00.png", "img01.png"]  # complete files only, no temporaries
    monkeypatch.undo()
    again = runner.invoke(app, ["dehaze", str(src), str(tmp_path / "out"), "--method", "dcp", "--json"])
    assert again.exit_code == 0
    assert json.loads(again.stdout)["counts"] == {"done": 4, "skipped": 2, "failed": 0, "ignored": 0}


def test_run_batch_raises_with_what_was_done(tmp_path):
    jobs = [(tmp_path / f"{i}.in", tmp_path / f"{i}.out") for i in range(5)]

    def compute(data, progress):
        if data == 3:
            raise KeyboardInterrupt
        return data

    stages = Stages(lambda source: int(source.stem), compute, lambda result, target: target.write_text(str(result)))
    with pytest.raises(BatchInterrupted) as caught:
        run_batch(jobs, stages)
    assert caught.value.summary.count("done") == 3 and caught.value.remaining == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0.out", "1.out", "2.out"]


def test_results_waiting_to_be_written_do_not_pile_up(tmp_path):
    """Back-pressure: with a slow writer, results in memory stay bounded whatever the batch size."""
    alive, peak, lock = 0, 0, threading.Lock()

    def compute(data, progress):
        nonlocal alive, peak
        with lock:
            alive += 1
            peak = max(peak, alive)
        return data

    def save(result, target):
        nonlocal alive
        time.sleep(0.02)
        with lock:
            alive -= 1

    jobs = [(tmp_path / f"{i}.in", tmp_path / f"{i}.out") for i in range(30)]
    summary = run_batch(jobs, Stages(lambda source: source, compute, save))
    assert summary.count("done") == 30
    assert peak <= MAX_PENDING_SAVES + 1, peak
    assert summary.wall_seconds >= 30 * 0.02


def test_options_are_checked_before_any_work(tmp_path):
    src = _folder(tmp_path / "in", 2)
    cases = [
        (["--ext", "gif"], "cannot write .gif files"),
        (["--device", "gpu"], "--device gpu"),
        (["--method", "dcp", "--device", "cuda"], "--device cuda") if not torch.cuda.is_available() else None,
        (["--shard", "3/2"], "--shard"),
        (["--tile", "big"], "--tile"),
    ]
    for case in filter(None, cases):
        args, message = case
        result = runner.invoke(app, ["dehaze", str(src), str(tmp_path / "out"), *args])
        assert result.exit_code == 2 and message in result.output, (args, result.output)
        assert not (tmp_path / "out").exists()
    depth = runner.invoke(app, ["depth", str(src), str(tmp_path / "d"), "--ext", "jpg"])
    assert depth.exit_code == 2 and "cannot write .jpg" in depth.output


def test_misplaced_options_get_a_hint():
    assert "global option" in misplaced_option_hint(["dehaze", "a", "b", "--threads", "2"])
    assert "positional" in misplaced_option_hint(["dehaze", "-i", "a", "-o", "b"])
    assert misplaced_option_hint(["--threads", "2", "dehaze", "a", "b"]) is None
    assert misplaced_option_hint(["train", "-o", "run"]) is None  # -o is train's --out


def test_reports_say_what_happened(tmp_path):
    src = _folder(tmp_path / "in", 2)
    runner.invoke(app, ["dehaze", str(src), str(tmp_path / "out"), "--method", "dcp"])
    again = runner.invoke(app, ["dehaze", str(src), str(tmp_path / "out"), "--method", "dcp"])
    assert again.exit_code == 0 and "skipped 2: output exists (--overwrite redoes it)" in again.output
    one = runner.invoke(app, ["dehaze", str(src / "img00.png"), str(tmp_path / "one.png"), "--method", "dcp"])
    assert f"wrote {tmp_path / 'one.png'}" in one.output
    data = runner.invoke(app, ["dehaze", str(src), str(tmp_path / "j"), "--method", "dcp", "--json"])
    assert json.loads(data.stdout)["wall_seconds"] > 0


def test_image_bytes_are_not_written_to_a_terminal(tmp_path, monkeypatch):
    source = _folder(tmp_path / "in", 1) / "img00.png"
    monkeypatch.setattr("dcmp_cli.cli.common._stdout_is_terminal", lambda: True)
    result = runner.invoke(app, ["dehaze", str(source), "-", "--method", "dcp"])
    assert result.exit_code == 2 and "terminal" in result.output
    forced = runner.invoke(app, ["dehaze", str(source), "-", "--method", "dcp", "--force"])
    assert forced.exit_code == 0 and forced.stdout_bytes.startswith(b"\x89PNG")


def test_stdout_stream_when_piped(tmp_path):
    source = _folder(tmp_path / "in", 1) / "img00.png"
    result = runner.invoke(app, ["dehaze", str(source), "-", "--method", "dcp"])
    assert result.exit_code == 0 and result.stdout_bytes.startswith(b"\x89PNG")
    assert np.frombuffer(result.stdout_bytes, np.uint8).size > 100


def test_tile_requests_are_normalised_once_with_a_note(tmp_path, tiny_dehaze_ckpt):
    src = _folder(tmp_path / "in", 1)
    result = runner.invoke(
        app, ["dehaze", str(src), str(tmp_path / "out"), "-w", str(tiny_dehaze_ckpt), "--tile", "100"]
    )
    assert result.exit_code == 0, result.output
    assert result.output.count("tile size 100 rounded down to 96") == 1
    bad = runner.invoke(app, ["dehaze", str(src), str(tmp_path / "x"), "--tile", "20"])
    assert bad.exit_code == 2 and "at least 32" in bad.output and not (tmp_path / "x").exists()
