"""Shared fixtures: paths to ../shared (skipped cleanly when absent), tiny checkpoints, synthetic haze."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dcmp_cli.core.checkpoint import save_checkpoint
from dcmp_cli.models import create_model, get_preset

SHARED = Path(__file__).resolve().parents[2] / "shared"


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test when it is not there."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs ../shared/{'/'.join(parts)} (not present)")
    return path


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Runs with no default weights anywhere: cwd, env and data home all empty."""
    for var in ("DCMP_WEIGHTS", "DCMP_DEPTH_WEIGHTS", "DCMP_WEIGHTS_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data-home"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def one_thread():
    """Tiny networks on tiny inputs run fastest on one thread (and do not stall on a busy machine).

    Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def reference_npz():
    return np.load(shared_path("reference", "conformance.npz"))


@pytest.fixture
def trained_weights() -> Path:
    """The briefly trained published-format checkpoint (real, non-random weights)."""
    return shared_path("weights", "dcmpnet-sots-briefly-trained.pth")


def synthetic_hazy(height: int = 48, width: int = 64, seed: int = 0, beta: float = 1.2, airlight: float = 0.9):
    """(clear, hazy, depth) float32 arrays: a textured scene hazed by I = J·t + A·(1 − t)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    clear = np.stack(
        [
            0.5 + 0.4 * np.sin(xx / 5.0 + c) * np.cos(yy / 7.0 - c) + 0.05 * rng.standard_normal((height, width))
            for c in range(3)
        ],
        axis=2,
    ).clip(0, 1).astype(np.float32)
    depth = (1.0 - yy / height).astype(np.float32)  # top far, bottom near
    t = np.exp(-beta * depth)[:, :, None]
    hazy = (clear * t + airlight * (1 - t)).astype(np.float32)
    return clear, hazy, depth


@pytest.fixture
def tiny_dehaze_ckpt(tmp_path) -> Path:
    torch.manual_seed(0)
    model = create_model("dcmpnet-tiny", "dehaze")
    return save_checkpoint(tmp_path / "tiny-dehaze.safetensors", model, "dehaze", get_preset("dcmpnet-tiny").kwargs("dehaze"),
                           trained_on="nothing (random init, tests)")


@pytest.fixture
def tiny_depth_ckpt(tmp_path) -> Path:
    torch.manual_seed(1)
    model = create_model("dcmpnet-tiny", "depth")
    return save_checkpoint(tmp_path / "tiny-depth.safetensors", model, "depth", get_preset("dcmpnet-tiny").kwargs("depth"))


def write_png(path: Path, rgb: np.ndarray) -> Path:
    from dcmp_cli.data.image_io import write_image

    return write_image(path, rgb)
