"""Validation during training: mean PSNR/SSIM over the validation pairs, shared out over processes.

Scores follow the evaluation protocol named in the config (see :mod:`dcmp_cli.metrics`),
on whole images (or the centre crops :class:`~dcmp_cli.training.data.ValPairs` gives),
so a run's numbers match `dcmp eval` on the same pairs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from dcmp_cli.core.device import Precision
from dcmp_cli.core.predictor import DehazePredictor
from dcmp_cli.metrics import Protocol, score
from dcmp_cli.metrics import Scores as ImageScores
from dcmp_cli.training import distributed as D
from dcmp_cli.training.data import ValPairs, shard


@dataclass(frozen=True)
class MeanScores:
    """Mean PSNR (dB) and SSIM over ``images`` validation pairs, and the seconds it took."""

    psnr: float
    ssim: float
    images: int
    seconds: float


def _mean(pairs: ValPairs, ctx: D.DistContext, scores: Callable[[dict[str, torch.Tensor]], ImageScores]) -> MeanScores:
    """Every process scores its share of ``pairs``; the means are over all of them."""
    start = time.perf_counter()
    total = torch.zeros(3, dtype=torch.float64)
    for i in shard(len(pairs), ctx.rank, ctx.world_size):
        s = scores(pairs[i])
        total += torch.tensor([s.psnr, s.ssim, 1.0], dtype=torch.float64)
    D.all_reduce_sum(total, ctx)
    count = int(total[2])
    return MeanScores(float(total[0] / count), float(total[1] / count), count, time.perf_counter() - start)


def hazy_scores(pairs: ValPairs, protocol: Protocol, ctx: D.DistContext) -> MeanScores:
    """The hazy inputs scored against their ground truth: where training starts from."""
    return _mean(pairs, ctx, lambda sample: score(sample["hazy"], sample["clear"], protocol))


def network_scores(
    model: nn.Module,
    pairs: ValPairs,
    protocol: Protocol,
    ctx: D.DistContext,
    device: torch.device,
    precision: Precision,
) -> MeanScores:
    """The dehazing network's outputs scored against the ground truth.

    ``model`` is the training network itself (no copy), run in eval mode (``fast=False``
    leaves its layers as they are) and put back into training mode afterwards.
    """
    predictor = DehazePredictor(model, device, precision, fast=False, copy=False)

    def scores(sample: dict[str, torch.Tensor]) -> ImageScores:
        restored = predictor.run(sample["hazy"].unsqueeze(0))
        return score(restored, sample["clear"].unsqueeze(0), protocol)

    try:
        return _mean(pairs, ctx, scores)
    finally:
        model.train()
