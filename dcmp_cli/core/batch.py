"""The batch loop shared by the image commands.

Each job turns one input file into one output file. A job whose output exists is
skipped unless ``overwrite`` (so a re-run resumes an interrupted batch; outputs are
written atomically, so an existing output is complete). A job that fails is recorded
with its reason and the batch goes on. Progress leaves through :class:`BatchEvents`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

from dcmp_cli.atomic import remove_stale_temporaries
from dcmp_cli.core.tiling import ProgressFn

Status = Literal["done", "skipped", "failed", "ignored"]
ProcessFn = Callable[[Path, Path, ProgressFn], None]


@dataclass
class ItemResult:
    """What happened to one input."""

    input: Path
    output: Path | None
    status: Status
    seconds: float = 0.0
    reason: str | None = None

    def as_dict(self) -> dict:
        return {
            "input": str(self.input),
            "output": str(self.output) if self.output else None,
            "status": self.status,
            "seconds": round(self.seconds, 4),
            "reason": self.reason,
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


def run_batch(
    jobs: list[tuple[Path, Path]],
    process: ProcessFn,
    *,
    overwrite: bool = False,
    events: BatchEvents | None = None,
    ignored: list[Path] | None = None,
) -> BatchSummary:
    """Runs ``process(source, output, progress)`` for each (source, output) job.

    ``ignored`` files are listed in the summary as such. Exceptions from ``process``
    mark the item failed (KeyboardInterrupt and SystemExit still stop the batch).
    """
    events = events or BatchEvents()
    summary = BatchSummary([ItemResult(p, None, "ignored", reason="not an image file") for p in ignored or []])
    inputs = {source.resolve() for source, _ in jobs}
    events.batch_started(len(jobs))
    for source, output in jobs:
        events.item_started(source)
        start = time.perf_counter()
        if output.resolve() in inputs:
            result = ItemResult(source, output, "failed", reason="output path is an input file; refusing to overwrite it")
        elif output.exists() and not overwrite:
            result = ItemResult(source, output, "skipped", reason="output exists (use --overwrite to redo)")
        else:
            remove_stale_temporaries(output)
            try:
                process(source, output, events.item_progress)
                result = ItemResult(source, output, "done")
            except Exception as error:  # noqa: BLE001 - a bad file must not stop the batch
                result = ItemResult(source, output, "failed", reason=describe_error(error))
        result.seconds = time.perf_counter() - start
        summary.results.append(result)
        events.item_finished(result)
    return summary
