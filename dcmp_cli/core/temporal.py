"""Temporal smoothing of image-global quantities over video frames, and scene cuts.

Dehazing each frame on its own flickers: the quantities a dehazer computes over the
whole image jump from frame to frame with noise, moving objects and passing fog, and
the whole picture brightens and darkens with them. Those quantities are smoothed over
time with an exponential moving average (EMA) of strength ``smooth`` (the weight of the
past), by the state each model makes (:meth:`~dcmp_cli.core.image_model.ImageModel.temporal_state`):

* DCMPNet: every image-global statistic of the network (layer-norm mean and standard
  deviation, instance-norm statistics, global average pools; see
  :mod:`dcmp_cli.models.global_stats`), by :class:`SequentialStats`;
* the weight-free priors: their image-global quantities (e.g. the airlight), by
  :class:`GlobalsEMA`.

``value_t = smooth · value_{t−1} + (1 − smooth) · estimate_t``; 0 turns smoothing off,
0.8 averages over about 1 / (1 − 0.8) = 5 frames. At a scene cut the average restarts
from the new frame's estimate, so one scene's haze does not leak into the next. A cut is
declared when the mean absolute difference between 32×32 thumbnails of consecutive
input frames (RGB in [0, 1]) exceeds ``scene_cut`` (and whenever the frame size
changes).

Frames can be batched (``batch`` > 1, for GPUs). The EMA then runs along the batch, in
frame order: frame i of a batch uses the quantities smoothed up to frame i, exactly as
when frames run one by one, so batching changes throughput, not the result.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import cv2
import numpy as np
import torch

from dcmp_cli.core.image_model import ImageModel, TemporalState
from dcmp_cli.models.global_stats import StatsPolicy, StatTuple

#: A frame as the core handles it: float32 RGB (H, W, 3) in [0, 1].
Frame = np.ndarray
#: Side of the thumbnails compared for scene-cut detection.
THUMBNAIL_SIDE = 32
#: Frames per network call when none is given: GPUs gain from batches, CPUs do not.
GPU_BATCH = 4
T = TypeVar("T")


@dataclass(frozen=True)
class TemporalOptions:
    """``smooth``: EMA weight of the past for image-global quantities, in [0, 1) (0 = off).
    ``scene_cut``: thumbnail difference above which the EMA restarts (0 = never).
    ``batch``: frames per network call (None: :data:`GPU_BATCH` on GPUs, 1 elsewhere).
    ``smooth`` None: the model's own default (:attr:`ImageModel.default_smoothing`)."""

    smooth: float | None = None
    scene_cut: float = 0.1
    batch: int | None = None

    def smooth_for(self, model: ImageModel) -> float:
        """The smoothing strength used with ``model``."""
        return model.default_smoothing if self.smooth is None else self.smooth

    def batch_for(self, model: ImageModel) -> int:
        """Frames per call with ``model``."""
        return self.batch or (GPU_BATCH if model.device.type != "cpu" else 1)

    def __post_init__(self) -> None:
        if self.smooth is not None and not 0.0 <= self.smooth < 1.0:
            raise ValueError(f"smoothing strength must lie in [0, 1), got {self.smooth}")
        if self.scene_cut < 0:
            raise ValueError(f"scene-cut threshold must be ≥ 0, got {self.scene_cut}")
        if self.batch is not None and self.batch < 1:
            raise ValueError(f"batch must be ≥ 1, got {self.batch}")


# --------------------------------------------------------------------------- scene cuts


def thumbnail(frame: Frame, side: int = THUMBNAIL_SIDE) -> np.ndarray:
    """(H, W, 3) -> (side, side, 3) float32 area-average thumbnail."""
    return cv2.resize(np.ascontiguousarray(frame, dtype=np.float32), (side, side), interpolation=cv2.INTER_AREA)


class SceneCutDetector:
    """Says whether each frame, in order, starts a new scene.

    The first frame and any frame whose size differs from the previous one start a
    scene; otherwise a frame does when the mean absolute difference of its thumbnail
    and the previous frame's exceeds ``threshold`` (0 = only those two cases).
    ``last_difference`` keeps the latest value (for tuning).
    """

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self._previous: np.ndarray | None = None
        self._shape: tuple[int, ...] | None = None
        self.last_difference: float | None = None

    def __call__(self, frame: Frame) -> bool:
        current = thumbnail(frame)
        previous, shape = self._previous, self._shape
        self._previous, self._shape = current, frame.shape
        if previous is None or shape != frame.shape:
            self.last_difference = None
            return True
        self.last_difference = float(np.abs(current - previous).mean())
        return self.threshold > 0 and self.last_difference > self.threshold


# --------------------------------------------------------------------------- smoothing


