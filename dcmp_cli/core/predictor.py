"""Predictors: a network on a device, applied to [0, 1] images.

Every command that runs a network (dehaze, depth, eval, video) goes through these, so
device placement, precision, value-range conversion, small-image handling and tiling
live in one place.

Tiling keeps the network's image-global statistics (layer norms over C·H·W, instance
norms, global pools): a downscaled statistics pass, a full-resolution sweep that
accumulates the instance norms' statistics, then tiles that replay them, blended over
their overlaps (:mod:`dcmp_cli.core.tiled_inference`, :mod:`dcmp_cli.core.tiling`).
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dcmp_cli.core.checkpoint import Checkpoint, read_checkpoint
from dcmp_cli.core.device import Precision, autocast, check_precision
from dcmp_cli.core.fastpath import prepare_for_inference, uses_channels_last
from dcmp_cli.core.memory import FALLBACK_BYTES_PER_PIXEL, activation_budget, is_out_of_memory, measure_bytes_per_pixel
from dcmp_cli.core.tiled_inference import tiled_forward
from dcmp_cli.core.tiling import ALIGN, ProgressFn, min_tile_for, normalize_tiles
from dcmp_cli.core.value_range import from_network_range, to_network_range
from dcmp_cli.models.global_stats import StatsPolicy, global_statistics
from dcmp_cli.models.registry import Kind
from dcmp_cli.prior import DarkChannelPrior, depth_from_transmission

#: Smaller sides are edge-padded up to this before the network runs (its window
#: attention and four pooling levels need about 28 pixels), then cropped back.
MIN_NETWORK_SIDE = 32
#: Smallest tile used when shrinking tiles after running out of memory.
MIN_TILE = 64


class TileMemoryError(MemoryError):
    """Out of memory even with the smallest tiles."""


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
    bytes (None = free GPU memory, or up to 2 GiB of RAM). ``stats_pixels``: minimum size
    of the downscaled statistics pass. ``batch_tiles``: tiles per forward pass (None =
    as many as fit, up to 8, on GPUs; 1 on the CPU).
    """

    tile: int | None = None
    overlap: int = 32
    max_memory: int | None = None
    max_auto_tile: int = 1024
    stats_pixels: int = 512 * 512
    batch_tiles: int | None = None
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


