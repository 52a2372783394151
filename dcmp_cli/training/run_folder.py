"""The run folder of `dcmp train`: its layout, and the rules for starting or resuming a run in it.

::

    RUN_DIR/
      config.json            the resolved config (every hyper-parameter)
      metrics.jsonl          one JSON object per line: "train" rows every log_every
                             iterations, "val" rows after each validation, "note" rows
      last/state.pt          full training state (tensors only, see training.state)
      last/<preset>-dehaze.safetensors, last/<preset>-depth.safetensors
      best/…                 the two networks at the best validation PSNR, + best.json
      cache/pair-depth/      pair-derived depth targets (float16 .npy)
      tensorboard/           when TensorBoard is installed

``last/`` and ``best/`` are each written as one unit
(:func:`~dcmp_cli.training.atomic_folder.write_folder_atomic`): after a crash they hold
the networks and state of one iteration, never a mix. Other files are written atomically.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from dcmp_cli.atomic import atomic_output
from dcmp_cli.training.atomic_folder import leftovers, recover_folder
from dcmp_cli.training.config import ConfigError, TrainConfig, config_from_dict

#: Config keys that may differ from the saved run when resuming: where and how it runs, what is
#: logged and validated, where the data now lives; not the recipe.
RESUMABLE_CHANGES = frozenset(
    {
        "data",
        "val_data",
        "num_workers",
        "data_check",
        "val_crop",
        "val_max_images",
        "depth_cache",
        "device",
        "precision",
        "deterministic",
        "nonfinite",
        "max_skipped_batches",
        "log_every",
        "val_every",
        "val_every_iters",
        "checkpoint_every_iters",
        "protocol",
        "tensorboard",
        "trust_teacher_code",
    }
)
#: The training state's file name inside last/.
STATE_NAME = "state.pt"
#: Config keys holding file or folder paths (stored absolute in config.json).
PATH_KEYS = frozenset({"data", "val_data", "depth_teacher", "vgg_weights"})

#: Why a run folder cannot be used: it holds a run already (starting anew), it holds nothing to resume,
#: resuming would change the saved recipe, or its config or state is unreadable.
RunFolderProblem = Literal["exists", "nothing_to_resume", "recipe_changed", "unreadable", "state"]


class RunFolderError(ValueError):
    """The run folder cannot be used as asked; ``problem`` says which rule it breaks (see RunFolderProblem)."""

    def __init__(self, message: str, problem: RunFolderProblem = "unreadable") -> None:
        super().__init__(message)
        self.problem = problem


@dataclass(frozen=True)
class RunPaths:
    """Where everything of a run lives under ``root``."""

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
        return self.last / STATE_NAME

    @property
    def depth_cache(self) -> Path:
        return self.root / "cache" / "pair-depth"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @staticmethod
    def network(folder: Path, preset: str, kind: str) -> Path:
        return folder / f"{preset}-{kind}.safetensors"

    def holds_run(self) -> bool:
        return self.config.exists() or self.state.exists() or bool(leftovers(self.last))

    def recover(self) -> None:
        """Finishes or undoes a checkpoint write that a killed process left (see atomic_folder)."""
        recover_folder(self.last)
        recover_folder(self.best)


def write_json(path: Path, data: Any) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _absolute(value: str) -> str:
    return str(Path(value).expanduser().resolve())


def prepare_run(
    run_dir: str | os.PathLike, config: TrainConfig | None, resume: bool, given: Mapping[str, Any] | None = None
) -> TrainConfig:
    """The config to train with in ``run_dir``.

    A new run needs ``config`` and a folder without a run in it. When resuming, the saved
    config is used; ``given`` (the values the user set; by default every value of
    ``config``, or nothing when ``config`` is None) may change only :data:`RESUMABLE_CHANGES`.
    Paths are stored absolute, so that a run resumes from any working directory.
    """
    paths = RunPaths(Path(run_dir))
    if not resume:
        if config is None:
            raise ConfigError("a new run needs a config (only resuming reads the saved one)")
        if paths.holds_run():
            raise RunFolderError(
                f"{paths.root} already holds a training run; resume it, or choose another run folder", "exists"
            )
        return config.with_values(**{k: _absolute(getattr(config, k)) for k in PATH_KEYS if getattr(config, k)})
    if given is None:
        given = config.flat() if config is not None else {}
    if not paths.config.is_file():
        raise RunFolderError(
            f"nothing to resume in {paths.root}: it has no config.json (start a new run there instead)",
            "nothing_to_resume",
        )
    try:
        saved = config_from_dict(json.loads(paths.config.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, ConfigError) as e:
        raise RunFolderError(f"{paths.config} is unreadable: {e}", "unreadable") from None

    def same(key: str, value: Any) -> bool:
        if key in PATH_KEYS and value:
            return getattr(saved, key) == _absolute(value)
        return getattr(saved, key) == value

    conflicts = [
        f"{k} ({getattr(saved, k)!r} in the run, {v!r} given)"
        for k, v in given.items()
        if k not in RESUMABLE_CHANGES and v is not None and not same(k, v)
    ]
    if conflicts:
        raise RunFolderError(
            "resuming continues the saved recipe; these differ from it: "
            + "; ".join(conflicts)
            + ". Start a new run in another folder to change them",
            "recipe_changed",
        )
    changes = {k: v for k, v in given.items() if k in RESUMABLE_CHANGES and v is not None}
    changes.update({k: _absolute(v) for k, v in changes.items() if k in PATH_KEYS and v})
    return saved.with_values(**changes)
