"""Jobs of the image commands: read, run a model, write in the input's form.

The per-image functions (:func:`dehaze_image`, :func:`depth_image`) work on decoded
images; :func:`dehaze_files` / :func:`depth_files` run them over a batch of files and
:func:`encode_dehazed` / :func:`encode_depth_result` serve single images on streams.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from dcmp_cli.atomic import write_bytes_atomic
from dcmp_cli.core.batch import BatchEvents, BatchSummary, Stages, run_batch
from dcmp_cli.core.tiling import ProgressFn
from dcmp_cli.data.depth_io import colorize, encode_depth, normalise_depth
from dcmp_cli.data.files import InputSet, output_path
from dcmp_cli.data.image_io import (
    LoadedImage,
    encode_image,
    image_to_tensor,
    read_image,
    tensor_to_image,
)

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
    ``quality``: JPEG/WebP quality. ``side_by_side``: write input | result.
    """

    ext: str | None = None
    suffix: str = ""
    bit_depth: int | None = None
    quality: int = 95
    side_by_side: bool = False


def check_size(image: LoadedImage, min_side: int = MIN_IMAGE_SIDE) -> LoadedImage:
    if min(image.height, image.width) < min_side:
        raise ValueError(
            f"image too small: {image.width}×{image.height} px (dehazing needs at least {min_side} px per side)"
        )
    return image


def dehaze_image(
    image: LoadedImage, model: ImageModel, progress: ProgressFn | None = None, side_by_side: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """(restored RGB (H, W[·2], 3) in [0, 1], alpha to write) for a decoded image."""
    check_size(image)
    restored = tensor_to_image(model(image_to_tensor(image.rgb), progress))
    alpha = image.alpha
    if side_by_side:
        restored = np.concatenate([image.rgb, restored], axis=1)
        alpha = None if alpha is None else np.concatenate([alpha, alpha], axis=1)
    return restored, alpha


def encode_dehazed(
    image: LoadedImage, model: ImageModel, ext: str, options: OutputOptions, progress: ProgressFn | None = None
) -> bytes:
    """Dehazes a decoded image and encodes the result as ``ext`` in the input's form."""
    restored, alpha = dehaze_image(image, model, progress, options.side_by_side)
    return _encode_like(image, restored, alpha, ext, options)


def _encode_like(
    image: LoadedImage, restored: np.ndarray, alpha: np.ndarray | None, ext: str, options: OutputOptions
) -> bytes:
    """Encodes a result in the input's form: bit depth (unless overridden), greyscale, alpha."""
    return encode_image(
        restored, ext, bit_depth=options.bit_depth or image.bit_depth, grey=image.grey, alpha=alpha,
        quality=options.quality,
    )


def plan_jobs(inputs: InputSet, output: Path, ext: str | None, suffix: str) -> list[tuple[Path, Path]]:
    return [(source, output_path(source, inputs, output, ext, suffix)) for source in inputs.files]


def dehaze_files(
    inputs: InputSet,
    output: Path,
    model: ImageModel,
    options: OutputOptions,
    *,
    overwrite: bool = False,
    events: BatchEvents | None = None,
) -> BatchSummary:
    """Dehazes every input into ``output`` (see :func:`~dcmp_cli.data.files.output_path`).

    Outputs keep the input's size, greyscale/colour form and alpha channel, and its bit
    depth unless ``options.bit_depth`` says otherwise.
    """

    def save(result: tuple[LoadedImage, np.ndarray, np.ndarray | None], target: Path) -> None:
        image, restored, alpha = result
        write_bytes_atomic(target, _encode_like(image, restored, alpha, target.suffix, options))

    def compute(image: LoadedImage, progress: ProgressFn):
        return (image, *dehaze_image(image, model, progress, options.side_by_side))

    jobs = plan_jobs(inputs, output, options.ext, options.suffix)
    return run_batch(jobs, Stages(read_image, compute, save), overwrite=overwrite, events=events, ignored=inputs.ignored)


@dataclass
class DepthJob:
    """How depth maps are made and written.

    ``model`` maps a [0, 1] image to a raw (1, 1, H, W) map; ``larger_is_nearer`` says
    how to read it. With ``dehazer`` the depth is estimated on the dehazed image.
    ``colormap`` writes a colour preview; ``side_by_side`` input | (dehazed |) preview.
    """

    model: ImageModel
    larger_is_nearer: bool
    dehazer: ImageModel | None = None
    colormap: str | None = None
    side_by_side: bool = False

    def estimate(self, image: LoadedImage, progress: ProgressFn | None = None) -> tuple[np.ndarray, tuple[float, float], list[np.ndarray]]:
        """([0, 1] relative depth (H, W), raw range, panels for side-by-side)."""
        check_size(image)
        tensor = image_to_tensor(image.rgb)
        panels = [image.rgb]
        if self.dehazer is not None:
            tensor = self.dehazer(tensor, progress)
            panels.append(tensor_to_image(tensor))
        raw = tensor_to_image(self.model(tensor, progress))[:, :, 0]
        depth, lo, hi = normalise_depth(raw, self.larger_is_nearer)
        return depth, (lo, hi), panels

    def encode(self, image: LoadedImage, ext: str, progress: ProgressFn | None = None) -> bytes:
        return self.encode_estimate(self.estimate(image, progress), ext)

    def encode_estimate(self, estimate: tuple[np.ndarray, tuple[float, float], list[np.ndarray]], ext: str) -> bytes:
        depth, raw_range, panels = estimate
        if self.side_by_side:
            preview = colorize(depth, self.colormap or "turbo")
            return encode_image(np.concatenate([*panels, preview], axis=1), ext, bit_depth=8)
        return encode_depth(depth, ext, raw_range, self.colormap)


def depth_files(
    inputs: InputSet,
    output: Path,
    job: DepthJob,
    *,
    ext: str = ".png",
    suffix: str = "",
    overwrite: bool = False,
    events: BatchEvents | None = None,
) -> BatchSummary:
    """Writes a relative depth map per input (see :mod:`dcmp_cli.data.depth_io`)."""

    def save(estimate, target: Path) -> None:
        write_bytes_atomic(target, job.encode_estimate(estimate, target.suffix))

    return run_batch(plan_jobs(inputs, output, ext, suffix), Stages(read_image, job.estimate, save),
                     overwrite=overwrite, events=events, ignored=inputs.ignored)
