"""Tiled inference that keeps the network's image-global statistics.

DCMPNet normalises with statistics of the whole image (see
:mod:`dcmp_cli.models.global_stats`). A tile computing its own statistics shifts tone
from tile to tile, and statistics of a downscaled copy of the image are not those of
the image either: the network's features respond to fine detail (noise, JPEG blocks,
texture) that resampling changes, so the instance norms of the cross-scale fusion in
particular come out up to tens of percent off (``docs/tiling.md`` has the figures).

:func:`tiled_forward` therefore works in three steps, every one in bounded memory:

1. **Statistics pass**: the network on the image area-downscaled by an integer factor
   to at most ``stats_pixels`` pixels; every statistic is recorded (``S0``). An image
   that needs no downscaling gets its whole-image result from this pass: done.
2. **Accumulation sweep**: the network on the full-resolution tiles of step 3,
   replaying ``S0`` and summing the moments of the instance norms' inputs over each
   tile's core (cores partition the image), so that they come out as a whole-image pass
   with ``S0`` upstream would compute them (exactly, but for the tile borders: the
   overlap gives each core context). Each tile stops right after the last instance
   norm. The instance norms re-standardise their input, so with them taken at full
   resolution the errors of ``S0`` upstream largely cancel, as long as the tiles of
   step 3 see the same ``S0`` upstream.
3. **Tiles**: every tile replays ``S0`` with the accumulated instance-norm statistics,
   and the tiles are blended (:func:`dcmp_cli.core.tiling.tiled_apply`).

Everything a tile computes upstream of the instance norms is the same in steps 2 and 3
(same tile, same ``S0``), and it is 96 % of DehazeNet's work. :class:`ReuseOutputs`
keeps it from step 2, within a memory budget, so that step 3 runs little more than the
decoder; the result is unchanged (bit for bit).

A ``stats`` policy (video smoothing) decides every final value once: during step 1 for
the statistics that are not accumulated, after step 2 for those that are.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dcmp_cli.core.scratch import Parked, ScratchFile
from dcmp_cli.core.tiling import ALIGN, FINE_STEP, ProgressFn, TileFn, plan_tiles, round_up, tile_batches, tiled_apply
from dcmp_cli.models.dehaze_net import DehazeNet
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


# -- reuse of the sweep's features in the final tiles -------------------------------------

#: What the final tiles take from the sweep instead of recomputing it: submodule name ->
#: None (its whole output), a tuple of indices (those elements of its tuple output; the
#: others, and every element when the tuple is empty, become placeholders: zeros
#: broadcast to the right shape, which nothing the final tiles compute may read).
ReusePlan = Mapping[str, "tuple[int, ...] | None"]

#: DehazeNet, everything upstream of the cross-scale instance norms (96 % of its FLOPs;
#: 75 float32 values per tile pixel): the final tiles run the instance norms and the decoder.
DEHAZE_REUSE_ENCODER: ReusePlan = {
    "guide_unet": (2,),
    "guide_proj_half": None,
    "guide_proj_quarter": (),
    "depth_prior": (),
    "depth_refine": (),
    "embed": (),
    "stage_inputs.0": (),
    "stages.0": None,
    "downsample.0": (),
    "stage_inputs.1": (),
    "stages.1": None,
    "downsample.1": None,
    "stage_inputs.2": (),
    "stages.2": (),
    "cross_scale.to_half.conv": None,
    "cross_scale.to_quarter.conv": None,
}
#: DehazeNet, its guide UNet and depth prior only (77 % of its FLOPs; 22 float32 values per
#: tile pixel): ten times the saving per byte of the rest of the encoder.
DEHAZE_REUSE_PRIORS: ReusePlan = {
    "guide_unet": (2,),
    "guide_proj_half": None,
    "guide_proj_quarter": None,
    "depth_prior": (),
    "depth_refine": None,
}


def reuse_plans(model: nn.Module) -> tuple[ReusePlan, ...]:
    """The reuse plans that fit ``model``, most saving first (none for other networks or compiled wrappers)."""
    return (DEHAZE_REUSE_ENCODER, DEHAZE_REUSE_PRIORS) if type(model) is DehazeNet else ()


@dataclass(frozen=True)
class _Placeholder:
    """Stands for a tensor the final tiles never read: zeros broadcast to its shape (no memory)."""

    shape: tuple[int, ...]
    dtype: torch.dtype

    def tensor(self, device: torch.device) -> torch.Tensor:
        return torch.zeros((), dtype=self.dtype, device=device).expand(self.shape)


_Part = torch.Tensor | _Placeholder | Parked


@dataclass(frozen=True)
class _Kept:
    """A module's output as kept: its elements (one for a tensor output): copies, parked on disk or placeholders."""

    parts: tuple[_Part, ...]
    is_tuple: bool

    @property
    def bytes(self) -> int:
        """Bytes of the copies in memory."""
        return sum(p.numel() * p.element_size() for p in self.parts if isinstance(p, torch.Tensor))

    def narrowed(self, indices: tuple[int, ...] | None) -> _Kept:
        """Only the elements ``indices`` (None: all) stay copies."""
        parts = tuple(
            p
            if indices is None or i in indices or isinstance(p, _Placeholder)
            else _Placeholder(tuple(p.shape), p.dtype)
            for i, p in enumerate(self.parts)
        )
        return _Kept(parts, self.is_tuple)

    def parked(self, scratch: ScratchFile) -> _Kept:
        """The copies written to ``scratch`` (and released from memory)."""
        return _Kept(tuple(scratch.put(p) if isinstance(p, torch.Tensor) else p for p in self.parts), self.is_tuple)

    def output(self, device: torch.device, scratch: ScratchFile | None) -> Any:
        values = tuple(_restore(p, device, scratch) for p in self.parts)
        return values if self.is_tuple else values[0]


