"""No-reference image measures, for hazy photos without ground truth.

None of these says whether a restoration is *right*; they say how hazy, how
colourful and how contrasty an image looks, so comparing a model's output with its
input shows the change it made. All take [0, 1] images, shape (3, H, W) or
(1, 3, H, W) tensors; values outside [0, 1] are clamped first.

``haze`` — dark-channel haze density (He, Sun, Tang 2009)
    The mean over the image of the dark channel
    ``dark(x) = min_{y ∈ Ω(x)} min_{c ∈ {R,G,B}} I_c(y)``, Ω a 15×15 patch
    (the prior's own operator, :meth:`dcmp_cli.prior.DarkChannelPrior.dark_channel`).
    In [0, 1]; **lower = less haze**. Haze-free outdoor scenes score near 0 because
    most patches hold a nearly black channel; haze lifts the dark channel towards the
    airlight. Caveats: large bright objects (white walls, sky) also score high, and the
    dark channel prior minimises exactly this quantity, so it favours that method.

``colourfulness`` — Hasler & Süsstrunk (2003), "Measuring colourfulness in natural images"
    With ``rg = R − G`` and ``yb = (R + G)/2 − B`` on the 0–255 scale,
    ``M = sqrt(σ_rg² + σ_yb²) + 0.3 · sqrt(μ_rg² + μ_yb²)`` (means and standard
    deviations over all pixels). 0 for a grey image; **higher = more colourful**
    (their scale: ≈15 "slightly", ≈33 "moderately", ≈59 "quite", ≈82 "highly" colourful).
    Haze washes colours out, so dehazing should raise it.

``contrast`` — RMS contrast
    The standard deviation of the luma ``Y = 0.299 R + 0.587 G + 0.114 B`` (ITU-R
    BT.601) over all pixels, in [0, 0.5]; **higher = more contrast**.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from dcmp_cli.prior import DarkChannelPrior

DARK_CHANNEL_PATCH = 15
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)


class NoRefScores(NamedTuple):
    haze: float
    colourfulness: float
    contrast: float


def _as_hwc(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) or (1, 3, H, W) tensor -> float32 (H, W, 3) array in [0, 1]."""
    if image.ndim == 4:
        if image.shape[0] != 1:
            raise ValueError(f"expected one image, got a batch of {image.shape[0]}")
        image = image[0]
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) or (1, 3, H, W) RGB image, got shape {tuple(image.shape)}")
    return np.ascontiguousarray(image.detach().to("cpu", torch.float32).clamp(0, 1).permute(1, 2, 0).numpy())


def haze_density(image: torch.Tensor, patch: int = DARK_CHANNEL_PATCH) -> float:
    """Mean dark channel (15×15 patch) of a [0, 1] RGB image; lower = less haze."""
    return float(DarkChannelPrior(patch=patch).dark_channel(_as_hwc(image)).mean(dtype=np.float64))


def colourfulness(image: torch.Tensor) -> float:
    """Hasler–Süsstrunk colourfulness on the 0–255 scale; 0 for grey images."""
    rgb = _as_hwc(image).astype(np.float64) * 255.0
    rg = rgb[..., 0] - rgb[..., 1]
    yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def rms_contrast(image: torch.Tensor) -> float:
    """Standard deviation of the BT.601 luma, in [0, 0.5]."""
    return float((_as_hwc(image).astype(np.float64) @ _LUMA).std())


def no_reference(image: torch.Tensor) -> NoRefScores:
    """All no-reference measures of one [0, 1] RGB image."""
    return NoRefScores(haze_density(image), colourfulness(image), rms_contrast(image))
