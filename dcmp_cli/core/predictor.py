"""Predictors: a DCMPNet network on a device, applied to [0, 1] images.

Every command that runs a network (dehaze, depth, eval, video) goes through these
:class:`~dcmp_cli.core.image_model.ImageModel` s, so device placement, precision,
value-range conversion, small-image handling, batching and tiling live in one place.
A predictor works on its own copy of the network it is given (rearranged by the fast
path, :mod:`dcmp_cli.core.fastpath`); the caller's network is never changed.

Tiling keeps the network's image-global statistics (layer norms over C·H·W, instance
norms, global pools): a downscaled statistics pass, a full-resolution sweep that
accumulates the instance norms' statistics, then tiles that replay them, blended over
their overlaps (:mod:`dcmp_cli.core.tiled_inference`, :mod:`dcmp_cli.core.tiling`).
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from dcmp_cli.core.checkpoint import Checkpoint, read_checkpoint
from dcmp_cli.core.device import Precision, autocast, check_precision, cudnn_autotune
from dcmp_cli.core.fastpath import prepare_for_inference, uses_channels_last
from dcmp_cli.core.image_model import Dehazer, DepthModel, ImageModel, ProgressFn, TemporalState
from dcmp_cli.core.memory import FALLBACK_BYTES_PER_PIXEL, activation_budget, is_out_of_memory, measure_bytes_per_pixel
from dcmp_cli.core.scratch import scratch_capacity
from dcmp_cli.core.temporal import SequentialStats
from dcmp_cli.core.tiled_inference import reuse_plans, tiled_forward
from dcmp_cli.core.tiling import ALIGN, min_tile_for, normalize_tiles
from dcmp_cli.core.value_range import from_network_range, to_network_range
from dcmp_cli.models.global_stats import StatsPolicy, global_statistics
from dcmp_cli.models.registry import Kind

#: Smaller sides are edge-padded up to this before the network runs (its window
#: attention and four pooling levels need about 28 pixels), then cropped back.
MIN_NETWORK_SIDE = 32
#: Smallest tile used when shrinking tiles after running out of memory.
MIN_TILE = 64
#: Rows of the result mapped back from the network range at a time.
_FINISH_ROWS = 256


class TileMemoryError(MemoryError):
    """Out of memory even with the smallest tiles. ``device``: where it ran; ``tile``: the smallest tile tried."""

    def __init__(self, device: torch.device, tile: int) -> None:
        super().__init__(
            f"out of memory on {device} even with {tile}-pixel tiles; free memory, lower the memory budget, "
            "or run on the CPU"
        )
        self.device = device
        self.tile = tile


@dataclass(frozen=True)
class TileSettings:
    """How large images are split.

    ``tile``: None = auto (whole image when it fits ``max_memory``, else the largest
    tile that fits, at most ``max_auto_tile``); 0 = always the whole image; N = tiles of
    N×N pixels. ``overlap``: the least number of pixels neighbouring tiles share and
    blend. Both are normalised once by :func:`~dcmp_cli.core.tiling.normalize_tiles`
    (N rounded down to the 32-pixel grid, or raised so that the overlap fits; ``note``
    says so in one line, else None); impossible values raise
    :class:`~dcmp_cli.core.tiling.TileRequestError`. ``max_memory``: activation budget in
    bytes (None = free GPU memory, or up to 2 GiB of RAM). ``stats_pixels``: size of the
    downscaled statistics pass (less where the activation budget does not hold it, never
    below one tile; one tile's size after running out of memory). ``batch_tiles``: tiles
    per forward pass (None = as many as fit, up to 8, on GPUs; 1 on the CPU; 1 after
    running out of memory). ``reuse_memory``: bytes of RAM for
    the features the final tiles take over from the statistics sweep instead of
    recomputing them (None = half the activation budget on the CPU, automatic tiles then
    sized for the other half; on other devices the CPU's default budget; 0 = none).
    ``max_disk``: bytes of scratch disk for those features beyond ``reuse_memory``, in a
    temporary file in ``TMPDIR`` deleted after each image (None = on the CPU half the free
    space there, none where it is kept in memory, none on other devices, whose passes are
    faster than the disk; 0 = none).
    """

    tile: int | None = None
    overlap: int = 32
    max_memory: int | None = None
    max_auto_tile: int = 1024
    stats_pixels: int = 512 * 512
    batch_tiles: int | None = None
    reuse_memory: int | None = None
    max_disk: int | None = None
    note: str | None = field(default=None, init=False, compare=False)

    def __post_init__(self) -> None:
        request = normalize_tiles(self.tile, self.overlap)
        object.__setattr__(self, "tile", request.tile)
        object.__setattr__(self, "note", request.note)

    @property
    def min_tile(self) -> int:
        """Smallest tile that keeps the overlap (and the out-of-memory floor)."""
        return max(MIN_TILE, min_tile_for(self.overlap))


def pad_to_min_side(x: torch.Tensor, min_side: int = MIN_NETWORK_SIDE) -> tuple[torch.Tensor, int, int]:
    """Edge-pads (B, C, H, W) on the bottom/right so both sides are ≥ ``min_side``."""
    h, w = x.shape[2:]
    pad_h, pad_w = max(0, min_side - h), max(0, min_side - w)
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    return x, h, w


def _maybe_stats(model: nn.Module, stats: StatsPolicy | None):
    return global_statistics(model, stats) if stats is not None else contextlib.nullcontext()


class Predictor(ImageModel):
    """Runs one network on [0, 1] images: (B, 3, H, W) in, (B, C_out, H, W) float32 out on the CPU.

    Args:
        model: a :class:`~dcmp_cli.models.DehazeNet` or :class:`~dcmp_cli.models.DepthNet`.
            The predictor works on a copy (``copy=False`` hands this network over instead).
        device: where the network runs; inputs may live anywhere.
        precision: fp32, or fp16/bf16 autocast (the global-statistics layers stay fp32).
        checkpoint: where the weights came from (metadata for reports).
        tiling: how large images are split; see :class:`TileSettings`.
        on_notice: receives one-line notices (e.g. tiles shrunk after running out of memory).
        fast: rearrange the network for inference (:mod:`dcmp_cli.core.fastpath`; same
            results to float rounding). False keeps the plain network (benchmarks).
        compile: also wrap it in ``torch.compile``.

    Batches run in one pass when they fit; a batch that runs out of memory is split in
    halves (and later batches are cut to that size), a single image is retried with
    smaller tiles. Results do not depend on how a batch was split.
    """

    method = "dcmp"

    def __init__(
        self,
        model: nn.Module,
        device: torch.device,
        precision: Precision = "fp32",
        checkpoint: Checkpoint | None = None,
        tiling: TileSettings | None = None,
        on_notice: Callable[[str], None] | None = None,
        fast: bool = True,
        compile: bool = False,
        *,
        copy: bool = True,
    ) -> None:
        self.checkpoint = checkpoint
        self.weights = checkpoint.path if checkpoint is not None else None
        self.device = device
        self.precision = check_precision(precision, device)
        network = _copy_module(model) if copy else model
        network = network.to(device).eval()
        self.fast = fast
        self.channels_last = fast and uses_channels_last(device)
        self.model = prepare_for_inference(network, device, compile=compile) if fast else network
        self.tiling = tiling or TileSettings()
        self.on_notice = on_notice
        self._bytes_per_pixel: float | None = None
        self._max_batch: int | None = None

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: Checkpoint | str | os.PathLike,
        device: torch.device,
        precision: Precision = "fp32",
        tiling: TileSettings | None = None,
        on_notice: Callable[[str], None] | None = None,
        fast: bool = True,
        compile: bool = False,
    ):
        """Builds the predictor from a checkpoint (or its path) of the right kind."""
        if not isinstance(checkpoint, Checkpoint):
            checkpoint = read_checkpoint(checkpoint, kind=cls.kind)
        network = checkpoint.build(device)
        return cls(network, device, precision, checkpoint, tiling, on_notice, fast, compile, copy=False)

    def network(self, x: torch.Tensor) -> torch.Tensor:
        """Network-range input (B, 3, h, w) on the device -> network output (B, C_out, h, w)."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _finish(self, y: torch.Tensor) -> torch.Tensor:
        """Network output -> what the predictor returns."""
        raise NotImplementedError

    def temporal_state(self, smooth: float) -> SequentialStats:
        """Smooths every image-global statistic of the network over frames."""
        return SequentialStats(smooth)

    # -- memory ---------------------------------------------------------------------

    def bytes_per_pixel(self) -> float:
        """Measured peak activation bytes per input pixel (cached)."""
        if self._bytes_per_pixel is None:
            with torch.inference_mode(), autocast(self.device, self.precision):
                self._bytes_per_pixel = measure_bytes_per_pixel(self.network, self.device)
        return self._bytes_per_pixel

    def _budget(self) -> int:
        return activation_budget(self.device, self.tiling.max_memory)

    def plan(self, height: int, width: int) -> int:
        """0 for a whole-image pass, else the tile side for an image of this size."""
        setting = self.tiling.tile
        if setting == 0:
            return 0
        if setting is not None:
            return 0 if height <= setting and width <= setting else setting
        budget = self._budget()
        if height * width * FALLBACK_BYTES_PER_PIXEL <= budget:
            return 0  # fits even by the conservative estimate: no probe needed
        fitting = budget / self.bytes_per_pixel()
        if height * width <= fitting:
            return 0
        if self._reuse_in_budget():
            fitting /= 2  # the other half holds the features the final tiles reuse
        side = int(math.sqrt(fitting)) // ALIGN * ALIGN
        return max(self.tiling.min_tile, min(side, self.tiling.max_auto_tile))

    def _reuse_in_budget(self) -> bool:
        return self.tiling.reuse_memory is None and self.device.type == "cpu" and bool(reuse_plans(self.model))

    def _reuse_bytes(self) -> int:
        """Memory for the features the final tiles reuse (:class:`TileSettings`)."""
        if self.tiling.reuse_memory is not None:
            return self.tiling.reuse_memory
        if not reuse_plans(self.model):
            return 0
        return self._budget() // 2 if self._reuse_in_budget() else activation_budget(torch.device("cpu"))

    def _scratch_bytes(self) -> int:
        """Scratch disk for the reused features beyond their memory (:class:`TileSettings`)."""
        if self.tiling.max_disk is not None:
            return self.tiling.max_disk
        return scratch_capacity() if self.device.type == "cpu" and reuse_plans(self.model) else 0

    def _stats_pixels(self, tile: int) -> int:
        """Size of the statistics pass: ``stats_pixels``, less where the budget is smaller, never below a tile."""
        if self.tiling.stats_pixels <= tile * tile:
            return tile * tile
        fitting = int(self._budget() / self.bytes_per_pixel())
        return max(tile * tile, min(self.tiling.stats_pixels, fitting))

    def _tiles_per_batch(self, tile: int) -> int:
        if self.tiling.batch_tiles is not None:
            return max(1, self.tiling.batch_tiles)
        if self.device.type != "cuda":
            return 1
        return int(max(1, min(8, self._budget() // (tile * tile * self.bytes_per_pixel()))))

    # -- inference ------------------------------------------------------------------

    def _whole(self, images: torch.Tensor, stats: StatsPolicy | None) -> torch.Tensor:
        with _maybe_stats(self.model, stats):
            return self.network(to_network_range(images)).float()

    def _tile_network(self, tile: torch.Tensor) -> torch.Tensor:
        return self.network(to_network_range(tile))

    def _tiled(
        self,
        images: torch.Tensor,
        tile: int,
        stats: StatsPolicy | None,
        progress: ProgressFn | None,
        retried: bool = False,
    ) -> torch.Tensor:
        """Tiles with the image's global statistics (:func:`~dcmp_cli.core.tiled_inference.tiled_forward`).

        ``images``: [0, 1] (B, 3, H, W); tiles are mapped to the network range one by one,
        and each image's result is written straight into the (B, C_out, H, W) result.
        ``retried``: after running out of memory, one tile per pass and a statistics pass
        of one tile's size.
        """
        result: torch.Tensor | None = None
        for i in range(images.shape[0]):
            y = tiled_forward(
                self._tile_network,
                self.model,
                images[i : i + 1],
                tile,
                self.tiling.overlap,
                stats_pixels=tile * tile if retried else self._stats_pixels(tile),
                stats=stats,
                batch_tiles=1 if retried else self._tiles_per_batch(tile),
                progress=progress,
                reuse_bytes=self._reuse_bytes(),
                scratch_bytes=self._scratch_bytes(),
                on_notice=self._notice,
                out=None if result is None else result[i : i + 1],
            )
            if result is None:
                result = y if images.shape[0] == 1 else y.new_empty(images.shape[0], *y.shape[1:])
                if images.shape[0] > 1:
                    result[:1] = y
                del y
        assert result is not None
        return result

    def _run(self, x: torch.Tensor, stats: StatsPolicy | None, progress: ProgressFn | None) -> torch.Tensor:
        limit = self._max_batch or x.shape[0]
        if x.shape[0] > limit:
            return torch.cat([self._run(x[i : i + limit], stats, progress) for i in range(0, x.shape[0], limit)])
        tile = self.plan(*x.shape[2:])
        retried = False
        while True:
            try:
                if tile == 0:
                    return self._whole(x, stats)
                return self._tiled(x, tile, stats, progress, retried)
            except Exception as error:  # noqa: BLE001 - only out-of-memory errors are retried
                if not is_out_of_memory(error):
                    raise
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                if tile == 0 and x.shape[0] > 1:
                    self._max_batch = x.shape[0] // 2
                    self._notice(f"out of memory with {x.shape[0]} images per pass; retrying with {self._max_batch}")
                    return self._run(x, stats, progress)
                smaller = (tile or max(x.shape[2:])) // 2 // ALIGN * ALIGN
                if smaller < self.tiling.min_tile:
                    raise TileMemoryError(self.device, self.tiling.min_tile) from error
                self._notice(
                    f"out of memory with {'the whole image' if not tile else f'{tile}-pixel tiles'}; "
                    f"retrying with {smaller}-pixel tiles"
                )
                tile, retried = smaller, True

    def _notice(self, message: str) -> None:
        if self.on_notice is not None:
            self.on_notice(message)

    @torch.inference_mode()
    def run(
        self,
        images: torch.Tensor,
        *,
        progress: ProgressFn | None = None,
        temporal: TemporalState | None = None,
    ) -> torch.Tensor:
        """(B, 3, H, W) [0, 1] images, anywhere -> (B, C_out, H, W) float32 on the CPU.

        ``progress(done, total)`` reports tiles. ``temporal``: a state from
        :meth:`temporal_state` (video smoothing); with tiling it decides the
        statistics-pass values.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected a (B, 3, H, W) image tensor, got shape {tuple(images.shape)}")
        if temporal is not None and not isinstance(temporal, StatsPolicy):
            raise TypeError("temporal must come from this predictor's temporal_state()")
        x, h, w = pad_to_min_side(images.to(self.device, torch.float32))
        with autocast(self.device, self.precision), cudnn_autotune(self.device):
            y = self._run(x, temporal, progress)
        del x
        if y.shape[2:] != (h, w):
            y = y[:, :, :h, :w].contiguous()
        for top in range(0, h, _FINISH_ROWS):  # in place, a band of rows at a time: no second full-size copy
            y[:, :, top : top + _FINISH_ROWS] = self._finish(y[:, :, top : top + _FINISH_ROWS])
        return y.cpu()


def _copy_module(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` (parameters and buffers included) that shares nothing with it."""
    return copy.deepcopy(model)


class DehazePredictor(Predictor, Dehazer):
    """Hazy [0, 1] image -> restored [0, 1] image (clamped)."""

    kind: ClassVar[Kind] = "dehaze"

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).image

    def _finish(self, y: torch.Tensor) -> torch.Tensor:
        return from_network_range(y)


class DepthPredictor(Predictor, DepthModel):
    """[0, 1] image -> the depth network's raw (B, 1, H, W) map, in its weights' convention."""

    kind: ClassVar[Kind] = "depth"

    @property
    def larger_is_nearer(self) -> bool:
        """Whether the weights output disparity-like maps (the published ones do)."""
        return self.checkpoint is None or self.checkpoint.depth_convention == "disparity"

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _finish(self, y: torch.Tensor) -> torch.Tensor:
        return y