def _restore(part: _Part, device: torch.device, scratch: ScratchFile | None) -> torch.Tensor:
    if isinstance(part, _Placeholder):
        return part.tensor(device)
    if isinstance(part, Parked):
        assert scratch is not None
        return scratch.get(part, device)
    return part.to(device)


def _wanted(index: int, indices: tuple[int, ...] | None) -> bool:
    return indices is None or index in indices


def _keep(output: Any, indices: tuple[int, ...] | None, store: torch.device, scratch: ScratchFile | None) -> _Kept:
    """Copies on ``store`` of the wanted elements of a module's output, or written straight to ``scratch``."""
    is_tuple = not isinstance(output, torch.Tensor)
    elements = tuple(output) if is_tuple else (output,)
    parts = tuple(
        (e.detach().to(store, copy=True) if scratch is None else scratch.put(e))
        if _wanted(i, indices)
        else _Placeholder(tuple(e.shape), e.dtype)
        for i, e in enumerate(elements)
    )
    return _Kept(parts, is_tuple)


def _union(plans: Sequence[ReusePlan], name: str) -> tuple[int, ...] | None:
    wanted = [plan[name] for plan in plans if name in plan]
    if any(w is None for w in wanted):
        return None
    return tuple(sorted({i for w in wanted for i in w or ()}))


