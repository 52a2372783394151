"""The contract every dehazer and depth model follows, and the image types it accepts.

Every command runs an :class:`ImageModel`: DCMPNet's networks
(:mod:`dcmp_cli.core.predictor`) and the weight-free priors
(:mod:`dcmp_cli.core.prior_models`) alike. The core works on batches of float tensors:

* :meth:`ImageModel.plan` says, before anything runs, whether an image of a given size
  is processed in one pass (0) or in tiles of that side;
* :meth:`ImageModel.run` maps (B, 3, H, W) images in [0, 1] to (B, C, H, W) float32
  results on the CPU, reporting tiles through ``progress(done, total)``;
* :meth:`ImageModel.temporal_state` makes the object that smooths the model's
  image-global quantities over video frames (network statistics, a prior's airlight),
  passed back to :meth:`ImageModel.run` as ``temporal``.

Python callers use ``model(image)``: a PIL image, a NumPy array (H×W×C or H×W, uint8,
uint16 or float in [0, 1]) or a tensor ((B, 3, H, W) or (3, H, W) in [0, 1]) in, the
same kind out (:func:`to_batch` / :class:`ImageForm`). For a dehazer the result equals
what ``dcmp dehaze`` writes for that image: same size, bit depth, grey or colour form
and alpha channel, quantised with rounding.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

import numpy as np
import torch
from PIL import Image

from dcmp_cli.core.batch import ProgressFn
from dcmp_cli.data.image_io import LUMA_WEIGHTS, quantize
from dcmp_cli.models.registry import Kind

#: What ``model(image)`` accepts and returns.
ImageLike = Image.Image | np.ndarray | torch.Tensor


class TemporalState(Protocol):
    """Smooths a model's image-global quantities over consecutive frames.

    Before each :meth:`ImageModel.run` on frames, the caller says which frames of the
    batch start a new scene (the smoothing restarts there).
    """

    def set_starts(self, starts: Sequence[bool]) -> None: ...


class ImageModel(ABC):
    """A dehazer (``kind == "dehaze"``) or depth model (``"depth"``) of [0, 1] images.

    ``method``: the method's name ("dcmp" for DCMPNet, a prior's name).
    ``weights``: the checkpoint file, or None. ``device``: where it computes.
    ``default_smoothing``: the temporal smoothing strength video uses unless told
    otherwise (smoothing lowers the priors' flicker; it did not lower DCMPNet's in
    ``benchmarks/flicker.py``).
    """

    kind: ClassVar[Kind]
    method: str
    #: What runs, for messages ("DCMPNet", "dark channel prior").
    title: str = "DCMPNet"
    weights: Path | None = None
    device: torch.device = torch.device("cpu")
    default_smoothing: float = 0.0

    def plan(self, height: int, width: int) -> int:
        """Tile side used for an image of ``height``×``width`` (0 = one pass)."""
        return 0

    @abstractmethod
    def run(
        self,
        images: torch.Tensor,
        *,
        progress: ProgressFn | None = None,
        temporal: TemporalState | None = None,
    ) -> torch.Tensor:
        """(B, 3, H, W) images in [0, 1], on any device -> (B, C, H, W) float32 on the CPU."""

    @abstractmethod
    def temporal_state(self, smooth: float) -> TemporalState:
        """A state for :meth:`run` that averages the image-global quantities over frames with
        an exponential moving average; ``smooth`` in [0, 1) is the weight of the past."""


class Dehazer(ImageModel):
    """An :class:`ImageModel` that restores hazy images: ``dehazer(image)`` returns the same kind."""

    kind: ClassVar[Kind] = "dehaze"

    def __call__(self, image: ImageLike, progress: ProgressFn | None = None) -> ImageLike:
        """Dehazes a PIL image, NumPy array or tensor; returns the same kind (see the module doc)."""
        batch, form = to_batch(image)
        return form.restore(self.run(batch, progress=progress))


class DepthModel(ImageModel):
    """An :class:`ImageModel` whose (B, 1, H, W) output is a raw depth map in its own convention."""

    kind: ClassVar[Kind] = "depth"

    @property
    @abstractmethod
    def larger_is_nearer(self) -> bool:
        """True for disparity-like maps (larger = nearer), False for depth (larger = farther)."""


# ----------------------------------------------------------------------------- image types


@dataclass(frozen=True)
class ImageForm:
    """How an image came in, so a result can go back in the same form.

    ``container``: "pil", "numpy" or "tensor". ``dtype``: NumPy or torch dtype of the
    input. ``grey``: one colour channel (results are turned to BT.601 luma, as files
    are). ``alpha``: the input's alpha channel, put back unchanged. ``bit_depth``: 8 or
    16 for integer inputs, None for float. ``batched``: a tensor that came with a batch
    dimension. ``pil_mode``: the PIL mode to return; ``device``: the tensor's device.
    """

    container: str
    dtype: object
    grey: bool = False
    alpha: np.ndarray | None = None
    bit_depth: int | None = None
    batched: bool = True
    pil_mode: str | None = None
    channels: int = 3
    device: torch.device | None = None

    def restore(self, result: torch.Tensor) -> ImageLike:
        """(B, 3, H, W) float [0, 1] result -> the input's kind, dtype and layout."""
        if self.container == "tensor":
            out = result.clamp(0.0, 1.0).to(device=self.device, dtype=self.dtype)  # type: ignore[call-overload]
            return out if self.batched else out[0]
        rgb = result[0].detach().float().cpu().permute(1, 2, 0).numpy()
        pixels = self._pixels(rgb)
        if self.container == "numpy":
            return pixels
        return _pil_from_pixels(pixels, self.pil_mode or "RGB")

    def _pixels(self, rgb: np.ndarray) -> np.ndarray:
        values = rgb @ LUMA_WEIGHTS if self.grey else rgb
        if self.bit_depth is not None:
            out = quantize(values, self.bit_depth)
        else:
            out = np.clip(values, 0.0, 1.0).astype(self.dtype)
        if self.grey and self.channels == 1:
            return out[:, :, None]
        if self.alpha is not None:
            return np.dstack([out, self.alpha])
        return out


