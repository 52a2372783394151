"""What a training run reports while it runs (:class:`TrainEvents`) and when it ends (:class:`TrainResult`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RunInfo:
    """The run about to start: where, how long, on what."""

    run_dir: Path
    start_step: int
    total_steps: int
    steps_per_epoch: int
    epochs: int
    train_pairs: int
    val_pairs: int
    device: str
    precision: str
    world_size: int
    depth_source: str
    contrastive: bool
    #: Mean (PSNR, SSIM) of the hazy validation inputs against their ground truth; None without validation.
    hazy: tuple[float, float] | None


class TrainEvents:
    """Progress callbacks (rank 0 only). Override what you need; all default to nothing."""

    def data_check(self, what: str, done: int, total: int) -> None: ...

    def started(self, info: RunInfo) -> None: ...

    def progress(self, step: int, total: int, losses: Mapping[str, float] | None) -> None: ...

    def logged(self, row: Mapping[str, Any]) -> None: ...

    def validated(self, row: Mapping[str, Any]) -> None: ...

    def saved(self, kind: str, folder: Path) -> None: ...

    def note(self, message: str) -> None: ...


@dataclass(frozen=True)
class TrainResult:
    """How a run ended: the iteration reached, whether it was interrupted, the best validation PSNR, the folders."""

    run_dir: Path
    step: int
    total_steps: int
    interrupted: bool
    best_psnr: float | None
    last_val: dict[str, Any] | None
    last_dir: Path
    best_dir: Path | None
    #: SHA-256 of both networks' weights and buffers in every process, in rank order.
    fingerprints: tuple[str, ...] = ()