class ReuseOutputs:
    """Outputs of chosen submodules, kept per tile batch in the sweep and handed back in the final tiles.

    Both passes run the same tiles with the same statistics upstream of the accumulated
    ones, so every module call that ends before an accumulated statistic is taken gives
    the same output in both, and the final tiles can skip it (exactly). ``plans`` (most
    saving first) say what to keep; the first whose estimate for the whole image (from the
    first batch) fits ``max_bytes`` and the room of ``scratch`` together is used, else the
    last one for as many batches as fit (the others recompute). Copies live on ``store``
    while ``max_bytes`` lasts, then in ``scratch`` (on disk); ``pixels``: all tiles' area.
    A scratch file that cannot be written (a full disk) takes no more: the batch being
    kept and later ones recompute, and ``on_notice`` is told once.
    Use :meth:`recording` around the sweep and :meth:`replaying` around the final tiles,
    calling :meth:`batch` before each forward pass.
    """

    def __init__(
        self,
        model: nn.Module,
        plans: Sequence[ReusePlan],
        max_bytes: int,
        pixels: int,
        store: torch.device,
        scratch: ScratchFile | None = None,
        on_notice: Callable[[str], None] | None = None,
    ) -> None:
        modules = dict(model.named_modules())
        #: Memory and disk together: what the plan is chosen by.
        self.room = max_bytes + (scratch.max_bytes if scratch is not None else 0)
        self.plans = [plan for plan in plans if all(name in modules for name in plan)] if self.room > 0 else []
        self.modules = {name: modules[name] for plan in self.plans for name in plan}
        self.max_bytes, self.pixels, self.store, self.scratch = max_bytes, pixels, store, scratch
        self.on_notice = on_notice
        self._writable = True
        self.plan: ReusePlan | None = None
        self.kept: dict[int, dict[str, _Kept]] = {}
        self._batch = 0
        self._taking: Mapping[str, tuple[int, ...] | None] | None = None
        self._park_to: ScratchFile | None = None
        self._bytes_per_pixel = 0.0

    @property
    def bytes(self) -> int:
        """Bytes of the copies kept in memory."""
        return sum(k.bytes for entries in self.kept.values() for k in entries.values())

    def _place(self, size: float) -> tuple[bool, ScratchFile | None]:
        """(keep, the scratch file when it goes to disk) for a batch of ``size`` bytes: memory first."""
        if self.bytes + size <= self.max_bytes:
            return True, None
        if self.scratch is not None and self._writable and self.scratch.fits(size):
            return True, self.scratch
        return False, None

    def _scratch_failed(self, error: OSError) -> None:
        """Writing to the scratch file failed: the batch being kept is dropped, the disk is not used again."""
        self.kept.pop(self._batch, None)
        self._taking = self._park_to = None
        self._writable = False  # what is on it already stays readable
        if self.on_notice is not None:
            self.on_notice(f"cannot write the scratch file ({error}); the remaining tiles compute their features again")

    def batch(self, index: int, pixels: int = 0) -> None:
        """Before each forward pass: the tile batch it runs (numbered alike in both passes) and its area."""
        self._batch = index
        self._park_to = None
        if not self.plans:
            self._taking = None
        elif self.plan is None:
            self._taking = {name: _union(self.plans, name) for name in self.modules}
        else:
            keep, self._park_to = self._place(self._bytes_per_pixel * pixels)
            self._taking = self.plan if keep else None

    def batch_done(self, pixels: int) -> None:
        """After each forward pass of the sweep: the first one decides the plan."""
        if self.plan is not None or not self.plans:
            return
        first = self.kept.pop(self._batch, {})
        if set(first) != set(self.modules):
            self.plans = []  # the network did not call every planned module: reuse nothing
            return
        for plan in self.plans:
            size = sum(first[name].narrowed(plan[name]).bytes for name in plan)
            if size * self.pixels / pixels <= self.room:
                break
        self.plan = plan
        self._bytes_per_pixel = size / pixels
        keep, scratch = self._place(size)
        if keep:
            entries = {name: first[name].narrowed(plan[name]) for name in plan}
            if scratch is not None:
                try:
                    entries = {name: kept.parked(scratch) for name, kept in entries.items()}
                except OSError as error:
                    self._scratch_failed(error)
                    return
            self.kept[self._batch] = entries

    @contextmanager
    def _patched(self, wrap: Callable[[str, Callable[..., Any]], Callable[..., Any]]) -> Iterator[None]:
        for name, module in self.modules.items():
            module.forward = wrap(name, module.forward)  # an instance override, removed below
        try:
            yield
        finally:
            for module in self.modules.values():
                module.__dict__.pop("forward", None)

    @contextmanager
    def recording(self) -> Iterator[None]:
        """Within the block (the sweep), the planned outputs of each batch are kept while ``max_bytes`` lasts."""

        def wrap(name: str, forward: Callable[..., Any]) -> Callable[..., Any]:
            def record(*args: Any, **kwargs: Any) -> Any:
                output = forward(*args, **kwargs)
                if self._taking is not None and name in self._taking:
                    entries = self.kept.setdefault(self._batch, {})
                    if name in entries:  # called twice in one pass: its calls cannot be told apart
                        self.plans, self._taking = [], None
                        self.kept.clear()
                    else:
                        try:
                            entries[name] = _keep(output, self._taking[name], self.store, self._park_to)
                        except OSError as error:
                            if self._park_to is None:
                                raise
                            self._scratch_failed(error)
                return output

            return record

        with self._patched(wrap):
            yield

    @contextmanager
    def replaying(self, device: torch.device) -> Iterator[None]:
        """Within the block (the final tiles), planned modules of kept batches hand back their copies."""

        def wrap(name: str, forward: Callable[..., Any]) -> Callable[..., Any]:
            def replay(*args: Any, **kwargs: Any) -> Any:
                kept = self.kept.get(self._batch, {}).get(name)
                return forward(*args, **kwargs) if kept is None else kept.output(device, self.scratch)

            return replay

        with self._patched(wrap):
            yield


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
    kh, kw = stats_factors(x.shape[2], x.shape[3], max_pixels)
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
    network: TileFn,
    model: nn.Module,
    image: torch.Tensor,
    max_pixels: int,
    inner: StatsPolicy | None = None,
    deferred: Collection[str] = (),
) -> tuple[dict[str, StatTuple], torch.Tensor]:
    """Step 1: every statistic of ``network`` on ``image`` (1, 3, H, W) downscaled to ≤ ``max_pixels``.

    ``inner`` decides the values of the statistics not in ``deferred`` (layer names).
    Returns the statistics and the network's output on the downscaled image.
    """
    policy: StatsPolicy | None = _Deferred(inner, deferred) if inner is not None else None
    recorder = RecordStats(inner=policy)
    with global_statistics(model, recorder):
        output = network(downscale_for_stats(image, max_pixels))
    return recorder.values, output


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
    reuse: ReuseOutputs | None = None,
) -> dict[str, StatTuple]:
    """Step 2: the statistics of ``layers`` over the full-resolution ``image`` (1, 3, H, W).

    Tiles of ``tile`` pixels sharing ``overlap`` pixels (as in step 3) replay
    ``fallback``; each adds the moments inside its core, and stops once the last chosen
    statistic is seen. ``reuse`` keeps what step 3 can take over. Returns {key: value}
    for the chosen layers' statistics.
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
    with global_statistics(model, accumulator), reuse.recording() if reuse else contextlib.nullcontext():
        for index, batch in enumerate(tile_batches(grid, batch_tiles)):
            th, tw = batch[0][2:]
            accumulator.begin((round_up(th, FINE_STEP), round_up(tw, FINE_STEP)), [cores[y, x] for y, x, _, _ in batch])
            if reuse is not None:
                reuse.batch(index, len(batch) * th * tw)
            try:
                network(torch.cat([image[:, :, y : y + th, x : x + tw] for y, x, _, _ in batch]))
            except StatisticsComplete:
                pass
            if reuse is not None:
                reuse.batch_done(len(batch) * th * tw)
            done += len(batch)
            if progress is not None:
                progress(done, len(grid))
    return accumulator.values()


def _constant(value: StatTuple) -> Callable[[], StatTuple]:
    return lambda: value


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
    reuse_bytes: int = 0,
    reuse: Sequence[ReusePlan] | None = None,
    scratch_bytes: int = 0,
    scratch_dir: str | os.PathLike[str] | None = None,
    on_notice: Callable[[str], None] | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``network`` on ``image`` (1, 3, H, W, network range) tile by tile, with image-global statistics.

    ``network`` maps (N, 3, th, tw) to (N, C_out, th, tw) and runs ``model`` (whose
    statistics layers are steered). ``stats_pixels``: size of the statistics pass (step
    1; an image no larger gets exact statistics from it and skips step 2);
    ``full_resolution`` picks the layers whose statistics step 2 accumulates (over the
    same tiles as step 3); ``stats`` decides final values (video).
    ``reuse_bytes``: memory for the features step 3 takes over from step 2 instead of
    recomputing them (:class:`ReuseOutputs`; kept on the CPU unless the image is on the
    CPU or the meta device; 0 = none), by ``reuse`` plans (default :func:`reuse_plans`);
    beyond it, up to ``scratch_bytes`` more in a temporary file in ``scratch_dir`` (None:
    ``TMPDIR``; :class:`~dcmp_cli.core.scratch.ScratchFile`, deleted before returning);
    ``on_notice`` hears when that file cannot be written (the tiles then recompute).
    ``progress(done, total)`` counts the tiles of steps 2 and 3 together. Returns
    float32 (1, C_out, H, W) on the image's device, in ``out`` when given.
    """
    height, width = image.shape[2:]
    if not has_global_statistics(model):
        return tiled_apply(network, image, tile, overlap, batch_tiles=batch_tiles, progress=progress, out=out)
    grid = plan_tiles(height, width, tile, overlap)
    if stats_factors(height, width, stats_pixels) == (1, 1):
        # The statistics pass runs the whole image: its output is the whole-image result.
        whole = statistics_pass(network, model, image, stats_pixels, stats)[1].float()
        if progress is not None:
            progress(1, 1)
        return whole if out is None else out.copy_(whole)
    layers = statistic_modules(model, full_resolution)
    values = statistics_pass(network, model, image, stats_pixels, stats, layers)[0]
    render = len(grid)
    accumulates = any(k.rsplit(":", 1)[0] in layers for k in values)
    sweep = render if accumulates else 0

    def offset(first: int) -> ProgressFn | None:
        return None if progress is None else (lambda done, _total: progress(first + done, sweep + render))

    store = image.device if image.device.type in ("cpu", "meta") else torch.device("cpu")
    pixels = sum(th * tw for _, _, th, tw in grid.tiles())
    plans = reuse_plans(model) if reuse is None else reuse
    on_disk = scratch_bytes if accumulates and image.device.type != "meta" else 0
    with ScratchFile(on_disk, scratch_dir) as scratch:
        kept = ReuseOutputs(model, plans, reuse_bytes if accumulates else 0, pixels, store, scratch, on_notice)
        accumulated = accumulate_statistics(
            network,
            model,
            image,
            values,
            layers,
            tile,
            overlap,
            batch_tiles=batch_tiles,
            progress=offset(0),
            reuse=kept,
        )
        if stats is not None:
            accumulated = {k: stats.resolve(k, _constant(v)) for k, v in accumulated.items()}
        values.update(accumulated)
        batches = itertools.count()

        def final(x: torch.Tensor) -> torch.Tensor:
            kept.batch(next(batches))
            return network(x)

        with global_statistics(model, ReplayStats(values)), kept.replaying(image.device):
            return tiled_apply(final, image, tile, overlap, batch_tiles=batch_tiles, progress=offset(sweep), out=out)
