"""Finding input images and naming their outputs, for batch commands.

INPUT may be a file, a directory (``recursive`` to descend) or a glob pattern. Files
with an image extension are inputs; other regular files found in a directory are
reported as ignored. Hidden files (and dcmp's temporary files) are never inputs.
Outputs mirror the inputs' sub-folders below OUTPUT.
"""

from __future__ import annotations

import glob
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from dcmp_cli.data.image_io import IMAGE_EXTENSIONS


class InputError(ValueError):
    """INPUT names nothing usable; the message says what was looked for."""


@dataclass
class InputSet:
    """Images to process, the folder their relative output paths start from, and ignored files."""

    root: Path
    files: list[Path]
    ignored: list[Path] = field(default_factory=list)
    single_file: bool = False


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _visible(path: Path, root: Path) -> bool:
    rel = path.relative_to(root) if path.is_relative_to(root) else Path(path.name)
    return not any(part.startswith(".") for part in rel.parts)


def _walk(directory: Path, recursive: bool) -> list[Path]:
    entries = directory.rglob("*") if recursive else directory.iterdir()
    return sorted(p for p in entries if p.is_file() and _visible(p, directory))


def collect_inputs(spec: str | os.PathLike, recursive: bool = False) -> InputSet:
    """Resolves INPUT (file, directory or glob) into an :class:`InputSet`."""
    path = Path(spec).expanduser()
    if path.is_file():
        return InputSet(path.parent, [path], single_file=True)
    if path.is_dir():
        found = _walk(path, recursive)
        images = [p for p in found if is_image_path(p)]
        ignored = [p for p in found if not is_image_path(p)]
        if not images:
            hint = "" if recursive else " (add --recursive to look in sub-folders)"
            raise InputError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {path}{hint}")
        return InputSet(path, images, ignored)
    if glob.has_magic(str(spec)):
        matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True))
        files = [p for p in matches if p.is_file() and not p.name.startswith(".")]
        if not files:
            raise InputError(f"no files match {spec}")
        root = Path(os.path.commonpath([str(p.parent) for p in files]))
        images = [p for p in files if is_image_path(p)]
        return InputSet(root, images, [p for p in files if not is_image_path(p)])
    raise InputError(f"input not found: {spec}")


def output_path(
    source: Path,
    inputs: InputSet,
    output: Path,
    ext: str | None = None,
    suffix: str = "",
) -> Path:
    """Where ``source``'s result goes: OUTPUT itself for a single file with a file-like OUTPUT,
    else OUTPUT / (path relative to the input root, with ``suffix`` and ``ext`` applied)."""
    if inputs.single_file and output.suffix and not output.is_dir():
        return output
    rel = source.relative_to(inputs.root)
    new_ext = ext if ext is not None else source.suffix
    if new_ext and not new_ext.startswith("."):
        new_ext = "." + new_ext
    return output / rel.parent / f"{source.stem}{suffix}{new_ext}"


def in_shard(path: Path, root: Path, index: int, count: int) -> bool:
    """Whether ``path`` belongs to shard ``index`` of ``count`` (1-based), by a hash of its
    path relative to ``root``: deterministic, independent of listing order and machine."""
    rel = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name
    digest = hashlib.sha1(rel.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count == index - 1


def parse_shard(text: str) -> tuple[int, int]:
    """'K/N' -> (K, N) with 1 ≤ K ≤ N."""
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise InputError(f"--shard must look like K/N (e.g. 1/4), got {text!r}") from None
    if not 1 <= k <= n:
        raise InputError(f"--shard {text}: K must lie in 1..N")
    return k, n
