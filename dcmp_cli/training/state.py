"""The run folder: resolved config, metrics log, and the training state that ``--resume`` reads.

::

    RUN_DIR/
      config.json            the resolved config (every hyper-parameter)
      metrics.jsonl          one JSON object per line: "train" rows every log_every
                             iterations, "val" rows after each validation, "note" rows
      last/state.pt          full training state (weights_only-loadable)
      last/<preset>-dehaze.safetensors, last/<preset>-depth.safetensors
      best/…                 the two networks at the best validation PSNR, + best.json
      cache/pair-depth/      pair-derived depth targets (float16 .npy)
      tensorboard/           when TensorBoard is installed

The state file holds tensors, dicts, lists, numbers and strings only (RNG states as
tensors), so ``torch.load(weights_only=True)`` reads it; every file is written
atomically.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dcmp_cli.atomic import atomic_output

STATE_FORMAT = "dcmp-train-state"
STATE_VERSION = 1


class RunFolderError(ValueError):
    """The run folder cannot be used as asked (an existing run without --resume, no state to resume, …)."""


@dataclass(frozen=True)
class RunPaths:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def last(self) -> Path:
        return self.root / "last"

    @property
    def best(self) -> Path:
        return self.root / "best"

    @property
    def state(self) -> Path:
        return self.last / "state.pt"

    @property
    def depth_cache(self) -> Path:
        return self.root / "cache" / "pair-depth"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    def network(self, folder: Path, preset: str, kind: str) -> Path:
        return folder / f"{preset}-{kind}.safetensors"

    def holds_run(self) -> bool:
        return self.config.exists() or self.state.exists()


def write_json(path: Path, data: Any) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


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
        ("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"], state["numpy_has_gauss"],
         state["numpy_gauss"])
    )
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Writes the training state atomically (``format``/``version`` added)."""
    with atomic_output(path) as tmp:
        torch.save({"format": STATE_FORMAT, "version": STATE_VERSION, **state}, tmp)


def load_state(path: Path) -> dict[str, Any]:
    """Reads a training state with ``weights_only=True``; raises :class:`RunFolderError` if unusable."""
    if not path.is_file():
        raise RunFolderError(f"nothing to resume: {path} does not exist (the run wrote no checkpoint yet)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise RunFolderError(f"cannot read the training state {path}: {str(e).splitlines()[0]}") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise RunFolderError(f"{path} is not a dcmp training state")
    if state.get("version") != STATE_VERSION:
        raise RunFolderError(f"{path} has training-state version {state.get('version')}; this dcmp reads {STATE_VERSION}")
    return state


# --- metrics log ----------------------------------------------------------------------------


class MetricsLog:
    """Appends JSON rows to ``metrics.jsonl``; on resume, rows after the resumed step are dropped."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def truncate_after(self, step: int) -> None:
        if not self.path.exists():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by the interruption
            if int(row.get("step", 0)) <= step:
                kept.append(line)
        with atomic_output(self.path) as tmp:
            tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")

    def append(self, row: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All rows of a metrics log."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
