"""Full-reference image quality metrics under named evaluation protocols.

Dehazing papers report PSNR/SSIM computed in slightly different ways. dcmp makes the
protocol an explicit choice:

``dcmpnet`` (default; the authors' ``test.py``)
    PSNR: outputs clamped to [0, 1], ``20·log10(1 / RMSE)`` over all pixels and
    channels (100 for identical images, as their script returns).
    SSIM: both images first reduced by ``adaptive_avg_pool2d`` to
    ``(int(H / r), int(W / r))`` with ``r = max(1, round(min(H, W) / 256))``; 11×11
    Gaussian window (σ = 1.5) applied as a zero-padded "same" convolution; C1 = 0.01²,
    C2 = 0.03²; mean of the SSIM map over channels and pixels.

``dehazeformer`` (DehazeFormer's ``test.py``)
    PSNR as above. SSIM with the same downscaling and window, but a "valid" convolution
    (no padding), data range 1 (``pytorch_msssim.ssim``).

Inputs: float tensors in [0, 1], shape (3, H, W) or (1, 3, H, W) (any channel count
works); outputs are clamped to [0, 1] before measuring. Computed in float64 on the CPU.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F

Protocol = Literal["dcmpnet", "dehazeformer"]
PROTOCOLS: tuple[Protocol, ...] = ("dcmpnet", "dehazeformer")
IDENTICAL_PSNR = 100.0
#: One line per protocol, for reports (JSON, tables).
PROTOCOL_DESCRIPTIONS: dict[Protocol, str] = {
    "dcmpnet": "DCMPNet test.py: PSNR on [0, 1]-clamped outputs; SSIM 11x11 Gaussian (sigma 1.5), zero-padded "
    "'same' window, C1=0.01^2, C2=0.03^2, after adaptive_avg_pool2d by round(min(H, W) / 256)",
    "dehazeformer": "DehazeFormer test.py: PSNR on [0, 1]-clamped outputs; SSIM 11x11 Gaussian (sigma 1.5), "
    "'valid' window (no padding), data range 1, after adaptive_avg_pool2d by round(min(H, W) / 256)",
}

_WINDOW = 11
_SIGMA = 1.5
_C1 = 0.01**2
_C2 = 0.03**2


class Scores(NamedTuple):
    psnr: float
    ssim: float


def _as_batch(image: torch.Tensor) -> torch.Tensor:
    if image.ndim == 3:
        image = image.unsqueeze(0)
    if image.ndim != 4:
        raise ValueError(f"expected a (C, H, W) or (1, C, H, W) image, got shape {tuple(image.shape)}")
    return image.detach().to("cpu", torch.float64).clamp(0.0, 1.0)


def _check_pair(output: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    output, target = _as_batch(output), _as_batch(target)
    if output.shape != target.shape:
        raise ValueError(f"output {tuple(output.shape)} and target {tuple(target.shape)} differ in shape")
    return output, target


def psnr(output: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR in dB of [0, 1] images (clamped), over all pixels and channels."""
    output, target = _check_pair(output, target)
    rmse = math.sqrt(torch.mean((output - target) ** 2).item())
    return IDENTICAL_PSNR if rmse == 0 else 20.0 * math.log10(1.0 / rmse)


def ssim_downscale(image: torch.Tensor) -> torch.Tensor:
    """Both protocols' reduction before SSIM: adaptive average pooling by round(min(H, W) / 256)."""
    _, _, h, w = image.shape
    ratio = max(1, round(min(h, w) / 256))
    if ratio == 1:
        return image
    return F.adaptive_avg_pool2d(image, (int(h / ratio), int(w / ratio)))


def gaussian_window(size: int = _WINDOW, sigma: float = _SIGMA) -> torch.Tensor:
    """Normalised 1-D Gaussian (size,), float64."""
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def gaussian_blur(image: torch.Tensor, padding: Literal["same", "valid"]) -> torch.Tensor:
    """The SSIM window applied per channel to (N, C, H, W): float64, zero borders ("same") or cropped ("valid").

    The 11×11 Gaussian is separable, so a row pass and a column pass (OpenCV) give the 2-D
    zero-padded convolution's values (to ~1e-14) about 100× faster than a float64
    grouped ``conv2d`` on the CPU.
    """
    g = gaussian_window().numpy()
    n, c, h, w = image.shape
    planes = image.detach().to("cpu", torch.float64).reshape(n * c, h, w).numpy()
    out = np.stack([cv2.sepFilter2D(p, cv2.CV_64F, g, g, borderType=cv2.BORDER_CONSTANT) for p in planes])
    if padding == "valid":
        crop = _WINDOW // 2
        out = out[:, crop : h - crop, crop : w - crop]
    return torch.from_numpy(np.ascontiguousarray(out)).reshape(n, c, *out.shape[1:])


def ssim_map(output: torch.Tensor, target: torch.Tensor, padding: Literal["same", "valid"]) -> torch.Tensor:
    """Per-pixel SSIM of two (1, C, H, W) float64 images in [0, 1]."""

    def blur(x: torch.Tensor) -> torch.Tensor:
        return gaussian_blur(x, padding)

    mu1, mu2 = blur(output), blur(target)
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    sigma1_sq = blur(output * output) - mu1_sq
    sigma2_sq = blur(target * target) - mu2_sq
    sigma12 = blur(output * target) - mu12
    return ((2 * mu12 + _C1) * (2 * sigma12 + _C2)) / ((mu1_sq + mu2_sq + _C1) * (sigma1_sq + sigma2_sq + _C2))


def ssim(output: torch.Tensor, target: torch.Tensor, protocol: Protocol = "dcmpnet") -> float:
    """SSIM of [0, 1] images under ``protocol`` (see the module docstring)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    output, target = _check_pair(output, target)
    output, target = ssim_downscale(output), ssim_downscale(target)
    if protocol == "dehazeformer" and min(output.shape[2:]) < _WINDOW:
        raise ValueError(f"image too small for valid-window SSIM: {tuple(output.shape[2:])} after downscaling")
    padding: Literal["same", "valid"] = "same" if protocol == "dcmpnet" else "valid"
    return ssim_map(output, target, padding).mean().item()


def score(output: torch.Tensor, target: torch.Tensor, protocol: Protocol = "dcmpnet") -> Scores:
    """(PSNR, SSIM) of an output against its ground truth under ``protocol``."""
    return Scores(psnr(output, target), ssim(output, target, protocol))
