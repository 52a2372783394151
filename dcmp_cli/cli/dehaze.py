"""`dcmp dehaze`: restore hazy images, one file, whole folders, or a stream."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from dcmp_cli.cli.common import (
    CompileOption,
    EXIT_FAILED_ITEMS,
    DeviceOption,
    JsonOption,
    MaxMemoryOption,
    MethodOption,
    STREAM,
    PrecisionOption,
    RichBatchEvents,
    TileOption,
    TileOverlapOption,
    collect_or_fail,
    fail,
    print_json,
    render_summary,
    run_stream,
    select_dehazer,
    summary_json,
    tile_settings,
    weights_option,
)
from dcmp_cli.core.image_jobs import OutputOptions, dehaze_files, encode_dehazed


def dehaze_cli(
    input: Annotated[
        str,
        typer.Argument(help="Image file, folder of images, glob pattern (quote it), or - for stdin.", show_default=False),
    ],
    output: Annotated[
        str,
        typer.Argument(help="Output folder (mirrors sub-folders), a file for a single input, or - for stdout.", show_default=False),
    ],
    method: MethodOption = "auto",
    weights: Annotated[Optional[Path], weights_option("Dehazing", "DCMP_WEIGHTS")] = None,
    device: DeviceOption = "auto",
    precision: PrecisionOption = "fp32",
    compile: CompileOption = False,
    tile: TileOption = "auto",
    tile_overlap: TileOverlapOption = 32,
    max_memory: MaxMemoryOption = None,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Descend into sub-folders of INPUT.")] = False,
    ext: Annotated[
        Optional[str],
        typer.Option("--ext", help="Output format by extension: png, jpg, tif, webp or bmp. Default: the input's (png for stdin)."),
    ] = None,
    suffix: Annotated[str, typer.Option("--suffix", help="Appended to output file names, e.g. _dehazed.")] = "",
    bit_depth: Annotated[
        Optional[int], typer.Option("--bit-depth", help="8 or 16 bits per channel (PNG/TIFF). Default: the input's.")
    ] = None,
    quality: Annotated[int, typer.Option("--quality", help="JPEG/WebP quality.", min=1, max=100)] = 95,
    side_by_side: Annotated[bool, typer.Option("--side-by-side", help="Write input | output next to each other.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Redo outputs that already exist (default: skip them).")] = False,
    shard: Annotated[
        Optional[str],
        typer.Option("--shard", help="K/N: process only shard K of N (by a hash of each path), for N parallel jobs."),
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Dehaze images with DCMPNet, or the dark channel prior when no weights are at hand.

    Outputs keep each input's name, size, bit depth, greyscale/colour form and alpha.
    Existing outputs are skipped, so re-running resumes an interrupted batch; outputs
    are written atomically and inputs are never overwritten. Large images are tiled
    with shared global statistics (see --tile).
    """
    if bit_depth not in (None, 8, 16):
        fail(f"--bit-depth must be 8 or 16, got {bit_depth}")
    tiling = tile_settings(tile, tile_overlap, max_memory)
    options = OutputOptions(
        ext=None if ext is None else "." + ext.lstrip(".").lower(),
        suffix=suffix,
        bit_depth=bit_depth,
        quality=quality,
        side_by_side=side_by_side,
    )
    if STREAM in (input, output):
        model, _ = select_dehazer(method, weights, device, precision, quiet=True, tiling=tiling, compile=compile)
        source_ext = Path(input).suffix.lower() if input != STREAM else ""
        run_stream(input, output, lambda image, ext: encode_dehazed(image, model, ext, options),
                   options.ext or source_ext or ".png")
        return
    inputs = collect_or_fail(input, recursive, shard)
    model, chosen = select_dehazer(method, weights, device, precision, quiet=json_out, tiling=tiling, compile=compile)
    with RichBatchEvents("dehaze", enabled=None if not json_out else False) as events:
        summary = dehaze_files(inputs, Path(output), model, options, overwrite=overwrite, events=events)
    if json_out:
        print_json(summary_json(summary, command="dehaze", **chosen))
    else:
        render_summary(summary, "dcmp dehaze")
    if not summary.ok:
        raise typer.Exit(EXIT_FAILED_ITEMS)
