"""Loading a dehazer or depth estimator by method and weights: what every command does first.

``method="auto"`` picks DCMPNet when weights are found (given, or in the default places
of :mod:`dcmp_cli.core.weights`) and the weight-free default otherwise; ``"dcmp"``
insists on weights; a prior's name (``"dcp"``) never uses them. Device and precision are
checked whatever runs, so a bad device fails before any work.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from enum import Enum
from pathlib import Path

import torch

from dcmp_cli.choices import DEFAULT_PRIOR, PRIOR_METHODS, Method, value_of
from dcmp_cli.core.depth import DepthEstimator
from dcmp_cli.core.device import Precision, check_precision, resolve_device
from dcmp_cli.core.image_model import Dehazer, DepthModel
from dcmp_cli.core.predictor import DehazePredictor, DepthPredictor, TileSettings
from dcmp_cli.core.prior_models import PriorDehazer, PriorDepth
from dcmp_cli.core.weights import find_default_weights
from dcmp_cli.models.registry import Kind
from dcmp_cli.prior import create_prior
from dcmp_cli.sizes import parse_size

PathLike = str | os.PathLike
NoticeFn = Callable[[str], None]


class WeightsRequired(LookupError):
    """DCMPNet was asked for (``kind`` network) but no weights were given or found."""

    def __init__(self, kind: Kind) -> None:
        what = "dehazing" if kind == "dehaze" else "depth"
        super().__init__(f"no {what} weights found")
        self.kind = kind


class MethodError(ValueError):
    """A method that cannot do what was asked (e.g. prior depth of clear images)."""


def tile_settings(
    tile: int | str | None = "auto",
    overlap: int = 32,
    max_memory: int | str | None = None,
    on_notice: NoticeFn | None = None,
    max_disk: int | str | None = None,
) -> TileSettings:
    """Tiling from user-level values: ``tile`` "auto"/None, 0 (never tile) or a side in pixels;
    ``max_memory`` and ``max_disk`` bytes or sizes such as "2G" (:class:`TileSettings`;
    None = the default). A tile size that had to be rounded or raised
    is said once through ``on_notice``; impossible values raise
    :class:`~dcmp_cli.core.tiling.TileRequestError`."""
    if isinstance(tile, str):
        text = tile.strip().lower()
        if text != "auto" and not text.isdigit():
            raise ValueError(f"tile size must be auto, 0 or a size in pixels, got {tile!r}")
        tile = None if text == "auto" else int(text)
    budget = parse_size(max_memory) if isinstance(max_memory, str) else max_memory
    disk = parse_size(max_disk) if isinstance(max_disk, str) else max_disk
    settings = TileSettings(tile=tile, overlap=overlap, max_memory=budget, max_disk=disk)
    if settings.note and on_notice is not None:
        on_notice(settings.note)
    return settings


def _device(device: str | torch.device, precision: str) -> tuple[torch.device, Precision]:
    resolved = device if isinstance(device, torch.device) else resolve_device(device)
    return resolved, check_precision(precision, resolved)


def _weights(kind: Kind, method: str, weights: PathLike | None) -> Path | None:
    """The checkpoint to use for ``method`` (None: use the weight-free default)."""
    if method in PRIOR_METHODS:
        return None
    path = Path(weights) if weights is not None else find_default_weights(kind)
    if path is None and method == Method.DCMP.value:
        raise WeightsRequired(kind)
    return path


def _method(method: str | Enum) -> str:
    name = value_of(method)
    if name not in (Method.AUTO.value, Method.DCMP.value, *PRIOR_METHODS):
        raise ValueError(f"unknown method {name!r}; choose auto, dcmp or one of {', '.join(PRIOR_METHODS)}")
    return name


def load_dehazer(
    method: str | Method = "auto",
    weights: PathLike | None = None,
    *,
    device: str | torch.device = "auto",
    precision: str = "fp32",
    tile: int | str | None = "auto",
    tile_overlap: int = 32,
    max_memory: int | str | None = None,
    max_disk: int | str | None = None,
    compile: bool = False,
    on_notice: NoticeFn | None = None,
) -> Dehazer:
    """The dehazer ``dcmp dehaze`` would use with these options.

    >>> dehazer = load_dehazer()                      # DCMPNet if weights are found, else the prior
    >>> restored = dehazer(Image.open("hazy.jpg"))   # PIL in, PIL out (NumPy and tensors too)

    Raises :class:`WeightsRequired` (``method="dcmp"`` without weights),
    :class:`~dcmp_cli.core.checkpoint.CheckpointError`, :class:`~dcmp_cli.core.device.DeviceError`.
    """
    name = _method(method)
    torch_device, checked = _device(device, value_of(precision))
    tiling = tile_settings(tile, tile_overlap, max_memory, on_notice, max_disk)
    path = _weights("dehaze", name, weights)
    if path is None:
        return PriorDehazer(create_prior(name if name in PRIOR_METHODS else DEFAULT_PRIOR))
    return DehazePredictor.from_checkpoint(path, torch_device, checked, tiling, on_notice=on_notice, compile=compile)


def load_depth_model(
    method: str | Method = "auto",
    weights: PathLike | None = None,
    *,
    device: str | torch.device = "auto",
    precision: str = "fp32",
    tile: int | str | None = "auto",
    tile_overlap: int = 32,
    max_memory: int | str | None = None,
    max_disk: int | str | None = None,
    on_notice: NoticeFn | None = None,
) -> DepthModel:
    """The depth model alone: DCMPNet's depth network, or a prior's transmission (−ln t)."""
    name = _method(method)
    torch_device, checked = _device(device, value_of(precision))
    tiling = tile_settings(tile, tile_overlap, max_memory, on_notice, max_disk)
    path = _weights("depth", name, weights)
    if path is None:
        return PriorDepth(create_prior(name if name in PRIOR_METHODS else DEFAULT_PRIOR))
    return DepthPredictor.from_checkpoint(path, torch_device, checked, tiling, on_notice)


def load_depth_estimator(
    method: str | Method = "auto",
    weights: PathLike | None = None,
    *,
    dehaze_weights: PathLike | None = None,
    input_is_clear: bool = False,
    device: str | torch.device = "auto",
    precision: str = "fp32",
    tile: int | str | None = "auto",
    tile_overlap: int = 32,
    max_memory: int | str | None = None,
    max_disk: int | str | None = None,
    on_notice: NoticeFn | None = None,
) -> DepthEstimator:
    """The depth pipeline ``dcmp depth`` would use with these options.

    With a depth checkpoint, hazy inputs are first dehazed (by the dehazing weights if
    given or found, else the weight-free default) unless ``input_is_clear``. Without one,
    depth is the weight-free prior's −ln t, which needs haze: clear inputs and dehazing
    weights are then refused (:class:`MethodError`), not silently ignored.
    """
    said: set[str] = set()

    def once(message: str) -> None:  # both networks share the tiling: say its note once
        if on_notice is not None and message not in said:
            said.add(message)
            on_notice(message)

    model = load_depth_model(
        method,
        weights,
        device=device,
        precision=precision,
        tile=tile,
        tile_overlap=tile_overlap,
        max_memory=max_memory,
        max_disk=max_disk,
        on_notice=once,
    )
    if isinstance(model, PriorDepth):
        if input_is_clear:
            raise MethodError(f"the {model.title} reads depth from haze; clear images need a depth checkpoint")
        if dehaze_weights is not None:
            raise MethodError(
                f"dehazing weights {dehaze_weights} were given, but without depth weights depth comes from the "
                f"{model.title}'s transmission, which does not use them; give depth weights too"
            )
        return DepthEstimator(model, None)
    if input_is_clear:
        return DepthEstimator(model, None)
    dehazer = load_dehazer(
        "auto",
        dehaze_weights,
        device=device,
        precision=precision,
        tile=tile,
        tile_overlap=tile_overlap,
        max_memory=max_memory,
        max_disk=max_disk,
        on_notice=once,
    )
    return DepthEstimator(model, dehazer)
