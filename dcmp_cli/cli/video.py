"""`dcmp video`: dehaze video files (or a folder of frames) with stable, flicker-free output."""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Optional

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

from dcmp_cli.cli.common import (
    LiveProgress,
    CompileOption,
    EXIT_FAILED_ITEMS,
    EXIT_USAGE,
    DeviceOption,
    JsonOption,
    MaxMemoryOption,
    MethodOption,
    PrecisionOption,
    TileOption,
    TileOverlapOption,
    err_console,
    fail,
    note,
    print_json,
    select_dehazer,
    tile_settings,
    weights_option,
)
from dcmp_cli.core.batch import BatchEvents, BatchSummary, ItemResult
from dcmp_cli.core.video import (
    TemporalOptions,
    VideoReport,
    dehaze_frame_folder,
    dehaze_videos,
)
from dcmp_cli.data.files import InputError, InputSet, collect_inputs, output_path
from dcmp_cli.data.video_io import (
    VIDEO_EXTENSIONS,
    EncodeOptions,
    FrameRange,
    VideoWriteError,
    check_encoder,
    find_videos,
)

#: Encoders a WebM file can hold.
_WEBM_ENCODERS = ("libvpx", "libvpx-vp9", "libaom-av1", "libsvtav1", "librav1e")
#: --smooth when not given, per method: smoothing the prior's airlight lowers flicker; smoothing
#: DCMPNet's global statistics did not in any measurement (benchmarks/flicker.py).
DEFAULT_SMOOTHING = {"dcp": 0.8, "dcmp": 0.0}
#: Exit code after Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130


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


def _check_container(target: Path, encoder: str) -> None:
    suffix = target.suffix.lower()
    if suffix not in VIDEO_EXTENSIONS:
        fail(f"cannot write {target.name}: unknown video container {suffix or '(none)'}; use .mp4, .mkv, .mov or .webm")
    if suffix == ".webm" and encoder not in _WEBM_ENCODERS:
        fail(f"WebM holds VP8, VP9 or AV1 video only, not {encoder}; pass --codec vp9 or --codec av1")


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
            console.print(f"[dim]scene cuts[/] {r.input.name}: {r.scene_cuts} (smoothing restarted there)", soft_wrap=True)
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
        console.print(f"dehazed {frames} frames in {seconds:.1f} s: {frames / seconds:.2f} frames/s (decode, dehaze, "
                      "encode); flicker = mean |change| between consecutive output frames / the same for the input")


