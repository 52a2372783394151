"""Hot-folder mode of ``dcmp dehaze``: dehaze images as they arrive in a folder.

:func:`watch_dehaze` first takes what INPUT already holds, then waits for new or
changed files and dehazes each one once it is completely written. The rules are those
of a batch run (:func:`~dcmp_cli.core.image_jobs.plan_image_jobs`,
:func:`~dcmp_cli.core.batch.run_batch`):

* outputs are named as in a batch run and written atomically; an existing output is
  skipped unless ``overwrite``; an input is never overwritten;
* a batch's outputs never become its inputs: OUTPUT's sub-tree is not watched when it
  lies inside INPUT, and in place (OUTPUT is INPUT) a file named as the result of
  another image (``x_d.png`` beside ``x.png`` for suffix ``_d``) or written by this
  watch is never an input, so results are not dehazed again and again;
* hidden files and folders (dcmp's own temporary files among them) and files named like
  downloads or copies in progress (``*.part``, ``*.crdownload``, ``*.tmp``, ``*~`` …)
  are not looked at; other non-image files are reported as ignored, once;
* a file that cannot be dehazed is a failed item, and the watch goes on.

**When a file is complete.** A file is taken once its size, modification time and
inode have stayed the same for ``settle`` seconds, and it decodes. A file that changes
while it is read goes back to waiting, so a half-written image is neither processed nor
reported as failed while it grows. One that still does not decode after settling is
reported as failed, once; should it change again later, it is looked at again. (A
writer that pauses for longer than ``settle`` in the middle of a file can therefore
see it reported as failed first, and dehazed once complete.)

Files found at start settle like arrivals (one ``settle`` wait), and images are
dehazed one at a time, in the order they settled (no decode/encode pipelining as in a batch
run), so that ``stop`` is honoured after any item.

**Files changed after processing.** A file modified after it was processed is looked at
again, like a new file: with ``overwrite`` it is dehazed again and its output replaced;
without, it is reported as skipped (its output exists), as a batch re-run would. A file
deleted and created anew counts as new.

**How changes are seen.** ``backend="events"`` uses file-system notifications through
the watchfiles package; ``"poll"`` lists INPUT every ``poll_interval`` seconds.
``"auto"`` uses events, except on network file systems (NFS, SMB/CIFS, sshfs …, where
notifications miss changes made by other machines) or when watchfiles is missing or
cannot set up its watch: then it polls, and says why in :class:`WatchStarted`.
"""

from __future__ import annotations

import math
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dcmp_cli.atomic import write_bytes_atomic
from dcmp_cli.core.batch import BatchEvents, BatchSummary, ItemResult, Stages, describe_error, run_batch
from dcmp_cli.core.image_jobs import OutputOptions, encode_dehazed, plan_image_jobs
from dcmp_cli.core.image_model import Dehazer, ProgressFn
from dcmp_cli.data.files import (
    InputError,
    InputSet,
    NoImagesError,
    OutputCollisionError,
    OutputIsInputError,
    OutputNaming,
    PlanError,
    canonical_path,
    is_image_path,
    os_error_reason,
)
from dcmp_cli.data.image_io import LoadedImage, read_image

Backend = Literal["auto", "events", "poll"]

#: Suffixes of files still being downloaded or copied (browsers, rsync, FTP clients, editors).
TEMPORARY_SUFFIXES = frozenset({".part", ".partial", ".crdownload", ".download", ".filepart", ".tmp", ".temp", ".swp"})

#: File-system types on which notifications do not report changes made elsewhere (``/proc/self/mountinfo`` names).
NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "ncpfs",
        "afs",
        "9p",
        "drvfs",
        "virtiofs",
        "vboxsf",
        "ceph",
        "glusterfs",
        "lustre",
        "gpfs",
        "beegfs",
        "davfs",
        "fuse.sshfs",
        "fuse.rclone",
        "fuse.s3fs",
        "fuse.gcsfuse",
        "fuse.glusterfs",
        "fuse.ceph",
    }
)

_DEFAULT_OPTIONS = OutputOptions()


@dataclass(frozen=True)
class WatchStarted:
    """What :func:`watch_dehaze` tells ``on_ready`` once it watches.

    ``folder``: INPUT. ``backend``: how changes are seen ("events" or "poll").
    ``fallback``: why file events are not used although ``backend="auto"`` asked for
    them (watchfiles missing, a network file system, a watch that could not be set up);
    None otherwise.
    """

    folder: Path
    backend: Literal["events", "poll"]
    fallback: str | None = None


