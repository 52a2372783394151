"""Progress callbacks of the long-running library functions (importing this imports no torch).

The library reports progress through these objects; the defaults do nothing. The command
line subclasses them to draw progress bars. Batch commands use
:class:`dcmp_cli.core.batch.BatchEvents`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dcmp_cli.core.evaluate import EvalSet, ImageRow


class EvalEvents:
    """Evaluation progress: a dataset starts (``steps`` = images × models), a row is scored."""

    def dataset_started(self, eval_set: EvalSet, steps: int) -> None: ...

    def row_finished(self, row: ImageRow) -> None: ...


class SynthEvents:
    """Dataset synthesis progress: ``total`` clear images; one finished (``written`` hazy images, or an error)."""

    def started(self, total: int) -> None: ...

    def image_finished(self, source: Path, written: int, error: str | None) -> None: ...
