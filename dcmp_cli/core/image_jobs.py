"""File-to-file jobs of the image commands: read, run a model, write in the input's form."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from dcmp_cli.core.batch import BatchEvents, BatchSummary, ProgressFn, run_batch
from dcmp_cli.data.depth_io import colorize, normalise_depth, write_depth
from dcmp_cli.data.files import InputSet, output_path
from dcmp_cli.data.image_io import LoadedImage, image_to_tensor, read_image, tensor_to_image, write_image

#: Inputs smaller than this on either side are reported as failed.
MIN_IMAGE_SIDE = 16


class ImageModel(Protocol):
    """(1, 3, H, W) [0, 1] image -> (1, C, H, W) result; may report (done, total) progress."""

    def __call__(self, image: torch.Tensor, progress: ProgressFn | None = None) -> torch.Tensor: ...


@dataclass
class OutputOptions:
    """How outputs are named and encoded.

    ``ext``: output extension (None keeps the input's). ``suffix``: added to the stem.
    ``bit_depth``: None keeps the input's (16-bit in, 16-bit out), else 8 or 16.
    ``quality``: JPEG/WebP quality.
    """

    ext: str | None = None
    suffix: str = ""
    bit_depth: int | None = None
    quality: int = 95


def load_input(source: Path, min_side: int = MIN_IMAGE_SIDE) -> LoadedImage:
    image = read_image(source)
    if min(image.height, image.width) < min_side:
        raise ValueError(
            f"image too small: {image.width}×{image.height} px (dehazing needs at least {min_side} px per side)"
        )
    return image


def plan_jobs(inputs: InputSet, output: Path, options: OutputOptions) -> list[tuple[Path, Path]]:
    return [(source, output_path(source, inputs, output, options.ext, options.suffix)) for source in inputs.files]


def dehaze_files(
    inputs: InputSet,
    output: Path,
    model: ImageModel,
    options: OutputOptions,
    *,
    overwrite: bool = False,
    events: BatchEvents | None = None,
    side_by_side: bool = False,
) -> BatchSummary:
    """Dehazes every input into ``output`` (see :func:`~dcmp_cli.data.files.output_path`).

    Outputs keep the input's size, greyscale/colour form and alpha channel, and its bit
    depth unless ``options.bit_depth`` says otherwise. ``side_by_side`` writes
    input | output next to each other instead of the output alone.
    """

    def process(source: Path, target: Path, progress: ProgressFn) -> None:
        image = load_input(source)
        restored = tensor_to_image(model(image_to_tensor(image.rgb), progress))
        alpha = image.alpha
        if side_by_side:
            restored = np.concatenate([image.rgb, restored], axis=1)
            alpha = None if alpha is None else np.concatenate([alpha, alpha], axis=1)
        write_image(
            target,
            restored,
            bit_depth=options.bit_depth or image.bit_depth,
            grey=image.grey,
            alpha=alpha,
            quality=options.quality,
        )

    return run_batch(plan_jobs(inputs, output, options), process, overwrite=overwrite, events=events, ignored=inputs.ignored)


def depth_files(
    inputs: InputSet,
    output: Path,
    model: ImageModel,
    *,
    larger_is_nearer: bool,
    ext: str = ".png",
    suffix: str = "",
    colormap: str | None = None,
    overwrite: bool = False,
    events: BatchEvents | None = None,
    dehazer: ImageModel | None = None,
    side_by_side: bool = False,
) -> BatchSummary:
    """Writes a relative depth map per input (see :mod:`dcmp_cli.data.depth_io`).

    ``model`` maps a [0, 1] image to a (1, 1, H, W) raw map; ``larger_is_nearer`` says
    how to read it. With ``dehazer`` the depth is estimated on the dehazed image.
    ``side_by_side`` writes input | (dehazed |) colour-mapped depth as one image.
    """
    if side_by_side and colormap is None:
        colormap = "turbo"

    def process(source: Path, target: Path, progress: ProgressFn) -> None:
        image = load_input(source)
        tensor = image_to_tensor(image.rgb)
        panels = [image.rgb]
        if dehazer is not None:
            tensor = dehazer(tensor, progress)
            panels.append(tensor_to_image(tensor))
        raw = tensor_to_image(model(tensor, progress))[:, :, 0]
        depth, lo, hi = normalise_depth(raw, larger_is_nearer)
        if side_by_side:
            panels.append(colorize(depth, colormap))
            write_image(target, np.concatenate(panels, axis=1), bit_depth=8)
        else:
            write_depth(target, depth, (lo, hi), colormap)

    jobs = [(source, output_path(source, inputs, output, ext, suffix)) for source in inputs.files]
    return run_batch(jobs, process, overwrite=overwrite, events=events, ignored=inputs.ignored)
