"""Relative depth of a clear image, recovered from its hazy/clear pair.

With the hazy image ``I`` and the clear image ``J`` both known, the scattering model
``I = J·t + A·(1 − t)`` gives, per pixel and channel,

    I − J = (A − J)·(1 − t)

so the haze amount ``s = 1 − t`` is one scalar per pixel shared by the three channels.
:func:`estimate_pair_depth`

1. searches a grey airlight ``A`` over a range reaching above 1 (0.7–1.3 by default):
   for each candidate, ``s`` is the least-squares fit across the channels (clamped to
   [0, 1]) and the candidate with the smallest residual wins (coarse grid, then a fine
   one around the best). ``A`` is identifiable because the scene's colours differ per
   channel: a wrong ``A`` cannot explain all three channels with one ``s``. Then a
   per-channel (coloured) airlight is fitted by alternating least squares from the grey
   one, and kept when it explains the pair clearly better;
2. computes ``s`` at full resolution; pixels where ``A ≈ J`` (bright, airlight-coloured
   surfaces) or the hazy image is saturated carry no information and are masked, the
   others are weighted by their conditioning ``Σ_c (A − J_c)²``;
3. turns ``t = 1 − s`` into the relative depth ``−ln t``, fills and lightly smooths it
   with a weight-normalised Gaussian (ill-conditioned pixels take their neighbours'
   values), and normalises it per image between robust percentiles to [0, 1].

Result: relative depth, (H, W) float32, **0 = nearest, 1 = farthest**. Training targets
use the disparity-like convention of the published depth network, ``1 − depth``
(:func:`depth_to_disparity_target`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: Airlight candidates (grey level): the range and the coarse and fine grid steps.
AIRLIGHT_RANGE = (0.7, 1.3)
COARSE_STEP = 0.01
FINE_STEP = 0.001
#: Pixels used for the airlight search (a regular subsample of the image).
SEARCH_PIXELS = 40_000
#: Alternating least-squares rounds of the per-channel airlight fit, and the factor by
#: which it must lower the residual to replace the grey airlight.
COLOUR_ITERATIONS = 30
COLOUR_GAIN = 1.5
#: Conditioning weight Σ_c (A − J_c)² below which a pixel says nothing about t.
MIN_CONDITIONING = 3 * 0.03**2
#: Hazy values at or above this are treated as saturated (clipped by the camera or synthesis).
SATURATED = 254.5 / 255.0
#: Haze amount s = 1 − t is capped here so that −ln t stays finite.
MAX_HAZE = 0.995
#: Robust normalisation percentiles.
NORMALISE_PERCENTILES = (1.0, 99.0)
#: Below this spread of the haze amount the pair carries no usable depth signal.
MIN_HAZE_SPREAD = 0.01


class DepthEstimateError(ValueError):
    """The pair cannot give a depth estimate (shapes differ, not RGB, …)."""


@dataclass
class PairDepth:
    """Depth recovered from a hazy/clear pair.

    ``depth``: (H, W) float32 in [0, 1], 0 = nearest, 1 = farthest (normalised per image).
    ``airlight``: the RGB airlight found, (3,). ``fit_rms``: RMS of ``I − J − s·(A − J)`` over
    the informative pixels. ``informative``: fraction of pixels that constrain ``t``.
    ``usable``: False when the pair holds (almost) no haze signal; ``depth`` is then
    uniform 0.5.
    """

    depth: np.ndarray
    airlight: np.ndarray
    fit_rms: float
    informative: float
    usable: bool


def _check(hazy: np.ndarray, clear: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if hazy.shape != clear.shape or hazy.ndim != 3 or hazy.shape[2] != 3:
        raise DepthEstimateError(
            f"hazy and clear images must both be (H, W, 3) of one size, got {hazy.shape} and {clear.shape}"
        )
    return hazy.astype(np.float32, copy=False), clear.astype(np.float32, copy=False)


def _haze_fit(
    diff: np.ndarray, clear: np.ndarray, airlight: np.ndarray | float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-pixel least-squares haze amount for one airlight (a grey level or an RGB triple).

    ``diff`` = I − J and ``clear`` = J are (..., 3). Returns (s clamped to [0, 1],
    conditioning weight Σ_c (A_c − J_c)², squared residual), each (..., ).
    """
    span = airlight - clear
    weight = np.sum(span * span, axis=-1)
    s = np.sum(diff * span, axis=-1) / np.maximum(weight, 1e-12)
    s = np.clip(s, 0.0, 1.0)
    residual = np.sum((diff - s[..., None] * span) ** 2, axis=-1)
    return s, weight, residual


