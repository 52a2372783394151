"""The DCMPNet dehazing network (``DIACMPN`` in the official code).

A five-stage U-shaped transformer (encoder at full, 1/2 and 1/4 resolution, decoder at
1/2 and full) that predicts a residual added to its input. Besides the image it takes in

* guide features from a :class:`~dcmp_cli.models.guide_unet.GuideUNet` run on the input,
  projected to the stage widths and concatenated to the inputs of the stages at full,
  1/2 and 1/4 resolution (the decoder stages reuse the full and 1/2 guides), and
* a depth prior: a :class:`~dcmp_cli.models.depth_net.DepthNet` run on the input and
  refined by a dilated residual dense block, concatenated to the first stage's input,

plus a :class:`~dcmp_cli.models.fusion.CrossScaleFusion` of the three encoder stages
feeding both decoder stages, and selective-kernel fusion of the skip connections.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from dcmp_cli.models.depth_net import DepthNet
from dcmp_cli.models.fusion import CrossScaleFusion, SelectiveSkipFusion
from dcmp_cli.models.guide_unet import GuideUNet
from dcmp_cli.models.layers import DilatedDenseBlock
from dcmp_cli.models.transformer import TransformerStage

NUM_STAGES = 5
#: The input is reflect-padded to a multiple of this (two 2× downsamplings).
SIZE_MULTIPLE = 4


class DehazeOutput(NamedTuple):
    """What :class:`DehazeNet` returns; all in the network range.

    ``image``: (B, 3, H, W) restored image, [-1, 1] scale, not clamped.
    ``guide_quarter``, ``guide_half``, ``guide_full``: the projected guide features at
    1/4, 1/2 and full resolution of the input padded to a multiple of 4.
    """

    image: torch.Tensor
    guide_quarter: torch.Tensor
    guide_half: torch.Tensor
    guide_full: torch.Tensor


def _five(name: str, values: Sequence) -> tuple:
    if len(values) != NUM_STAGES:
        raise ValueError(f"{name} needs {NUM_STAGES} entries (one per stage), got {len(values)}")
    return tuple(values)


class DehazeNet(nn.Module):
    """DCMPNet's dehazing network.

    Args:
        in_channels: image channels (input and output).
        widths: encoder widths at full, 1/2 and 1/4 resolution; the decoder mirrors them.
        depths: blocks per stage (encoder full, 1/2, 1/4; decoder 1/2, full).
        attention_blocks: how many of each stage's last blocks use window attention.
        num_heads: attention heads per stage.
        mlp_ratios: MLP hidden width / stage width, per stage.
        window_size: attention window, in pixels of the stage's resolution.
        conv_kernel: depthwise convolution kernel of the token mixers.
        position_mlp_hidden: hidden width of the relative-position bias MLP.
        fusion_hidden: hidden width of the cross-scale attention MLP.
        skip_reduction: channel reduction of the skip fusions' attention MLP.
        guide_widths: encoder widths of the guide UNet.
        guide_channels: channels of the guide UNet's full-resolution output.
        depth_widths, depth_growth, depth_dense_layers: the depth-prior network.
        refine_growth, refine_layers: the dense block refining the depth prior.
    """

    def __init__(
        self,
        in_channels: int = 3,
        widths: Sequence[int] = (24, 48, 96),
        depths: Sequence[int] = (8, 8, 8, 4, 4),
        attention_blocks: Sequence[int] = (2, 4, 6, 0, 0),
        num_heads: Sequence[int] = (2, 4, 6, 1, 1),
        mlp_ratios: Sequence[float] = (2.0, 4.0, 4.0, 2.0, 2.0),
        window_size: int = 8,
        conv_kernel: int = 5,
        position_mlp_hidden: int = 256,
        fusion_hidden: int = 128,
        skip_reduction: int = 8,
        guide_widths: Sequence[int] = (64, 128, 256, 512),
        guide_channels: int = 3,
        depth_widths: Sequence[int] = (24, 48, 96, 128),
        depth_growth: int = 32,
        depth_dense_layers: int = 5,
        refine_growth: int = 32,
        refine_layers: int = 5,
    ) -> None:
        super().__init__()
        if len(widths) != 3:
            raise ValueError(f"widths needs 3 entries (full, 1/2, 1/4 resolution), got {tuple(widths)}")
        depths = _five("depths", depths)
        attention_blocks = _five("attention_blocks", attention_blocks)
        num_heads = _five("num_heads", num_heads)
        mlp_ratios = _five("mlp_ratios", mlp_ratios)
        w_full, w_half, w_quarter = widths
        stage_widths = (w_full, w_half, w_quarter, w_half, w_full)

        # Priors computed from the input image.
        self.guide_unet = GuideUNet(in_channels, guide_widths, guide_channels)
        g_quarter, g_half = self.guide_unet.guide_widths
        self.guide_proj_full = nn.Conv2d(guide_channels, w_full, 1)
        self.guide_proj_half = nn.Conv2d(g_half, w_half, 1)
        self.guide_proj_quarter = nn.Conv2d(g_quarter, w_quarter, 1)
        self.depth_prior = DepthNet(in_channels, depth_widths, depth_growth, depth_dense_layers)
        self.depth_refine = DilatedDenseBlock(1, refine_growth, refine_layers)

        self.embed = nn.Conv2d(in_channels, w_full, 3, padding=1, padding_mode="reflect")
        # 1×1 convolutions merging each stage's input with its guide (and the depth prior).
        stage_input_widths = (
            w_full + w_full + 1,
            w_half + w_half,
            w_quarter + w_quarter,
            w_half + w_half,
            w_full + w_full,
        )
        self.stage_inputs = nn.ModuleList(
            nn.Conv2d(c_in, c_out, 1) for c_in, c_out in zip(stage_input_widths, stage_widths)
        )
        network_depth = sum(depths)
        self.stages = nn.ModuleList(
            TransformerStage(
                dim,
                depth,
                n_attn,
                heads,
                ratio,
                window_size,
                conv_kernel,
                position_mlp_hidden,
                network_depth,
            )
            for dim, depth, n_attn, heads, ratio in zip(stage_widths, depths, attention_blocks, num_heads, mlp_ratios)
        )
        self.downsample = nn.ModuleList(
            [
                nn.Conv2d(w_full, w_half, 2, stride=2),
                nn.Conv2d(w_half, w_quarter, 2, stride=2),
            ]
        )
        self.cross_scale = CrossScaleFusion(widths, fusion_hidden)
        # Decoder: merge the cross-scale features, upsample (conv + pixel shuffle), fuse the skip.
        self.decoder_merge = nn.ModuleList(
            [nn.Conv2d(w_quarter + w_quarter, w_quarter, 1), nn.Conv2d(w_half + w_half, w_half, 1)]
        )
        self.upsample = nn.ModuleList(
            [
                nn.Sequential(nn.Conv2d(w_quarter, w_half * 4, 1), nn.PixelShuffle(2)),
                nn.Sequential(nn.Conv2d(w_half, w_full * 4, 1), nn.PixelShuffle(2)),
            ]
        )
        self.skip_proj = nn.ModuleList([nn.Conv2d(w_half, w_half, 1), nn.Conv2d(w_full, w_full, 1)])
        self.skip_fusion = nn.ModuleList(
            [
                SelectiveSkipFusion(w_half, reduction=skip_reduction),
                SelectiveSkipFusion(w_full, reduction=skip_reduction),
            ]
        )
        self.head = nn.Conv2d(w_full, in_channels, 3, padding=1, padding_mode="reflect")

    def _features(self, x: torch.Tensor) -> DehazeOutput:
        """Residual for an input whose sides are multiples of :data:`SIZE_MULTIPLE`."""
        g_quarter, g_half, g_full = self.guide_unet(x)
        g_full = self.guide_proj_full(g_full)
        g_half = self.guide_proj_half(g_half)
        g_quarter = self.guide_proj_quarter(g_quarter)
        depth = self.depth_refine(self.depth_prior(x))

        s = self.stages
        enc_full = s[0](self.stage_inputs[0](torch.cat([self.embed(x), g_full, depth], dim=1)))
        down_half = self.downsample[0](enc_full)
        enc_half = s[1](self.stage_inputs[1](torch.cat([down_half, g_half], dim=1)))
        down_quarter = self.downsample[1](enc_half)
        enc_quarter = s[2](self.stage_inputs[2](torch.cat([down_quarter, g_quarter], dim=1)))

        fused_half, fused_quarter = self.cross_scale(enc_full, enc_half, enc_quarter)

        # As in the published network, the bottom of the decoder starts from the
        # downsampled features; the 1/4 stage reaches the decoder through the fusion.
        y = self.upsample[0](self.decoder_merge[0](torch.cat([fused_quarter, down_quarter], dim=1)))
        y = self.skip_fusion[0]([y, self.skip_proj[0](enc_half)]) + y
        y = s[3](self.stage_inputs[3](torch.cat([y, g_half], dim=1)))

        y = self.upsample[1](self.decoder_merge[1](torch.cat([fused_half, y], dim=1)))
        y = self.skip_fusion[1]([y, self.skip_proj[1](enc_full)]) + y
        y = s[4](self.stage_inputs[4](torch.cat([y, g_full], dim=1)))
        return DehazeOutput(self.head(y), g_quarter, g_half, g_full)

    def forward(self, x: torch.Tensor) -> DehazeOutput:
        """x: (B, C, H, W) in [-1, 1], H and W at least 4. See :class:`DehazeOutput`."""
        height, width = x.shape[2:]
        pad_h = (SIZE_MULTIPLE - height % SIZE_MULTIPLE) % SIZE_MULTIPLE
        pad_w = (SIZE_MULTIPLE - width % SIZE_MULTIPLE) % SIZE_MULTIPLE
        padded = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect") if pad_h or pad_w else x
        out = self._features(padded)
        image = (out.image + padded)[:, :, :height, :width]
        return out._replace(image=image)
