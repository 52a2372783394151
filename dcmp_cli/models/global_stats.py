"""Image-global statistics: let a caller see, replace or smooth them.

Some layers of the dehazing network reduce over the whole image: the layer norm of
each transformer block (mean and standard deviation over C·H·W), the instance norms of
the cross-scale fusion and the global average pools of the fusion attention and of the
skip merges. Run on a tile, those layers see the tile's statistics instead of the
image's, which shifts the tone of every tile differently.

Such layers derive from :class:`GlobalStatsModule` and ask for each statistic through
:meth:`GlobalStatsModule.global_stat`. Outside a :func:`global_statistics` block this
simply computes the value. Inside one, a :class:`StatsPolicy` decides what the layer
uses: :class:`RecordStats` computes and remembers every value (run it on the whole image,
or a downscaled copy of it), :class:`ReplayStats` hands back remembered values without
computing them (run it on tiles), and other policies can blend values over time
(video: :class:`dcmp_cli.core.video.SequentialStats`).

Nothing is kept on the modules once the ``with`` block ends.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Mapping

import torch
from torch import nn

StatTuple = tuple[torch.Tensor, ...]


class StatsPolicy:
    """Decides which value an image-global statistic takes. Subclass and override ``resolve``."""

    def resolve(self, key: str, compute: Callable[[], StatTuple]) -> StatTuple:
        raise NotImplementedError


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
                f"no recorded statistic {key!r}: record statistics with the same model "
                "before replaying them"
            ) from None


class GlobalStatsModule(nn.Module):
    """Base for layers whose output depends on statistics of the whole image."""

    _stats_slot: tuple[StatsPolicy, str] | None = None

    def global_stat(self, tag: str, compute: Callable[[], StatTuple]) -> StatTuple:
        """Returns the statistic ``tag`` of this layer: computed, or as the active policy says."""
        slot = self._stats_slot
        if slot is None:
            return compute()
        policy, name = slot
        return policy.resolve(f"{name}:{tag}", compute)


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
