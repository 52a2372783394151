"""`dcmp train` end to end on the CPU with the tiny preset: run folder, checkpoints, exact resume,
bad data, non-finite losses, optional loss terms, and a 2-process Gloo run under torchrun."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from dcmp_cli.cli.app import app
from dcmp_cli.core.checkpoint import read_checkpoint, save_checkpoint
from dcmp_cli.models import create_model, get_preset
from dcmp_cli.signals import StopSignal, stop_on_signals
from dcmp_cli.training import model as model_module
from dcmp_cli.training.config import TrainConfig
from dcmp_cli.training.events import TrainEvents
from dcmp_cli.training.metrics_log import read_metrics
from dcmp_cli.training.teacher import load_teacher
from dcmp_cli.training.trainer import NonFiniteLossError, train
from dcmp_cli.training.vgg import VGG19Features

from helpers import tiny_train_config, write_pairs

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
TINY = ["--preset", "dcmpnet-tiny", "-b", "2", "--patch-size", "32", "--workers", "0", "--device", "cpu"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_pairs(tmp_path_factory.mktemp("train-data") / "pairs")


def tiny_config(data: Path, **values) -> TrainConfig:
    return tiny_train_config(data, **values)


# --- the command -------------------------------------------------------------------------------------------


def test_cli_run_writes_a_run_folder_whose_checkpoints_work_as_weights(dataset, tmp_path):
    """Train two iterations, then use the checkpoints with dehaze, depth, video and eval."""
    run = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(dataset),
            "--val-data",
            str(dataset),
            "--out",
            str(run),
            "--iters",
            "2",
            *TINY,
            "--set",
            "log_every=1",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["step"] == 2 and summary["total_steps"] == 2 and not summary["interrupted"]
    assert len(summary["fingerprints"]) == 1

    config = json.loads((run / "config.json").read_text())
    assert config["optim"]["iters"] == 2 and config["model"]["preset"] == "dcmpnet-tiny"
    rows = read_metrics(run / "metrics.jsonl")
    train_rows = [r for r in rows if r["type"] == "train"]
    assert [r["step"] for r in train_rows] == [1, 2]
    for key in (
        "loss_dehaze",
        "loss_depth",
        "restore",
        "depth_consistency",
        "depth_weighted",
        "lr_dehaze",
        "lr_depth",
        "images_per_s",
    ):
        assert np.isfinite(train_rows[-1][key]), key
    assert train_rows[0]["lr_dehaze"] > train_rows[1]["lr_dehaze"]  # cosine schedule, per iteration
    (val,) = [r for r in rows if r["type"] == "val"]
    assert val["step"] == 2 and val["images"] == 4 and 0 < val["ssim"] <= 1 and val["hazy_psnr"] > 5

    state = torch.load(run / "last" / "state.pt", weights_only=True)
    assert state["step"] == 2 and set(state["rng"]) >= {"torch", "python", "numpy_keys"}
    for folder in ("last", "best"):
        dehaze = read_checkpoint(run / folder / "dcmpnet-tiny-dehaze.safetensors", kind="dehaze")
        depth = read_checkpoint(run / folder / "dcmpnet-tiny-depth.safetensors", kind="depth")
        assert dehaze.preset == depth.preset == "dcmpnet-tiny"
        assert depth.depth_convention == "disparity"
        assert str(dataset.resolve()) in dehaze.metadata["trained_on"] and "4 pairs" in dehaze.metadata["trained_on"]
        torch.testing.assert_close(dehaze.state_dict, state["dehaze"], rtol=0, atol=0)
    assert json.loads((run / "best" / "best.json").read_text())["psnr"] == pytest.approx(val["psnr"])

    weights = run / "best" / "dcmpnet-tiny-dehaze.safetensors"
    out = runner.invoke(
        app,
        [
            "dehaze",
            str(dataset / "hazy" / "img0.png"),
            str(tmp_path / "restored.png"),
            "--weights",
            str(weights),
            "--device",
            "cpu",
        ],
    )
    assert out.exit_code == 0, out.output
    assert (tmp_path / "restored.png").is_file()
    out = runner.invoke(
        app,
        [
            "depth",
            str(dataset / "hazy" / "img0.png"),
            str(tmp_path / "depth.png"),
            "--weights",
            str(run / "best" / "dcmpnet-tiny-depth.safetensors"),
            "--device",
            "cpu",
        ],
    )
    assert out.exit_code == 0, out.output
    out = runner.invoke(
        app, ["video", str(dataset / "hazy"), str(tmp_path / "frames"), "--weights", str(weights), "--device", "cpu"]
    )  # a folder of frames in, dehazed frames out
    assert out.exit_code == 0, out.output
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == [f"img{i}.png" for i in range(4)]
    out = runner.invoke(
        app, ["eval", "--dataset", str(dataset), "--weights", str(weights), "--device", "cpu", "--json"]
    )
    assert out.exit_code == 0, out.output
    (mean,) = json.loads(out.stdout)["datasets"][0]["means"]
    assert mean["images"] == 4 and mean["psnr"] == pytest.approx(val["psnr"], abs=1e-5)  # same protocol, same number


# --- resume ---------------------------------------------------------------------------------------------------


class StopAt(TrainEvents):
    """Asks the trainer to stop once iteration ``at`` is done (what Ctrl-C does)."""

    def __init__(self, stop: StopSignal, at: int) -> None:
        self.stop, self.at = stop, at

    def progress(self, step, total, losses) -> None:
        if step == self.at:
            self.stop.set()


def _state(run: Path) -> dict:
    return torch.load(run / "last" / "state.pt", weights_only=True)


def test_interrupted_and_resumed_run_ends_with_the_same_weights(dataset, tmp_path):
    config = tiny_config(dataset, iters=6, val_data=str(dataset), val_max_images=1)  # 2 iterations per epoch
    straight = train(config, tmp_path / "straight")
    assert straight.step == 6 and not straight.interrupted

    stop = StopSignal()
    first = train(config, tmp_path / "resumed", events=StopAt(stop, 3), stop=stop)  # stops mid-epoch
    assert first.interrupted and first.step == 3 and _state(tmp_path / "resumed")["step"] == 3
    second = train(config, tmp_path / "resumed", resume=True)
    assert second.step == 6 and not second.interrupted

    a, b = _state(tmp_path / "straight"), _state(tmp_path / "resumed")
    for key in ("dehaze", "depth"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name}"
    for key in ("optim_dehaze", "optim_depth"):
        for index, slot in a[key]["state"].items():
            for name, tensor in slot.items():
                assert torch.equal(tensor, b[key]["state"][index][name]), f"{key}[{index}].{name}"
    assert a["sched_dehaze"] == b["sched_dehaze"] and a["best_psnr"] == b["best_psnr"]
    assert straight.fingerprints == second.fingerprints
    straight_rows = [r for r in read_metrics(tmp_path / "straight" / "metrics.jsonl") if r["type"] == "train"]
    resumed_rows = [r for r in read_metrics(tmp_path / "resumed" / "metrics.jsonl") if r["type"] == "train"]
    assert [r["step"] for r in resumed_rows] == [1, 2, 3, 4, 5, 6]
    assert [r["loss_dehaze"] for r in resumed_rows] == [r["loss_dehaze"] for r in straight_rows]
    exported = load_file(str(tmp_path / "resumed" / "last" / "dcmpnet-tiny-dehaze.safetensors"))
    assert all(torch.equal(exported[k], a["dehaze"][k]) for k in exported)


def test_signals_request_a_graceful_stop_then_abort():
    stop = StopSignal()
    with stop_on_signals(stop):
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.is_set()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# --- non-finite losses and the optional terms ---------------------------------------------------------------------


def _poison_second_call(monkeypatch):
    real = model_module.dual_task_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        terms = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2:
            terms.dehaze = terms.dehaze * float("nan")
        return terms

    monkeypatch.setattr(model_module, "dual_task_loss", poisoned)


def test_a_nan_loss_stops_training_naming_the_iteration(dataset, tmp_path, monkeypatch):
    _poison_second_call(monkeypatch)
    with pytest.raises(NonFiniteLossError, match=r"non-finite dehazing loss at iteration 2 \(epoch 1\)"):
        train(tiny_config(dataset, iters=3), tmp_path / "run")
    assert not (tmp_path / "run" / "last").exists()  # nothing was written for the bad step


def test_skip_mode_skips_the_batch_and_says_so(dataset, tmp_path, monkeypatch):
    _poison_second_call(monkeypatch)
    result = train(tiny_config(dataset, iters=3, nonfinite="skip"), tmp_path / "run")
    assert result.step == 3
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert any(r["type"] == "note" and "skipped batch" in r["message"] and r["step"] == 2 for r in rows)
    assert [r["skipped"] for r in rows if r["type"] == "train"] == [0, 1]  # iteration 2 has no train row
    assert all(np.isfinite(r["loss_dehaze"]) for r in rows if r["type"] == "train")


def test_teacher_contrastive_and_guide_terms_train(dataset, tmp_path):
    torch.manual_seed(0)
    teacher = save_checkpoint(
        tmp_path / "teacher.safetensors",
        create_model("dcmpnet-tiny", "depth"),
        "depth",
        get_preset("dcmpnet-tiny").kwargs("depth"),
        extra={"depth_convention": "depth"},
    )
    loaded = load_teacher(teacher, torch.device("cpu"))
    targets = loaded(torch.rand(2, 3, 32, 32))
    assert targets.shape == (2, 1, 32, 32) and 0 <= targets.min() and targets.max() <= 1
    assert not loaded.disparity_output  # read from the checkpoint's metadata

    features = VGG19Features().features.state_dict()
    vgg = tmp_path / "vgg19.pth"
    torch.save(collections.OrderedDict((f"features.{k}", torch.randn_like(v) * 0.05) for k, v in features.items()), vgg)
    config = tiny_config(dataset, iters=2, depth_teacher=str(teacher), vgg_weights=str(vgg), w_guide=0.5)
    result = train(config, tmp_path / "run")
    assert result.step == 2
    row = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["type"] == "train"][-1]
    assert row["contrastive"] > 0 and row["guide"] > 0 and np.isfinite(row["loss_dehaze"])


# --- several processes ----------------------------------------------------------------------------------------


def test_two_process_gloo_run_ends_with_identical_weights(dataset, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun is not installed beside this Python")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        str(torchrun),
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "dcmp_cli",
        "train",
        "--data",
        str(dataset),
        "--out",
        str(tmp_path / "run"),
        "--iters",
        "2",
        *TINY,
        "--set",
        "log_every=1",
        "--json",
    ]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["step"] == 2
    assert len(summary["fingerprints"]) == 2 and summary["fingerprints"][0] == summary["fingerprints"][1]
    assert read_checkpoint(tmp_path / "run" / "last" / "dcmpnet-tiny-dehaze.safetensors").preset == "dcmpnet-tiny"
    assert len([r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["type"] == "train"]) == 2


def test_ctrl_c_saves_last_notes_once_and_says_how_to_resume(dataset, tmp_path):
    """A terminal's Ctrl-C reaches the whole process group, data-loading workers included."""
    run = tmp_path / "run"
    options = [o for o in TINY if o not in ("--workers", "0")]
    command = [
        sys.executable,
        "-m",
        "dcmp_cli",
        "train",
        "--data",
        str(dataset),
        "--out",
        str(run),
        "--iters",
        "1000",
        *options,
        "--workers",
        "1",
        "--set",
        "log_every=1",
    ]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if (run / "metrics.jsonl").exists() and read_metrics(run / "metrics.jsonl"):
                break
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr[-2000:]
    step = _state(run)["step"]
    assert 1 <= step < 1000
    text = " ".join(stderr.split())
    assert text.count("stopping after this iteration") == 1, stderr[-2000:]
    assert f"interrupted at iteration {step}; continue with: dcmp train --out {run} --resume" in text
    assert max(r["step"] for r in read_metrics(run / "metrics.jsonl")) == step


@pytest.mark.slow
def test_a_few_cpu_minutes_of_the_tiny_preset_beat_the_hazy_input(tmp_path):
    """benchmarks/train_tiny_cpu.py: 400 iterations on synthetic scenes; validation PSNR must clearly rise."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "train_tiny_cpu.py"), "--work", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=3600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    validations = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["type"] == "val"]
    assert validations[-1]["best_psnr"] > validations[-1]["hazy_psnr"] + 3.0, proc.stdout
