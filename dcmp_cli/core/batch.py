"""The batch loop shared by the file commands.

Each job turns one input file into one output file. A job whose output exists is
skipped unless ``overwrite`` (so a re-run resumes an interrupted batch; outputs are
written atomically, so an existing output is complete). A job that fails is recorded
with its reason and the batch goes on. Progress leaves through :class:`BatchEvents`.

Jobs given as :class:`Stages` run pipelined: while the model works on one image, a
thread decodes the next and another encodes and writes the previous one. At most
:data:`MAX_PENDING_SAVES` results wait to be written (the model waits otherwise), so
memory holds about three images whatever the number of inputs.

Stopping (Ctrl-C, SIGTERM) lets the writes in flight finish, so no output is left
half-written, and raises :class:`BatchInterrupted` with what was done.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dcmp_cli.atomic import remove_stale_temporaries

Status = Literal["done", "skipped", "failed", "ignored"]
#: Results computed but not yet written, at most (back-pressure on the model).
MAX_PENDING_SAVES = 1
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
    """What happened to every input; ``wall_seconds``: the batch's elapsed time."""

    results: list[ItemResult] = field(default_factory=list)
    wall_seconds: float = 0.0

    def count(self, status: Status) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def failed(self) -> list[ItemResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed


class BatchInterrupted(KeyboardInterrupt):
    """The batch was stopped (Ctrl-C, SIGTERM) after finishing the writes in flight.

    ``summary``: the items finished so far; ``remaining``: jobs not done (a re-run of the
    same batch does them, finished outputs are skipped).
    """

    def __init__(self, summary: BatchSummary, remaining: int) -> None:
        super().__init__(f"interrupted: {summary.count('done')} done, {remaining} left")
        self.summary = summary
        self.remaining = remaining


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
    started = time.perf_counter()
    events = events or BatchEvents()
    stages, pipelined = _as_stages(work)
    results: dict[int, ItemResult] = {}
    inputs = {source.resolve() for source, _ in jobs}
    events.batch_started(len(jobs))
    todo: list[int] = []
    for i, (source, output) in enumerate(jobs):
        if output.resolve() in inputs:
            results[i] = ItemResult(
                source, output, "failed", reason="output path is an input file; refusing to overwrite it"
            )
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

    def summary() -> BatchSummary:
        listed = [ItemResult(p, None, "ignored", reason="not an image file") for p in ignored or []]
        listed += [ItemResult(p, None, "failed", reason=why) for p, why in problems or []]
        return BatchSummary(
            listed + [results[i] for i in range(len(jobs)) if i in results], time.perf_counter() - started
        )

    saves: list[tuple[int, Future, float]] = []
    with ThreadPoolExecutor(max_workers=1) as loader, ThreadPoolExecutor(max_workers=1) as saver:
        next_load: Future | None = loader.submit(load, todo[0]) if todo else None
        try:
            for position, i in enumerate(todo):
                source, output = jobs[i]
                events.item_started(source)
                assert next_load is not None
                current = next_load
                next_load = loader.submit(load, todo[position + 1]) if position + 1 < len(todo) else None
                try:
                    data, load_seconds = current.result()
                    if stages.notes is not None:
                        item_notes[i] = stages.notes(data)
                    remove_stale_temporaries(output)
                    result, compute_seconds = _timed(stages.compute, data, events.item_progress)
                except Exception as error:  # noqa: BLE001 - a bad file must not stop the batch
                    finish(i, "failed", 0.0, describe_error(error))
                    continue
                while len(saves) >= MAX_PENDING_SAVES:  # back-pressure: results do not pile up
                    _finish_save(saves.pop(0), finish)
                saves.append((i, saver.submit(_timed, stages.save, result, output), load_seconds + compute_seconds))
            for pending in saves:
                _finish_save(pending, finish)
        except KeyboardInterrupt:
            if next_load is not None:
                next_load.cancel()
            for pending in saves:  # writes in flight finish: no output is left half-written
                if pending[0] not in results:
                    _finish_save(pending, finish)
            raise BatchInterrupted(summary(), sum(i not in results for i in todo)) from None
    return summary()


def _finish_save(pending: tuple[int, Future, float], finish: Callable[..., None]) -> None:
    i, future, seconds = pending
    try:
        _, save_seconds = future.result()
        finish(i, "done", seconds + save_seconds)
    except Exception as error:  # noqa: BLE001
        finish(i, "failed", seconds, describe_error(error))
