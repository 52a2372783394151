"""The one place where image values meet the network's value range.

Images travel through dcmp as float tensors in [0, 1] (NCHW). DCMPNet, as trained by
its authors, reads and writes images in [-1, 1].
"""

from __future__ import annotations

import torch


def to_network_range(image: torch.Tensor) -> torch.Tensor:
    """[0, 1] image -> [-1, 1] network input."""
    return image * 2.0 - 1.0


def from_network_range(output: torch.Tensor) -> torch.Tensor:
    """[-1, 1] network output -> [0, 1] image, clamped as the authors' test script does."""
    return output.clamp(-1.0, 1.0) * 0.5 + 0.5
