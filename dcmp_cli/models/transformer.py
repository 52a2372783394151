"""DehazeFormer-style transformer stages of the dehazing network.

A stage is a stack of :class:`TransformerBlock`. Every block mixes tokens with a
depthwise convolution over a "value" projection; the last ``attention_blocks`` blocks
of a stage add shifted-window self-attention (every other block shifted by half a
window) and a :class:`~dcmp_cli.models.layers.GlobalStatNorm` around the mixer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dcmp_cli.models.layers import GlobalStatNorm


def log_relative_positions(window_size: int) -> torch.Tensor:
    """Signed log-scaled offsets between the pixels of a window.

    Returns (N, N, 2) float32 with N = window_size², entry [i, j] = sign(d)·ln(1 + |d|)
    for the (row, column) offset d = pos(i) - pos(j).
    """
    coords = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij"))
    flat = coords.flatten(1)
    offsets = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0).float()
    return torch.sign(offsets) * torch.log1p(offsets.abs())


def _trunc_normal_fan_avg(weight: torch.Tensor, gain: float) -> None:
    fan_in = weight.shape[1] * weight[0, 0].numel()
    fan_out = weight.shape[0] * weight[0, 0].numel()
    nn.init.trunc_normal_(weight, std=gain * math.sqrt(2.0 / float(fan_in + fan_out)))


def _init_conv(conv: nn.Conv2d, gain: float) -> None:
    """DehazeFormer's initialisation: truncated normal (fan average) weights, zero bias."""
    _trunc_normal_fan_avg(conv.weight, gain)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows, with a relative-position bias.

    The bias of each head comes from a small MLP on the log-scaled relative positions.
    Input (num_windows·B, N, 3·dim) holding queries, keys and values (in that order, each
    split into heads); output (num_windows·B, N, dim).

    :meth:`fuse` prepares inference: the bias (a function of fixed positions and the
    MLP's weights) is computed once into a non-persistent buffer, and in eval mode
    attention runs fused through ``scaled_dot_product_attention`` with the bias as an
    additive mask. In training mode the cached bias is ignored, so the position MLP
    keeps its gradient.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, position_mlp_hidden: int = 256) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention width {dim} is not divisible by {num_heads} heads")
        self.dim = dim
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.register_buffer("relative_positions", log_relative_positions(window_size), persistent=False)
        self.position_mlp = nn.Sequential(
            nn.Linear(2, position_mlp_hidden), nn.ReLU(inplace=True), nn.Linear(position_mlp_hidden, num_heads)
        )
        self.frozen_bias: torch.Tensor | None
        self.register_buffer("frozen_bias", None, persistent=False)

    def position_bias(self) -> torch.Tensor:
        """(heads, N, N) additive attention bias."""
        if self.frozen_bias is not None and not self.training:
            return self.frozen_bias
        return self.position_mlp(self.relative_positions).permute(2, 0, 1)

    @torch.no_grad()
    def fuse(self) -> None:
        """Caches the position bias (eval mode uses it, with fused attention); call again after
        changing the position MLP's weights."""
        self.frozen_bias = self.position_mlp(self.relative_positions).permute(2, 0, 1).contiguous()

    def forward(self, qkv: torch.Tensor) -> torch.Tensor:
        windows, tokens, _ = qkv.shape
        head_dim = self.dim // self.num_heads
        q, k, v = qkv.reshape(windows, tokens, 3, self.num_heads, head_dim).permute(2, 0, 3, 1, 4)
        if self.frozen_bias is not None and not self.training:
            mask = self.frozen_bias.to(q.dtype).unsqueeze(0)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1) + self.position_bias().unsqueeze(0)
            out = attn.softmax(dim=-1) @ v
        return out.transpose(1, 2).reshape(windows, tokens, self.dim)


