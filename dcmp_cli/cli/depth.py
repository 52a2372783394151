"""`dcmp depth`: relative depth maps from hazy (or clear) images."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from dcmp_cli.cli.common import (
    EXIT_FAILED_ITEMS,
    DeviceOption,
    JsonOption,
    MaxMemoryOption,
    STREAM,
    PrecisionOption,
    RichBatchEvents,
    TileOption,
    TileOverlapOption,
    collect_or_fail,
    fail,
    load_predictor,
    note,
    print_json,
    render_summary,
    resolve_weights,
    run_stream,
    select_dehazer,
    summary_json,
    tile_settings,
    weights_option,
)
from dcmp_cli.core.image_jobs import DepthJob, depth_files
from dcmp_cli.data.depth_io import COLORMAPS


def _depth_job(method: str, weights, dehaze_weights, input_is_clear: bool, device, precision, tiling, quiet: bool):
    """The depth model for --method, and the dehazer to run first (None with --input-is-clear)."""
    from dcmp_cli.core.predictor import PriorDehazer

    if method not in ("auto", "dcmp", "dcp"):
        fail(f"unknown --method {method!r}; choose auto, dcmp or dcp")
    checkpoint = None if method == "dcp" else resolve_weights("depth", weights, required=method == "dcmp")
    if checkpoint is None:
        if input_is_clear:
            fail("the dark channel prior reads depth from haze; for clear images pass a depth checkpoint (--weights)")
        if method == "auto" and not quiet:
            note("no depth weights found: relative depth from the dark channel prior's transmission (−ln t)")
        prior = PriorDehazer()
        return prior.depth, False, None, {"method": "dcp", "weights": None}
    predictor = load_predictor("depth", checkpoint, device, precision, tiling)
    info = {"method": "dcmp", "weights": str(checkpoint)}
    if input_is_clear:
        return predictor, predictor.larger_is_nearer, None, info
    dehazer, chosen = select_dehazer("auto", dehaze_weights, device, precision, quiet=True, tiling=tiling)
    if not quiet:
        what = f"DCMPNet ({chosen['weights']})" if chosen["method"] == "dcmp" else "the dark channel prior"
        note(f"depth network {checkpoint} on the image dehazed by {what} (--input-is-clear skips dehazing)")
    return predictor, predictor.larger_is_nearer, dehazer, {**info, "dehazed_by": chosen}


def depth_cli(
    input: Annotated[str, typer.Argument(help="Image file, folder of images, glob pattern (quote it), or - for stdin.", show_default=False)],
    output: Annotated[str, typer.Argument(help="Output folder, a file for a single input, or - for stdout.", show_default=False)],
    method: Annotated[
        str,
        typer.Option("--method", "-m", help="dcmp (DCMPNet's depth network, needs weights), dcp (−ln t of the dark "
                     "channel prior, hazy input only), or auto: dcmp when depth weights are found, else dcp."),
    ] = "auto",
    weights: Annotated[Optional[Path], weights_option("Depth-network", "DCMP_DEPTH_WEIGHTS")] = None,
    dehaze_weights: Annotated[
        Optional[Path],
        typer.Option("--dehaze-weights", help="Dehazing checkpoint used to dehaze before estimating depth. Default: "
                     "the default dehazing weights, else the dark channel prior.", show_default=False),
    ] = None,
    input_is_clear: Annotated[
        bool, typer.Option("--input-is-clear", help="The inputs are haze-free: run the depth network on them directly.")
    ] = False,
    device: DeviceOption = "auto",
    precision: PrecisionOption = "fp32",
    tile: TileOption = "auto",
    tile_overlap: TileOverlapOption = 32,
    max_memory: MaxMemoryOption = None,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Descend into sub-folders of INPUT.")] = False,
    ext: Annotated[str, typer.Option("--ext", help="png (16-bit), tif (16-bit) or npy (float32); with --colormap any image type.")] = "png",
    suffix: Annotated[str, typer.Option("--suffix", help="Appended to output file names, e.g. _depth.")] = "",
    colormap: Annotated[Optional[str], typer.Option("--colormap", help=f"Write an 8-bit colour preview instead: {', '.join(COLORMAPS)}.")] = None,
    side_by_side: Annotated[bool, typer.Option("--side-by-side", help="Write input | (dehazed |) colour-mapped depth as one image.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Redo outputs that already exist (default: skip them).")] = False,
    shard: Annotated[Optional[str], typer.Option("--shard", help="K/N: process only shard K of N, for N parallel jobs.")] = None,
    json_out: JsonOption = False,
) -> None:
    """Estimate relative depth: 0 = nearest, 1 = farthest, normalised per image.

    With a depth checkpoint (DCMPNet's depth network), hazy inputs are dehazed first
    (with the dehazing weights if found, else the dark channel prior); --input-is-clear
    skips that. Without one, depth comes from the dark channel prior's transmission.
    16-bit PNGs store round(depth · 65535) and the raw range in text chunks.
    """
    if colormap is not None and colormap not in COLORMAPS:
        fail(f"unknown colormap {colormap!r}; choose one of {', '.join(COLORMAPS)}")
    tiling = tile_settings(tile, tile_overlap, max_memory)
    stream = STREAM in (input, output)
    model, larger_is_nearer, dehazer, info = _depth_job(
        method, weights, dehaze_weights, input_is_clear, device, precision, tiling, quiet=json_out or stream
    )
    job = DepthJob(model, larger_is_nearer, dehazer, colormap, side_by_side)
    target_ext = "." + ext.lstrip(".").lower()
    if stream:
        run_stream(input, output, job.encode, target_ext)
        return
    inputs = collect_or_fail(input, recursive, shard)
    with RichBatchEvents("depth", enabled=None if not json_out else False) as events:
        summary = depth_files(inputs, Path(output), job, ext=target_ext, suffix=suffix, overwrite=overwrite, events=events)
    if json_out:
        print_json(summary_json(summary, command="depth", **info))
    else:
        render_summary(summary, "dcmp depth")
    if not summary.ok:
        raise typer.Exit(EXIT_FAILED_ITEMS)
