"""`dcmp dehaze`: restore hazy images, one file or whole folders."""

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
    MethodOption,
    print_json,
    render_summary,
    select_dehazer,
    summary_json,
    weights_option,
)
from dcmp_cli.core.image_jobs import OutputOptions, dehaze_files
from dcmp_cli.data.files import InputError, collect_inputs


def dehaze_cli(
    input: Annotated[str, typer.Argument(help="Image file, folder of images, or glob pattern (quote it).", show_default=False)],
    output: Annotated[Path, typer.Argument(help="Output folder (mirrors sub-folders), or a file for a single input.", show_default=False)],
    method: MethodOption = "auto",
    weights: Annotated[Optional[Path], weights_option("Dehazing", "DCMP_WEIGHTS")] = None,
    device: DeviceOption = "auto",
    precision: PrecisionOption = "fp32",
    tile: Annotated[int, typer.Option("--tile", help="Tile size in pixels; 0 runs the whole image in one pass.", min=0)] = 0,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Descend into sub-folders of INPUT.")] = False,
    ext: Annotated[Optional[str], typer.Option("--ext", help="Output format by extension (png, jpg, tif, webp, bmp); default: the input's.")] = None,
    suffix: Annotated[str, typer.Option("--suffix", help="Appended to output file names, e.g. _dehazed.")] = "",
    quality: Annotated[int, typer.Option("--quality", help="JPEG/WebP quality.", min=1, max=100)] = 95,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Redo outputs that already exist (default: skip them).")] = False,
    json_out: JsonOption = False,
) -> None:
    """Dehaze images with DCMPNet, or the dark channel prior when no weights are at hand.

    Outputs keep each input's name, size, bit depth, greyscale/colour form and alpha.
    Existing outputs are skipped, so re-running resumes an interrupted batch.
    """
    if tile:
        fail("tiled inference is not available yet; use --tile 0")
    try:
        inputs = collect_inputs(input, recursive)
    except InputError as e:
        fail(str(e))
    model, chosen = select_dehazer(method, weights, device, precision, quiet=json_out)
    options = OutputOptions(ext=ext, suffix=suffix, quality=quality)
    with RichBatchEvents("dehaze", enabled=None if not json_out else False) as events:
        summary = dehaze_files(inputs, output, model, options, overwrite=overwrite, events=events)
    if json_out:
        print_json(summary_json(summary, command="dehaze", **chosen))
    else:
        render_summary(summary, "dcmp dehaze")
    if not summary.ok:
        raise typer.Exit(EXIT_FAILED_ITEMS)
