"""Inference rewrites that the modules own (timm's ``fuse()`` habit).

A module that can be rearranged for faster inference defines ``fuse()``: the guide
UNet's :class:`~dcmp_cli.models.guide_unet.DoubleConv` folds its batch norms into its
convolutions; :class:`~dcmp_cli.models.transformer.WindowAttention` caches its
relative-position bias for fused attention. :func:`fuse_modules` calls every one of
them. The rewrites change the module in place and are for eval-mode networks: run them
on a copy of a network that will train again.
"""

from __future__ import annotations

from torch import nn


def fuse_modules(model: nn.Module) -> int:
    """Calls ``fuse()`` on every submodule of ``model`` that defines it; returns how many."""
    fusable = [m for m in model.modules() if callable(getattr(type(m), "fuse", None))]
    for module in fusable:
        module.fuse()  # type: ignore[operator]
    return len(fusable)
