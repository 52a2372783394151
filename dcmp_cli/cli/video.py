"""`dcmp video`: dehaze video files (or a folder of frames) with stable, flicker-free output."""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich import box
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from dcmp_cli.choices import Method, Precision
from dcmp_cli.cli.common import (
    EXIT_FAILED_ITEMS,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    CompileOption,
    DeviceOption,
    JsonOption,
    LiveProgress,
    MaxDiskOption,
    MaxMemoryOption,
    MethodOption,
    PrecisionOption,
    TileOption,
    TileOverlapOption,
    announce_dehazer,
    chosen,
    err_console,
    fail,
    library_errors,
    note,
    parse_tiling,
    print_json,
    weights_option,
)
from dcmp_cli.core.batch import BatchEvents, BatchSummary, ItemResult

if TYPE_CHECKING:
    from dcmp_cli.core.video import VideoReport


class FramesPerSecondColumn(ProgressColumn):
    """Frames per second of a frames task (``add_task(..., frames=True)``), e.g. ``12.3 fps``."""

    def render(self, task: Task) -> Text:
        if not task.fields.get("frames"):
            return Text("")
        speed = task.finished_speed or task.speed
        return Text(f"{speed:5.1f} fps" if speed else "   … fps", style="progress.data.speed")


class RichVideoEvents(LiveProgress, BatchEvents):
    """A bar of frames (with frames per second and ETA) for the current video, and one of
    videos when there are several. Silent when stderr is not a terminal."""

    def __init__(self, enabled: bool | None = None) -> None:
        console = err_console()
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            FramesPerSecondColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            disable=not (console.is_terminal if enabled is None else enabled),
        )
        self.videos: TaskID | None = None
        self.frames: TaskID | None = None

    def batch_started(self, total: int) -> None:
        if total > 1:
            self.videos = self.progress.add_task("videos", total=total)

    def item_started(self, source: Path) -> None:
        if self.frames is not None:
            self.progress.remove_task(self.frames)
        self.frames = self.progress.add_task(f"{source.name} frames", total=None, frames=True)

    def item_progress(self, done: int, total: int) -> None:
        if self.frames is not None:
            self.progress.update(self.frames, completed=done, total=total or None)

    def item_finished(self, result: ItemResult) -> None:
        if self.videos is not None:
            self.progress.advance(self.videos)


def parse_time(text: str | None, option: str) -> float | None:
    """'90', '1:30' or '00:01:30.5' -> seconds."""
    if text is None:
        return None
    if not re.fullmatch(r"\d+(\.\d+)?|(\d+:){1,2}\d+(\.\d+)?", text.strip()):
        fail(f"{option} {text!r}: give seconds (90, 12.5) or [HH:]MM:SS[.ms] (1:30, 00:01:30.5)")
    seconds = 0.0
    for part in text.strip().split(":"):
        seconds = seconds * 60 + float(part)
    return seconds


def parse_fps(text: str | None) -> Fraction | None:
    if text is None:
        return None
    try:
        rate = Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        fail(f"--fps {text!r}: give a rate such as 15, 29.97 or 30000/1001")
    if rate <= 0:
        fail(f"--fps {text!r}: the rate must be positive")
    return rate.limit_denominator(1001)


