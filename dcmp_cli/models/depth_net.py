"""The depth network of DCMPNet (``DN`` in the official code).

A dense-block encoder/decoder: at every level a dilated residual dense block followed
by a stride-2 convolution down; a dense block at the bottom; transposed convolutions up,
each followed by a dense block, back to ``in_channels``; a 1×1 head to one channel.

Input: images in the network range [-1, 1], (B, in_channels, H, W), any H and W.
Output: (B, 1, H, W), a relative depth map in the convention of the weights it carries
(the published checkpoints were trained towards a monocular model's disparity, so
larger values are nearer; see the README's "Depth conventions").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dcmp_cli.models.layers import DilatedDenseBlock


class _EncoderLevel(nn.Module):
    def __init__(self, channels: int, out_channels: int, growth: int, dense_layers: int) -> None:
        super().__init__()
        self.dense = DilatedDenseBlock(channels, growth, dense_layers)
        self.down = nn.Conv2d(channels, out_channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.dense(x))


class _DecoderLevel(nn.Module):
    def __init__(self, channels: int, out_channels: int, growth: int, dense_layers: int, refine: bool) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(channels, out_channels, 4, stride=2, padding=1)
        self.dense = DilatedDenseBlock(out_channels, growth, dense_layers) if refine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        return self.dense(x) if self.dense is not None else x


class DepthNet(nn.Module):
    """Dense-block encoder/decoder depth estimator.

    Args:
        in_channels: image channels.
        widths: channels after each downsampling step (the published net: 24, 48, 96, 128).
        growth: channels added by each layer of a dense block.
        dense_layers: layers per dense block.
    """

    def __init__(
        self,
        in_channels: int = 3,
        widths: Sequence[int] = (24, 48, 96, 128),
        growth: int = 32,
        dense_layers: int = 5,
    ) -> None:
        super().__init__()
        channels = [in_channels, *widths]
        self.levels = len(widths)
        self.encoder = nn.ModuleList(
            _EncoderLevel(channels[i], channels[i + 1], growth, dense_layers) for i in range(len(widths))
        )
        self.bottleneck = DilatedDenseBlock(channels[-1], growth, dense_layers)
        self.decoder = nn.ModuleList(
            _DecoderLevel(channels[i + 1], channels[i], growth, dense_layers, refine=i > 0)
            for i in reversed(range(len(widths)))
        )
        self.head = nn.Conv2d(in_channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[2:]
        for level in self.encoder:
            x = level(x)
        x = self.bottleneck(x)
        for level in self.decoder:
            x = level(x)
        return self.head(x)[:, :, :height, :width]
