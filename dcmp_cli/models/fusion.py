"""Feature-fusion modules of the dehazing network."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dcmp_cli.models.layers import GlobalAvgPool, GlobalInstanceNorm


class SelectiveSkipFusion(nn.Module):
    """Merges equally shaped feature maps with per-channel softmax weights (SKFusion).

    The weights come from the global average of their sum through a bottleneck MLP.
    Inputs: ``branches`` tensors (B, dim, H, W); output (B, dim, H, W).
    """

    def __init__(self, dim: int, branches: int = 2, reduction: int = 8, min_hidden: int = 4) -> None:
        super().__init__()
        self.branches = branches
        hidden = max(dim // reduction, min_hidden)
        self.pool = GlobalAvgPool()
        self.squeeze = nn.Conv2d(dim, hidden, 1, bias=False)
        self.excite = nn.Conv2d(hidden, dim * branches, 1, bias=False)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(features) != self.branches:
            raise ValueError(f"expected {self.branches} feature maps, got {len(features)}")
        b, c = features[0].shape[:2]
        total = features[0]
        for f in features[1:]:
            total = total + f
        weights = self.excite(F.relu(self.squeeze(self.pool(total))))
        weights = weights.view(b, self.branches, c, 1, 1).softmax(dim=1)
        out = features[0] * weights[:, 0]
        for i, f in enumerate(features[1:], start=1):
            out = torch.addcmul(out, f, weights[:, i])
        return out


class _DownFuse(nn.Sequential):
    """Strided convolution, instance norm, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding)
        self.norm = GlobalInstanceNorm()
        self.act = nn.ReLU(inplace=True)


class CrossScaleFusion(nn.Module):
    """Cross-scale channel attention over the three encoder stages.

    Each stage output is weighted by a scalar per sample (from an MLP on the stages'
    global average features), brought to full resolution (nearest), concatenated, and
    projected down to the half- and quarter-resolution decoder widths.

    Inputs: encoder features at full, 1/2 and 1/4 resolution with ``widths`` channels.
    Returns ``(to_half, to_quarter)``: (B, widths[1], H/2, W/2), (B, widths[2], H/4, W/4).
    """

    def __init__(self, widths: Sequence[int], hidden: int = 128) -> None:
        super().__init__()
        if len(widths) != 3:
            raise ValueError(f"cross-scale fusion needs three stage widths, got {tuple(widths)}")
        total = sum(widths)
        self.pools = nn.ModuleList(GlobalAvgPool() for _ in widths)
        self.scale_attention = nn.Sequential(
            nn.Conv2d(total, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, len(widths), 1)
        )
        self.to_half = _DownFuse(total, widths[1], kernel_size=3, stride=2, padding=1)
        self.to_quarter = _DownFuse(total, widths[2], kernel_size=5, stride=4, padding=1)

    def forward(
        self, full: torch.Tensor, half: torch.Tensor, quarter: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        stages = (full, half, quarter)
        pooled = torch.cat([pool(x) for pool, x in zip(self.pools, stages)], dim=1)
        scores = self.scale_attention(pooled).chunk(len(stages), dim=1)
        fused = torch.cat(
            [
                stage * score if factor == 1 else F.interpolate(stage * score, scale_factor=factor)
                for stage, score, factor in zip(stages, scores, (1, 2, 4))
            ],
            dim=1,
        )
        return self.to_half(fused), self.to_quarter(fused)
