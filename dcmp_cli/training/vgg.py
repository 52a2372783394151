"""VGG19 feature extractor for the contrastive regulariser, built without torchvision.

The layer list is torchvision's ``vgg19().features`` (same indices), cut after relu5_1,
so its weights file — torchvision's ``vgg19-dcbb9e9d.pth``, keys ``features.N.weight``
and ``features.N.bias`` — loads as it is (read by
:func:`~dcmp_cli.core.checkpoint.load_tensors_only`, like a safetensors file with the same
keys). Nothing is downloaded: the user gives the file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from dcmp_cli.core.checkpoint import CheckpointError, load_tensors_only

#: torchvision's VGG19 configuration: conv widths, "M" = 2×2 max-pool.
VGG19_LAYERS: tuple[int | str, ...] = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    512,
    "M",
)
#: Indices (in ``features``) after relu1_1, relu2_1, relu3_1, relu4_1, relu5_1: the five outputs.
TAPS = (1, 6, 11, 20, 29)
#: ImageNet statistics torchvision's weights were trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VGGWeightsError(ValueError):
    """The VGG19 weights file is missing, unsafe or does not fit."""


def _features(in_channels: int = 3, last: int = TAPS[-1]) -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = in_channels
    for spec in VGG19_LAYERS:
        if spec == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, int(spec), 3, padding=1), nn.ReLU(inplace=False)]
            channels = int(spec)
        if len(layers) > last:
            break
    return nn.Sequential(*layers[: last + 1])


class VGG19Features(nn.Module):
    """Frozen VGG19 trunk: (B, 3, H, W) -> the five relu{1..5}_1 feature maps.

    ``imagenet_normalize``: inputs are [0, 1] images and are normalised with ImageNet
    statistics; otherwise inputs go in as they are (the authors feed [-1, 1] tensors).
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, imagenet_normalize: bool = False) -> None:
        super().__init__()
        self.features = _features()
        self.imagenet_normalize = imagenet_normalize
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGG19Features:
        """Always in eval mode (frozen)."""
        return super().train(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.imagenet_normalize:
            x = (x - self.mean) / self.std
        outputs = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in TAPS:
                outputs.append(x)
        return outputs

    def load_weights(self, state_dict: Mapping[str, torch.Tensor], what: str = "VGG19 weights") -> None:
        """Loads ``features.N.*`` (or bare ``N.*``) entries; later layers and the classifier are ignored."""
        wanted = self.features.state_dict()
        found: dict[str, torch.Tensor] = {}
        for key, value in state_dict.items():
            bare = key[len("features.") :] if key.startswith("features.") else key
            if bare in wanted:
                found[bare] = value
        missing = [k for k in wanted if k not in found]
        if missing:
            raise VGGWeightsError(
                f"{what} lack {len(missing)} of the {len(wanted)} VGG19 tensors needed (e.g. features.{missing[0]}); "
                "give torchvision's vgg19 weights (vgg19-dcbb9e9d.pth)"
            )
        wrong = [k for k in wanted if tuple(found[k].shape) != tuple(wanted[k].shape)]
        if wrong:
            raise VGGWeightsError(
                f"{what} are not VGG19's: features.{wrong[0]} has shape {tuple(found[wrong[0]].shape)}, "
                f"expected {tuple(wanted[wrong[0]].shape)}"
            )
        self.features.load_state_dict({k: v.float() for k, v in found.items()}, strict=True)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A plain tensor dict from a ``torch.save`` or safetensors file (read without running code from it)."""
    path = Path(path)
    if not path.is_file():
        raise VGGWeightsError(f"VGG19 weights file not found: {path}")
    try:
        obj = load_tensors_only(path)
    except CheckpointError as e:
        raise VGGWeightsError(f"VGG19 weights: {e}") from None
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise VGGWeightsError(f"{path} does not hold a state dict of tensors")
    return dict(obj)


def load_vgg19(path: str | os.PathLike, imagenet_normalize: bool = False) -> VGG19Features:
    """The frozen feature extractor with the weights in ``path``."""
    model = VGG19Features(imagenet_normalize)
    model.load_weights(read_state_dict(path), what=str(path))
    return model
