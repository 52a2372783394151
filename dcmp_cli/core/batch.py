"""The batch loop shared by the file commands.

Each job turns one input file into one output file. A job whose output exists is
skipped unless ``overwrite`` (so a re-run resumes an interrupted batch; outputs are
written atomically, so an existing output is complete). A job that fails is recorded
with its reason and the batch goes on. Progress leaves through :class:`BatchEvents`.

Jobs given as :class:`Stages` run pipelined: while the model works on one image, a
thread decodes the next and another encodes and writes the previous one (at most three
images in memory). Stopping (Ctrl-C) lets the write in flight finish, so no output is
left half-written.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

from dcmp_cli.atomic import remove_stale_temporaries

Status = Literal["done", "skipped", "failed", "ignored"]
#: (done, total) progress within one item, e.g. the tiles of an image or the frames of a video.
ProgressFn = Callable[[int, int], None]
ProcessFn = Callable[[Path, Path, ProgressFn], None]


@dataclass(frozen=True)
class Stages:
    """A job split for pipelining: ``load(source)`` → ``compute(data, progress)`` → ``save(result, target)``.

    ``load`` and ``save`` run in background threads (I/O, decoding, encoding); ``compute``
    runs in the calling thread. ``notes(data)``, if given, lists what loading noticed
    (reported with the item).
    """

    load: Callable[[Path], Any]
    compute: Callable[[Any, ProgressFn], Any]
    save: Callable[[Any, Path], None]
    notes: Callable[[Any], list[str]] | None = None


@dataclass
class ItemResult:
    """What happened to one input."""

    input: Path
    output: Path | None
    status: Status
    seconds: float = 0.0
    reason: str | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "input": str(self.input),
            "output": str(self.output) if self.output else None,
            "status": self.status,
            "seconds": round(self.seconds, 4),
            "reason": self.reason,
            "notes": list(self.notes),
        }


@dataclass
class BatchSummary:
    results: list[ItemResult] = field(default_factory=list)

    def count(self, status: Status) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def failed(self) -> list[ItemResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed


class BatchEvents:
    """Progress callbacks; the default does nothing. The CLI renders them."""

    def batch_started(self, total: int) -> None: ...

    def item_started(self, source: Path) -> None: ...

    def item_progress(self, done: int, total: int) -> None: ...

    def item_finished(self, result: ItemResult) -> None: ...


def describe_error(error: BaseException) -> str:
    """A one-line reason for a failed item."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if isinstance(error, (ValueError, OSError)) and text:
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _timed(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    return fn(*args), time.perf_counter() - start


def _as_stages(work: ProcessFn | Stages) -> tuple[Stages, bool]:
    """(stages, pipelined): a plain process function runs as one compute stage."""
    if isinstance(work, Stages):
        return work, True
    return (
        Stages(
            load=lambda source: source,
            compute=lambda job, progress: work(job[0], job[1], progress),
            save=lambda result, target: None,
        ),
        False,
    )


def run_batch(
    jobs: list[tuple[Path, Path]],
    work: ProcessFn | Stages,
    *,
    overwrite: bool = False,
    events: BatchEvents | None = None,
    ignored: list[Path] | None = None,
    problems: list[tuple[Path, str]] | None = None,
) -> BatchSummary:
    """Runs every (source, output) job: ``work(source, output, progress)`` or pipelined :class:`Stages`.

    ``ignored`` files are listed in the summary as such; ``problems`` (paths that could not
    be read while finding the inputs, with why) as failed items. Exceptions from the work mark
    the item failed (KeyboardInterrupt and SystemExit still stop the batch). Results
    keep the order of ``jobs``.
    """
    events = events or BatchEvents()
    stages, pipelined = _as_stages(work)
    results: dict[int, ItemResult] = {}
    inputs = {source.resolve() for source, _ in jobs}
    events.batch_started(len(jobs))
    todo: list[int] = []
    for i, (source, output) in enumerate(jobs):
        if output.resolve() in inputs:
            results[i] = ItemResult(source, output, "failed", reason="output path is an input file; refusing to overwrite it")
        elif output.exists() and not overwrite:
            results[i] = ItemResult(source, output, "skipped", reason="output exists")
        else:
            todo.append(i)
            continue
        events.item_started(source)
        events.item_finished(results[i])

    item_notes: dict[int, list[str]] = {}

    def finish(i: int, status: Status, seconds: float, reason: str | None = None) -> None:
        source, output = jobs[i]
        results[i] = ItemResult(source, output, status, seconds, reason, item_notes.get(i, []))
        events.item_finished(results[i])

    def load(i: int) -> tuple[Any, float]:
        source, output = jobs[i]
        return _timed(stages.load, source if pipelined else (source, output))

    with ThreadPoolExecutor(max_workers=1) as loader, ThreadPoolExecutor(max_workers=1) as saver:
        saves: list[tuple[int, Future, float]] = []
        next_load: Future | None = loader.submit(load, todo[0]) if todo else None
        for position, i in enumerate(todo):
            source, output = jobs[i]
            events.item_started(source)
            assert next_load is not None
            current, next_load = next_load, (loader.submit(load, todo[position + 1]) if position + 1 < len(todo) else None)
            try:
                data, load_seconds = current.result()
                if stages.notes is not None:
                    item_notes[i] = stages.notes(data)
                remove_stale_temporaries(output)
                result, compute_seconds = _timed(stages.compute, data, events.item_progress)
            except Exception as error:  # noqa: BLE001 - a bad file must not stop the batch
                finish(i, "failed", 0.0, describe_error(error))
                continue
            saves.append((i, saver.submit(_timed, stages.save, result, output), load_seconds + compute_seconds))
            while saves and saves[0][1].done():
                _finish_save(saves.pop(0), finish)
        for pending in saves:
            _finish_save(pending, finish)
    skipped_files = [ItemResult(p, None, "ignored", reason="not an image file") for p in ignored or []]
    unreadable = [ItemResult(p, None, "failed", reason=why) for p, why in problems or []]
    return BatchSummary(skipped_files + unreadable + [results[i] for i in range(len(jobs))])


def _finish_save(pending: tuple[int, Future, float], finish: Callable[..., None]) -> None:
    i, future, seconds = pending
    try:
        _, save_seconds = future.result()
        finish(i, "done", seconds + save_seconds)
    except Exception as error:  # noqa: BLE001
        finish(i, "failed", seconds, describe_error(error))
