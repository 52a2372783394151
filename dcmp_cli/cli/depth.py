"""`dcmp depth`: relative depth maps from images."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from dcmp_cli.cli.common import (
    EXIT_FAILED_ITEMS,
    DeviceOption,
    JsonOption,
    PrecisionOption,
    RichBatchEvents,
    fail,
    load_predictor,
    print_json,
    render_summary,
    resolve_weights,
    summary_json,
    weights_option,
)
from dcmp_cli.core.image_jobs import depth_files
from dcmp_cli.data.depth_io import COLORMAPS
from dcmp_cli.data.files import InputError, collect_inputs


def depth_cli(
    input: Annotated[str, typer.Argument(help="Image file, folder of images, or glob pattern (quote it).", show_default=False)],
    output: Annotated[Path, typer.Argument(help="Output folder, or a file for a single input.", show_default=False)],
    weights: Annotated[Optional[Path], weights_option("Depth-network", "DCMP_DEPTH_WEIGHTS")] = None,
    device: DeviceOption = "auto",
    precision: PrecisionOption = "fp32",
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Descend into sub-folders of INPUT.")] = False,
    ext: Annotated[str, typer.Option("--ext", help="png (16-bit), tif (16-bit) or npy (float32); with --colormap any image type.")] = "png",
    suffix: Annotated[str, typer.Option("--suffix", help="Appended to output file names, e.g. _depth.")] = "",
    colormap: Annotated[Optional[str], typer.Option("--colormap", help=f"Write an 8-bit colour preview instead: {', '.join(COLORMAPS)}.")] = None,
    side_by_side: Annotated[bool, typer.Option("--side-by-side", help="Write input | colour-mapped depth as one image.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Redo outputs that already exist (default: skip them).")] = False,
    json_out: JsonOption = False,
) -> None:
    """Estimate relative depth (0 = nearest, 1 = farthest, normalised per image) with DCMPNet's depth network."""
    if colormap is not None and colormap not in COLORMAPS:
        fail(f"unknown colormap {colormap!r}; choose one of {', '.join(COLORMAPS)}")
    try:
        inputs = collect_inputs(input, recursive)
    except InputError as e:
        fail(str(e))
    checkpoint = resolve_weights("depth", weights)
    predictor = load_predictor("depth", checkpoint, device, precision)
    with RichBatchEvents("depth", enabled=None if not json_out else False) as events:
        summary = depth_files(
            inputs,
            output,
            predictor,
            larger_is_nearer=predictor.larger_is_nearer,
            ext="." + ext.lstrip("."),
            suffix=suffix,
            colormap=colormap,
            overwrite=overwrite,
            events=events,
            side_by_side=side_by_side,
        )
    if json_out:
        print_json(summary_json(summary, command="depth", weights=str(checkpoint)))
    else:
        render_summary(summary, "dcmp depth")
    if not summary.ok:
        raise typer.Exit(EXIT_FAILED_ITEMS)
