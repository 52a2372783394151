"""Folders replaced as one unit: after a crash at any moment, the old complete folder or the new one.

A checkpoint folder (``last/``: both networks and the training state of one iteration;
``best/``: both networks and ``best.json``) must never mix files of two iterations, nor
keep half-written files. :func:`write_folder_atomic` therefore writes a fresh hidden
sibling and swaps it in with renames::

    .last.partial-XXXX/   written by the caller, then flushed to disk
    .last.ready/          renamed from the partial folder once it is complete
    last/ -> .last.old/   the previous unit steps aside
    .last.ready/ -> last/ the new unit takes its place
    .last.old/            removed

Renames within one folder are atomic, so a killed process leaves one of a few states,
each holding at least one complete unit. :func:`recover_folder` (run before every write
and when a run starts or resumes) removes partial folders and finishes or undoes a swap:
a complete ``.last.ready`` wins, otherwise ``last/`` or ``.last.old`` is kept. Only between
the two renames of a swap is there no ``last/`` on disk; the next start restores it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def _partial_prefix(target: Path) -> str:
    return f".{target.name}.partial-"


def _ready(target: Path) -> Path:
    return target.with_name(f".{target.name}.ready")


def _old(target: Path) -> Path:
    return target.with_name(f".{target.name}.old")


def leftovers(target: Path) -> list[Path]:
    """Hidden siblings of ``target`` that a write in progress (or a killed one) uses."""
    parent = target.parent
    if not parent.is_dir():
        return []
    names = (_ready(target).name, _old(target).name)
    return sorted(p for p in parent.iterdir() if p.name in names or p.name.startswith(_partial_prefix(target)))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _sync(path: Path) -> None:
    """Flushes a file or folder to disk (folders only where the platform allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def recover_folder(target: str | os.PathLike) -> None:
    """Leaves ``target`` complete (or absent if it never was) and no hidden leftovers beside it.

    Also removes hidden temporary files (``.NAME.XXXX.tmp*``) inside ``target`` that
    writers of earlier dcmp versions could leave there when killed.
    """
    target = Path(target)
    parent = target.parent
    if not parent.is_dir():
        return
    for path in parent.iterdir():
        if path.name.startswith(_partial_prefix(target)):
            _remove(path)
    ready, old = _ready(target), _old(target)
    if ready.is_dir():  # complete: finish the swap
        if target.exists():
            if old.exists():
                _remove(old)
            target.rename(old)
        ready.rename(target)
    if old.exists():
        if target.exists():
            _remove(old)
        else:
            old.rename(target)
    if target.is_dir():
        for stale in target.glob(".*.tmp*"):
            if stale.is_file():
                stale.unlink(missing_ok=True)


def write_folder_atomic(target: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Replaces the folder ``target`` with what ``write(folder)`` puts into a fresh empty folder.

    If ``write`` raises, ``target`` is left as it was and the partial folder is removed.
    Returns ``target``.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_folder(target)
    partial = Path(tempfile.mkdtemp(prefix=_partial_prefix(target), dir=target.parent))
    ready, old = _ready(target), _old(target)
    try:
        write(partial)
        for path in partial.rglob("*"):
            if path.is_file():
                _sync(path)
        _sync(partial)
        partial.rename(ready)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    try:
        if target.exists():
            target.rename(old)
        ready.rename(target)
        _remove(old)
    except BaseException:
        recover_folder(target)
        raise
    _sync(target.parent)
    return target
