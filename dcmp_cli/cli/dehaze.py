"""`dcmp dehaze`: restore hazy images, one file, whole folders, or a stream."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dcmp_cli.choices import Method, Precision, WatchBackend
from dcmp_cli.cli.common import (
    STREAM,
    CompileOption,
    DeviceOption,
    ForceOption,
    JsonOption,
    MaxDiskOption,
    MaxMemoryOption,
    MethodOption,
    OverwriteOption,
    PrecisionOption,
    RecursiveOption,
    RichBatchEvents,
    ShardOption,
    TileOption,
    TileOverlapOption,
    announce_dehazer,
    check_stdout,
    chosen,
    fail,
    finish_batch,
    interruptible,
    library_errors,
    note,
    parse_tiling,
    run_stream,
    weights_option,
)

if TYPE_CHECKING:
    from dcmp_cli.core.batch import BatchSummary
    from dcmp_cli.core.image_jobs import OutputOptions
    from dcmp_cli.core.image_model import Dehazer


def dehaze_cli(
    input: Annotated[
        str,
        typer.Argument(
            metavar="INPUT",
            help="Image file, folder of images, glob pattern (quote it), or - for stdin.",
            show_default=False,
        ),
    ],
    output: Annotated[
        str,
        typer.Argument(
            metavar="OUTPUT",
            help="Output folder (mirrors sub-folders), a file for a single input, or - for stdout.",
            show_default=False,
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
    recursive: RecursiveOption = False,
    ext: Annotated[
        str | None,
        typer.Option(
            "--ext",
            metavar="EXT",
            help="Output format by extension: png, jpg, tif, webp or bmp. Default: the input's (png for stdin).",
        ),
    ] = None,
    suffix: Annotated[
        str, typer.Option("--suffix", metavar="TEXT", help="Appended to output file names, e.g. _dehazed.")
    ] = "",
    bit_depth: Annotated[
        int | None, typer.Option("--bit-depth", help="8 or 16 bits per channel (PNG/TIFF). Default: the input's.")
    ] = None,
    quality: Annotated[int, typer.Option("--quality", help="JPEG/WebP quality.", min=1, max=100)] = 95,
    side_by_side: Annotated[
        bool, typer.Option("--side-by-side", help="Write input | output next to each other.")
    ] = False,
    overwrite: OverwriteOption = False,
    shard: ShardOption = None,
    force: ForceOption = False,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            help="Keep running: after the images already in the INPUT folder, dehaze every new or changed "
            "image as soon as it is completely written (a hot folder). Ctrl-C stops after the image in flight.",
        ),
    ] = False,
    watch_backend: Annotated[
        WatchBackend,
        typer.Option(
            "--watch-backend",
            help="How new files are noticed: file-system events, polling, or auto (events, polling on "
            "network file systems or where events are unavailable).",
        ),
    ] = WatchBackend.AUTO,
    settle: Annotated[
        float,
        typer.Option("--settle", min=0.0, help="Seconds a new file must stay unchanged before it is read (--watch)."),
    ] = 1.0,
    json_out: JsonOption = False,
) -> None:
    """Dehaze images with DCMPNet, or a weight-free method when no weights are at hand.

    Outputs keep each input's name, size, bit depth, greyscale/colour form and alpha.
    Existing outputs are skipped, so re-running resumes an interrupted batch; outputs
    are written atomically and inputs are never overwritten. Large images are tiled
    with shared global statistics (see --tile).
    """
    from dcmp_cli.core.image_jobs import OutputOptions, encode_dehazed, plan_image_jobs, run_dehaze_jobs
    from dcmp_cli.core.loading import load_dehazer

    if bit_depth not in (None, 8, 16):
        fail(f"--bit-depth must be 8 or 16, got {bit_depth}")
    tiling = parse_tiling(tile, tile_overlap, max_memory, max_disk)
    options = OutputOptions(
        ext=None if ext is None else "." + ext.lstrip(".").lower(),
        suffix=suffix,
        bit_depth=bit_depth,
        quality=quality,
        side_by_side=side_by_side,
    )
    stream = STREAM in (input, output)
    if watch and (stream or shard):
        fail("--watch takes a folder as INPUT and a folder as OUTPUT, without --shard")
    check_stdout(output, force)
    with library_errors():
        plan = (
            None
            if stream or watch
            else plan_image_jobs(input, output, recursive=recursive, ext=ext, suffix=suffix, shard=shard)
        )
        dehazer = load_dehazer(
            method, weights, device=device, precision=precision, compile=compile, on_notice=note, **tiling
        )
    if watch:
        if not json_out:
            announce_dehazer(method, dehazer)
        summary = _watch(input, output, dehazer, options, recursive, overwrite, watch_backend, settle, json_out)
        finish_batch(summary, "dcmp dehaze", json_out, False, **chosen(dehazer))
        return
    if plan is None:
        source_ext = Path(input).suffix.lower() if input != STREAM else ""
        run_stream(
            input,
            output,
            lambda image, ext: encode_dehazed(image, dehazer, ext, options),
            options.ext or source_ext or ".png",
        )
        return
    if not json_out:
        announce_dehazer(method, dehazer)
    with interruptible(), RichBatchEvents("dehaze", enabled=None if not json_out else False) as events:
        summary = run_dehaze_jobs(plan, dehazer, options, overwrite=overwrite, events=events)
    finish_batch(summary, "dcmp dehaze", json_out, plan.inputs.single_file, **chosen(dehazer))


def _watch(
    input: str,
    output: str,
    dehazer: Dehazer,
    options: OutputOptions,
    recursive: bool,
    overwrite: bool,
    backend: WatchBackend,
    settle: float,
    json_out: bool,
) -> BatchSummary:
    """Runs the hot-folder loop until Ctrl-C or SIGTERM (the first stops after the image in flight)."""
    import threading

    from dcmp_cli.core.watch import WatchBackendError, WatchStarted, watch_dehaze
    from dcmp_cli.signals import stop_on_signals

    def ready(started: WatchStarted) -> None:
        if not json_out:
            how = "file-system events" if started.backend == "events" else "polling"
            why = f" ({started.fallback})" if started.fallback else ""
            note(f"watching {started.folder} with {how}{why}; Ctrl-C stops")

    def stopping(signum: int) -> None:
        if not json_out:
            note("stopping after the image in flight; press Ctrl-C again to abort")

    with (
        library_errors(),
        stop_on_signals(threading.Event(), stopping) as stop,
        RichBatchEvents("dehaze", enabled=None if not json_out else False, growing=True) as events,
    ):
        try:
            return watch_dehaze(
                input,
                output,
                dehazer,
                options,
                recursive=recursive,
                overwrite=overwrite,
                events=events,
                stop=stop,
                settle=settle,
                backend=backend.value,
                on_ready=ready,
            )
        except WatchBackendError as e:
            fail(f"{e}; try --watch-backend poll")
