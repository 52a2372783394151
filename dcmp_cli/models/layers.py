"""Building blocks shared by the dehazing and depth networks.

All tensors are NCHW feature maps unless a docstring says otherwise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dcmp_cli.models.global_stats import GlobalStatsModule, Moments


class GlobalStatNorm(GlobalStatsModule):
    """Layer norm over C·H·W with learned rescale and rebias (DehazeFormer's RLN).

    Normalises each sample by its mean and standard deviation over all channels and
    pixels, then applies a per-channel affine. It also returns a per-channel ``rescale``
    and ``rebias`` computed from that standard deviation and mean, which the block
    applies after its token mixer, so that the block can restore the statistics it
    normalised away. Statistics are computed in float32 whatever the input dtype.

    Input ``x``: (B, C, H, W). Returns ``(normalised, rescale, rebias)`` with shapes
    (B, C, H, W), (B, C, 1, 1), (B, C, 1, 1).
    """

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(1, dim, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, dim, 1, 1))
        self.rescale_from_std = nn.Conv2d(1, dim, 1)
        self.rebias_from_mean = nn.Conv2d(1, dim, 1)
        nn.init.trunc_normal_(self.rescale_from_std.weight, std=0.02)
        nn.init.constant_(self.rescale_from_std.bias, 1.0)  # type: ignore[arg-type]  # Conv2d bias=True: set
        nn.init.trunc_normal_(self.rebias_from_mean.weight, std=0.02)
        nn.init.constant_(self.rebias_from_mean.bias, 0.0)  # type: ignore[arg-type]  # Conv2d bias=True: set

    def _mean_std(self, mean: torch.Tensor, var: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        assert var is not None
        return mean, torch.sqrt(var + self.eps)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean, std = self.global_stat("mean_std", Moments(x, self._mean_std, over_channels=True))
        # (x − mean) / std · weight + bias, folded into one multiply-add per element.
        scale = self.weight / std
        normalised = torch.addcmul((self.bias - mean * scale).to(x.dtype), x, scale.to(x.dtype))
        rescale = self.rescale_from_std(std.to(self.rescale_from_std.weight.dtype))
        rebias = self.rebias_from_mean(mean.to(self.rebias_from_mean.weight.dtype))
        return normalised, rescale, rebias


class GlobalInstanceNorm(GlobalStatsModule):
    """Instance norm without affine parameters: per sample and channel over H·W.

    Same as ``nn.InstanceNorm2d(affine=False, track_running_stats=False)``, with its
    statistics exposed to :mod:`dcmp_cli.models.global_stats`. Computed in float32.
    """

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps

    @staticmethod
    def _mean_var(mean: torch.Tensor, var: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        assert var is not None
        return mean, var

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean, var = self.global_stat("mean_var", Moments(x, self._mean_var))
        scale = torch.rsqrt(var + self.eps)
        return torch.addcmul((-mean * scale).to(x.dtype), x, scale.to(x.dtype))


class GlobalAvgPool(GlobalStatsModule):
    """Mean over H·W per sample and channel: (B, C, H, W) -> (B, C, 1, 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (mean,) = self.global_stat("mean", Moments(x, lambda mean, _: (mean,), needs_var=False))
        return mean.to(x.dtype)


class DilatedDenseBlock(nn.Module):
    """Dilated residual dense block (DRDB).

    ``num_layers`` dilated 3×3 convolutions, each seeing the concatenation of the block
    input and all earlier layers' outputs (``growth`` channels each), fused back to
    ``channels`` by a 1×1 convolution and added to the input after a ReLU.
    (B, channels, H, W) -> (B, channels, H, W).
    """

    def __init__(self, channels: int, growth: int = 32, num_layers: int = 5, dilation: int = 2) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Conv2d(channels + i * growth, growth, 3, padding=dilation, dilation=dilation) for i in range(num_layers)
        )
        self.fuse = nn.Conv2d(channels + num_layers * growth, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = x
        for layer in self.layers:
            features = torch.cat([features, F.relu(layer(features), inplace=True)], dim=1)
        return x + F.relu(self.fuse(features), inplace=True)
