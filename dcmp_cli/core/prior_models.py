"""The weight-free priors (:mod:`dcmp_cli.prior`) behind the :class:`~dcmp_cli.core.image_model.ImageModel` contract.

They run on the CPU in OpenCV/NumPy, one image at a time, never tile, and smooth their
image-global quantities over video frames with :class:`~dcmp_cli.core.temporal.GlobalsEMA`.
"""

from __future__ import annotations

import numpy as np
import torch

from dcmp_cli.core.image_model import Dehazer, DepthModel, ProgressFn, TemporalState
from dcmp_cli.core.temporal import GlobalsEMA
from dcmp_cli.prior import DarkChannelPrior, ImagePrior, PriorResult, depth_from_transmission


def _apply(prior: ImagePrior, images: torch.Tensor, temporal: TemporalState | None) -> list[PriorResult]:
    """Runs ``prior`` on every image of a (B, 3, H, W) [0, 1] batch, in order."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected a (B, 3, H, W) image tensor, got shape {tuple(images.shape)}")
    if temporal is not None and not isinstance(temporal, GlobalsEMA):
        raise TypeError("temporal must come from this model's temporal_state()")
    results = []
    for index in range(images.shape[0]):
        rgb = np.ascontiguousarray(images[index].detach().float().cpu().permute(1, 2, 0).numpy())
        globals_ = None if temporal is None else temporal.smoothed(index, prior.estimate_globals(rgb))
        results.append(prior.dehaze(rgb, globals_))
    return results


class PriorDehazer(Dehazer):
    """A weight-free prior as a dehazer: (B, 3, H, W) [0, 1] -> the same. Default: the dark channel prior."""

    default_smoothing = 0.8

    def __init__(self, prior: ImagePrior | None = None) -> None:
        self.prior: ImagePrior = prior or DarkChannelPrior()
        self.method = self.prior.name
        self.title = self.prior.title

    def run(
        self,
        images: torch.Tensor,
        *,
        progress: ProgressFn | None = None,
        temporal: TemporalState | None = None,
    ) -> torch.Tensor:
        restored = [torch.from_numpy(r.image.transpose(2, 0, 1).copy()) for r in _apply(self.prior, images, temporal)]
        return torch.stack(restored)

    def temporal_state(self, smooth: float) -> GlobalsEMA:
        return GlobalsEMA(smooth)


class PriorDepth(DepthModel):
    """Relative depth −ln t from a prior's transmission: (B, 3, H, W) hazy [0, 1] -> (B, 1, H, W), larger = farther."""

    @property
    def larger_is_nearer(self) -> bool:
        return False

    def __init__(self, prior: ImagePrior | None = None) -> None:
        self.prior: ImagePrior = prior or DarkChannelPrior()
        self.method = self.prior.name
        self.title = self.prior.title

    def run(
        self,
        images: torch.Tensor,
        *,
        progress: ProgressFn | None = None,
        temporal: TemporalState | None = None,
    ) -> torch.Tensor:
        maps = [torch.from_numpy(depth_from_transmission(r.transmission)) for r in _apply(self.prior, images, temporal)]
        return torch.stack(maps).unsqueeze(1)

    def temporal_state(self, smooth: float) -> GlobalsEMA:
        return GlobalsEMA(smooth)
