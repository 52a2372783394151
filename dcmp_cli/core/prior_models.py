"""The weight-free priors (:mod:`dcmp_cli.prior`) behind the :class:`~dcmp_cli.core.image_model.ImageModel` contract.

They run on the CPU in OpenCV/NumPy, one image at a time, never tile, and smooth their
image-global quantities over video frames with :class:`~dcmp_cli.core.temporal.GlobalsEMA`.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from dcmp_cli.choices import DEFAULT_PRIOR
from dcmp_cli.core.image_model import Dehazer, DepthModel, ProgressFn, TemporalState
from dcmp_cli.core.temporal import GlobalsEMA
from dcmp_cli.prior import ImagePrior, create_prior, depth_from_transmission


def _ema(temporal: TemporalState) -> GlobalsEMA:
    if not isinstance(temporal, GlobalsEMA):
        raise TypeError("temporal must come from this model's temporal_state()")
    return temporal


def _images(
    prior: ImagePrior, images: torch.Tensor, temporal: TemporalState | None
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """(float32 RGB (H, W, 3), the image-global quantities to use or None) for each image of a (B, 3, H, W) batch."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected a (B, 3, H, W) image tensor, got shape {tuple(images.shape)}")
    for index in range(images.shape[0]):
        rgb = np.ascontiguousarray(images[index].detach().float().cpu().permute(1, 2, 0).numpy())
        yield rgb, None if temporal is None else _ema(temporal).smoothed(index, prior.estimate_globals(rgb))


class PriorDehazer(Dehazer):
    """A weight-free prior as a dehazer: (B, 3, H, W) [0, 1] -> the same. Default: the weight-free default method."""

    default_smoothing = 0.8

    def __init__(self, prior: ImagePrior | None = None) -> None:
        self.prior: ImagePrior = prior or create_prior(DEFAULT_PRIOR)
        self.method = self.prior.name
        self.title = self.prior.title

    def run(
        self,
        images: torch.Tensor,
        *,
        progress: ProgressFn | None = None,
        temporal: TemporalState | None = None,
    ) -> torch.Tensor:
        restored = [self.prior.dehaze(rgb, g).image for rgb, g in _images(self.prior, images, temporal)]
        return torch.stack([torch.from_numpy(r.transpose(2, 0, 1).copy()) for r in restored])

    def temporal_state(self, smooth: float) -> GlobalsEMA:
        return GlobalsEMA(smooth)


class PriorDepth(DepthModel):
    """Relative depth −ln t from a prior's transmission (:meth:`~dcmp_cli.prior.ImagePrior.depth_transmission`):
    (B, 3, H, W) hazy [0, 1] -> (B, 1, H, W), larger = farther. Default: the weight-free default method."""

    @property
    def larger_is_nearer(self) -> bool:
        return False

    def __init__(self, prior: ImagePrior | None = None) -> None:
        self.prior: ImagePrior = prior or create_prior(DEFAULT_PRIOR)
        self.method = self.prior.name
        self.title = self.prior.title

    def run(
        self,
        images: torch.Tensor,
        *,
        progress: ProgressFn | None = None,
        temporal: TemporalState | None = None,
    ) -> torch.Tensor:
        maps = [
            depth_from_transmission(self.prior.depth_transmission(rgb, g))
            for rgb, g in _images(self.prior, images, temporal)
        ]
        return torch.stack([torch.from_numpy(m) for m in maps]).unsqueeze(1)

    def temporal_state(self, smooth: float) -> GlobalsEMA:
        return GlobalsEMA(smooth)
