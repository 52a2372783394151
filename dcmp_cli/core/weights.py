"""Where dcmp looks for weights when no ``--weights`` is given (see weights/README.md).

Order, for the dehazing network (the depth network alike with its own names):

1. the file named by ``$DCMP_WEIGHTS`` (``$DCMP_DEPTH_WEIGHTS``): it must exist;
2. in each weights directory, the first of the file names below that exists.

Weights directories, in order: ``$DCMP_WEIGHTS_DIR``, ``./weights`` (the current
directory's), and ``$XDG_DATA_HOME/dcmp/weights`` (default ``~/.local/share/dcmp/weights``).
Nothing is ever downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path

from dcmp_cli.models.registry import Kind

WEIGHTS_ENV: dict[Kind, str] = {"dehaze": "DCMP_WEIGHTS", "depth": "DCMP_DEPTH_WEIGHTS"}
WEIGHTS_DIR_ENV = "DCMP_WEIGHTS_DIR"
DEFAULT_FILE_NAMES: dict[Kind, tuple[str, ...]] = {
    "dehaze": ("dcmpnet-dehaze.safetensors", "DIACMPN-dehaze-Indoor.pth", "DIACMPN-dehaze-Outdoor.pth"),
    "depth": ("dcmpnet-depth.safetensors", "DIACMPN-depth-Indoor.pth", "DIACMPN-depth-Outdoor.pth"),
}


class WeightsNotFound(LookupError):
    """No weights given and none in the default places."""


def weights_dirs() -> list[Path]:
    """The directories searched for default weights, in order."""
    dirs = []
    if os.environ.get(WEIGHTS_DIR_ENV):
        dirs.append(Path(os.environ[WEIGHTS_DIR_ENV]).expanduser())
    dirs.append(Path.cwd() / "weights")
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    dirs.append(Path(data_home).expanduser() / "dcmp" / "weights")
    return dirs


def search_places(kind: Kind) -> list[Path]:
    """Every file looked at for ``kind``'s default weights, in order (the environment variable's file first)."""
    env = os.environ.get(WEIGHTS_ENV[kind])
    places = [Path(env).expanduser()] if env else []
    return places + [directory / name for directory in weights_dirs() for name in DEFAULT_FILE_NAMES[kind]]


def find_default_weights(kind: Kind) -> Path | None:
    """The default checkpoint for ``kind``, or None. A set but missing env file raises."""
    env = WEIGHTS_ENV[kind]
    if os.environ.get(env):
        path = Path(os.environ[env]).expanduser()
        if not path.is_file():
            raise WeightsNotFound(f"${env} points to {path}, which does not exist")
        return path
    return next((place for place in search_places(kind) if place.is_file()), None)