def _render(reports: list[VideoReport], summary: BatchSummary, title: str) -> None:
    console = err_console()
    table = Table(title=title, header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    longest = max((len(r.input.name) for r in reports), default=5)
    table.add_column("video", no_wrap=True, min_width=min(longest, 32))
    for column in ("frames", "size", "fps", "time", "speed", "flicker"):
        table.add_column(column, justify="right")
    table.add_column("audio")
    for r in reports:
        table.add_row(
            r.input.name,
            str(r.frames),
            f"{r.width}×{r.height}",
            f"{float(r.fps):.3f}".rstrip("0").rstrip(".") if r.fps else "-",
            f"{r.seconds:.1f} s",
            f"{r.frames_per_second:.{1 if r.frames_per_second >= 10 else 2}f} f/s",
            f"{r.flicker:.3f}" if r.flicker is not None else "-",
            r.audio,
        )
    if reports:
        console.print(table)
    for r in reports:
        if r.scene_cuts:
            console.print(
                f"[dim]scene cuts[/] {r.input.name}: {r.scene_cuts} (smoothing restarted there)", soft_wrap=True
            )
        for line in r.notes:
            console.print(f"[yellow]note[/] {r.input.name}: {line}", soft_wrap=True)
    for result in summary.results:
        if result.status in ("failed", "skipped"):
            colour = "red" if result.status == "failed" else "yellow"
            console.print(f"[{colour}]{result.status}[/] {result.input}: {result.reason}", soft_wrap=True)
    ignored = [r.input.name for r in summary.results if r.status == "ignored"]
    if ignored:
        shown = ", ".join(ignored[:5]) + (f" and {len(ignored) - 5} more" if len(ignored) > 5 else "")
        console.print(f"[yellow]ignored[/] {len(ignored)} non-video file(s): {shown}", soft_wrap=True)
    frames = sum(r.frames for r in reports)
    seconds = sum(r.seconds for r in reports)
    if frames:
        console.print(
            f"dehazed {frames} frames in {seconds:.1f} s: {frames / seconds:.2f} frames/s (decode, dehaze, "
            "encode); flicker = mean |change| between consecutive output frames / the same for the input"
        )


def video_cli(
    input: Annotated[
        Path,
        typer.Argument(
            metavar="INPUT", help="Video file, folder of videos, or folder of frame images.", show_default=False
        ),
    ],
    output: Annotated[
        Path,
        typer.Argument(
            metavar="OUTPUT", help="Output video (or folder, for a folder of videos or of frames).", show_default=False
        ),
    ],
    method: MethodOption = Method.AUTO,
    weights: Annotated[Path | None, weights_option("Dehazing", "DCMP_WEIGHTS")] = None,
    device: DeviceOption = "auto",
    precision: PrecisionOption = Precision.FP32,
    compile: CompileOption = False,
    tile: TileOption = "auto",
    tile_overlap: TileOverlapOption = 32,
    max_memory: MaxMemoryOption = None,
    max_disk: MaxDiskOption = None,
    smooth: Annotated[
        float | None,
        typer.Option(
            "--smooth",
            help="Temporal smoothing of the image-global quantities (the prior's airlight, the network's "
            "global statistics): weight of the past in an exponential moving average, in [0, 1); 0 = off, 0.8 averages "
            "over about 5 frames. Default: 0.8 with the weight-free methods, 0 with DCMPNet (where it measurably did "
            "not lower flicker; see docs/video.md).",
            show_default=False,
        ),
    ] = None,
    scene_cut: Annotated[
        float,
        typer.Option(
            "--scene-cut",
            min=0.0,
            help="Restart the smoothing when the mean absolute difference of 32×32 thumbnails of "
            "consecutive frames (RGB in [0, 1]) exceeds this. 0 = never.",
        ),
    ] = 0.1,
    batch: Annotated[
        int,
        typer.Option(
            "--batch",
            min=0,
            help="Frames per network call: 0 = auto (4 on a GPU, 1 on the CPU). Does not change the "
            "result; a batch that does not fit in memory is halved.",
        ),
    ] = 0,
    codec: Annotated[
        str,
        typer.Option(
            "--codec",
            help="Video encoder: libx264 (h264), libx265 (hevc), libvpx-vp9 (vp9), libsvtav1 (av1), or any "
            "ffmpeg encoder.",
        ),
    ] = "libx264",
    crf: Annotated[
        int,
        typer.Option(
            "--crf",
            min=0,
            max=63,
            help="Constant-quality level (lower = better, larger files; 18 is visually lossless for H.264).",
        ),
    ] = 18,
    fps: Annotated[
        str | None,
        typer.Option(
            "--fps",
            help="Resample to this frame rate (15, 29.97, 30000/1001) by dropping or repeating frames. Default: "
            "keep every frame at the source rate.",
            show_default=False,
        ),
    ] = None,
    start: Annotated[
        str | None, typer.Option("--start", help="Start time: seconds or [HH:]MM:SS[.ms].", show_default=False)
    ] = None,
    end: Annotated[
        str | None, typer.Option("--end", help="End time: seconds or [HH:]MM:SS[.ms].", show_default=False)
    ] = None,
    max_frames: Annotated[
        int | None, typer.Option("--max-frames", min=1, help="Stop after this many frames.", show_default=False)
    ] = None,
    ext: Annotated[
        str | None,
        typer.Option(
            "--ext",
            metavar="EXT",
            help="Container for outputs in a folder (mp4, mkv, mov, webm); default: the input's.",
            show_default=False,
        ),
    ] = None,
    recursive: Annotated[
        bool, typer.Option("--recursive", "-r", help="Descend into sub-folders of a folder of videos.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Redo outputs that already exist (default: skip them).")
    ] = False,
    json_out: JsonOption = False,
) -> None:
    """Dehaze videos with DCMPNet (or the weight-free default), without flicker.

    Keeps size, frame rate, frame count, rotation, colour tags, metadata
    and the audio streams (copied unchanged). Frames stream through in
    bounded memory; the output is written to a hidden temporary file and
    renamed at the end, so Ctrl-C leaves nothing half-written. A folder of
    frame images gives a folder of dehazed frames.
    """
    if smooth is not None and not 0.0 <= smooth < 1.0:
        fail(f"--smooth {smooth}: give a value in [0, 1) (0 = off, 0.8 = about 5 frames)")
    start_s, end_s, rate = parse_time(start, "--start"), parse_time(end, "--end"), parse_fps(fps)
    if start_s is not None and end_s is not None and end_s <= start_s:
        fail(f"--end ({end}) must come after --start ({start})")
    from dcmp_cli.core.loading import load_dehazer
    from dcmp_cli.core.temporal import TemporalOptions
    from dcmp_cli.core.video import FrameRangeOnFramesError, VideoPlanError, plan_video_job, run_video_plan
    from dcmp_cli.data.video.decode import FrameRange
    from dcmp_cli.data.video.encode import EncodeOptions, check_encoder
    from dcmp_cli.data.video.errors import VideoWriteError

    tiling = parse_tiling(tile, tile_overlap, max_memory, max_disk)
    encode = EncodeOptions(codec=codec, crf=crf)
    frame_range = FrameRange(start_s, end_s, max_frames, rate)
    try:
        encoder = check_encoder(encode)
        plan = plan_video_job(input, output, encoder=encoder, recursive=recursive, ext=ext, frame_range=frame_range)
    except FrameRangeOnFramesError:
        fail("--start, --end and --fps apply to videos; for a folder of frames use --max-frames")
    except (VideoWriteError, VideoPlanError) as e:
        fail(str(e))
    with library_errors():
        dehazer = load_dehazer(
            method, weights, device=device, precision=precision, compile=compile, on_notice=note, **tiling
        )
    if not json_out:
        announce_dehazer(method, dehazer)
    temporal = TemporalOptions(smooth=smooth, scene_cut=scene_cut, batch=batch or None)
    try:
        with RichVideoEvents(enabled=False if json_out else None) as events:
            summary, ordered = run_video_plan(
                plan, dehazer, temporal, encode, frame_range, overwrite=overwrite, events=events
            )
    except KeyboardInterrupt:
        done = "the frames written so far are complete; " if plan.frames_mode else ""
        err_console().print(f"interrupted: {done}no partial output was left behind")
        raise typer.Exit(EXIT_INTERRUPTED) from None

    # A truncated video still gives the frames that could be read: reported (exit 1), not a usage error.
    single = plan.single and not any(r.incomplete for r in ordered)
    if single and summary.failed and not json_out:
        fail(f"{input}: {summary.failed[0].reason}")
    if json_out:
        print_json(
            {
                "command": "video",
                **chosen(dehazer),
                "smooth": temporal.smooth_for(dehazer),
                "scene_cut": scene_cut,
                "batch": temporal.batch_for(dehazer),
                "counts": {s: summary.count(s) for s in ("done", "skipped", "failed", "ignored")},
                "videos": [r.as_dict() for r in ordered],
                # Per-frame rows of a frame folder would repeat "done" thousands of times: list the others only.
                "items": [r.as_dict() for r in summary.results if not (plan.frames_mode and r.status == "done")],
            }
        )
    else:
        _render(ordered, summary, "dcmp video")
    if single and summary.failed:
        raise typer.Exit(EXIT_USAGE)
    if not summary.ok:
        raise typer.Exit(EXIT_FAILED_ITEMS)
    if not ordered and not json_out and summary.count("skipped"):
        note("nothing to do: outputs exist (use --overwrite to redo them)")
