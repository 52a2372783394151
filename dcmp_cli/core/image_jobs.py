"""Jobs of the image commands: find the inputs, name the outputs, read, run a model, write.

:func:`dehaze_files` and :func:`estimate_depth_files` are what ``dcmp dehaze`` and
``dcmp depth`` do, in one call each. They split into :func:`plan_image_jobs` (find the
inputs and name every output, before any work) and :func:`run_dehaze_jobs` /
:func:`run_depth_jobs`. :func:`encode_dehazed` / :func:`encode_depth` serve single
images on streams.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dcmp_cli.atomic import write_bytes_atomic
from dcmp_cli.core.batch import BatchEvents, BatchSummary, Stages, run_batch
from dcmp_cli.core.depth import DepthEstimate, DepthEstimator
from dcmp_cli.core.image_model import Dehazer, ProgressFn
from dcmp_cli.data.depth_io import DEPTH_EXTENSIONS, colorize
from dcmp_cli.data.depth_io import encode_depth as encode_depth_map
from dcmp_cli.data.files import InputSet, OutputNaming, PlanError, collect_inputs, in_shard, parse_shard, plan_outputs
from dcmp_cli.data.image_io import (
    IMAGE_EXTENSIONS,
    LoadedImage,
    encode_image,
    encode_like,
    image_to_tensor,
    read_image,
    tensor_to_image,
)

#: Inputs smaller than this on either side are reported as failed.
MIN_IMAGE_SIDE = 16


class OutputFormatError(PlanError):
    """An output would get a file type dcmp cannot write (``target``; ``allowed``: the extensions it can)."""

    def __init__(self, target: Path, allowed: tuple[str, ...]) -> None:
        kind = target.suffix or "(no extension)"
        super().__init__(f"cannot write {kind} files ({target.name}); use one of {', '.join(allowed)}")
        self.target, self.allowed = target, allowed


@dataclass
class OutputOptions:
    """How dehazed outputs are named and encoded.

    ``ext``: output extension (None keeps the input's). ``suffix``: added to the stem.
    ``bit_depth``: None keeps the input's (16-bit in, 16-bit out), else 8 or 16.
    ``quality``: JPEG/WebP quality. ``side_by_side``: write input | result.
    """

    ext: str | None = None
    suffix: str = ""
    bit_depth: int | None = None
    quality: int = 95
    side_by_side: bool = False


@dataclass
class DepthOutputOptions:
    """How depth maps are written: ``ext`` .png/.tif (16-bit) or .npy (float32);
    ``colormap`` writes an 8-bit colour preview instead; ``side_by_side`` writes
    input | (dehazed |) preview."""

    ext: str = ".png"
    suffix: str = ""
    colormap: str | None = None
    side_by_side: bool = False


@dataclass
class ImageJobs:
    """The inputs of a batch and the output each one gets (``jobs``: (source, target), this
    shard's only). ``inputs.problems`` lists unreadable folders and broken links."""

    inputs: InputSet
    jobs: list[tuple[Path, Path]] = field(default_factory=list)


def check_size(image: LoadedImage, min_side: int = MIN_IMAGE_SIDE) -> LoadedImage:
    if min(image.height, image.width) < min_side:
        raise ValueError(
            f"image too small: {image.width}×{image.height} px (dehazing needs at least {min_side} px per side)"
        )
    return image


def _ext(ext: str | None) -> str | None:
    return None if ext is None else "." + ext.lstrip(".").lower()


def plan_image_jobs(
    input: str | os.PathLike,
    output: str | os.PathLike,
    *,
    recursive: bool = False,
    ext: str | None = None,
    suffix: str = "",
    shard: str | tuple[int, int] | None = None,
    writable: tuple[str, ...] = IMAGE_EXTENSIONS,
) -> ImageJobs:
    """Finds the images of INPUT (file, folder, glob) and names each one's output below OUTPUT.

    Outputs of this command never become inputs (OUTPUT inside INPUT, earlier in-place
    results), and the plan is refused before any work when two inputs would write one
    output or an output would replace any file of INPUT, whatever the shard
    (:func:`~dcmp_cli.data.files.plan_outputs`). ``shard`` ("K/N" or (K, N)) then keeps
    a deterministic share of the jobs (by a hash of each path relative to INPUT).
    ``writable``: the output extensions allowed (others raise :class:`OutputFormatError`).
    Raises :class:`~dcmp_cli.data.files.InputError` or :class:`~dcmp_cli.data.files.PlanError`.
    """
    k, n = (parse_shard(shard) if isinstance(shard, str) else shard) if shard is not None else (1, 1)
    naming = OutputNaming(Path(output), _ext(ext), suffix)
    inputs = collect_inputs(input, recursive, outputs=naming)
    jobs = plan_outputs(inputs, naming)
    for _, target in jobs:
        if target.suffix.lower() not in writable:
            raise OutputFormatError(target, writable)
    if n > 1:
        jobs = [(source, target) for source, target in jobs if in_shard(source, inputs.root, k, n)]
        inputs.ignored = [p for p in inputs.ignored if in_shard(p, inputs.root, k, n)]
        inputs.problems = [(p, why) for p, why in inputs.problems if in_shard(p, inputs.root, k, n)]
    return ImageJobs(inputs, jobs)


def _image_notes(image: LoadedImage) -> list[str]:
    """What reading an image noticed (e.g. only the first frame of an animation is used)."""
    return list(image.notes)


def _run_images(
    plan: ImageJobs,
    compute: Callable[[LoadedImage, ProgressFn], Any],
    save: Callable[[Any, Path], None],
    overwrite: bool,
    events: BatchEvents | None,
) -> BatchSummary:
    """Runs planned image jobs pipelined: decode, ``compute``, ``save`` (see :func:`~dcmp_cli.core.batch.run_batch`)."""
    return run_batch(
        plan.jobs,
        Stages(read_image, compute, save, _image_notes),
        overwrite=overwrite,
        events=events,
        ignored=plan.inputs.ignored,
        problems=plan.inputs.problems,
    )


# ----------------------------------------------------------------------------- dehazing


def dehaze_image(
    image: LoadedImage, model: Dehazer, progress: ProgressFn | None = None, side_by_side: bool = False
) -> np.ndarray:
    """Restored RGB (H, W, 3) in [0, 1] of a decoded image; (H, W·2, 3) input | result with ``side_by_side``."""
    check_size(image)
    restored = tensor_to_image(model.run(image_to_tensor(image.rgb), progress=progress))
    return np.concatenate([image.rgb, restored], axis=1) if side_by_side else restored


def _encode(image: LoadedImage, restored: np.ndarray, ext: str, options: OutputOptions) -> bytes:
    """Encodes a result in the input's form: bit depth (unless overridden), greyscale, alpha, metadata."""
    return encode_like(
        restored,
        image,
        ext,
        bit_depth=options.bit_depth,
        quality=options.quality,
        panels=2 if options.side_by_side else 1,
    )


def encode_dehazed(
    image: LoadedImage, model: Dehazer, ext: str, options: OutputOptions, progress: ProgressFn | None = None
) -> bytes:
    """Dehazes a decoded image and encodes the result as ``ext`` in the input's form."""
    return _encode(image, dehaze_image(image, model, progress, options.side_by_side), ext, options)


def run_dehaze_jobs(
    plan: ImageJobs,
    dehazer: Dehazer,
    options: OutputOptions = OutputOptions(),
    *,
    overwrite: bool = False,
    events: BatchEvents | None = None,
) -> BatchSummary:
    """Dehazes every planned job: outputs keep the input's size, greyscale/colour form and
    alpha channel, and its bit depth unless ``options.bit_depth`` says otherwise."""

    def save(result: tuple[LoadedImage, np.ndarray], target: Path) -> None:
        image, restored = result
        write_bytes_atomic(target, _encode(image, restored, target.suffix, options))

    def compute(image: LoadedImage, progress: ProgressFn) -> tuple[LoadedImage, np.ndarray]:
        return image, dehaze_image(image, dehazer, progress, options.side_by_side)

    return _run_images(plan, compute, save, overwrite, events)


def dehaze_files(
    input: str | os.PathLike,
    output: str | os.PathLike,
    dehazer: Dehazer | None = None,
    *,
    recursive: bool = False,
    ext: str | None = None,
    suffix: str = "",
    bit_depth: int | None = None,
    quality: int = 95,
    side_by_side: bool = False,
    overwrite: bool = False,
    shard: str | tuple[int, int] | None = None,
    events: BatchEvents | None = None,
) -> BatchSummary:
    """``dcmp dehaze INPUT OUTPUT`` in one call.

    ``dehazer`` None: what :func:`~dcmp_cli.core.loading.load_dehazer` picks.

    >>> summary = dehaze_files("photos/", "restored/", ext="png")
    >>> summary.ok, summary.count("done")
    """
    plan = plan_image_jobs(input, output, recursive=recursive, ext=ext, suffix=suffix, shard=shard)
    if dehazer is None:
        from dcmp_cli.core.loading import load_dehazer

        dehazer = load_dehazer()
    options = OutputOptions(_ext(ext), suffix, bit_depth, quality, side_by_side)
    return run_dehaze_jobs(plan, dehazer, options, overwrite=overwrite, events=events)


# ----------------------------------------------------------------------------- depth


def estimate_depth(image: LoadedImage, estimator: DepthEstimator, progress: ProgressFn | None = None) -> DepthEstimate:
    check_size(image)
    return estimator.estimate(image_to_tensor(image.rgb), progress)


def encode_depth(image: LoadedImage, estimate: DepthEstimate, ext: str, options: DepthOutputOptions) -> bytes:
    """Encodes a depth estimate as ``ext``: the map, a colour preview, or input | (dehazed |) preview."""
    if options.side_by_side:
        panels = [image.rgb] + ([estimate.dehazed] if estimate.dehazed is not None else [])
        preview = colorize(estimate.depth, options.colormap or "turbo")
        return encode_image(np.concatenate([*panels, preview], axis=1), ext, bit_depth=8)
    return encode_depth_map(estimate.depth, ext, estimate.raw_range, options.colormap)


def run_depth_jobs(
    plan: ImageJobs,
    estimator: DepthEstimator,
    options: DepthOutputOptions = DepthOutputOptions(),
    *,
    overwrite: bool = False,
    events: BatchEvents | None = None,
) -> BatchSummary:
    """Writes a relative depth map per planned job (see :mod:`dcmp_cli.data.depth_io`)."""

    def compute(image: LoadedImage, progress: ProgressFn) -> tuple[LoadedImage, DepthEstimate]:
        return image, estimate_depth(image, estimator, progress)

    def save(result: tuple[LoadedImage, DepthEstimate], target: Path) -> None:
        write_bytes_atomic(target, encode_depth(*result, target.suffix, options))

    return _run_images(plan, compute, save, overwrite, events)


def estimate_depth_files(
    input: str | os.PathLike,
    output: str | os.PathLike,
    estimator: DepthEstimator | None = None,
    *,
    recursive: bool = False,
    ext: str = ".png",
    suffix: str = "",
    colormap: str | None = None,
    side_by_side: bool = False,
    overwrite: bool = False,
    shard: str | tuple[int, int] | None = None,
    events: BatchEvents | None = None,
) -> BatchSummary:
    """``dcmp depth INPUT OUTPUT`` in one call.

    ``estimator`` None: what :func:`~dcmp_cli.core.loading.load_depth_estimator` picks.
    """
    target_ext = _ext(ext) or ".png"
    writable = IMAGE_EXTENSIONS if colormap or side_by_side else DEPTH_EXTENSIONS
    plan = plan_image_jobs(
        input, output, recursive=recursive, ext=target_ext, suffix=suffix, shard=shard, writable=writable
    )
    if estimator is None:
        from dcmp_cli.core.loading import load_depth_estimator

        estimator = load_depth_estimator()
    options = DepthOutputOptions(target_ext, suffix, colormap, side_by_side)
    return run_depth_jobs(plan, estimator, options, overwrite=overwrite, events=events)