def _pil_from_pixels(pixels: np.ndarray, mode: str) -> Image.Image:
    if mode == "I;16":
        return Image.fromarray(pixels.astype(np.uint16))
    return Image.fromarray(np.ascontiguousarray(pixels))


def _unit_float(array: np.ndarray) -> tuple[np.ndarray, int | None]:
    """Integer or float pixels -> float32 in [0, 1], and the integer bit depth (None for float)."""
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0, 8
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535.0, 16
    if np.issubdtype(array.dtype, np.floating):
        return np.clip(array.astype(np.float32), 0.0, 1.0), None
    raise TypeError(f"unsupported pixel type {array.dtype}; use uint8, uint16 or float in [0, 1]")


def _from_array(array: np.ndarray, container: str, pil_mode: str | None = None) -> tuple[torch.Tensor, ImageForm]:
    if array.ndim == 2:
        colour, alpha, grey, channels = array[:, :, None], None, True, 0
    elif array.ndim == 3 and array.shape[2] in (1, 2, 3, 4):
        channels = array.shape[2]
        grey = channels <= 2
        colour = array[:, :, :1] if grey else array[:, :, :3]
        alpha = array[:, :, -1].copy() if channels in (2, 4) else None
    else:
        raise ValueError(f"expected an H×W or H×W×C image (C = 1, 2, 3 or 4), got shape {array.shape}")
    rgb, bit_depth = _unit_float(colour)
    if grey:
        rgb = np.repeat(rgb, 3, axis=2)
    tensor = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).unsqueeze(0)
    form = ImageForm(container, array.dtype, grey, alpha, bit_depth, pil_mode=pil_mode, channels=channels)
    return tensor, form


def to_batch(image: ImageLike) -> tuple[torch.Tensor, ImageForm]:
    """Any accepted image -> ((B, 3, H, W) float32 tensor in [0, 1], its :class:`ImageForm`)."""
    if isinstance(image, torch.Tensor):
        batched = image.ndim == 4
        batch = image if batched else image.unsqueeze(0)
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise ValueError(f"expected a (B, 3, H, W) or (3, H, W) tensor in [0, 1], got shape {tuple(image.shape)}")
        form = ImageForm("tensor", image.dtype, batched=batched, device=image.device)
        return batch.float(), form
    if isinstance(image, Image.Image):
        return _from_pil(image)
    if isinstance(image, np.ndarray):
        return _from_array(image, "numpy")
    raise TypeError(f"expected a PIL image, a NumPy array or a torch tensor, got {type(image).__name__}")


def _from_pil(image: Image.Image) -> tuple[torch.Tensor, ImageForm]:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image)
        if array.dtype != np.uint16:
            if array.min() < 0 or array.max() > 65535:
                raise ValueError("32-bit integer images are not supported")
            array = array.astype(np.uint16)
        return _from_array(array, "pil", "I;16")
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode == "1":
        image = image.convert("L")
    elif mode in ("PA", "La"):
        image = image.convert("LA")
    elif mode == "RGBa":
        image = image.convert("RGBA")
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        image = image.convert("RGB")
    return _from_array(np.asarray(image), "pil", image.mode)