class WatchBackendError(RuntimeError):
    """File events were asked for but cannot be used. ``reason``: why."""

    def __init__(self, folder: Path, reason: str) -> None:
        super().__init__(f"cannot watch {folder} with file events: {reason}; watch it by polling instead")
        self.folder = folder
        self.reason = reason


def watch_dehaze(
    input: str | os.PathLike,
    output: str | os.PathLike,
    dehazer: Dehazer,
    options: OutputOptions = _DEFAULT_OPTIONS,
    *,
    recursive: bool = False,
    overwrite: bool = False,
    events: BatchEvents | None = None,
    stop: threading.Event | None = None,
    poll_interval: float = 1.0,
    settle: float = 1.0,
    backend: Backend = "auto",
    on_ready: Callable[[WatchStarted], None] | None = None,
) -> BatchSummary:
    """Dehazes the images of folder INPUT into OUTPUT, then each new or changed one as it arrives.

    Returns once ``stop`` is set (from a signal handler or another thread), after the
    item in flight is written; the summary lists every item reported, in order. Without
    ``stop`` it runs until interrupted. ``poll_interval`` (s): how often files waiting to
    settle are looked at again and, when polling, INPUT is listed. ``settle`` (s): how
    long a file must stay unchanged before it is read. See the module notes for the rules.

    ``events``: ``batch_started(n)`` once, with the number of images found at start;
    then ``item_started`` / ``item_progress`` / ``item_finished`` for every image, and
    ``item_finished`` alone for ignored files and unreadable folders or links.
    ``on_ready(WatchStarted)``: called once the watch is set up, before the images found
    at start are processed; any file written after it is seen.

    Raises, before any work, :class:`~dcmp_cli.data.files.InputError` (INPUT is not a
    folder), :class:`~dcmp_cli.data.files.PlanError` (the files present would collide or
    replace inputs, or results would replace their inputs) and
    :class:`WatchBackendError` (``backend="events"`` without usable file events); later,
    InputError when INPUT disappears, and whatever the watcher itself raises.
    """
    if backend not in ("auto", "events", "poll"):
        raise ValueError(f"backend must be 'auto', 'events' or 'poll', got {backend!r}")
    if not (math.isfinite(poll_interval) and poll_interval > 0):
        raise ValueError(f"poll_interval must be a positive number of seconds, got {poll_interval}")
    if not (math.isfinite(settle) and settle >= 0):
        raise ValueError(f"settle must be zero or a positive number of seconds, got {settle}")
    watch = _Watch(
        Path(input).expanduser(),
        Path(output).expanduser(),
        dehazer,
        options,
        recursive=recursive,
        overwrite=overwrite,
        events=events or BatchEvents(),
        stop=stop or threading.Event(),
        poll_interval=poll_interval,
        settle=settle,
    )
    return watch.run(backend, on_ready)


# ----------------------------------------------------------------------------- the watch

#: What identifies one version of a file: size, modification time (ns), inode.
_Signature = tuple[int, int, int]


def _signature(st: os.stat_result) -> _Signature:
    return st.st_size, st.st_mtime_ns, st.st_ino


@dataclass
class _Pending:
    """A file waiting to settle: its last seen version, and since when (time.monotonic()) it is unchanged."""

    signature: _Signature
    since: float


@dataclass
class _Loaded:
    """A settled image as read: the decoded image, or the error reading it raised."""

    image: LoadedImage | None
    error: Exception | None

    def get(self) -> LoadedImage:
        if self.error is not None:
            raise self.error
        assert self.image is not None
        return self.image


class _ItemEvents(BatchEvents):
    """Forwards a single-item batch's events; the watch announces its backlog itself."""

    def __init__(self, events: BatchEvents) -> None:
        self.events = events

    def item_started(self, source: Path) -> None:
        self.events.item_started(source)

    def item_progress(self, done: int, total: int) -> None:
        self.events.item_progress(done, total)

    def item_finished(self, result: ItemResult) -> None:
        self.events.item_finished(result)


def _is_temporary(name: str) -> bool:
    """Whether a file name is one of a download or copy still in progress."""
    return name.endswith("~") or Path(name).suffix.lower() in TEMPORARY_SUFFIXES


