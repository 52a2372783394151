"""The one place where image values meet the network's value range.

Images travel through dcmp as float tensors in [0, 1] (NCHW). DCMPNet, as trained by
its authors, reads and writes images in [-1, 1]; dcmp checkpoints record that range in
their metadata (:data:`NETWORK_VALUE_RANGE`), and :func:`parse_value_range` reads it back.
"""

from __future__ import annotations

import re

import torch

#: The value range DCMPNet's networks read and write, as written into checkpoint metadata.
NETWORK_VALUE_RANGE = "[-1, 1]"
NETWORK_BOUNDS = (-1.0, 1.0)

_RANGE = re.compile(r"^\s*\[\s*([-+]?[0-9.eE+-]+)\s*,\s*([-+]?[0-9.eE+-]+)\s*\]\s*$")


def to_network_range(image: torch.Tensor) -> torch.Tensor:
    """[0, 1] image -> [-1, 1] network input."""
    return image * 2.0 - 1.0


def from_network_range(output: torch.Tensor, clamp: bool = True) -> torch.Tensor:
    """[-1, 1] network output -> [0, 1] image.

    Clamped to [-1, 1] first, as the authors' test script does; ``clamp=False`` maps the
    values as they are (training losses, where clamping would cut the gradient).
    """
    if clamp:
        output = output.clamp(-1.0, 1.0)
    return output * 0.5 + 0.5


def parse_value_range(text: str) -> tuple[float, float] | None:
    """``"[-1, 1]"`` -> (-1.0, 1.0); None when ``text`` is not ``[low, high]`` with two numbers."""
    match = _RANGE.match(text)
    if match is None:
        return None
    try:
        return float(match.group(1)), float(match.group(2))
    except ValueError:
        return None
