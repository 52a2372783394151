"""Predictors: a network on a device, applied to [0, 1] images.

Every command that runs a network (dehaze, depth, eval, video) goes through these, so
device placement, precision, value-range conversion and small-image handling live in
one place.
"""

from __future__ import annotations

import contextlib
import os
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dcmp_cli.core.batch import ProgressFn
from dcmp_cli.core.checkpoint import Checkpoint, read_checkpoint
from dcmp_cli.core.device import Precision, autocast, check_precision
from dcmp_cli.core.value_range import from_network_range, to_network_range
from dcmp_cli.models.global_stats import StatsPolicy, global_statistics
from dcmp_cli.models.registry import Kind
from dcmp_cli.prior import DarkChannelPrior, depth_from_transmission

#: Smaller sides are edge-padded up to this before the network runs (its window
#: attention and four pooling levels need about 28 pixels), then cropped back.
MIN_NETWORK_SIDE = 32


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
    """Runs one network on [0, 1] images: (1, 3, H, W) in, (1, C_out, H, W) float32 out on the CPU.

    Args:
        model: a :class:`~dcmp_cli.models.DehazeNet` or :class:`~dcmp_cli.models.DepthNet`.
        device: where the network runs; inputs may live anywhere.
        precision: fp32, or fp16/bf16 autocast (the global-statistics layers stay fp32).
    """

    kind: Kind

    def __init__(
        self,
        model: nn.Module,
        device: torch.device,
        precision: Precision = "fp32",
        checkpoint: Checkpoint | None = None,
    ) -> None:
        self.checkpoint = checkpoint
        self.device = device
        self.precision = check_precision(precision, device)
        self.model = model.to(device).eval()

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: Checkpoint | str | os.PathLike,
        device: torch.device,
        precision: Precision = "fp32",
    ):
        """Builds the predictor from a checkpoint (or its path) of the right kind."""
        if not isinstance(checkpoint, Checkpoint):
            checkpoint = read_checkpoint(checkpoint, kind=cls.kind)
        return cls(checkpoint.build(device), device, precision, checkpoint)

    def network(self, x: torch.Tensor) -> torch.Tensor:
        """Network-range input (B, 3, h, w) on the device -> network output (B, C_out, h, w)."""
        raise NotImplementedError

    def _finish(self, y: torch.Tensor) -> torch.Tensor:
        """Network output -> what the predictor returns."""
        raise NotImplementedError

    @torch.inference_mode()
    def __call__(
        self, image: torch.Tensor, progress: ProgressFn | None = None, stats: StatsPolicy | None = None
    ) -> torch.Tensor:
        """(B, 3, H, W) [0, 1] image, anywhere -> (B, C_out, H, W) float32 on the CPU.

        ``stats``: a policy for the network's image-global statistics (e.g.
        :class:`~dcmp_cli.models.global_stats.SmoothedStats` across video frames).
        """
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"expected a (B, 3, H, W) image tensor, got shape {tuple(image.shape)}")
        x, h, w = pad_to_min_side(to_network_range(image.to(self.device, torch.float32)))
        with autocast(self.device, self.precision), _maybe_stats(self.model, stats):
            y = self.network(x)
        return self._finish(y.float()[:, :, :h, :w]).cpu()


class DehazePredictor(Predictor):
    """Hazy [0, 1] image -> restored [0, 1] image (clamped)."""

    kind: Kind = "dehaze"

    def network(self, x: torch.Tensor) -> torch.Tensor:
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

    def network(self, x: torch.Tensor) -> torch.Tensor:
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
        return self.prior.dehaze(rgb, self.airlight)

    def __call__(self, image: torch.Tensor, progress: ProgressFn | None = None) -> torch.Tensor:
        restored, _, _ = self._run(image)
        return torch.from_numpy(restored.transpose(2, 0, 1).copy()).unsqueeze(0)

    def depth(self, image: torch.Tensor, progress: ProgressFn | None = None) -> torch.Tensor:
        """Relative depth −ln t, (1, 1, H, W), larger = farther."""
        _, t, _ = self._run(image)
        return torch.from_numpy(depth_from_transmission(t)).unsqueeze(0).unsqueeze(0)
