"""The inference fast path: the same network, rearranged for speed, same results.

:func:`prepare_for_inference` (used by every predictor unless ``fast=False``):

* folds each batch norm of the guide UNet into the convolution before it (eval-mode
  statistics are constants);
* caches every attention layer's relative-position bias (it depends only on fixed
  positions and weights) and switches it to fused ``scaled_dot_product_attention``;
* stores the weights channels-last, the layout oneDNN (CPU) and cuDNN (GPU) convolutions
  prefer, so no layout reorders run between layers;
* with ``compile=True``, wraps the network in ``torch.compile``.

The changes are numerically equivalent up to float rounding (checked against the plain
network on the reference fixtures to 1e-4 in the test suite). The layer norms' image
statistics are untouched: they stay float32 under mixed precision.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from dcmp_cli.models.guide_unet import DoubleConv
from dcmp_cli.models.transformer import WindowAttention


def fold_batch_norms(model: nn.Module) -> int:
    """Folds the batch norms of every :class:`DoubleConv` into its convolutions; returns how many."""
    folded = 0
    for module in model.modules():
        if isinstance(module, DoubleConv):
            for conv_name, bn_name in (("conv1", "bn1"), ("conv2", "bn2")):
                bn = getattr(module, bn_name)
                if isinstance(bn, nn.BatchNorm2d):
                    setattr(module, conv_name, fuse_conv_bn_eval(getattr(module, conv_name), bn))
                    setattr(module, bn_name, nn.Identity())
                    folded += 1
    return folded


def uses_channels_last(device: torch.device) -> bool:
    """Channels-last pays on CPUs (oneDNN) and CUDA GPUs (cuDNN); MPS keeps the default."""
    return device.type in ("cpu", "cuda")


def prepare_for_inference(model: nn.Module, device: torch.device, compile: bool = False) -> nn.Module:
    """Rearranges an eval-mode network for fast inference, in place; returns it (or its compiled wrapper)."""
    model.eval()
    fold_batch_norms(model)
    for module in model.modules():
        if isinstance(module, WindowAttention):
            module.freeze()
    if uses_channels_last(device):
        model.to(memory_format=torch.channels_last)
    if compile:
        return torch.compile(model, dynamic=True)  # type: ignore[return-value]
    return model
