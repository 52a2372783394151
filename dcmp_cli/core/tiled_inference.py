"""Tiled inference that keeps the network's image-global statistics.

DCMPNet normalises with statistics of the whole image (see
:mod:`dcmp_cli.models.global_stats`). A tile computing its own statistics shifts tone
from tile to tile, and statistics of a downscaled copy of the image are not those of
the image either: the network's features respond to fine detail (noise, JPEG blocks,
texture) that resampling changes, so the instance norms of the cross-scale fusion in
particular come out up to tens of percent off (``docs/tiling.md`` has the figures).

:func:`tiled_forward` therefore works in three steps, every one in bounded memory:

1. **Statistics pass**: the network on the image area-downscaled by an integer factor
   to at most ``stats_pixels`` pixels; every statistic is recorded (``S0``).
2. **Accumulation sweep** (only when step 1 was downscaled): the network on the
   full-resolution tiles of step 3, replaying ``S0`` and summing the moments of the instance
   norms' inputs over each tile's core (cores partition the image), so that they come
   out as a whole-image pass with ``S0`` upstream would compute them (exactly, but for
   the tile borders: the overlap gives each core context). Each tile stops right after
   the last instance norm. The instance norms re-standardise their
   input, so with them taken at full resolution the errors of ``S0`` upstream largely
   cancel, as long as the tiles of step 3 see the same ``S0`` upstream.
3. **Tiles**: every tile replays ``S0`` with the accumulated instance-norm statistics,
   and the tiles are blended (:func:`dcmp_cli.core.tiling.tiled_apply`).

A ``stats`` policy (video smoothing) decides every final value once: during step 1 for
the statistics that are not accumulated, after step 2 for those that are.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from dcmp_cli.core.tiling import ALIGN, FINE_STEP, ProgressFn, TileFn, plan_tiles, round_up, tile_batches, tiled_apply
from dcmp_cli.models.global_stats import (
    AccumulateMoments,
    GlobalStatsModule,
    RecordStats,
    ReplayStats,
    StatisticsComplete,
    StatsPolicy,
    StatTuple,
    global_statistics,
    has_global_statistics,
)
from dcmp_cli.models.layers import GlobalInstanceNorm

#: Smallest side of the downscaled statistics pass.
MIN_STATS_SIDE = 32

KeyFilter = Callable[[str, nn.Module], bool]

def is_instance_norm(name: str, module: nn.Module) -> bool:
    """The default choice of statistics accumulated at full resolution."""
    return isinstance(module, GlobalInstanceNorm)


def statistic_modules(model: nn.Module, choose: KeyFilter) -> set[str]:
    """Names of the :class:`GlobalStatsModule` layers of ``model`` that ``choose`` picks."""
    return {name for name, m in model.named_modules() if isinstance(m, GlobalStatsModule) and choose(name, m)}


def stats_factors(height: int, width: int, max_pixels: int) -> tuple[int, int]:
    """Integer (vertical, horizontal) block sizes that bring height×width to ≤ ``max_pixels``.

    Square blocks of the smallest sufficient side, narrowed along a side that would
    otherwise fall below :data:`MIN_STATS_SIDE` (very elongated images).
    """
    k = max(1, math.ceil(math.sqrt(height * width / max_pixels)))
    most_h, most_w = max(1, height // MIN_STATS_SIDE), max(1, width // MIN_STATS_SIDE)
    kh, kw = min(k, most_h), min(k, most_w)
    if kh < k:
        kw = min(most_w, math.ceil(height / kh * width / max_pixels))
    elif kw < k:
        kh = min(most_h, math.ceil(width / kw * height / max_pixels))
    return kh, kw


def downscale_for_stats(x: torch.Tensor, max_pixels: int) -> torch.Tensor:
    """Area-averages (B, C, H, W) over integer blocks (:func:`stats_factors`) to ≤ ``max_pixels`` pixels.

    Integer blocks keep every output pixel an average of the same number of input
    pixels; fractional area or bilinear resampling blurs unevenly and shifts the
    network's statistics much more (docs/tiling.md). Ragged edges average fewer pixels.
    """
    kh, kw = stats_factors(*x.shape[2:], max_pixels)
    if kh == kw == 1:
        return x
    return F.avg_pool2d(x, (kh, kw), (kh, kw), ceil_mode=True, count_include_pad=False)


class _Deferred(StatsPolicy):
    """Lets ``inner`` decide every statistic except ``deferred`` ones, which are computed."""

    def __init__(self, inner: StatsPolicy, deferred: Collection[str]) -> None:
        self.inner = inner
        self.deferred = frozenset(deferred)

    def resolve(self, key: str, compute: Callable[[], StatTuple]) -> StatTuple:
        return compute() if key.rsplit(":", 1)[0] in self.deferred else self.inner.resolve(key, compute)


def statistics_pass(
    network: TileFn, model: nn.Module, image: torch.Tensor, max_pixels: int,
    inner: StatsPolicy | None = None, deferred: Collection[str] = (),
) -> dict[str, StatTuple]:
    """Step 1: every statistic of ``network`` on ``image`` (1, 3, H, W) downscaled to ≤ ``max_pixels``.

    ``inner`` decides the values of the statistics not in ``deferred`` (layer names).
    """
    policy: StatsPolicy | None = _Deferred(inner, deferred) if inner is not None else None
    with global_statistics(model, RecordStats(inner=policy)) as recorder:
        network(downscale_for_stats(image, max_pixels))
    return recorder.values


def accumulate_statistics(
    network: TileFn,
    model: nn.Module,
    image: torch.Tensor,
    fallback: Mapping[str, StatTuple],
    layers: set[str],
    tile: int,
    overlap: int,
    *,
    batch_tiles: int = 1,
    progress: ProgressFn | None = None,
    align: int = ALIGN,
) -> dict[str, StatTuple]:
    """Step 2: the statistics of ``layers`` over the full-resolution ``image`` (1, 3, H, W).

    Tiles of ``tile`` pixels sharing ``overlap`` pixels (as in step 3) replay
    ``fallback``; each adds the moments inside its core, and stops once the last chosen
    statistic is seen. Returns {key: value} for the chosen layers' statistics.
    """
    keys = {k for k in fallback if k.rsplit(":", 1)[0] in layers}
    if not keys:
        return {}
    height, width = image.shape[2:]
    grid = plan_tiles(height, width, tile, overlap, align)
    # The network pads its input to a multiple of FINE_STEP: its statistics cover that extent.
    cores = grid.cores(round_up(height, FINE_STEP), round_up(width, FINE_STEP))
    accumulator = AccumulateMoments(fallback, keys)
    done = 0
    with global_statistics(model, accumulator):
        for batch in tile_batches(grid, batch_tiles):
            th, tw = batch[0][2:]
            accumulator.begin((round_up(th, FINE_STEP), round_up(tw, FINE_STEP)), [cores[y, x] for y, x, _, _ in batch])
            try:
                network(torch.cat([image[:, :, y : y + th, x : x + tw] for y, x, _, _ in batch]))
            except StatisticsComplete:
                pass
            done += len(batch)
            if progress is not None:
                progress(done, len(grid))
    return accumulator.values()


def tiled_forward(
    network: TileFn,
    model: nn.Module,
    image: torch.Tensor,
    tile: int,
    overlap: int,
    *,
    stats_pixels: int,
    full_resolution: KeyFilter = is_instance_norm,
    stats: StatsPolicy | None = None,
    batch_tiles: int = 1,
    progress: ProgressFn | None = None,
) -> torch.Tensor:
    """``network`` on ``image`` (1, 3, H, W, network range) tile by tile, with image-global statistics.

    ``network`` maps (N, 3, th, tw) to (N, C_out, th, tw) and runs ``model`` (whose
    statistics layers are steered). ``stats_pixels``: size of the statistics pass (step
    1; an image no larger gets exact statistics from it and skips step 2);
    ``full_resolution`` picks the layers whose statistics step 2 accumulates (over the
    same tiles as step 3); ``stats`` decides final values (video).
    ``progress(done, total)`` counts the tiles of steps 2 and 3 together. Returns
    float32 (1, C_out, H, W) on the image's device.
    """
    height, width = image.shape[2:]
    if not has_global_statistics(model):
        return tiled_apply(network, image, tile, overlap, batch_tiles=batch_tiles, progress=progress)
    downscaled = stats_factors(height, width, stats_pixels) != (1, 1)
    layers = statistic_modules(model, full_resolution) if downscaled else set()
    values = statistics_pass(network, model, image, stats_pixels, stats, layers)
    render = len(plan_tiles(height, width, tile, overlap))
    accumulates = any(k.rsplit(":", 1)[0] in layers for k in values)
    sweep = render if accumulates else 0

    def offset(first: int) -> ProgressFn | None:
        return None if progress is None else (lambda done, _total: progress(first + done, sweep + render))

    accumulated = accumulate_statistics(
        network, model, image, values, layers, tile, overlap, batch_tiles=batch_tiles, progress=offset(0)
    )
    if stats is not None:
        accumulated = {k: stats.resolve(k, lambda v=v: v) for k, v in accumulated.items()}
    values.update(accumulated)
    with global_statistics(model, ReplayStats(values)):
        return tiled_apply(network, image, tile, overlap, batch_tiles=batch_tiles, progress=offset(sweep))
