"""Dehazing videos and frame sequences: the frame loop, temporal smoothing, flicker.

Dehazing each frame on its own flickers: the quantities a dehazer computes over the
whole image jump from frame to frame with noise, moving objects and passing fog, and
the whole picture brightens and darkens with them. Two such quantities are smoothed
over time with an exponential moving average (EMA) of strength ``smooth`` (the weight
of the past):

* DCMPNet: every image-global statistic of the network (layer-norm mean and standard
  deviation, instance-norm statistics, global average pools; see
  :mod:`dcmp_cli.models.global_stats`);
* the dark channel prior: the airlight.

``value_t = smooth · value_{t−1} + (1 − smooth) · estimate_t``; 0 turns smoothing off,
0.8 averages over about 1 / (1 − 0.8) = 5 frames. At a scene cut the average restarts
from the new frame's estimate, so one scene's haze does not leak into the next. A cut is
declared when the mean absolute difference between 32×32 thumbnails of consecutive
input frames (RGB in [0, 1]) exceeds ``scene_cut`` (and whenever the frame size
changes).

Frames can be batched (``batch`` > 1, for GPUs). The EMA then runs along the batch, in
frame order, inside every layer: frame i of a batch uses the statistics smoothed up to
frame i, exactly as when frames run one by one, so batching changes throughput, not
the result. A batch that runs out of memory is halved and run again. Large frames are
tiled by the predictor (its ``tiling``), one frame at a time, the smoothed statistics
deciding its statistics pass.

Flicker is measured as the mean absolute difference between consecutive output frames
divided by the same for the input frames (:class:`FlickerMeter`): 1 means the output
changes from frame to frame as much as the input does.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Protocol, TypeVar

import cv2
import numpy as np
import torch

from dcmp_cli.core.batch import (
    BatchEvents,
    BatchSummary,
    ItemResult,
    ProgressFn,
    describe_error,
    run_batch,
)
from dcmp_cli.core.memory import is_out_of_memory
from dcmp_cli.core.predictor import PriorDehazer
from dcmp_cli.data.image_io import (
    ImageReadError,
    LoadedImage,
    quantize,
    read_image,
    write_like,
)
from dcmp_cli.data.video_io import (
    EncodeOptions,
    FrameRange,
    VideoError,
    open_video_writer,
    probe_video,
    read_frames,
)
from dcmp_cli.models.global_stats import StatsPolicy, StatTuple

#: A frame as the core handles it: float32 RGB (H, W, 3) in [0, 1].
Frame = np.ndarray
#: Side of the thumbnails compared for scene-cut detection.
THUMBNAIL_SIDE = 32
T = TypeVar("T")


class FrameModel(Protocol):
    """A dehazer of (B, 3, H, W) [0, 1] tensors that accepts a statistics policy."""

    def __call__(
        self, image: torch.Tensor, progress: ProgressFn | None = None, stats: StatsPolicy | None = None
    ) -> torch.Tensor: ...


@dataclass(frozen=True)
class TemporalOptions:
    """``smooth``: EMA weight of the past for image-global quantities, in [0, 1) (0 = off).
    ``scene_cut``: thumbnail difference above which the EMA restarts (0 = never).
    ``batch``: frames per network call."""

    smooth: float = 0.8
    scene_cut: float = 0.1
    batch: int = 1

    def __post_init__(self) -> None:
        if not 0.0 <= self.smooth < 1.0:
            raise ValueError(f"smoothing strength must lie in [0, 1), got {self.smooth}")
        if self.scene_cut < 0:
            raise ValueError(f"scene-cut threshold must be ≥ 0, got {self.scene_cut}")
        if self.batch < 1:
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

    def snapshot(self) -> dict[str, StatTuple]:
        return dict(self.state)

    def restore(self, state: Mapping[str, StatTuple]) -> None:
        self.state = dict(state)

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
            compatible = previous is not None and all(p.shape == c.shape for p, c in zip(previous, value))
            if compatible and not starts[i] and self.momentum > 0:
                value = tuple(self.momentum * p + (1.0 - self.momentum) * c for p, c in zip(previous, value))
            smoothed.append(value)
            previous = value
        self.state[key] = smoothed[-1]
        if batch == 1:
            return smoothed[0]
        return tuple(torch.cat([s[j] for s in smoothed]) for j in range(len(current)))


class _BatchDidNotFit(Exception):
    """The predictor had to tile a batch of frames: run them again in smaller batches."""


class TemporalDehazer:
    """Dehazes consecutive frames, smoothing image-global quantities over time.

    ``model``: a :class:`~dcmp_cli.core.predictor.DehazePredictor` (or any model taking
    ``stats=``) or a :class:`~dcmp_cli.core.predictor.PriorDehazer`. Call it with
    successive runs of frames (lists of float32 (H, W, 3) in [0, 1], same size within a
    call); it returns the dehazed frames in the same form. ``scene_cuts`` counts the
    restarts after the first frame.

    Frames the predictor tiles (large frames, see its ``tiling``) run one per call: its
    statistics pass handles one image at a time. A batch that runs out of memory, or
    that the predictor could only run by tiling, is halved and run again; ``batch``
    keeps the smaller size for the frames that follow.
    """

    def __init__(self, model: FrameModel | PriorDehazer, options: TemporalOptions = TemporalOptions()) -> None:
        self.model = model
        self.options = options
        self.batch = options.batch
        self.detector = SceneCutDetector(options.scene_cut)
        self.policy = SequentialStats(options.smooth) if options.smooth > 0 else None
        self.airlight: np.ndarray | None = None
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
        if isinstance(self.model, PriorDehazer):
            return [self._prior_frame(frame, start) for frame, start in zip(frames, starts)]
        return self._process(list(frames), starts)

    def _tiled(self, frame: Frame) -> bool:
        choose_tile = getattr(self.model, "choose_tile", None)
        return bool(choose_tile is not None and choose_tile(*frame.shape[:2]))

    def _process(self, frames: list[Frame], starts: list[bool]) -> list[Frame]:
        if len(frames) > 1 and self._tiled(frames[0]):
            return [out for frame, start in zip(frames, starts) for out in self._network([frame], [start])]
        saved = self.policy.snapshot() if self.policy is not None else None
        try:
            outputs = self._network(frames, starts)
            if len(frames) > 1 and getattr(self.model, "last_tile", 0):
                raise _BatchDidNotFit
            return outputs
        except Exception as error:  # noqa: BLE001 - only a batch that did not fit is retried
            if len(frames) == 1 or not (isinstance(error, _BatchDidNotFit) or is_out_of_memory(error)):
                raise
        if self.policy is not None and saved is not None:
            self.policy.restore(saved)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        half = len(frames) // 2
        self.batch = max(1, half)
        return self._process(frames[:half], starts[:half]) + self._process(frames[half:], starts[half:])

    def _network(self, frames: list[Frame], starts: list[bool]) -> list[Frame]:
        batch = torch.from_numpy(np.ascontiguousarray(np.stack(frames).transpose(0, 3, 1, 2)))
        if self.policy is None:
            restored = self.model(batch)  # type: ignore[operator]
        else:
            self.policy.set_starts(starts)
            restored = self.model(batch, stats=self.policy)  # type: ignore[operator]
        return list(restored.permute(0, 2, 3, 1).numpy())

    def _prior_frame(self, frame: Frame, start: bool) -> Frame:
        prior: PriorDehazer = self.model  # type: ignore[assignment]
        tensor = torch.from_numpy(np.ascontiguousarray(frame.transpose(2, 0, 1))).unsqueeze(0)
        if self.options.smooth == 0:
            return prior(tensor)[0].permute(1, 2, 0).numpy()
        estimate = prior.prior.airlight(np.ascontiguousarray(frame, dtype=np.float32))
        m = self.options.smooth
        if start or self.airlight is None:
            self.airlight = estimate
        else:
            self.airlight = (m * self.airlight + (1.0 - m) * estimate).astype(np.float32)
        previous, prior.airlight = prior.airlight, self.airlight
        try:
            return prior(tensor)[0].permute(1, 2, 0).numpy()
        finally:
            prior.airlight = previous


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


# --------------------------------------------------------------------------- flicker


def _as_unit_float(frame: np.ndarray) -> np.ndarray:
    if frame.dtype == np.uint8:
        return frame.astype(np.float32) / 255.0
    if frame.dtype == np.uint16:
        return frame.astype(np.float32) / 65535.0
    return frame.astype(np.float32, copy=False)


class FlickerMeter:
    """Mean absolute difference between consecutive frames, of inputs and of outputs.

    Frames are (H, W, C) uint8, uint16 or float in [0, 1]; values are in [0, 1] units.
    Pairs whose sizes differ are left out. ``ratio`` = output / input (flicker figure).
    """

    def __init__(self) -> None:
        self._previous: tuple[np.ndarray, np.ndarray] | None = None
        self.input_sum = 0.0
        self.output_sum = 0.0
        self.pairs = 0

    def update(self, input_frame: np.ndarray, output_frame: np.ndarray) -> None:
        current = (_as_unit_float(input_frame), _as_unit_float(output_frame))
        previous = self._previous
        if previous is not None and previous[0].shape == current[0].shape:
            self.input_sum += float(np.abs(current[0] - previous[0]).mean())
            self.output_sum += float(np.abs(current[1] - previous[1]).mean())
            self.pairs += 1
        self._previous = current

    @property
    def input(self) -> float | None:
        return self.input_sum / self.pairs if self.pairs else None

    @property
    def output(self) -> float | None:
        return self.output_sum / self.pairs if self.pairs else None

    @property
    def ratio(self) -> float | None:
        return self.output_sum / self.input_sum if self.pairs and self.input_sum > 0 else None


def flicker(inputs: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> float:
    """Flicker of ``outputs`` relative to ``inputs``: mean over t of mean|out_t − out_{t−1}|
    divided by the same for the inputs."""
    if len(inputs) != len(outputs) or len(inputs) < 2:
        raise ValueError("flicker needs two equally long sequences of at least two frames")
    meter = FlickerMeter()
    for a, b in zip(inputs, outputs):
        meter.update(a, b)
    if meter.ratio is None:
        raise ValueError("the input frames do not change; flicker is undefined")
    return meter.ratio


# --------------------------------------------------------------------------- jobs


@dataclass
class VideoReport:
    """What one video or frame sequence job did. ``seconds`` covers decoding, dehazing and
    encoding; ``flicker`` is output / input (see :class:`FlickerMeter`)."""

    input: Path
    output: Path
    frames: int = 0
    seconds: float = 0.0
    width: int = 0
    height: int = 0
    fps: Fraction | None = None
    flicker_input: float | None = None
    flicker_output: float | None = None
    scene_cuts: int = 0
    audio: str = "none"
    notes: list[str] = field(default_factory=list)

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def flicker(self) -> float | None:
        if self.flicker_input and self.flicker_output is not None:
            return self.flicker_output / self.flicker_input
        return None

    def as_dict(self) -> dict:
        return {
            "input": str(self.input),
            "output": str(self.output),
            "frames": self.frames,
            "width": self.width,
            "height": self.height,
            "fps": str(self.fps) if self.fps is not None else None,
            "seconds": round(self.seconds, 3),
            "frames_per_second": round(self.frames_per_second, 3),
            "flicker": round(self.flicker, 4) if self.flicker is not None else None,
            "input_frame_difference": round(self.flicker_input, 6) if self.flicker_input is not None else None,
            "output_frame_difference": round(self.flicker_output, 6) if self.flicker_output is not None else None,
            "scene_cuts": self.scene_cuts,
            "audio": self.audio,
            "notes": list(self.notes),
        }


def dehaze_video(
    source: Path,
    target: Path,
    model: FrameModel | PriorDehazer,
    temporal: TemporalOptions = TemporalOptions(),
    encode: EncodeOptions = EncodeOptions(),
    frame_range: FrameRange = FrameRange(),
    progress: ProgressFn | None = None,
) -> VideoReport:
    """Dehazes the video ``source`` into ``target`` (written atomically, see
    :func:`~dcmp_cli.data.video_io.open_video_writer`), frame by frame in bounded memory.

    ``progress(done, total)`` is called after every frame (``total`` may be an estimate).
    Raises :class:`~dcmp_cli.data.video_io.VideoError` for unreadable input.
    """
    started = time.perf_counter()
    info = probe_video(source)
    rate = frame_range.fps or info.fps
    report = VideoReport(source, target, width=info.width, height=info.height, fps=rate)
    total = frame_range.expected_frames(info)
    dehazer = TemporalDehazer(model, temporal)
    meter = FlickerMeter()
    with open_video_writer(
        target, info.width, info.height, rate, encode, info, audio_start=frame_range.start, trim_audio=frame_range.trimmed
    ) as sink:
        frames = ((None, frame.astype(np.float32) / 255.0) for frame in read_frames(info, frame_range))
        for _, frame, restored in dehaze_stream(frames, dehazer):
            pixels = quantize(restored, 8)
            sink.write(pixels)
            meter.update(frame, pixels)
            if progress is not None:
                progress(sink.frames, max(total, sink.frames))
        if sink.frames == 0:
            raise VideoError("no frames in the selected range (check --start, --end, --max-frames)")
    report.frames = sink.result.frames
    report.audio = sink.result.audio
    report.notes = list(sink.result.notes)
    report.flicker_input, report.flicker_output = meter.input, meter.output
    report.scene_cuts = dehazer.scene_cuts
    report.seconds = time.perf_counter() - started
    return report


def dehaze_videos(
    jobs: list[tuple[Path, Path]],
    model: FrameModel | PriorDehazer,
    temporal: TemporalOptions = TemporalOptions(),
    encode: EncodeOptions = EncodeOptions(),
    frame_range: FrameRange = FrameRange(),
    *,
    overwrite: bool = False,
    events: BatchEvents | None = None,
    ignored: list[Path] | None = None,
) -> tuple[BatchSummary, dict[Path, VideoReport]]:
    """Runs :func:`dehaze_video` for each (source, target); a failing video is reported
    and the others go on. Existing targets are skipped unless ``overwrite``."""
    reports: dict[Path, VideoReport] = {}

    def process(source: Path, target: Path, progress: ProgressFn) -> None:
        reports[source] = dehaze_video(source, target, model, temporal, encode, frame_range, progress)

    summary = run_batch(jobs, process, overwrite=overwrite, events=events, ignored=ignored)
    for result in summary.results:
        if result.status == "ignored":
            result.reason = "not a video file"
    return summary, reports


def natural_key(path: Path) -> list:
    """Sort key putting frame_2 before frame_10."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def dehaze_frame_folder(
    frames: Sequence[Path],
    output: Path,
    model: FrameModel | PriorDehazer,
    temporal: TemporalOptions = TemporalOptions(),
    *,
    max_frames: int | None = None,
    events: BatchEvents | None = None,
) -> tuple[BatchSummary, VideoReport]:
    """Dehazes a sequence of frame images (in natural name order) into ``output``, with the
    same names, each in its input's form (bit depth, greyscale, alpha), each written
    atomically. A frame that cannot be read is reported and skipped; the rest go on.
    """
    started = time.perf_counter()
    events = events or BatchEvents()
    ordered = sorted(frames, key=natural_key)[:max_frames]
    root = ordered[0].parent if ordered else output
    report = VideoReport(root, output)
    summary = BatchSummary()
    dehazer = TemporalDehazer(model, temporal)
    meter = FlickerMeter()
    events.batch_started(1)
    events.item_started(root)

    def readable() -> Iterator[tuple[tuple[Path, LoadedImage], Frame]]:
        for path in ordered:
            try:
                image = read_image(path)
            except ImageReadError as error:
                summary.results.append(ItemResult(path, None, "failed", reason=describe_error(error)))
                continue
            yield (path, image), image.rgb

    for (path, image), frame, restored in dehaze_stream(readable(), dehazer):
        target = output / path.name
        write_like(target, restored, image)
        meter.update(frame, restored)
        summary.results.append(ItemResult(path, target, "done"))
        report.frames += 1
        report.width, report.height = image.width, image.height
        events.item_progress(len(summary.results), len(ordered))
    report.seconds = time.perf_counter() - started
    report.flicker_input, report.flicker_output = meter.input, meter.output
    report.scene_cuts = dehazer.scene_cuts
    events.item_finished(
        ItemResult(root, output, "done" if summary.ok else "failed", report.seconds,
                   None if summary.ok else f"{len(summary.failed)} frame(s) could not be read")
    )
    return summary, report


__all__ = [
    "FlickerMeter",
    "SceneCutDetector",
    "SequentialStats",
    "TemporalDehazer",
    "TemporalOptions",
    "VideoReport",
    "dehaze_frame_folder",
    "dehaze_stream",
    "dehaze_video",
    "dehaze_videos",
    "flicker",
    "natural_key",
    "thumbnail",
]
