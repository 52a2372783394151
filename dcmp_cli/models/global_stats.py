"""Image-global statistics: let a caller see, replace, smooth or accumulate them.

Some layers of the dehazing network reduce over the whole image: the layer norm of
each transformer block (mean and standard deviation over C·H·W), the instance norms of
the cross-scale fusion and the global average pools of the fusion attention and of the
skip merges. Run on a tile, those layers see the tile's statistics instead of the
image's, which shifts the tone of every tile differently.

Such layers derive from :class:`GlobalStatsModule` and describe each statistic as a
:class:`Moments` request (the mean and variance of a tensor, turned into the layer's
value) passed to :meth:`GlobalStatsModule.global_stat`. Outside a
:func:`global_statistics` block this simply computes the value. Inside one, a
:class:`StatsPolicy` decides what the layer uses: :class:`RecordStats` computes and
remembers every value (run it on the whole image, or a downscaled copy of it),
:class:`ReplayStats` hands back remembered values without computing them (run it on
tiles), :class:`AccumulateMoments` sums the moments of chosen statistics over windows of
many tiles, exactly, and other policies can blend values over time (video:
:class:`dcmp_cli.core.video.SequentialStats`).

Nothing is kept on the modules once the ``with`` block ends.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

StatTuple = tuple[torch.Tensor, ...]
#: (top, bottom, left, right) of a window, in pixels of the network input.
Window = tuple[int, int, int, int]


@dataclass(frozen=True)
class Moments:
    """A statistic that is a function of the mean and variance of ``x``.

    ``x``: (B, C, H, W) features. The moments are taken per sample and channel over
    H·W, or per sample over C·H·W when ``over_channels``. ``finish(mean, var)`` (float32,
    (B, C or 1, 1, 1); ``var`` is None unless ``needs_var``) gives the layer's value.
    """

    x: torch.Tensor
    finish: Callable[[torch.Tensor, torch.Tensor | None], StatTuple]
    over_channels: bool = False
    needs_var: bool = True

    @property
    def dims(self) -> tuple[int, ...]:
        return (1, 2, 3) if self.over_channels else (2, 3)

    def compute(self) -> StatTuple:
        """The statistic of all of ``x`` (float32, whatever x's dtype)."""
        x32 = self.x.float()
        if not self.needs_var:
            return self.finish(x32.mean(dim=self.dims, keepdim=True), None)
        var, mean = torch.var_mean(x32, dim=self.dims, keepdim=True, correction=0)
        return self.finish(mean, var)


class StatsPolicy:
    """Decides which value an image-global statistic takes. Subclass and override ``resolve``."""

    def resolve(self, key: str, compute: Callable[[], StatTuple]) -> StatTuple:
        raise NotImplementedError

    def resolve_moments(self, key: str, moments: Moments) -> StatTuple:
        """Policies that need the features themselves override this; the default computes."""
        return self.resolve(key, moments.compute)


class RecordStats(StatsPolicy):
    """Keeps every statistic used in :attr:`values` (key -> tuple of tensors).

    By default the statistics are computed; with ``inner``, that policy decides them
    (e.g. the temporal smoothing of :class:`dcmp_cli.core.video.SequentialStats`) and
    this one records its decisions.
    """

    def __init__(self, inner: StatsPolicy | None = None) -> None:
        self.inner = inner
        self.values: dict[str, StatTuple] = {}

    def resolve(self, key: str, compute: Callable[[], StatTuple]) -> StatTuple:
        value = self.inner.resolve(key, compute) if self.inner is not None else compute()
        self.values[key] = tuple(v.detach() for v in value)
        return value


class ReplayStats(StatsPolicy):
    """Uses given statistics instead of computing them (for tiles of a larger image).

    ``values`` are usually a :class:`RecordStats`' values. Their batch dimension is 1 or
    equal to the batch being processed; they broadcast over a batch of tiles.
    """

    def __init__(self, values: Mapping[str, StatTuple]) -> None:
        self.values = dict(values)

    def resolve(self, key: str, compute: Callable[[], StatTuple]) -> StatTuple:
        try:
            return self.values[key]
        except KeyError:
            raise KeyError(
                f"no recorded statistic {key!r}: record statistics with the same model before replaying them"
            ) from None


class StatisticsComplete(Exception):
    """Raised by :class:`AccumulateMoments` to end a forward pass once nothing more is needed."""


class _Running:
    """Count, mean and sum of squared deviations, merged exactly (Chan et al.) in float64."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None

    def add(self, part: torch.Tensor, dims: tuple[int, ...]) -> None:
        """Adds the elements of ``part`` (1, C, h, w) reduced over ``dims``."""
        n = 1
        for d in dims:
            n *= part.shape[d]
        if n == 0:
            return
        var, mean = torch.var_mean(part.double(), dim=dims, keepdim=True, correction=0)
        m2 = var * n
        if self.mean is None or self.m2 is None:
            self.count, self.mean, self.m2 = n, mean, m2
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta * delta * (self.count * n / total)
        self.count = total


class AccumulateMoments(StatsPolicy):
    """Accumulates chosen statistics over windows of many inputs (tiles), exactly.

    Before each forward pass, :meth:`begin` gives the input's size and one window per
    sample (in input pixels; a window and the input must map to whole feature pixels at
    every resolution where a chosen statistic is taken). For every key in ``keys`` the
    moments of the layer's features inside the window are merged into a running total,
    so that windows partitioning an image give the statistics a single pass over that
    image would (to float64 rounding). Meanwhile the layers use ``fallback`` values
    (every key must be there). With ``stop_when_done``, the pass ends with
    :class:`StatisticsComplete` as soon as every chosen statistic has been seen.
    :meth:`values` gives the accumulated statistics.
    """

    def __init__(self, fallback: Mapping[str, StatTuple], keys: Collection[str], stop_when_done: bool = True) -> None:
        self.fallback = dict(fallback)
        self.keys = frozenset(keys)
        self.stop_when_done = stop_when_done
        self._running: dict[str, _Running] = {}
        self._finish: dict[str, Callable[[torch.Tensor, torch.Tensor | None], StatTuple]] = {}
        self._windows: Sequence[Window] = ()
        self._size = (0, 0)
        self._seen: set[str] = set()

    def begin(self, size: tuple[int, int], windows: Sequence[Window]) -> None:
        """Input (height, width) and one window per sample of the next forward pass."""
        self._size = size
        self._windows = list(windows)
        self._seen = set()

    def resolve(self, key: str, compute: Callable[[], StatTuple]) -> StatTuple:
        return self.fallback[key]

    def resolve_moments(self, key: str, moments: Moments) -> StatTuple:
        if key not in self.keys:
            return self.fallback[key]
        x = moments.x
        if x.shape[0] != len(self._windows):
            raise ValueError(f"{x.shape[0]} samples but {len(self._windows)} windows: call begin() first")
        running = self._running.setdefault(key, _Running())
        for i, window in enumerate(self._windows):
            top, bottom, left, right = (self._scale(v, x.shape[2 + j // 2], j // 2) for j, v in enumerate(window))
            running.add(x[i : i + 1, :, top:bottom, left:right], moments.dims)
        self._finish[key] = moments.finish
        self._seen.add(key)
        if self.stop_when_done and self._seen >= self.keys:
            raise StatisticsComplete
        return self.fallback[key]

    def _scale(self, value: int, feature_side: int, axis: int) -> int:
        side = self._size[axis]
        scaled, remainder = divmod(value * feature_side, side)
        if remainder:
            raise ValueError(
                f"window edge {value} of a {side}-pixel input falls between feature pixels of a "
                f"{feature_side}-pixel map"
            )
        return scaled

    def values(self) -> dict[str, StatTuple]:
        """Accumulated statistics, float32, batch dimension 1."""
        out = {}
        for key, running in self._running.items():
            assert running.mean is not None and running.m2 is not None
            var = (running.m2 / running.count).float()
            out[key] = tuple(v.detach() for v in self._finish[key](running.mean.float(), var))
        return out


class GlobalStatsModule(nn.Module):
    """Base for layers whose output depends on statistics of the whole image."""

    _stats_slot: tuple[StatsPolicy, str] | None = None

    def global_stat(self, tag: str, moments: Moments) -> StatTuple:
        """Returns the statistic ``tag`` of this layer: computed, or as the active policy says.

        A policy's value with batch dimension 1 is broadcast to the batch of ``moments.x``
        (one image's statistics replayed in a batch of its tiles).
        """
        slot = self._stats_slot
        if slot is None:
            return moments.compute()
        policy, name = slot
        batch = moments.x.shape[0]
        value = policy.resolve_moments(f"{name}:{tag}", moments)
        return tuple(v.expand(batch, *v.shape[1:]) if v.shape[0] == 1 and batch > 1 else v for v in value)


def has_global_statistics(model: nn.Module) -> bool:
    """Whether any layer of ``model`` uses image-global statistics."""
    return any(isinstance(m, GlobalStatsModule) for m in model.modules())


@contextmanager
def global_statistics(model: nn.Module, policy: StatsPolicy) -> Iterator[StatsPolicy]:
    """Within the block, every :class:`GlobalStatsModule` of ``model`` asks ``policy``."""
    modules = [(name, m) for name, m in model.named_modules() if isinstance(m, GlobalStatsModule)]
    for name, module in modules:
        module._stats_slot = (policy, name)
    try:
        yield policy
    finally:
        for _, module in modules:
            module.__dict__.pop("_stats_slot", None)
