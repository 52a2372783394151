"""The metrics log of a run (``metrics.jsonl``) and the running means written into it."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dcmp_cli.atomic import atomic_output


class MetricsLog:
    """Appends JSON rows to ``metrics.jsonl``; on resume, rows after the resumed step are dropped."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def truncate_after(self, step: int) -> None:
        if not self.path.exists():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by the interruption
            if int(row.get("step", 0)) <= step:
                kept.append(line)
        with atomic_output(self.path) as tmp:
            tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")

    def append(self, row: Mapping[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All rows of a metrics log."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


class LossWindow:
    """Means of the logged quantities over the iterations since the last log row, and their pace."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0
        self.start = time.perf_counter()

    def add(self, values: Mapping[str, float]) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += 1

    def means(self) -> dict[str, float]:
        return {k: v / max(1, self.count) for k, v in self.sums.items()}

    def seconds(self) -> float:
        return time.perf_counter() - self.start
