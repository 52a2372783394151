"""Dehazing videos and frame sequences: the streaming jobs.

A video streams through ffmpeg one frame at a time (:mod:`dcmp_cli.data.video`):
frames are decoded, dehazed by a :class:`~dcmp_cli.core.temporal.TemporalDehazer`
(temporal smoothing and scene cuts, batches of ``batch`` frames), encoded and written
to a hidden temporary file renamed at the end. A folder of frame images gives a folder
of dehazed frames. Flicker is measured on the way (:mod:`dcmp_cli.core.flicker`).

:func:`plan_video_job` decides what INPUT and OUTPUT mean (a video, a folder of videos,
or a folder of frames) before anything runs; :func:`dehaze_video_input` runs that plan.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from dcmp_cli.core.batch import (
    BatchEvents,
    BatchSummary,
    ItemResult,
    ProgressFn,
    describe_error,
    run_batch,
)
from dcmp_cli.core.flicker import FlickerMeter
from dcmp_cli.core.image_model import ImageModel
from dcmp_cli.core.temporal import Frame, TemporalDehazer, TemporalOptions, dehaze_stream
from dcmp_cli.data.files import InputError, InputSet, collect_inputs, output_path
from dcmp_cli.data.image_io import (
    ImageReadError,
    LoadedImage,
    quantize,
    read_image,
    write_like,
)
from dcmp_cli.data.video.decode import FrameRange, read_frames
from dcmp_cli.data.video.encode import EncodeOptions, check_encoder, open_video_writer
from dcmp_cli.data.video.errors import IncompleteVideoError, VideoError
from dcmp_cli.data.video.files import VIDEO_EXTENSIONS, find_videos
from dcmp_cli.data.video.probe import probe_video


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
    #: The source ended early (truncated): fewer frames than ``expected_frames`` were read.
    incomplete: bool = False
    expected_frames: int | None = None

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
            "incomplete": self.incomplete,
            "expected_frames": self.expected_frames,
        }


def dehaze_video(
    source: Path,
    target: Path,
    model: ImageModel,
    temporal: TemporalOptions = TemporalOptions(),
    encode: EncodeOptions = EncodeOptions(),
    frame_range: FrameRange = FrameRange(),
    progress: ProgressFn | None = None,
) -> VideoReport:
    """Dehazes the video ``source`` into ``target`` (written atomically, see
    :func:`~dcmp_cli.data.video.encode.open_video_writer`), frame by frame in bounded memory.

    ``progress(done, total)`` is called after every frame (``total`` may be an estimate).
    Raises :class:`~dcmp_cli.data.video.errors.VideoError` for unreadable input. A file
    that ends early (truncated) still gives a video of the frames that could be read; the
    report then has ``incomplete`` set and a note saying how many frames are missing.
    """
    started = time.perf_counter()
    info = probe_video(source)
    rate = frame_range.fps or info.fps
    report = VideoReport(source, target, width=info.width, height=info.height, fps=rate)
    total = frame_range.expected_frames(info)
    dehazer = TemporalDehazer(model, temporal)
    meter = FlickerMeter()
    with open_video_writer(
        target,
        info.width,
        info.height,
        rate,
        encode,
        info,
        audio_start=frame_range.start,
        trim_audio=frame_range.trimmed,
    ) as sink:
        reader = read_frames(info, frame_range)
        frames = ((None, frame.astype(np.float32) / 255.0) for frame in reader)
        for _, frame, restored in dehaze_stream(frames, dehazer):
            pixels = quantize(restored, 8)
            sink.write(pixels)
            meter.update(frame, pixels)
            if progress is not None:
                progress(sink.frames, max(total, sink.frames))
        if sink.frames == 0:
            if reader.result is not None:
                reader.result.raise_if_short()
            raise VideoError("no frames in the selected range (check the start and end times and the frame limit)")
    report.frames = sink.result.frames
    report.audio = sink.result.audio
    report.notes = list(sink.result.notes)
    if reader.result is not None and reader.result.short_read:
        report.incomplete = True
        report.expected_frames = reader.result.expected_frames
        report.notes.append(reader.result.note or "frames are missing")
    report.flicker_input, report.flicker_output = meter.input, meter.output
    report.scene_cuts = dehazer.scene_cuts
    report.seconds = time.perf_counter() - started
    return report


def dehaze_video_files(
    jobs: list[tuple[Path, Path]],
    model: ImageModel,
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
        report = reports[source] = dehaze_video(source, target, model, temporal, encode, frame_range, progress)
        if report.incomplete:  # the output of the readable frames is kept; the item counts as failed
            note = report.notes[-1]
            raise IncompleteVideoError(
                f"{note}; wrote the {report.frames} frames that could be read", report.frames, report.expected_frames
            )

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
    model: ImageModel,
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
        ItemResult(
            root,
            output,
            "done" if summary.ok else "failed",
            report.seconds,
            None if summary.ok else f"{len(summary.failed)} frame(s) could not be read",
        )
    )
    return summary, report


# --------------------------------------------------------------------------- planning

#: Encoders a WebM file can hold.
WEBM_ENCODERS = ("libvpx", "libvpx-vp9", "libaom-av1", "libsvtav1", "librav1e")


class VideoPlanError(ValueError):
    """INPUT/OUTPUT/options that cannot make a video job; nothing was processed."""


class FrameRangeOnFramesError(VideoPlanError):
    """Start/end times or a frame rate were given for a folder of frame images (they have no time line)."""


@dataclass
class VideoPlan:
    """What a video command will do, decided before anything runs.

    ``frames``: the frame images of a frames folder (then OUTPUT is a folder of frames),
    else None and ``jobs`` lists (video, output video). ``ignored``: non-video files of
    a folder. ``single``: INPUT is one video file.
    """

    input: Path
    output: Path
    jobs: list[tuple[Path, Path]] = field(default_factory=list)
    frames: list[Path] | None = None
    ignored: list[Path] = field(default_factory=list)
    single: bool = False

    @property
    def frames_mode(self) -> bool:
        return self.frames is not None


def check_container(target: Path, encoder: str) -> None:
    """Raises :class:`VideoPlanError` when ``target``'s container cannot hold ``encoder``'s video."""
    suffix = target.suffix.lower()
    if suffix not in VIDEO_EXTENSIONS:
        raise VideoPlanError(
            f"cannot write {target.name}: unknown video container {suffix or '(none)'}; use .mp4, .mkv, .mov or .webm"
        )
    if suffix == ".webm" and encoder not in WEBM_ENCODERS:
        raise VideoPlanError(f"WebM holds VP8, VP9 or AV1 video only, not {encoder}; use the vp9 or av1 codec")


def plan_video_job(
    input: str | Path,
    output: str | Path,
    *,
    encoder: str = "libx264",
    recursive: bool = False,
    ext: str | None = None,
    frame_range: FrameRange = FrameRange(),
) -> VideoPlan:
    """Decides what INPUT and OUTPUT mean: one video, a folder of videos, or a folder of frames.

    Raises :class:`VideoPlanError` (one line) when they cannot work together, before any
    frame is read.
    """
    input, output = Path(input), Path(output)
    if ext is not None and not ext.startswith("."):
        ext = "." + ext
    if input.is_dir():
        videos, others = find_videos(input, recursive)
    elif input.is_file():
        try:
            probe_video(input)  # a single file that is no video fails here, before a model is loaded
        except VideoError as e:
            raise VideoPlanError(f"{input}: {e}") from None
        videos, others = [input], []
    else:
        raise VideoPlanError(f"input not found: {input}")
    if input.is_dir() and not videos:
        try:
            frames = collect_inputs(input)
        except InputError:
            hint = "" if recursive else " (search sub-folders for videos with recursive=True)"
            raise VideoPlanError(
                f"no videos ({', '.join(VIDEO_EXTENSIONS)}) or frame images in {input}{hint}"
            ) from None
        if frame_range.start is not None or frame_range.end is not None or frame_range.fps is not None:
            raise FrameRangeOnFramesError(
                "start and end times and a frame rate apply to videos; for a folder of "
                "frames limit the number of frames instead"
            )
        if output.suffix.lower() in VIDEO_EXTENSIONS:
            raise VideoPlanError(
                f"{input} holds frame images: the output must be a folder for the dehazed frames, not {output.name}"
            )
        if output.resolve() == input.resolve():
            raise VideoPlanError("OUTPUT is the input folder; choose another folder (inputs are never overwritten)")
        return VideoPlan(input, output, frames=frames.files)
    inputs = InputSet(input.parent if input.is_file() else input, videos, others, single_file=input.is_file())
    jobs = [(source, output_path(source, inputs, output, ext=ext)) for source in videos]
    for _, target in jobs:
        check_container(target, encoder)
    return VideoPlan(input, output, jobs=jobs, ignored=others, single=input.is_file())


def run_video_plan(
    plan: VideoPlan,
    model: ImageModel,
    temporal: TemporalOptions = TemporalOptions(),
    encode: EncodeOptions = EncodeOptions(),
    frame_range: FrameRange = FrameRange(),
    *,
    overwrite: bool = False,
    events: BatchEvents | None = None,
) -> tuple[BatchSummary, list[VideoReport]]:
    """Runs a :class:`VideoPlan`: (what happened to each input, a report per processed video or frames folder).

    A frames folder whose output frames exist is skipped unless ``overwrite``.
    """
    if plan.frames is not None:
        existing = [p for p in plan.frames if (plan.output / p.name).exists()]
        if existing and not overwrite:
            reason = f"{len(existing)} output frame(s) exist (overwrite to redo)"
            return BatchSummary([ItemResult(plan.input, plan.output, "skipped", reason=reason)]), []
        summary, report = dehaze_frame_folder(
            plan.frames, plan.output, model, temporal, max_frames=frame_range.max_frames, events=events
        )
        return summary, [report]
    summary, reports = dehaze_video_files(
        plan.jobs, model, temporal, encode, frame_range, overwrite=overwrite, events=events, ignored=plan.ignored
    )
    return summary, list(reports.values())


def dehaze_videos(
    input: str | Path,
    output: str | Path,
    dehazer: ImageModel | None = None,
    *,
    codec: str = "libx264",
    crf: int = 18,
    start: float | None = None,
    end: float | None = None,
    max_frames: int | None = None,
    fps: Fraction | float | None = None,
    smooth: float | None = None,
    scene_cut: float = 0.1,
    batch: int | None = None,
    recursive: bool = False,
    ext: str | None = None,
    overwrite: bool = False,
    events: BatchEvents | None = None,
) -> tuple[BatchSummary, list[VideoReport]]:
    """``dcmp video INPUT OUTPUT`` in one call (``dehazer`` None: :func:`~dcmp_cli.core.loading.load_dehazer`'s choice).

    >>> summary, reports = dehaze_videos("smoke.mp4", "clear.mp4", crf=20)
    >>> reports[0].flicker
    """
    encode = EncodeOptions(codec=codec, crf=crf)
    frame_range = FrameRange(start, end, max_frames, Fraction(fps).limit_denominator(1001) if fps is not None else None)
    plan = plan_video_job(
        input, output, encoder=check_encoder(encode), recursive=recursive, ext=ext, frame_range=frame_range
    )
    if dehazer is None:
        from dcmp_cli.core.loading import load_dehazer

        dehazer = load_dehazer()
    temporal = TemporalOptions(smooth=smooth, scene_cut=scene_cut, batch=batch)
    return run_video_plan(plan, dehazer, temporal, encode, frame_range, overwrite=overwrite, events=events)