def video_cli(
    input: Annotated[Path, typer.Argument(help="Video file, folder of videos, or folder of frame images.", show_default=False)],
    output: Annotated[Path, typer.Argument(help="Output video (or folder, for a folder of videos or of frames).", show_default=False)],
    method: MethodOption = "auto",
    weights: Annotated[Optional[Path], weights_option("Dehazing", "DCMP_WEIGHTS")] = None,
    device: DeviceOption = "auto",
    precision: PrecisionOption = "fp32",
    compile: CompileOption = False,
    tile: TileOption = "auto",
    tile_overlap: TileOverlapOption = 32,
    max_memory: MaxMemoryOption = None,
    smooth: Annotated[Optional[float], typer.Option(
        "--smooth", help="Temporal smoothing of the image-global quantities (the prior's airlight, the network's "
        "global statistics): weight of the past in an exponential moving average, in [0, 1); 0 = off, 0.8 averages "
        "over about 5 frames. Default: 0.8 with the prior, 0 with DCMPNet (where it measurably did not lower "
        "flicker; see the README).", show_default=False)] = None,
    scene_cut: Annotated[float, typer.Option(
        "--scene-cut", min=0.0, help="Restart the smoothing when the mean absolute difference of 32×32 thumbnails of "
        "consecutive frames (RGB in [0, 1]) exceeds this. 0 = never.")] = 0.1,
    batch: Annotated[int, typer.Option(
        "--batch", min=0, help="Frames per network call: 0 = auto (4 on a GPU, 1 on the CPU). Does not change the "
        "result; a batch that does not fit in memory is halved.")] = 0,
    codec: Annotated[str, typer.Option(
        "--codec", help="Video encoder: libx264 (h264), libx265 (hevc), libvpx-vp9 (vp9), libsvtav1 (av1), or any "
        "ffmpeg encoder.")] = "libx264",
    crf: Annotated[int, typer.Option("--crf", min=0, max=63, help="Constant-quality level (lower = better, larger "
                                     "files; 18 is visually lossless for H.264).")] = 18,
    fps: Annotated[Optional[str], typer.Option(
        "--fps", help="Resample to this frame rate (15, 29.97, 30000/1001) by dropping or repeating frames. Default: "
        "keep every frame at the source rate.", show_default=False)] = None,
    start: Annotated[Optional[str], typer.Option("--start", help="Start time: seconds or [HH:]MM:SS[.ms].", show_default=False)] = None,
    end: Annotated[Optional[str], typer.Option("--end", help="End time: seconds or [HH:]MM:SS[.ms].", show_default=False)] = None,
    max_frames: Annotated[Optional[int], typer.Option("--max-frames", min=1, help="Stop after this many frames.", show_default=False)] = None,
    ext: Annotated[Optional[str], typer.Option("--ext", help="Container for outputs in a folder (mp4, mkv, mov, webm); default: the input's.", show_default=False)] = None,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Descend into sub-folders of a folder of videos.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Redo outputs that already exist (default: skip them).")] = False,
    json_out: JsonOption = False,
) -> None:
    """Dehaze videos with DCMPNet (or the dark channel prior), without flicker.

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
    if ext is not None:
        ext = ext if ext.startswith(".") else "." + ext
    tiling = tile_settings(tile, tile_overlap, max_memory)
    encode = EncodeOptions(codec=codec, crf=crf)
    try:
        encoder = check_encoder(encode)
    except VideoWriteError as e:
        fail(str(e))

    if input.is_dir():
        videos, others = find_videos(input, recursive)
    elif input.is_file():
        videos, others = [input], []
    else:
        fail(f"input not found: {input}")

    frames_mode = input.is_dir() and not videos
    if frames_mode:
        try:
            frames = collect_inputs(input)
        except InputError:
            fail(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) or frame images in {input}"
                 + ("" if recursive else " (add --recursive to look for videos in sub-folders)"))
        if start_s is not None or end_s is not None or rate is not None:
            fail("--start, --end and --fps apply to videos; for a folder of frames use --max-frames")
        if output.suffix.lower() in VIDEO_EXTENSIONS:
            fail(f"{input} holds frame images: OUTPUT must be a folder for the dehazed frames, not {output.name}")
        if output.resolve() == input.resolve():
            fail("OUTPUT is the input folder; choose another folder (inputs are never overwritten)")
    else:
        inputs = InputSet(input.parent if input.is_file() else input, videos, others, single_file=input.is_file())
        jobs = [(source, output_path(source, inputs, output, ext=ext)) for source in videos]
        for _, target in jobs:
            _check_container(target, encoder)

    model, chosen = select_dehazer(method, weights, device, precision, quiet=json_out, tiling=tiling, compile=compile)
    on_gpu = chosen["method"] == "dcmp" and getattr(model, "device", None) is not None and model.device.type != "cpu"
    if smooth is None:
        smooth = DEFAULT_SMOOTHING[chosen["method"]]
    temporal = TemporalOptions(smooth=smooth, scene_cut=scene_cut, batch=batch or (4 if on_gpu else 1))

    try:
        with RichVideoEvents(enabled=False if json_out else None) as events:
            if frames_mode:
                existing = [p for p in frames.files if (output / p.name).exists()]
                if existing and not overwrite:
                    summary = BatchSummary([ItemResult(input, output, "skipped",
                                                       reason=f"{len(existing)} output frame(s) exist (use --overwrite to redo)")])
                    reports = {}
                else:
                    summary, report = dehaze_frame_folder(frames.files, output, model, temporal, max_frames=max_frames,
                                                          events=events)
                    reports = {input: report}
            else:
                summary, reports = dehaze_videos(
                    jobs, model, temporal, encode, FrameRange(start_s, end_s, max_frames, rate),
                    overwrite=overwrite, events=events, ignored=others,
                )
    except KeyboardInterrupt:
        done = "the frames written so far are complete; " if frames_mode else ""
        err_console().print(f"interrupted: {done}no partial output was left behind")
        raise typer.Exit(EXIT_INTERRUPTED) from None

    ordered = list(reports.values())
    single = not frames_mode and input.is_file()
    if single and summary.failed and not json_out:
        fail(f"{input}: {summary.failed[0].reason}")
    if json_out:
        print_json({
            "command": "video",
            **chosen,
            "smooth": smooth,
            "scene_cut": scene_cut,
            "batch": temporal.batch,
            "counts": {s: summary.count(s) for s in ("done", "skipped", "failed", "ignored")},  # type: ignore[arg-type]
            "videos": [r.as_dict() for r in ordered],
            # Per-frame rows of a frame folder would repeat "done" thousands of times: list the others only.
            "items": [r.as_dict() for r in summary.results if not (frames_mode and r.status == "done")],
        })
    else:
        _render(ordered, summary, "dcmp video")
    if single and summary.failed:
        raise typer.Exit(EXIT_USAGE)
    if not summary.ok:
        raise typer.Exit(EXIT_FAILED_ITEMS)
    if not ordered and not json_out and summary.count("skipped"):
        note("nothing to do: outputs exist (use --overwrite to redo them)")
