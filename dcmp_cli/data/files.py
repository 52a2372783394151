"""Finding input images and planning their outputs, for batch commands.

INPUT may be a file, a folder (``recursive`` to descend) or a glob pattern (``*``,
``?``, ``[…]``; ``**`` for any number of folders). Files with an image extension are
inputs; other regular files found are reported as ignored. Hidden files and folders
(and dcmp's temporary files, which are hidden) are never inputs.

Walking folders, symbolic links are followed but every real folder is visited once,
so a link loop (``self -> .``) cannot repeat or hang a run. Folders that cannot be read
and broken links are not errors of the run: they are listed in
:attr:`InputSet.problems` for the batch to report. An INPUT that cannot be read at all
raises :class:`InputError`.

A batch's outputs never become its inputs:

* OUTPUT's sub-tree is skipped when OUTPUT lies inside INPUT (``outputs`` given), so a
  re-run does not dehaze its own results into ``out/out/…``;
* when OUTPUT is INPUT itself (in-place runs) and a suffix is set, a file named like
  the output of another input (``x_d.png`` beside ``x.png`` for suffix ``_d``) is an
  earlier result, not an input (:attr:`InputSet.earlier_outputs`): a second run skips
  everything instead of dehazing ``x_d.png`` into ``x_d_d.png``. (Without a suffix the
  names cannot tell results from photos; :func:`plan_outputs` then refuses any output
  that would replace an input.)

:func:`plan_outputs` maps inputs to output paths and refuses, before any work, two
inputs writing one output and an output replacing any file of INPUT. Plan first, then
keep one shard (:func:`in_shard`): the checks must see every input.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import os
import re
import stat
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dcmp_cli.data.image_io import IMAGE_EXTENSIONS

_MAGIC = re.compile(r"[*?[]")


class InputError(ValueError):
    """INPUT names nothing usable; the message says what was looked for. ``path``: the INPUT."""

    def __init__(self, message: str, path: Path | None = None) -> None:
        super().__init__(message)
        self.path = path


class NoImagesError(InputError):
    """A folder holds no image files. ``recursive``: whether sub-folders were searched."""

    def __init__(self, message: str, path: Path, recursive: bool) -> None:
        super().__init__(message, path)
        self.recursive = recursive


class ShardError(InputError):
    """A shard specification is not of the form K/N with 1 ≤ K ≤ N."""


class PlanError(ValueError):
    """The planned outputs would lose data; nothing has been written."""


class OutputCollisionError(PlanError):
    """Several inputs map to one output path. ``target``; ``sources``: all inputs that map to it."""

    def __init__(self, target: Path, sources: Sequence[Path], more: int = 0) -> None:
        names = " and ".join(str(s) for s in sources)
        extra = f" ({more} more output name(s) are shared likewise)" if more else ""
        super().__init__(
            f"{names} would all be written to {target}{extra}; rename one of them or keep each input's file type"
        )
        self.target = target
        self.sources = tuple(sources)


class OutputIsInputError(PlanError):
    """An output path is a file of INPUT. ``source``: the input whose result would replace ``target``."""

    def __init__(self, source: Path, target: Path) -> None:
        super().__init__(
            f"the result of {source} would replace {target}, which is an input file; "
            "write to another folder or add a suffix to output names"
        )
        self.source = source
        self.target = target


@dataclass(frozen=True)
class OutputNaming:
    """Where results go: ``folder`` / (input's path below the input root), with ``suffix``
    added to the stem and the extension replaced by ``ext`` ('.png'; None keeps the input's)."""

    folder: Path
    ext: str | None = None
    suffix: str = ""

    def target(self, source: Path, inputs: InputSet) -> Path:
        """See :func:`output_path`."""
        return output_path(source, inputs, self.folder, self.ext, self.suffix)


@dataclass
class InputSet:
    """What INPUT holds.

    ``root``: the folder output paths are relative to. ``files``: images to process,
    sorted. ``ignored``: other regular files. ``problems``: (path, reason) for folders
    that could not be read and broken or looping links. ``earlier_outputs``: images
    recognised as results of an earlier in-place run (not inputs, see the module notes).
    """

    root: Path
    files: list[Path]
    ignored: list[Path] = field(default_factory=list)
    single_file: bool = False
    problems: list[tuple[Path, str]] = field(default_factory=list)
    earlier_outputs: list[Path] = field(default_factory=list)

    @property
    def all_files(self) -> list[Path]:
        """Every file of INPUT that no output may replace (images and ignored files, all shards)."""
        return [*self.files, *self.ignored]


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def os_error_reason(error: OSError) -> str:
    """A short reason for an OS error, for per-item reports."""
    if isinstance(error, PermissionError):
        return "permission denied"
    return error.strerror or str(error)


def _folder_key(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


@dataclass
class _Walk:
    """One traversal: regular files found, problems met, folders seen (by device and inode)."""

    skip: set[tuple[int, int]]
    files: list[Path] = field(default_factory=list)
    problems: list[tuple[Path, str]] = field(default_factory=list)
    seen: set[tuple[int, int]] = field(default_factory=set)


def _walk(
    root: Path, max_depth: int | None, walk: _Walk, descend: Callable[[tuple[str, ...]], bool] | None = None
) -> None:
    """Collects the regular files below ``root`` (hidden names skipped) into ``walk``.

    ``max_depth``: how many folder levels to enter (None: all). ``descend(rel_parts)``
    may refuse a sub-folder by its path relative to ``root``. Raises :class:`InputError`
    if ``root`` itself cannot be listed.
    """
    key = _folder_key(root)
    if key is not None:
        walk.seen.add(key)
    queue: deque[tuple[Path, tuple[str, ...]]] = deque([(root, ())])
    while queue:  # breadth first: the shallowest path to a folder is the one kept
        folder, rel = queue.popleft()
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as e:
            if folder == root:
                raise InputError(f"cannot read folder {root}: {os_error_reason(e)}", root) from None
            walk.problems.append(
                (folder, f"folder cannot be read ({os_error_reason(e)}); its files were not looked at")
            )
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            try:
                if entry.is_dir():
                    if max_depth is not None and len(rel) >= max_depth:
                        continue
                    if descend is not None and not descend((*rel, entry.name)):
                        continue
                    st = entry.stat()
                    sub_key = (st.st_dev, st.st_ino)
                    if sub_key in walk.seen or sub_key in walk.skip:
                        continue
                    walk.seen.add(sub_key)
                    queue.append((path, (*rel, entry.name)))
                elif entry.is_file():
                    walk.files.append(path)
                elif entry.is_symlink():
                    walk.problems.append((path, "broken symbolic link (its target does not exist)"))
            except OSError as e:
                reason = "symbolic link loop" if e.errno == errno.ELOOP else os_error_reason(e)
                walk.problems.append((path, f"cannot be examined ({reason})"))


def _split_pattern(pattern: Path) -> tuple[Path, list[str]]:
    """'photos/20*/**/*.jpg' -> (Path('photos'), ['20*', '**', '*.jpg'])."""
    parts = pattern.parts
    first = next(i for i, part in enumerate(parts) if _MAGIC.search(part))
    return Path(*parts[:first]) if first else Path("."), list(parts[first:])


def _match(parts: Sequence[str], pattern: Sequence[str]) -> bool:
    """Whether relative path ``parts`` match the glob components (``**`` = any number of folders)."""
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_match(parts[i:], pattern[1:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], pattern[0]) and _match(parts[1:], pattern[1:])


def _prefix_may_match(parts: Sequence[str], pattern: Sequence[str]) -> bool:
    """Whether a folder at ``parts`` can hold a match (its path fits the pattern's leading components)."""
    for i, part in enumerate(parts):
        if i >= len(pattern) - 1:
            return False
        if pattern[i] == "**":
            return True
        if not fnmatch.fnmatchcase(part, pattern[i]):
            return False
    return True


def _skip_keys(root: Path, outputs: OutputNaming | None, exclude: Sequence[Path]) -> set[tuple[int, int]]:
    """Folders never to enter: ``exclude`` and OUTPUT, unless one of them is the root itself."""
    folders = [*exclude, *([outputs.folder] if outputs is not None else [])]
    root_key = _folder_key(root)
    keys = {_folder_key(Path(f)) for f in folders}
    return {k for k in keys if k is not None and k != root_key}


def canonical_path(path: Path) -> Path:
    """``path`` with its folder resolved (links in folders followed, not a link to a file)."""
    return path.parent.resolve() / path.name


def _earlier_outputs(inputs: InputSet, outputs: OutputNaming | None) -> list[Path]:
    """Images of ``inputs`` that are named as this run's output of another of its images."""
    if outputs is None or not outputs.suffix or inputs.single_file:
        return []
    targets = {canonical_path(outputs.target(p, inputs)) for p in inputs.files}
    return [p for p in inputs.files if canonical_path(p) in targets]


def _stat_input(path: Path, spec: str | os.PathLike) -> os.stat_result | None:
    """os.stat of INPUT; None when it does not exist; InputError when it cannot be reached."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise InputError(f"{spec} is a broken symbolic link (its target does not exist)", path) from None
        return None
    except OSError as e:
        raise InputError(f"cannot access {spec}: {os_error_reason(e)}", path) from None


def collect_inputs(
    spec: str | os.PathLike,
    recursive: bool = False,
    *,
    outputs: OutputNaming | None = None,
    exclude: Sequence[Path] = (),
) -> InputSet:
    """Resolves INPUT (file, folder or glob) into an :class:`InputSet`.

    ``outputs``: how this run names its results; its folder's sub-tree is skipped and,
    in place, earlier results are set apart (see the module notes). ``exclude``: more
    folders whose sub-trees are never inputs.
    """
    path = Path(spec).expanduser()
    st = _stat_input(path, spec)
    if st is not None and not stat.S_ISDIR(st.st_mode):
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{spec} is neither a regular file nor a folder", path)
        try:
            with open(path, "rb"):
                pass
        except OSError as e:
            raise InputError(f"cannot read {spec}: {os_error_reason(e)}", path) from None
        return InputSet(path.parent, [path], single_file=True)
    if st is not None:
        walk = _Walk(_skip_keys(path, outputs, exclude))
        _walk(path, None if recursive else 0, walk)
        images = [p for p in walk.files if is_image_path(p)]
        inputs = InputSet(
            path, sorted(images), sorted(p for p in walk.files if not is_image_path(p)), problems=walk.problems
        )
        if not images:
            hint = "" if recursive else " (sub-folders are searched only in recursive mode)"
            trouble = f"; {len(walk.problems)} item(s) could not be read" if walk.problems else ""
            raise NoImagesError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {path}{hint}{trouble}", path, recursive)
        return _set_apart_earlier_outputs(inputs, outputs)
    if _MAGIC.search(str(path)):
        return _collect_glob(path, spec, outputs, exclude)
    raise InputError(f"input not found: {spec}", path)


def _collect_glob(
    pattern: Path, spec: str | os.PathLike, outputs: OutputNaming | None, exclude: Sequence[Path]
) -> InputSet:
    base, parts = _split_pattern(pattern)
    if _stat_input(base, base) is None or not base.is_dir():
        raise InputError(f"no files match {spec}", pattern)
    walk = _Walk(_skip_keys(base, outputs, exclude))
    _walk(base, None if "**" in parts else len(parts) - 1, walk, descend=lambda rel: _prefix_may_match(rel, parts))
    files = sorted(p for p in walk.files if _match(p.relative_to(base).parts, parts))
    problems = [
        (p, r)
        for p, r in walk.problems
        if _prefix_may_match(p.relative_to(base).parts, parts) or _match(p.relative_to(base).parts, parts)
    ]
    if not files:
        trouble = f"; {len(problems)} item(s) could not be read" if problems else ""
        raise InputError(f"no files match {spec}{trouble}", pattern)
    root = Path(os.path.commonpath([str(p.parent) for p in files]))
    images = [p for p in files if is_image_path(p)]
    inputs = InputSet(root, images, [p for p in files if not is_image_path(p)], problems=problems)
    return _set_apart_earlier_outputs(inputs, outputs)


def _set_apart_earlier_outputs(inputs: InputSet, outputs: OutputNaming | None) -> InputSet:
    earlier = set(_earlier_outputs(inputs, outputs))
    if earlier:
        inputs.files = [p for p in inputs.files if p not in earlier]
        inputs.earlier_outputs = sorted(earlier)
    return inputs


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


def plan_outputs(inputs: InputSet, outputs: OutputNaming) -> list[tuple[Path, Path]]:
    """(source, target) for every image of ``inputs``, checked before any work.

    Raises :class:`OutputCollisionError` when two inputs map to one target (``x.jpg`` and
    ``x.png`` with a fixed output extension) and :class:`OutputIsInputError` when a
    target is any file of INPUT (:attr:`InputSet.all_files`: images and ignored files of
    every shard). Shard the returned jobs afterwards, never the inputs before.
    """
    jobs = [(source, outputs.target(source, inputs)) for source in inputs.files]
    by_target: dict[Path, list[Path]] = {}
    for source, target in jobs:
        by_target.setdefault(canonical_path(target), []).append(source)
    shared = [(target, sources) for target, sources in by_target.items() if len(sources) > 1]
    if shared:
        _, sources = shared[0]
        target = next(t for s, t in jobs if s == sources[0])
        raise OutputCollisionError(target, sources, more=len(shared) - 1)
    protected = {canonical_path(p) for p in inputs.all_files}
    protected |= {p.resolve() for p in inputs.all_files}
    for source, target in jobs:
        if canonical_path(target) in protected or (target.exists() and target.resolve() in protected):
            raise OutputIsInputError(source, target)
    return jobs


def in_shard(path: Path, root: Path, index: int, count: int) -> bool:
    """Whether ``path`` belongs to shard ``index`` of ``count`` (1-based), by a hash of its
    path relative to ``root``: deterministic, independent of listing order and machine."""
    rel = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name
    digest = hashlib.sha1(rel.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count == index - 1


def parse_shard(text: str) -> tuple[int, int]:
    """'K/N' -> (K, N) with 1 ≤ K ≤ N; :class:`ShardError` otherwise."""
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ShardError(f"shard must look like K/N (e.g. 1/4), got {text!r}") from None
    if not 1 <= k <= n:
        raise ShardError(f"shard {text}: K must lie in 1..N")
    return k, n
