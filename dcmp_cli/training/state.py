"""The training state (``last/state.pt``) that resuming reads, and the RNG states in it.

The state file holds tensors, dicts, lists, numbers and strings only (RNG states as
tensors), so :func:`~dcmp_cli.core.checkpoint.load_tensors_only` reads it without
running any code from it. It is written as part of the ``last/`` unit
(:func:`dcmp_cli.training.run_folder.write_unit`).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dcmp_cli.core.checkpoint import CheckpointError, load_tensors_only
from dcmp_cli.training.run_folder import RunFolderError

STATE_FORMAT = "dcmp-train-state"
STATE_VERSION = 1


# --- RNG states as plain tensors -------------------------------------------------------


def capture_rng(device: torch.device) -> dict[str, Any]:
    """torch (CPU and the CUDA device), Python and NumPy global RNG states, as tensors and numbers."""
    version, internal, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python_version": int(version),
        "python": torch.tensor(internal, dtype=torch.int64),
        "python_gauss": gauss,
        "numpy_keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
        "numpy_pos": int(np_pos),
        "numpy_has_gauss": int(np_has_gauss),
        "numpy_gauss": float(np_gauss),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(int(x) for x in state["python"].tolist()), state["python_gauss"]))
    np.random.set_state(
        (
            "MT19937",
            state["numpy_keys"].numpy().astype(np.uint32),
            state["numpy_pos"],
            state["numpy_has_gauss"],
            state["numpy_gauss"],
        )
    )
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Writes the training state to ``path`` (``format``/``version`` added).

    Not atomic by itself: it is written inside a unit folder that is swapped in whole.
    """
    torch.save({"format": STATE_FORMAT, "version": STATE_VERSION, **state}, path)


def load_state(path: Path) -> dict[str, Any]:
    """Reads a training state (tensors only); raises :class:`RunFolderError` if unusable."""
    if not path.is_file():
        raise RunFolderError(
            f"nothing to resume: {path} does not exist (the run wrote no checkpoint yet)", "nothing_to_resume"
        )
    try:
        state = load_tensors_only(path)
    except CheckpointError as e:
        raise RunFolderError(f"cannot read the training state: {e}", "state") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise RunFolderError(f"{path} is not a dcmp training state", "state")
    if state.get("version") != STATE_VERSION:
        raise RunFolderError(
            f"{path} has training-state version {state.get('version')}; this dcmp reads {STATE_VERSION}", "state"
        )
    return state
