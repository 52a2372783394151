"""Relative depth of images: a depth model, maybe after a dehazer, normalised per image.

Convention (:data:`~dcmp_cli.data.depth_io.CONVENTION_TEXT`): relative depth in [0, 1]
per image, 0 = nearest, 1 = farthest, whatever the model's raw convention (DCMPNet's
published depth network outputs disparity-like maps, larger = nearer; a prior's −ln t is
larger = farther).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dcmp_cli.core.image_model import Dehazer, DepthModel, ImageLike, ProgressFn, to_batch
from dcmp_cli.data.depth_io import normalise_depth
from dcmp_cli.data.image_io import quantize


@dataclass
class DepthEstimate:
    """``depth``: (H, W) float32 in [0, 1], 0 = nearest. ``raw_range``: the model's (min, max)
    before normalising. ``dehazed``: the dehazed (H, W, 3) image the depth was read from, if any."""

    depth: np.ndarray
    raw_range: tuple[float, float]
    dehazed: np.ndarray | None = None


@dataclass
class DepthEstimator:
    """A depth model, run on the output of ``dehazer`` if given.

    ``estimator(image)`` takes a PIL image, a NumPy array or a tensor and returns: for
    NumPy, float32 (H, W) depth in [0, 1]; for PIL, a 16-bit greyscale image holding
    round(depth · 65535) (what ``dcmp depth`` writes to PNG); for tensors, (B, 1, H, W).
    """

    model: DepthModel
    dehazer: Dehazer | None = None

    @property
    def method(self) -> str:
        return self.model.method

    @property
    def weights(self) -> Path | None:
        """The depth network's checkpoint (None for a prior)."""
        return self.model.weights

    @property
    def larger_is_nearer(self) -> bool:
        return self.model.larger_is_nearer

    def estimate(self, image: torch.Tensor, progress: ProgressFn | None = None) -> DepthEstimate:
        """One (1, 3, H, W) [0, 1] image -> its :class:`DepthEstimate`."""
        dehazed = None
        if self.dehazer is not None:
            image = self.dehazer.run(image, progress=progress)
            dehazed = image[0].permute(1, 2, 0).numpy()
        raw = self.model.run(image, progress=progress)[0, 0].numpy()
        depth, lo, hi = normalise_depth(raw, self.larger_is_nearer)
        return DepthEstimate(depth, (lo, hi), dehazed)

    def __call__(self, image: ImageLike, progress: ProgressFn | None = None) -> ImageLike:
        batch, form = to_batch(image)
        maps = [self.estimate(batch[i : i + 1], progress).depth for i in range(batch.shape[0])]
        if form.container == "tensor":
            out = torch.from_numpy(np.stack(maps)).unsqueeze(1)
            return out if form.batched else out[0]
        if form.container == "numpy":
            return maps[0]
        return Image.fromarray(quantize(maps[0], 16))