class Predictor:
    """Runs one network on [0, 1] images: (B, 3, H, W) in, (B, C_out, H, W) float32 out on the CPU.

    Args:
        model: a :class:`~dcmp_cli.models.DehazeNet` or :class:`~dcmp_cli.models.DepthNet`.
        device: where the network runs; inputs may live anywhere.
        precision: fp32, or fp16/bf16 autocast (the global-statistics layers stay fp32).
        checkpoint: where the weights came from (metadata for reports).
        tiling: how large images are split; see :class:`TileSettings`.
        on_notice: receives one-line notices (e.g. tiles shrunk after running out of memory).
        fast: rearrange the network for inference (:mod:`dcmp_cli.core.fastpath`; same
            results to float rounding). False keeps the plain network (benchmarks).
        compile: also wrap it in ``torch.compile``.

    A stateful ``stats`` policy passed to :meth:`__call__` sees an image twice when an
    out-of-memory error makes the predictor retry it with smaller tiles.
    """

    kind: Kind

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
    ) -> None:
        self.checkpoint = checkpoint
        self.device = device
        self.precision = check_precision(precision, device)
        self.model = model.to(device).eval()
        self.fast = fast
        self.channels_last = fast and uses_channels_last(device)
        if fast:
            self.model = prepare_for_inference(self.model, device, compile=compile)
            if device.type == "cuda":
                torch.backends.cudnn.benchmark = True
        self.tiling = tiling or TileSettings()
        self.on_notice = on_notice
        self._bytes_per_pixel: float | None = None
        #: Tile size used for the last image (0 = whole image).
        self.last_tile = 0

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
        return cls(checkpoint.build(device), device, precision, checkpoint, tiling, on_notice, fast, compile)

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

    # -- memory ---------------------------------------------------------------------

    def bytes_per_pixel(self) -> float:
        """Measured peak activation bytes per input pixel (cached)."""
        if self._bytes_per_pixel is None:
            with autocast(self.device, self.precision):
                self._bytes_per_pixel = measure_bytes_per_pixel(self.network, self.device)
        return self._bytes_per_pixel

    def _budget(self) -> int:
        return activation_budget(self.device, self.tiling.max_memory)

    def choose_tile(self, height: int, width: int) -> int:
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
        side = int(math.sqrt(fitting)) // ALIGN * ALIGN
        return max(self.tiling.min_tile, min(side, self.tiling.max_auto_tile))

    def _tiles_per_batch(self, tile: int) -> int:
        if self.tiling.batch_tiles is not None:
            return max(1, self.tiling.batch_tiles)
        if self.device.type != "cuda":
            return 1
        return int(max(1, min(8, self._budget() // (tile * tile * self.bytes_per_pixel()))))

    # -- inference ------------------------------------------------------------------

    def _whole(self, x: torch.Tensor, stats: StatsPolicy | None) -> torch.Tensor:
        with _maybe_stats(self.model, stats):
            return self.network(x).float()

    def _tiled(self, x: torch.Tensor, tile: int, stats: StatsPolicy | None, progress: ProgressFn | None) -> torch.Tensor:
        """Tiles with the image's global statistics (:func:`~dcmp_cli.core.tiled_inference.tiled_forward`)."""
        return torch.cat([
            tiled_forward(
                self.network,
                self.model,
                x[i : i + 1],
                tile,
                self.tiling.overlap,
                stats_pixels=max(tile * tile, self.tiling.stats_pixels),
                stats=stats,
                batch_tiles=self._tiles_per_batch(tile),
                progress=progress,
            )
            for i in range(x.shape[0])
        ])

    def _run(self, x: torch.Tensor, stats: StatsPolicy | None, progress: ProgressFn | None) -> torch.Tensor:
        tile = self.choose_tile(*x.shape[2:])
        while True:
            try:
                self.last_tile = tile
                return self._whole(x, stats) if tile == 0 else self._tiled(x, tile, stats, progress)
            except Exception as error:  # noqa: BLE001 - only out-of-memory errors are retried
                if not is_out_of_memory(error):
                    raise
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                smaller = (tile or max(x.shape[2:])) // 2 // ALIGN * ALIGN
                if smaller < self.tiling.min_tile:
                    raise TileMemoryError(
                        f"out of memory on {self.device} even with {self.tiling.min_tile}-pixel tiles; free memory, "
                        "lower --max-memory, or use --device cpu"
                    ) from error
                if self.on_notice is not None:
                    self.on_notice(f"out of memory with {'the whole image' if not tile else f'--tile {tile}'}; "
                                   f"retrying with --tile {smaller}")
                tile = smaller

    @torch.inference_mode()
    def __call__(
        self, image: torch.Tensor, progress: ProgressFn | None = None, stats: StatsPolicy | None = None
    ) -> torch.Tensor:
        """(B, 3, H, W) [0, 1] image, anywhere -> (B, C_out, H, W) float32 on the CPU.

        ``progress(done, total)`` reports tiles. ``stats``: a policy for the network's
        image-global statistics (e.g. :class:`~dcmp_cli.core.video.SequentialStats`
        across video frames); with tiling it decides the statistics-pass values.
        """
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"expected a (B, 3, H, W) image tensor, got shape {tuple(image.shape)}")
        x, h, w = pad_to_min_side(to_network_range(image.to(self.device, torch.float32)))
        with autocast(self.device, self.precision):
            y = self._run(x, stats, progress)
        return self._finish(y[:, :, :h, :w]).cpu()


class DehazePredictor(Predictor):
    """Hazy [0, 1] image -> restored [0, 1] image (clamped)."""

    kind: Kind = "dehaze"

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).image

    def _finish(self, y: torch.Tensor) -> torch.Tensor:
        return from_network_range(y)


class DepthPredictor(Predictor):
    """[0, 1] image -> the depth network's raw (B, 1, H, W) map, in its weights' convention."""

    kind: Kind = "depth"

    @property
    def larger_is_nearer(self) -> bool:
        """Whether the weights output disparity-like maps (the published ones do)."""
        return self.checkpoint is None or self.checkpoint.depth_convention == "disparity"

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _finish(self, y: torch.Tensor) -> torch.Tensor:
        return y


class PriorDehazer:
    """The dark channel prior behind the predictor interface: (1, 3, H, W) [0, 1] -> same.

    ``airlight``, if set, replaces the per-image estimate (video smoothing sets it).
    """

    kind: Kind = "dehaze"
    larger_is_nearer = False

    def __init__(self, prior: DarkChannelPrior | None = None) -> None:
        self.prior = prior or DarkChannelPrior()
        self.airlight: np.ndarray | None = None

    def _run(self, image: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if image.ndim != 4 or image.shape[0] != 1 or image.shape[1] != 3:
            raise ValueError(f"expected a (1, 3, H, W) image tensor, got shape {tuple(image.shape)}")
        rgb = image[0].detach().float().cpu().permute(1, 2, 0).numpy()
        return tuple(self.prior.dehaze(rgb, self.airlight))  # type: ignore[return-value]

    def __call__(self, image: torch.Tensor, progress: ProgressFn | None = None) -> torch.Tensor:
        restored, _, _ = self._run(image)
        return torch.from_numpy(restored.transpose(2, 0, 1).copy()).unsqueeze(0)

    def depth(self, image: torch.Tensor, progress: ProgressFn | None = None) -> torch.Tensor:
        """Relative depth −ln t, (1, 1, H, W), larger = farther."""
        _, t, _ = self._run(image)
        return torch.from_numpy(depth_from_transmission(t)).unsqueeze(0).unsqueeze(0)