def _search_pixels(hazy: np.ndarray, clear: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A regular subsample of the unsaturated pixels: (I − J, J), each (N, 3)."""
    flat_i, flat_j = hazy.reshape(-1, 3), clear.reshape(-1, 3)
    keep = np.all(flat_i < SATURATED, axis=1)
    flat_i, flat_j = flat_i[keep], flat_j[keep]
    stride = max(1, len(flat_i) // SEARCH_PIXELS)
    return flat_i[::stride] - flat_j[::stride], flat_j[::stride]


def _grey_airlight(diff: np.ndarray, clear: np.ndarray, airlight_range: tuple[float, float]) -> float:
    def best(candidates: np.ndarray) -> float:
        costs = [float(_haze_fit(diff, clear, float(a))[2].sum()) for a in candidates]
        return float(candidates[int(np.argmin(costs))])

    lo, hi = airlight_range
    coarse = best(np.arange(lo, hi + COARSE_STEP / 2, COARSE_STEP))
    fine = np.arange(max(lo, coarse - COARSE_STEP), min(hi, coarse + COARSE_STEP) + FINE_STEP / 2, FINE_STEP)
    return best(fine)


def _colour_airlight(
    diff: np.ndarray, clear: np.ndarray, grey: float, airlight_range: tuple[float, float]
) -> np.ndarray:
    """Per-channel airlight by alternating least squares from ``grey``: s per pixel, then A per channel."""
    a = np.full(3, grey, np.float32)
    lo, hi = airlight_range
    for _ in range(COLOUR_ITERATIONS):
        s, weight, _ = _haze_fit(diff, clear, a)
        s = np.where(weight >= MIN_CONDITIONING, s, 0.0)[:, None]
        denom = float(np.sum(s * s))
        if denom <= 1e-9:
            return np.full(3, grey, np.float32)
        # D_c = s·(A_c − J_c)  =>  A_c = Σ s·(D_c + s·J_c) / Σ s².
        a = np.clip(np.sum(s * (diff + s * clear), axis=0) / denom, lo, hi).astype(np.float32)
    return a


def estimate_airlight(
    hazy: np.ndarray, clear: np.ndarray, airlight_range: tuple[float, float] = AIRLIGHT_RANGE, colour: bool = True
) -> np.ndarray:
    """The airlight (3,) that best explains ``hazy`` from ``clear`` (both (H, W, 3) in [0, 1]).

    A grey search over ``airlight_range``; with ``colour``, refined per channel and kept
    when its residual is at least :data:`COLOUR_GAIN` times smaller than the grey one's.
    """
    hazy, clear = _check(hazy, clear)
    diff, flat_clear = _search_pixels(hazy, clear)
    if len(diff) == 0:
        return np.ones(3, np.float32)
    grey = _grey_airlight(diff, flat_clear, airlight_range)
    grey_a = np.full(3, grey, np.float32)
    if not colour:
        return grey_a
    coloured = _colour_airlight(diff, flat_clear, grey, airlight_range)
    grey_cost = float(_haze_fit(diff, flat_clear, grey_a)[2].sum())
    colour_cost = float(_haze_fit(diff, flat_clear, coloured)[2].sum())
    return coloured if colour_cost * COLOUR_GAIN < grey_cost else grey_a


def _normalised_blur(values: np.ndarray, weight: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Weight-normalised Gaussian smoothing: (Σ G·w·v / Σ G·w, Σ G·w)."""
    ksize = (0, 0)
    num = cv2.GaussianBlur(values * weight, ksize, sigma, borderType=cv2.BORDER_REFLECT)
    den = cv2.GaussianBlur(weight, ksize, sigma, borderType=cv2.BORDER_REFLECT)
    return num / np.maximum(den, 1e-12), den


def _fill_and_smooth(values: np.ndarray, weight: np.ndarray, sigma: float) -> np.ndarray:
    """Smooths ``values`` by ``weight`` at ``sigma``; pixels without support take coarser fills."""
    out, support = _normalised_blur(values, weight, sigma)
    scale = sigma
    reference = float(weight.max()) if weight.size else 0.0
    while True:
        thin = support < 1e-3 * reference
        if not thin.any() or scale > max(values.shape):
            break
        scale *= 4
        coarse, support_coarse = _normalised_blur(values, weight, scale)
        out = np.where(thin, coarse, out)
        support = np.where(thin, support_coarse, support)
    return out


def estimate_pair_depth(
    hazy: np.ndarray,
    clear: np.ndarray,
    airlight: float | np.ndarray | None = None,
    smooth_sigma: float | None = None,
    airlight_range: tuple[float, float] = AIRLIGHT_RANGE,
    colour_airlight: bool = True,
) -> PairDepth:
    """Relative depth of ``clear`` from the pair (both float (H, W, 3) RGB in [0, 1]).

    ``airlight``: a known airlight, grey or RGB (skips the search). ``colour_airlight``:
    fit a per-channel airlight after the grey search (see :func:`estimate_airlight`).
    ``smooth_sigma``: Gaussian sigma in pixels for the weight-normalised smoothing
    (default: 0.4 % of the shorter side, at least 1). See the module docstring.
    """
    hazy, clear = _check(hazy, clear)
    if airlight is None:
        a = estimate_airlight(hazy, clear, airlight_range, colour_airlight)
    else:
        a = np.broadcast_to(np.asarray(airlight, np.float32), (3,)).copy()
    diff = hazy - clear
    s, weight, residual = _haze_fit(diff, clear, a)
    informative = (weight >= MIN_CONDITIONING) & np.all(hazy < SATURATED, axis=2)
    fit_rms = float(np.sqrt(residual[informative].mean() / 3.0)) if informative.any() else float("nan")
    confidence = np.where(informative, weight, 0.0).astype(np.float32)
    informative_fraction = float(informative.mean())
    usable = informative.any() and bool(np.subtract(*np.percentile(s[informative], [99, 1])) >= MIN_HAZE_SPREAD)
    if not usable:
        return PairDepth(np.full(s.shape, 0.5, np.float32), a, fit_rms, informative_fraction, False)
    depth = -np.log(1.0 - np.minimum(s, MAX_HAZE)).astype(np.float32)
    sigma = smooth_sigma if smooth_sigma is not None else max(1.0, 0.004 * min(s.shape))
    depth = _fill_and_smooth(depth, confidence, sigma)
    lo, hi = np.percentile(depth[informative], NORMALISE_PERCENTILES)
    if hi - lo <= 1e-6:
        return PairDepth(np.full(s.shape, 0.5, np.float32), a, fit_rms, informative_fraction, False)
    depth = np.clip((depth - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    return PairDepth(depth, a, fit_rms, informative_fraction, True)


def depth_to_disparity_target(depth: np.ndarray) -> np.ndarray:
    """[0, 1] relative depth (0 = nearest) -> the training target ``1 − depth`` (larger = nearer)."""
    return (1.0 - depth).astype(np.float32)