def _stat(path: Path) -> os.stat_result | None:
    """os.stat of ``path``; None when it no longer exists."""
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _folder_key(path: Path) -> tuple[int, int] | None:
    st = _stat(path)
    return None if st is None else (st.st_dev, st.st_ino)


class _Watch:
    """The state of one :func:`watch_dehaze` call (nothing outlives it)."""

    def __init__(
        self,
        root: Path,
        output: Path,
        dehazer: Dehazer,
        options: OutputOptions,
        *,
        recursive: bool,
        overwrite: bool,
        events: BatchEvents,
        stop: threading.Event,
        poll_interval: float,
        settle: float,
    ) -> None:
        self.root = root
        self.root_abs = Path(os.path.abspath(root))
        ext = None if options.ext is None else "." + options.ext.lstrip(".").lower()
        self.naming = OutputNaming(output, ext, options.suffix)
        self.layout = InputSet(root, [])  # output paths are relative to INPUT, as in a batch of a folder
        self.dehazer = dehazer
        self.options = options
        self.recursive = recursive
        self.overwrite = overwrite
        self.events = events
        self.item_events = _ItemEvents(events)
        self.stop = stop
        self.poll_interval = poll_interval
        self.settle = settle
        self.pending: dict[Path, _Pending] = {}
        #: The version of each file last acted upon (processed, skipped, failed, ignored, set apart).
        self.handled: dict[Path, _Signature] = {}
        #: Canonical paths of the outputs this call wrote, never inputs.
        self.written: set[Path] = set()
        self.written_names: set[str] = set()
        self.problems: set[Path] = set()
        self.results: list[ItemResult] = []
        self.output_resolved = output.resolve()
        self.in_place = self.output_resolved == self.root_abs.resolve()

    # ------------------------------------------------------------------ set-up

    def run(self, backend: Backend, on_ready: Callable[[WatchStarted], None] | None) -> BatchSummary:
        self._check_folders()
        rounds, started, close = self._open(backend)  # before listing INPUT, so nothing falls in between
        try:
            try:
                plan = plan_image_jobs(
                    self.root,
                    self.naming.folder,
                    recursive=self.recursive,
                    ext=self.naming.ext,
                    suffix=self.naming.suffix,
                )
                backlog = len(plan.jobs)
            except NoImagesError:  # an empty folder is fine to watch
                backlog = 0
            files, problems = self._scan(self.root)
            now = time.monotonic()  # one time for all: files that settle together go in name order
            for path, st in files.items():
                self._consider(path, st, now)
            self.events.batch_started(backlog)
            self._report_problems(problems, complete=True)
            if on_ready is not None:
                on_ready(started)
            for changed in rounds:
                if self.stop.is_set():
                    break
                self._check_root()
                if changed is None:
                    self._apply_scan()
                else:
                    self._apply_changes(changed)
                self._process_ready()
                if self.stop.is_set():
                    break
        finally:
            close()
        return BatchSummary(self.results)

    def _check_folders(self) -> None:
        if _stat(self.root) is None:
            raise InputError(f"input folder not found: {self.root}", self.root)
        if not os.path.isdir(self.root):
            raise InputError(f"{self.root} is not a folder; only a folder of images can be watched", self.root)
        if self.in_place and not self.naming.suffix and self.naming.ext is None:
            raise PlanError(
                f"results written into {self.root} under their inputs' names would replace the inputs; "
                "write to another folder or add a suffix to output names"
            )

    def _check_root(self) -> None:
        if not os.path.isdir(self.root):
            raise InputError(f"the watched folder {self.root} no longer exists", self.root)

    def _open(self, backend: Backend) -> tuple[Iterator[set[Path] | None], WatchStarted, Callable[[], None]]:
        """(rounds, what was started, close): each round yields the changed paths, or None for "list INPUT again"."""
        fallback: str | None = None
        if backend == "auto":
            fstype = network_filesystem(self.root_abs)
            if fstype is not None:
                fallback = f"{self.root} is on a network file system ({fstype}), where file events miss changes"
        if backend != "poll" and fallback is None:
            try:
                import watchfiles
            except ImportError:
                if backend == "events":
                    raise WatchBackendError(self.root, "the watchfiles package is not installed") from None
                fallback = "the watchfiles package is not installed"
            else:
                timeout_ms = max(1, round(self.poll_interval * 1000))
                changes = watchfiles.watch(
                    self.root_abs,
                    watch_filter=None,
                    debounce=timeout_ms,
                    step=min(50, timeout_ms),
                    stop_event=self.stop,
                    rust_timeout=timeout_ms,
                    yield_on_timeout=True,
                    raise_interrupt=True,
                    recursive=self.recursive,
                    ignore_permission_denied=True,
                )
                try:
                    first = next(changes, set())  # sets the watch up, then waits up to one interval
                except Exception as error:  # reported: raised with "events", the fallback's reason with "auto"
                    changes.close()
                    if backend == "events":
                        raise WatchBackendError(self.root, describe_error(error)) from error
                    fallback = f"file events could not be set up ({describe_error(error)})"
                else:
                    rounds = self._event_rounds(first, changes)
                    return rounds, WatchStarted(self.root, "events"), changes.close
        return self._poll_rounds(), WatchStarted(self.root, "poll", fallback), lambda: None

    def _event_rounds(self, first: Iterable, changes: Iterator[Iterable]) -> Iterator[set[Path] | None]:
        yield {Path(path) for _, path in first}
        for batch in changes:
            yield {Path(path) for _, path in batch}

    def _poll_rounds(self) -> Iterator[set[Path] | None]:
        while not self.stop.wait(self.poll_interval):
            yield None

    # ------------------------------------------------------------------ what is there

    def _in_scope(self, path: Path, listed: bool = False) -> bool:
        """Whether a path (below INPUT, as a listing names it) is looked at: not hidden, not below a
        sub-folder unless recursive, not in OUTPUT's sub-tree (``listed``: known not to be)."""
        try:
            parts = path.relative_to(self.root).parts
        except ValueError:
            return False
        if not parts or any(part.startswith(".") for part in parts) or (not self.recursive and len(parts) > 1):
            return False
        return listed or self.in_place or not canonical_path(path).is_relative_to(self.output_resolved)

    def _watchable(self, path: Path, listed: bool = False) -> bool:
        """Whether a file may be an input: in scope, not temporary, not written by this call."""
        if _is_temporary(path.name) or not self._in_scope(path, listed):
            return False
        return not (path.name in self.written_names and canonical_path(path) in self.written)

    def _scan(self, top: Path) -> tuple[dict[Path, os.stat_result], list[tuple[Path, str]]]:
        """The watchable regular files below ``top`` (a folder of INPUT) with their stat, and problems met."""
        files: dict[Path, os.stat_result] = {}
        problems: list[tuple[Path, str]] = []
        skip = None if self.in_place else _folder_key(self.naming.folder)
        seen = {key for key in (_folder_key(self.root), _folder_key(top)) if key is not None}
        stack = [top]
        while stack:
            folder = stack.pop()
            try:
                with os.scandir(folder) as listing:
                    entries = list(listing)
            except OSError as error:
                if folder == self.root:
                    raise InputError(
                        f"cannot read the watched folder {self.root}: {os_error_reason(error)}", self.root
                    ) from None
                if not isinstance(error, (FileNotFoundError, NotADirectoryError)):  # gone meanwhile: nothing to say
                    problems.append(
                        (folder, f"folder cannot be read ({os_error_reason(error)}); its files were not looked at")
                    )
                continue
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                path = Path(entry.path)
                try:
                    if entry.is_dir():
                        if not self.recursive:
                            continue
                        st = entry.stat()
                        key = (st.st_dev, st.st_ino)
                        if key not in seen and key != skip:
                            seen.add(key)
                            stack.append(path)
                    elif entry.is_file():
                        if self._watchable(path, listed=True):
                            files[path] = entry.stat()
                    elif entry.is_symlink() and self._watchable(path, listed=True):
                        problems.append((path, "broken symbolic link (its target does not exist)"))
                except FileNotFoundError:
                    continue
                except OSError as error:
                    problems.append((path, f"cannot be examined ({os_error_reason(error)})"))
        return files, problems

    def _consider(self, path: Path, st: os.stat_result, now: float) -> None:
        """Notes a version of a file: new versions wait to settle; the one last acted upon is left alone,
        and so is a non-image file once reported (until it is deleted)."""
        signature = _signature(st)
        if self.handled.get(path) == signature or (path in self.handled and not is_image_path(path)):
            return
        current = self.pending.get(path)
        if current is None or current.signature != signature:
            self.pending[path] = _Pending(signature, now)

    def _forget(self, path: Path) -> None:
        """Drops a file that no longer exists, or everything below a folder that no longer does."""
        if path in self.pending or path in self.handled:
            self.pending.pop(path, None)
            self.handled.pop(path, None)
            return
        for table in (self.pending, self.handled):
            for known in [p for p in table if p.is_relative_to(path)]:
                del table[known]

    def _apply_scan(self) -> None:
        files, problems = self._scan(self.root)
        for table in (self.pending, self.handled):
            for known in [p for p in table if p not in files]:
                del table[known]
        now = time.monotonic()
        for path, st in files.items():
            self._consider(path, st, now)
        self._report_problems(problems, complete=True)

    def _as_listed(self, path: Path) -> Path | None:
        """An event's path as a scan of INPUT names it; None outside INPUT."""
        for base in (self.root_abs, self.root_abs.resolve()):
            if path.is_relative_to(base):
                return self.root / path.relative_to(base)
        return None

    def _apply_changes(self, changed: set[Path]) -> None:
        problems: list[tuple[Path, str]] = []
        now = time.monotonic()
        for event_path in sorted(changed):
            path = self._as_listed(event_path)
            if path is None or not self._in_scope(path):
                continue
            try:
                st = os.stat(path)
            except (FileNotFoundError, NotADirectoryError):
                self._forget(path)
                continue
            except OSError as error:
                if self._watchable(path):
                    problems.append((path, f"cannot be examined ({os_error_reason(error)})"))
                continue
            if stat.S_ISDIR(st.st_mode):
                # A folder moved in brings files no event names (a new empty one costs a listing).
                if self.recursive:
                    files, found = self._scan(path)
                    problems += found
                    for file, file_st in files.items():
                        self._consider(file, file_st, now)
            elif stat.S_ISREG(st.st_mode) and self._watchable(path):
                self._consider(path, st, now)
        self._report_problems(problems, complete=False)

    def _report_problems(self, problems: list[tuple[Path, str]], complete: bool) -> None:
        """Reports each unreadable folder or broken link once (again after it was fixed, if ``complete``)."""
        for path, why in problems:
            if path not in self.problems:
                self.problems.add(path)
                self._report(ItemResult(path, None, "failed", reason=why))
        if complete:
            self.problems &= {path for path, _ in problems}

    # ------------------------------------------------------------------ processing

    def _process_ready(self) -> None:
        """Processes every file unchanged for ``settle`` seconds, oldest first, until ``stop``."""
        now = time.monotonic()
        ready = sorted((entry.since, path) for path, entry in self.pending.items() if now - entry.since >= self.settle)
        for _, path in ready:
            if self.stop.is_set():
                return
            entry = self.pending.get(path)
            if entry is None:
                continue
            st = _stat(path)
            if st is None or not os.path.isfile(path):
                del self.pending[path]
            elif _signature(st) != entry.signature:
                self.pending[path] = _Pending(_signature(st), time.monotonic())
            else:
                del self.pending[path]
                self._process(path, entry.signature)

    def _report(self, result: ItemResult) -> None:
        self.results.append(result)
        self.events.item_finished(result)

    def _process(self, path: Path, signature: _Signature) -> None:
        """Acts on a settled file: ignored, set apart as an output, refused, skipped, failed or dehazed."""
        if not is_image_path(path):
            self.handled[path] = signature
            self._report(ItemResult(path, None, "ignored", reason="not an image file"))
            return
        if self._named_as_output(path):
            self.handled[path] = signature
            return
        target = self.naming.target(path, self.layout)
        try:
            self._check_target(path, target)
        except PlanError as error:
            self.handled[path] = signature
            self.events.item_started(path)
            self._report(ItemResult(path, target, "failed", reason=str(error)))
            return
        loaded: _Loaded | None = None
        if self.overwrite or not target.exists():
            loaded = self._read(path, signature)
            if loaded is None:
                return  # it changed while being read: it waits to settle again

        def load(source: Path) -> LoadedImage:
            return loaded.get() if loaded is not None else read_image(source)

        def compute(image: LoadedImage, progress: ProgressFn) -> bytes:
            return encode_dehazed(image, self.dehazer, target.suffix, self.options, progress)

        def save(data: bytes, target: Path) -> None:
            write_bytes_atomic(target, data)

        stages = Stages(load, compute, save, lambda image: list(image.notes))
        result = run_batch([(path, target)], stages, overwrite=self.overwrite, events=self.item_events).results[0]
        self.results.append(result)
        self.handled[path] = signature
        if result.status == "done":
            self.written.add(canonical_path(target))
            self.written_names.add(target.name)

    def _read(self, path: Path, signature: _Signature) -> _Loaded | None:
        """Reads a settled image; None (and waiting again) when it changed or vanished meanwhile."""
        try:
            loaded = _Loaded(read_image(path), None)
        except Exception as error:  # noqa: BLE001 - raised again in the batch load stage: the item fails with it
            loaded = _Loaded(None, error)
        st = _stat(path)
        if st is None:
            self._forget(path)
            return None
        if _signature(st) != signature:
            self.pending[path] = _Pending(_signature(st), time.monotonic())
            return None
        return loaded

    def _named_as_output(self, path: Path) -> bool:
        """Whether an image of INPUT is named as this run's result of another image (x_d.png beside x.png).

        As in a batch run, only names with a suffix tell results apart; without one, this
        call's own results are recognised as written (:meth:`_watchable`)."""
        suffix = self.naming.suffix
        canonical = canonical_path(path)
        if not suffix or not canonical.is_relative_to(self.output_resolved):
            return False
        rel = canonical.relative_to(self.output_resolved)
        if not rel.stem.endswith(suffix) or (self.naming.ext is not None and rel.suffix != self.naming.ext):
            return False
        stem = rel.stem[: -len(suffix)]
        return any(
            canonical_path(self.naming.target(source, self.layout)) == canonical
            for source in self._images_named(self.root / rel.parent, stem)
            if source != path
        )

    def _images_named(self, folder: Path, stem: str) -> list[Path]:
        """The watchable image files of ``folder`` whose name without extension is ``stem``."""
        try:
            with os.scandir(folder) as listing:
                names = [e.name for e in listing if Path(e.name).stem == stem and e.is_file()]
        except OSError:
            return []
        return [folder / name for name in names if is_image_path(folder / name) and self._watchable(folder / name)]

    def _check_target(self, source: Path, target: Path) -> None:
        """Raises :class:`OutputIsInputError` when ``target`` is a file of INPUT, :class:`OutputCollisionError`
        when another image of INPUT has the same output (the checks of :func:`~dcmp_cli.data.files.plan_outputs`)."""
        places = {canonical_path(target)}
        if os.path.lexists(target):
            places.add(target.resolve())
        for place in places:
            if place == canonical_path(source) or place == source.resolve() or self._is_input_file(place):
                raise OutputIsInputError(source, target)
        if self.naming.ext is not None:
            others = [
                p
                for p in self._images_named(source.parent, source.stem)
                if p != source and not self._named_as_output(p)
            ]
            if others:
                raise OutputCollisionError(target, sorted([*others, source]))

    def _is_input_file(self, place: Path) -> bool:
        """Whether a resolved path is a file of INPUT that no output may replace (image or not)."""
        root = self.root_abs.resolve()
        if not place.is_relative_to(root) or not os.path.isfile(place):
            return False
        listed = self.root / place.relative_to(root)
        if not self._watchable(listed):
            return False
        return not (is_image_path(listed) and self._named_as_output(listed))


# ----------------------------------------------------------------------------- file systems


def _unescape(field: str) -> str:
    """A /proc/self/mountinfo path field with its octal escapes (\\040 for a space …) decoded."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def filesystem_type(path: str | os.PathLike, mountinfo: str) -> str | None:
    """The type of the file system holding ``path`` (absolute, resolved) according to a
    ``/proc/self/mountinfo`` text: the one of the longest mount point above it; None if none is."""
    target = str(path)
    best: tuple[int, str | None] = (-1, None)
    for line in mountinfo.splitlines():
        fields = line.split()
        if "-" not in fields[6:]:
            continue
        separator = fields.index("-", 6)
        if len(fields) <= max(4, separator + 1):
            continue
        mount = _unescape(fields[4])
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= best[0]:
            best = (len(mount), fields[separator + 1])
    return best[1]


def network_filesystem(path: str | os.PathLike) -> str | None:
    """The type of the network file system holding ``path`` (``"nfs4"``, ``"cifs"`` …), or None
    for a local one or where mount information cannot be read (not Linux)."""
    try:
        mountinfo = Path("/proc/self/mountinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    fstype = filesystem_type(Path(path).resolve(), mountinfo)
    return fstype if fstype in NETWORK_FILESYSTEMS else None
