"""`dcmp depth`: relative depth maps from hazy (or clear) images."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dcmp_cli.choices import Colormap, Method, Precision
from dcmp_cli.cli.common import (
    STREAM,
    DeviceOption,
    ForceOption,
    JsonOption,
    MaxDiskOption,
    MaxMemoryOption,
    OverwriteOption,
    PrecisionOption,
    RecursiveOption,
    RichBatchEvents,
    ShardOption,
    TileOption,
    TileOverlapOption,
    check_stdout,
    chosen,
    finish_batch,
    interruptible,
    library_errors,
    note,
    parse_tiling,
    run_stream,
    weights_option,
)

if TYPE_CHECKING:
    from dcmp_cli.core.depth import DepthEstimator


def depth_cli(
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
            metavar="OUTPUT", help="Output folder, a file for a single input, or - for stdout.", show_default=False
        ),
    ],
    method: Annotated[
        Method,
        typer.Option(
            "--method",
            "-m",
            help="dcmp (DCMPNet's depth network, needs weights); layered or dcp (−ln t of that weight-free method's "
            "transmission, hazy input only); auto: dcmp when depth weights are found, else layered.",
        ),
    ] = Method.AUTO,
    weights: Annotated[Path | None, weights_option("Depth-network", "DCMP_DEPTH_WEIGHTS")] = None,
    dehaze_weights: Annotated[
        Path | None,
        typer.Option(
            "--dehaze-weights",
            help="Dehazing checkpoint used to dehaze before estimating depth. Default: "
            "the default dehazing weights, else the weight-free default.",
            show_default=False,
        ),
    ] = None,
    input_is_clear: Annotated[
        bool, typer.Option("--input-is-clear", help="The inputs are haze-free: run the depth network on them directly.")
    ] = False,
    device: DeviceOption = "auto",
    precision: PrecisionOption = Precision.FP32,
    tile: TileOption = "auto",
    tile_overlap: TileOverlapOption = 32,
    max_memory: MaxMemoryOption = None,
    max_disk: MaxDiskOption = None,
    recursive: RecursiveOption = False,
    ext: Annotated[
        str,
        typer.Option(
            "--ext", metavar="EXT", help="png (16-bit), tif (16-bit) or npy (float32); with --colormap any image type."
        ),
    ] = "png",
    suffix: Annotated[
        str, typer.Option("--suffix", metavar="TEXT", help="Appended to output file names, e.g. _depth.")
    ] = "",
    colormap: Annotated[
        Colormap | None,
        typer.Option("--colormap", help="Write an 8-bit colour preview instead.", show_default=False),
    ] = None,
    side_by_side: Annotated[
        bool, typer.Option("--side-by-side", help="Write input | (dehazed |) colour-mapped depth as one image.")
    ] = False,
    overwrite: OverwriteOption = False,
    shard: ShardOption = None,
    force: ForceOption = False,
    json_out: JsonOption = False,
) -> None:
    """Estimate relative depth: 0 = nearest, 1 = farthest, normalised per image.

    With a depth checkpoint (DCMPNet's depth network), hazy inputs are dehazed first
    (with the dehazing weights if found, else the weight-free default); --input-is-clear
    skips that. Without one, depth comes from the weight-free prior's transmission.
    16-bit PNGs store round(depth · 65535) and the raw range in text chunks.
    """
    from dcmp_cli.core.image_jobs import (
        DepthOutputOptions,
        encode_depth,
        estimate_depth,
        plan_image_jobs,
        run_depth_jobs,
    )
    from dcmp_cli.core.loading import load_depth_estimator
    from dcmp_cli.data.depth_io import DEPTH_EXTENSIONS
    from dcmp_cli.data.image_io import IMAGE_EXTENSIONS

    tiling = parse_tiling(tile, tile_overlap, max_memory, max_disk)
    target_ext = "." + ext.lstrip(".").lower()
    options = DepthOutputOptions(target_ext, suffix, colormap.value if colormap else None, side_by_side)
    stream = STREAM in (input, output)
    check_stdout(output, force)
    with library_errors():
        writable = IMAGE_EXTENSIONS if colormap or side_by_side else DEPTH_EXTENSIONS
        plan = (
            None
            if stream
            else plan_image_jobs(
                input, output, recursive=recursive, ext=target_ext, suffix=suffix, shard=shard, writable=writable
            )
        )
        estimator = load_depth_estimator(
            method,
            weights,
            dehaze_weights=dehaze_weights,
            input_is_clear=input_is_clear,
            device=device,
            precision=precision,
            on_notice=note,
            **tiling,
        )
    if plan is None:
        run_stream(
            input,
            output,
            lambda image, ext: encode_depth(image, estimate_depth(image, estimator), ext, options),
            target_ext,
        )
        return
    info = chosen(estimator)
    if estimator.dehazer is not None:
        info["dehazed_by"] = chosen(estimator.dehazer)
    if not json_out:
        _announce(method, estimator)
    with interruptible(), RichBatchEvents("depth", enabled=None if not json_out else False) as events:
        summary = run_depth_jobs(plan, estimator, options, overwrite=overwrite, events=events)
    finish_batch(summary, "dcmp depth", json_out, plan.inputs.single_file, **info)


def _announce(method: Method, estimator: DepthEstimator) -> None:
    if estimator.weights is None:
        if method == Method.AUTO:
            note(f"no depth weights found: relative depth from the {estimator.model.title}'s transmission (−ln t)")
        return
    if estimator.dehazer is not None:
        dehazer = estimator.dehazer
        what = f"DCMPNet ({dehazer.weights})" if dehazer.weights is not None else f"the weight-free {dehazer.title}"
        note(f"depth network {estimator.weights} on the image dehazed by {what} (--input-is-clear skips dehazing)")
