"""Atomic file output: write to a temporary file beside the target, then rename.

An interrupted run (Ctrl-C, a killed job, a full disk) leaves either the complete old
file, the complete new one, or nothing; never a truncated file under the final name.
Temporary files are named ``.NAME.XXXX.tmpEXT`` (hidden, same extension, so that
libraries choosing a format by extension still work) and removed on failure.
"""

from __future__ import annotations

import glob
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def _file_mode() -> int:
    """Permissions a plainly created file would get (0o666 minus the umask)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path to write; renames it to ``path`` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, _file_mode())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Writes ``data`` to ``path`` atomically."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Deletes temporary files an earlier, killed run left for ``path``; returns them."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    stale = [p for p in path.parent.glob(f".{glob.escape(path.stem)}.*.tmp{glob.escape(path.suffix)}") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale
