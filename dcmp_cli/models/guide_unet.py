"""The guide UNet: a plain UNet whose decoder features guide the dehazing network.

Bilinear-upsampling UNet (the official ``UNet(bilinear=True)``): double 3×3 conv +
batch-norm blocks, max-pool down, bilinear up (align_corners) with zero-padding to the
skip's size. The deepest level keeps the width of the level above it, as the bilinear
UNet does, so decoder levels concatenate equal widths.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


class DoubleConv(nn.Sequential):
    """(conv 3×3, batch norm, ReLU) × 2: (B, in, H, W) -> (B, out, H, W)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.act2 = nn.ReLU(inplace=True)

    @torch.no_grad()
    def fuse(self) -> int:
        """Folds each eval-mode batch norm into the convolution before it (inference only:
        the running statistics become constants); returns how many were folded."""
        folded = 0
        for conv_name, bn_name in (("conv1", "bn1"), ("conv2", "bn2")):
            bn = getattr(self, bn_name)
            if isinstance(bn, nn.BatchNorm2d):
                setattr(self, conv_name, fuse_conv_bn_eval(getattr(self, conv_name), bn))
                setattr(self, bn_name, nn.Identity())
                folded += 1
        return folded


class _Down(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = DoubleConv(in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.max_pool2d(x, 2))


class _Up(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = DoubleConv(in_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        dy = skip.shape[2] - x.shape[2]
        dx = skip.shape[3] - x.shape[3]
        if dy or dx:
            x = F.pad(x, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.conv(torch.cat([skip, x], dim=1))


class GuideUNet(nn.Module):
    """UNet returning decoder features at 1/4 and 1/2 resolution and its full-resolution output.

    Args:
        in_channels: image channels.
        widths: encoder widths from full resolution down (the published net: 64, 128, 256, 512).
        out_channels: channels of the full-resolution output.

    Input (B, in_channels, H, W) in [-1, 1]. Returns ``(quarter, half, full)`` of shapes
    (B, widths[1], ~H/4, ~W/4), (B, widths[0], ~H/2, ~W/2), (B, out_channels, H, W);
    the reduced sizes are those of the encoder levels (floor division by max-pooling).
    """

    def __init__(
        self, in_channels: int = 3, widths: Sequence[int] = (64, 128, 256, 512), out_channels: int = 3
    ) -> None:
        super().__init__()
        if len(widths) < 3:
            raise ValueError(f"the guide UNet needs at least 3 widths, got {tuple(widths)}")
        self.widths = tuple(widths)
        self.inc = DoubleConv(in_channels, widths[0])
        # The bottom level keeps the deepest width (bilinear UNet's "factor 2").
        down_widths = [*widths[1:], widths[-1]]
        self.down = nn.ModuleList(_Down(c_in, c_out) for c_in, c_out in zip(widths, down_widths))
        # Up level i merges (bottom-up) an input of width w_in with a skip of equal width.
        up_in = list(reversed(widths))
        up_out = [*reversed(widths[:-1]), widths[0]]
        self.up = nn.ModuleList(_Up(2 * c_in, c_out) for c_in, c_out in zip(up_in, up_out))
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    @property
    def guide_widths(self) -> tuple[int, int]:
        """Channels of the quarter- and half-resolution guides."""
        return self.widths[1], self.widths[0]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        skips = [self.inc(x)]
        for down in self.down:
            skips.append(down(skips[-1]))
        x = skips.pop()
        decoded = []
        for up in self.up:
            x = up(x, skips.pop())
            decoded.append(x)
        quarter, half = decoded[-3], decoded[-2]
        return quarter, half, self.head(x)
