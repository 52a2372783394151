"""DCMPNet training: config, data, depth targets, losses, the dual-task loop, distributed set-up.

The Python entry points, importable from here (loaded on first use)::

    from dcmp_cli.training import TrainConfig, resolve_train_config, train

See :func:`dcmp_cli.training.trainer.train` for an example.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

#: Public names and the modules that hold them; imported lazily so that light modules
#: (atomic_folder) do not pull in torch.
_EXPORTS = {
    "TrainConfig": "config",
    "ResolvedConfig": "config",
    "ConfigError": "config",
    "resolve_train_config": "config",
    "train": "trainer",
    "NonFiniteLossError": "trainer",
    "TrainEvents": "events",
    "TrainResult": "events",
    "RunInfo": "events",
    "RunFolderError": "run_folder",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)


__all__ = sorted(_EXPORTS)
