"""The inference fast path: the same network, rearranged for speed, same results.

:func:`prepare_for_inference` (used by every predictor unless ``fast=False``) works on
the network it is given, so predictors hand it their own copy (the caller's network is
never changed):

* every module's own inference rewrite (:func:`dcmp_cli.models.fuse.fuse_modules`): the
  guide UNet's batch norms folded into its convolutions, each attention layer's
  relative-position bias cached for fused ``scaled_dot_product_attention``;
* weights stored channels-last, the layout oneDNN (CPU) and cuDNN (GPU) convolutions
  prefer, so no layout reorders run between layers;
* with ``compile=True``, the network wrapped in ``torch.compile``.

The changes are numerically equivalent up to float rounding (checked against the plain
network on the reference fixtures to 1e-4 in the test suite). The layer norms' image
statistics are untouched: they stay float32 under mixed precision.
"""

from __future__ import annotations

import torch
from torch import nn

from dcmp_cli.models.fuse import fuse_modules


def uses_channels_last(device: torch.device) -> bool:
    """Channels-last pays on CPUs (oneDNN) and CUDA GPUs (cuDNN); MPS keeps the default."""
    return device.type in ("cpu", "cuda")


def prepare_for_inference(model: nn.Module, device: torch.device, compile: bool = False) -> nn.Module:
    """Rearranges ``model`` (on ``device``) for fast eval-mode inference, in place; returns it
    (or its compiled wrapper). Pass a copy of a network that will train again."""
    model.eval()
    fuse_modules(model)
    if uses_channels_last(device):
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # Module.to takes it (stubs lack it)
    if compile:
        return torch.compile(model, dynamic=True)  # type: ignore[return-value]
    return model
