"""Shared fixtures: an environment without default weights, tiny checkpoints, the reference fixtures.

Helpers that tests import live in helpers.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dcmp_cli.core.checkpoint import save_checkpoint
from dcmp_cli.models import create_model, get_preset

from helpers import shared_path


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


@pytest.fixture
def tiny_dehaze_ckpt(tmp_path) -> Path:
    torch.manual_seed(0)
    model = create_model("dcmpnet-tiny", "dehaze")
    return save_checkpoint(
        tmp_path / "tiny-dehaze.safetensors",
        model,
        "dehaze",
        get_preset("dcmpnet-tiny").kwargs("dehaze"),
        trained_on="nothing (random init, tests)",
    )


@pytest.fixture
def tiny_depth_ckpt(tmp_path) -> Path:
    torch.manual_seed(1)
    model = create_model("dcmpnet-tiny", "depth")
    return save_checkpoint(
        tmp_path / "tiny-depth.safetensors", model, "depth", get_preset("dcmpnet-tiny").kwargs("depth")
    )