def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """(B, H, W, C) with H, W multiples of the window -> (B·nW, window², C)."""
    b, h, w, c = x.shape
    x = x.view(b, h // window_size, window_size, w // window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size * window_size, c)


def window_merge(windows: torch.Tensor, window_size: int, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B·nW, window², C) -> (B, H, W, C)."""
    c = windows.shape[-1]
    b = windows.shape[0] // ((height // window_size) * (width // window_size))
    x = windows.view(b, height // window_size, width // window_size, window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, height, width, c)


class TokenMixer(nn.Module):
    """Depthwise-convolution mixing, optionally plus shifted-window attention.

    out = proj(dwconv(value(x)) [+ window_attention(query_key(x), value(x))]).
    (B, dim, H, W) -> (B, dim, H, W).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        shift: int,
        use_attention: bool,
        kernel_size: int = 5,
        position_mlp_hidden: int = 256,
        init_gain: float = 1.0,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.window_size = window_size
        self.shift = shift
        self.value = nn.Conv2d(dim, dim, 1)
        self.spatial_conv = nn.Conv2d(
            dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, padding_mode="reflect"
        )
        self.proj = nn.Conv2d(dim, dim, 1)
        self.query_key: nn.Conv2d | None = None
        self.attention: WindowAttention | None = None
        if use_attention:
            self.query_key = nn.Conv2d(dim, 2 * dim, 1)
            self.attention = WindowAttention(dim, num_heads, window_size, position_mlp_hidden)
        for conv in (self.value, self.spatial_conv, self.proj):
            _init_conv(conv, init_gain)
        if self.query_key is not None:
            _init_conv(self.query_key, 1.0)

    def _pad_for_windows(self, x: torch.Tensor) -> torch.Tensor:
        """Reflect-pads so that H, W are window multiples; a shifted block pads the shift in front."""
        _, _, h, w = x.shape
        ws, s = self.window_size, self.shift
        pad_h = (ws - h % ws) % ws
        pad_w = (ws - w % ws) % ws
        if s:
            return F.pad(x, (s, (ws - s + pad_w) % ws, s, (ws - s + pad_h) % ws), mode="reflect")
        return F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")

    def _windowed_attention(self, x: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        assert self.query_key is not None and self.attention is not None
        _, _, h, w = x.shape
        qkv = self._pad_for_windows(torch.cat([self.query_key(x), value], dim=1))
        hp, wp = qkv.shape[2:]
        windows = window_partition(qkv.permute(0, 2, 3, 1), self.window_size)
        merged = window_merge(self.attention(windows), self.window_size, hp, wp)
        s = self.shift
        return merged[:, s : s + h, s : s + w, :].permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value = self.value(x)
        mixed = self.spatial_conv(value)
        if self.attention is not None:
            mixed = mixed + self._windowed_attention(x, value)
        return self.proj(mixed)


class PointwiseMlp(nn.Module):
    """Two 1×1 convolutions with a ReLU between: (B, dim, H, W) -> (B, dim, H, W)."""

    def __init__(self, dim: int, hidden: int, init_gain: float = 1.0) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        for conv in (self.fc1, self.fc2):
            _init_conv(conv, init_gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TransformerBlock(nn.Module):
    """Residual token mixer (normalised around it when it attends) plus a residual MLP."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        window_size: int,
        shift: int,
        use_attention: bool,
        kernel_size: int = 5,
        position_mlp_hidden: int = 256,
        init_gain: float = 1.0,
    ) -> None:
        super().__init__()
        self.norm = GlobalStatNorm(dim) if use_attention else None
        self.mixer = TokenMixer(
            dim, num_heads, window_size, shift, use_attention, kernel_size, position_mlp_hidden, init_gain
        )
        self.mlp = PointwiseMlp(dim, int(dim * mlp_ratio), init_gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm is not None:
            normalised, rescale, rebias = self.norm(x)
            x = x + (self.mixer(normalised) * rescale + rebias)
        else:
            x = x + self.mixer(x)
        return x + self.mlp(x)


class TransformerStage(nn.Module):
    """``depth`` blocks at one resolution; the last ``attention_blocks`` of them attend."""

    def __init__(
        self,
        dim: int,
        depth: int,
        attention_blocks: int,
        num_heads: int,
        mlp_ratio: float,
        window_size: int,
        kernel_size: int = 5,
        position_mlp_hidden: int = 256,
        network_depth: int | None = None,
    ) -> None:
        super().__init__()
        if not 0 <= attention_blocks <= depth:
            raise ValueError(f"attention_blocks={attention_blocks} must lie in [0, depth={depth}]")
        init_gain = (8 * (network_depth or depth)) ** -0.25
        self.blocks = nn.ModuleList(
            TransformerBlock(
                dim,
                num_heads,
                mlp_ratio,
                window_size,
                shift=0 if i % 2 == 0 else window_size // 2,
                use_attention=i >= depth - attention_blocks,
                kernel_size=kernel_size,
                position_mlp_hidden=position_mlp_hidden,
                init_gain=init_gain,
            )
            for i in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x