class SequentialStats(StatsPolicy):
    """EMA of every image-global statistic along the batch (frames in order) and across calls.

    Call :meth:`set_starts` before each network call with one flag per frame of the
    batch: True where a scene starts (the average restarts there). For a batch of one
    this is a plain exponential moving average with resets; larger
    batches give the same values frame for frame, whether the network sees the whole
    batch in one pass or one frame per pass (as the tiled predictor does). When the
    network runs the same frames again (the predictor retrying after running out of
    memory), the statistics restart from the state before the batch, so nothing is
    smoothed twice. ``momentum`` 0 passes statistics through.
    """

    def __init__(self, momentum: float) -> None:
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum}")
        self.momentum = momentum
        self.state: dict[str, StatTuple] = {}
        self.starts: list[bool] = []
        self._base: dict[str, StatTuple] = {}
        self._cursor: dict[str, int] = {}

    def set_starts(self, starts: Sequence[bool]) -> None:
        self.starts = list(starts)
        self._base = dict(self.state)
        self._cursor = {}

    def resolve(self, key: str, compute: Callable[[], StatTuple]) -> StatTuple:
        current = tuple(v.detach() for v in compute())
        batch = current[0].shape[0]
        if not self.starts:  # used without set_starts: a running average, no restarts
            starts, previous = [False] * batch, self.state.get(key)
        else:
            offset = self._cursor.get(key, 0)
            if offset + batch > len(self.starts):  # these frames were resolved before: a retry
                offset = 0
            starts = (self.starts[offset : offset + batch] + [False] * batch)[:batch]
            previous = self._base.get(key) if offset == 0 else self.state.get(key)
            self._cursor[key] = offset + batch
        smoothed: list[StatTuple] = []
        for i in range(batch):
            value = tuple(v[i : i + 1] for v in current)
            if (
                previous is not None
                and all(p.shape == c.shape for p, c in zip(previous, value))
                and not starts[i]
                and self.momentum > 0
            ):
                value = tuple(self.momentum * p + (1.0 - self.momentum) * c for p, c in zip(previous, value))
            smoothed.append(value)
            previous = value
        self.state[key] = smoothed[-1]
        if batch == 1:
            return smoothed[0]
        return tuple(torch.cat([s[j] for s in smoothed]) for j in range(len(current)))


class GlobalsEMA:
    """EMA of a prior's image-global quantities (a 1-D vector, e.g. the airlight) over frames.

    :meth:`set_starts` flags, per frame of the next batch, where a scene starts;
    :meth:`smoothed` then takes frame ``index``'s own estimate and returns the value to
    use. ``momentum`` 0 passes estimates through.
    """

    def __init__(self, momentum: float) -> None:
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum}")
        self.momentum = momentum
        self.starts: list[bool] = []
        self.value: np.ndarray | None = None

    def set_starts(self, starts: Sequence[bool]) -> None:
        self.starts = list(starts)

    def smoothed(self, index: int, estimate: np.ndarray) -> np.ndarray:
        start = self.starts[index] if index < len(self.starts) else False
        previous = self.value
        if previous is None or start or previous.shape != estimate.shape or self.momentum == 0:
            self.value = np.asarray(estimate, np.float32).copy()
        else:
            self.value = (self.momentum * previous + (1.0 - self.momentum) * estimate).astype(np.float32)
        return self.value


# --------------------------------------------------------------------------- frames


class TemporalDehazer:
    """Dehazes consecutive frames, smoothing image-global quantities over time.

    ``model``: any dehazing :class:`~dcmp_cli.core.image_model.ImageModel`. Call it with
    successive runs of frames (lists of float32 (H, W, 3) in [0, 1], same size within a
    call); it returns the dehazed frames in the same form. ``scene_cuts`` counts the
    restarts after the first frame. ``batch``: frames per model call.
    """

    def __init__(self, model: ImageModel, options: TemporalOptions = TemporalOptions()) -> None:
        self.model = model
        self.options = options
        self.batch = options.batch_for(model)
        self.detector = SceneCutDetector(options.scene_cut)
        smooth = options.smooth_for(model)
        self.state: TemporalState | None = model.temporal_state(smooth) if smooth > 0 else None
        self.scene_cuts = 0
        self._frames_seen = 0

    def __call__(self, frames: Sequence[Frame]) -> list[Frame]:
        if not frames:
            return []
        starts = []
        for frame in frames:
            start = self.detector(frame)
            if start and self._frames_seen:
                self.scene_cuts += 1
            self._frames_seen += 1
            starts.append(start)
        batch = torch.from_numpy(np.ascontiguousarray(np.stack(frames).transpose(0, 3, 1, 2)))
        if self.state is not None:
            self.state.set_starts(starts)
        restored = self.model.run(batch, temporal=self.state)
        return list(restored.permute(0, 2, 3, 1).numpy())


def dehaze_stream(items: Iterable[tuple[T, Frame]], dehazer: TemporalDehazer) -> Iterator[tuple[T, Frame, Frame]]:
    """(tag, frame) pairs in order -> (tag, frame, dehazed frame), batching up to
    ``dehazer.batch`` frames of equal size. Holds at most one batch in memory."""
    pending: list[tuple[T, Frame]] = []

    def flush() -> Iterator[tuple[T, Frame, Frame]]:
        outputs = dehazer([frame for _, frame in pending])
        for (tag, frame), out in zip(pending, outputs):
            yield tag, frame, out
        pending.clear()

    for tag, frame in items:
        if pending and (len(pending) >= dehazer.batch or pending[0][1].shape != frame.shape):
            yield from flush()
        pending.append((tag, frame))
    if pending:
        yield from flush()
