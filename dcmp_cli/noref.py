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

Change measures (input → output of a dehazer; :func:`change_scores`), on float
(H, W, 3) RGB arrays in [0, 1] or tensors as above, both of the same size:

``noise_amplification`` — fine-scale energy gain in smooth bright areas
    Mask: input pixels whose luma is at least the image median and at least 0.3, and
    whose luma varies little around them (standard deviation in a 15×15 window below
    0.02: overcast sky, fog, snow, smoke). Fine-scale signal: luma minus its Gaussian
    blur (σ = 3 px), which holds sensor noise, JPEG 8×8 block edges and ringing.
    Figure: RMS of the output's fine-scale signal over the input's, inside the mask
    (NaN when the mask covers under 0.5 % of the image). 1 = unchanged; real clear/hazy
    pairs show about 1.5; plain dark channel prior 2–5.
``luma_ratio`` — mean BT.601 luma of the output over the input's (real clear photos
    of a hazy view: about 0.7–0.8).
``colour_cast_shift`` — change of the colour cast: ``|mean(a*, b*)|`` of the output
    minus that of the input, CIELAB (D65) units; positive = the output has a stronger
    cast than the input.
``dark_channel_ratio`` — remaining haze: mean dark channel (15×15) of the output over
    the input's (real clear/hazy pairs: about 0.5).
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np
import torch

from dcmp_cli.prior import DarkChannelPrior

DARK_CHANNEL_PATCH = 15
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)
#: Smooth bright mask of :func:`noise_amplification`: window, std limit, absolute luma floor, minimum coverage.
SMOOTH_WINDOW, SMOOTH_STD, BRIGHT_FLOOR, MIN_COVERAGE = 15, 0.02, 0.3, 0.005
#: Gaussian σ (px) separating fine-scale signal (noise, JPEG blocks) from the picture.
FINE_SIGMA = 3.0


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


# --------------------------------------------------------------------------- input → output changes


class ChangeScores(NamedTuple):
    noise_amplification: float
    luma_ratio: float
    colour_cast_shift: float
    dark_channel_ratio: float


Image = np.ndarray | torch.Tensor


def _as_rgb(image: Image) -> np.ndarray:
    """(H, W, 3) array or (3, H, W) / (1, 3, H, W) tensor -> float32 (H, W, 3) in [0, 1]."""
    if isinstance(image, torch.Tensor):
        return _as_hwc(image)
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB array, got shape {array.shape}")
    return np.clip(array.astype(np.float32, copy=False), 0.0, 1.0)


def _pair(before: Image, after: Image) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_rgb(before), _as_rgb(after)
    if a.shape != b.shape:
        raise ValueError(f"input {a.shape} and output {b.shape} differ in shape")
    return a, b


def _luma(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) -> (H, W) BT.601 luma."""
    return cv2.transform(rgb, _LUMA.astype(np.float32).reshape(1, 3)).reshape(rgb.shape[:2])


def smooth_bright_mask(image: Image) -> np.ndarray:
    """(H, W) bool: smooth (15×15 luma std < 0.02) and bright (luma ≥ median and ≥ 0.3) pixels."""
    y = _luma(_as_rgb(image))
    size = (SMOOTH_WINDOW, SMOOTH_WINDOW)
    mean = cv2.boxFilter(y, -1, size, borderType=cv2.BORDER_REFLECT)
    var = cv2.boxFilter(y * y, -1, size, borderType=cv2.BORDER_REFLECT) - mean * mean
    return (var < SMOOTH_STD**2) & (y >= max(BRIGHT_FLOOR, float(np.median(y))))


def _fine(y: np.ndarray) -> np.ndarray:
    return y - cv2.GaussianBlur(y, (0, 0), FINE_SIGMA, borderType=cv2.BORDER_REFLECT)


def noise_amplification(before: Image, after: Image) -> float:
    """RMS fine-scale luma signal of ``after`` over ``before`` inside the smooth bright mask (NaN if it is tiny)."""
    a, b = _pair(before, after)
    mask = smooth_bright_mask(a)
    if mask.mean() < MIN_COVERAGE:
        return float("nan")
    energy_in = float(np.mean(_fine(_luma(a))[mask].astype(np.float64) ** 2))
    energy_out = float(np.mean(_fine(_luma(b))[mask].astype(np.float64) ** 2))
    floor = (0.25 / 255) ** 2  # a perfectly clean input must not blow the ratio up
    return float(np.sqrt((energy_out + floor) / (energy_in + floor)))


def luma_ratio(before: Image, after: Image) -> float:
    """Mean BT.601 luma of ``after`` over that of ``before``."""
    a, b = _pair(before, after)
    return float(_luma(b).mean(dtype=np.float64) / max(_luma(a).mean(dtype=np.float64), 1e-6))


def colour_cast(image: Image) -> float:
    """|mean (a*, b*)| in CIELAB (D65) of an RGB image: 0 for a neutral image on average."""
    lab = cv2.cvtColor(_as_rgb(image), cv2.COLOR_RGB2Lab)
    return float(np.hypot(lab[..., 1].mean(dtype=np.float64), lab[..., 2].mean(dtype=np.float64)))


def colour_cast_shift(before: Image, after: Image) -> float:
    """Colour cast of ``after`` minus that of ``before`` (CIELAB units; > 0 = stronger cast)."""
    a, b = _pair(before, after)
    return colour_cast(b) - colour_cast(a)


def dark_channel_ratio(before: Image, after: Image, patch: int = DARK_CHANNEL_PATCH) -> float:
    """Mean dark channel of ``after`` over that of ``before`` (remaining haze; lower = more removed)."""
    a, b = _pair(before, after)
    dcp = DarkChannelPrior(patch=patch)
    return float(dcp.dark_channel(b).mean(dtype=np.float64) / max(dcp.dark_channel(a).mean(dtype=np.float64), 1e-6))


def change_scores(before: Image, after: Image) -> ChangeScores:
    """All change measures of a restoration ``before`` → ``after``."""
    return ChangeScores(
        noise_amplification(before, after),
        luma_ratio(before, after),
        colour_cast_shift(before, after),
        dark_channel_ratio(before, after),
    )
