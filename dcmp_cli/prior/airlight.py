"""A robust, near-neutral airlight estimate for weight-free dehazers.

The dark channel prior's rule (the mean input colour over the brightest 0.1 % of a 15×15
dark channel; He et al. 2009) is hijacked by any white or bright object larger than the
patch (a white van, a lit window, snow), and it passes the tint of the brightest region
straight into the airlight, so dividing it out casts the whole picture. This estimator:

1. works on a small copy (shorter side ``side`` = 256 px, area-averaged: noise and JPEG
   blocks average out) with a patch that scales with the picture, ``patch_fraction`` of
   the shorter side (1/12, about 21 px of the copy; the classic rule uses 15 px whatever
   the size, so on a 12-megapixel photo any white object over 15 px competes with the
   haze; here it must span about 1/12 of the picture's shorter side);
2. takes the per-channel **median** input colour over the top ``top_fraction`` (0.5 %)
   of that dark channel instead of the mean or the maximum (one bright outlier cannot
   move it);
3. pulls its colour towards grey, keeping ``chroma`` (1/2) of its tint (partial grey-world
   neutralisation, as in colour-constancy practice: real haze is close to neutral, a
   strongly tinted estimate usually means a lamp, a sunset or a coloured wall);
4. keeps it within [``floor``, 1] per channel.

Limits (measured, see docs/weight-free.md): an object wider than about 1/12 of the
shorter side whose brightness exceeds the haze's still competes with it. Larger patches,
a larger candidate share, Kim et al.'s quad-tree search (2013) or a smoothness-weighted
score resisted such objects too but cost 1.3–3 dB on SOTS-indoor, where the haziest
region really is the brightest.

Images are float32 RGB (H, W, 3) in [0, 1]; the airlight is float32 (3,).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


def channel_min(image: np.ndarray) -> np.ndarray:
    """(H, W, C) -> (H, W) minimum over channels (OpenCV reduction)."""
    h, w, c = image.shape
    return cv2.reduce(np.ascontiguousarray(image).reshape(-1, c), 1, cv2.REDUCE_MIN).reshape(h, w)


def channel_max(image: np.ndarray) -> np.ndarray:
    """(H, W, C) -> (H, W) maximum over channels (OpenCV reduction)."""
    h, w, c = image.shape
    return cv2.reduce(np.ascontiguousarray(image).reshape(-1, c), 1, cv2.REDUCE_MAX).reshape(h, w)


def patch_minimum(image: np.ndarray, patch: int) -> np.ndarray:
    """Per-channel ``patch``×``patch`` minimum filter (erosion) of (H, W[, C])."""
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (patch, patch))
    return cv2.erode(np.ascontiguousarray(image), kernel, borderType=cv2.BORDER_REPLICATE)


def odd(value: float, low: int = 3) -> int:
    """The nearest odd integer ≥ ``low``."""
    n = max(low, round(value))
    return n if n % 2 else n + 1


def downscale(image: np.ndarray, side: int) -> np.ndarray:
    """Area-averaged copy whose shorter side is ``side`` (the image itself if already no larger)."""
    h, w = image.shape[:2]
    scale = side / min(h, w)
    if scale >= 1.0:
        return image
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


@dataclass(frozen=True)
class RobustAirlight:
    """Airlight estimator; see the module docstring for each step."""

    side: int = 256
    patch_fraction: float = 1 / 12
    top_fraction: float = 0.005
    chroma: float = 0.5
    floor: float = 0.05

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """RGB airlight (3,) float32 of an (H, W, 3) float32 [0, 1] image."""
        small = downscale(np.ascontiguousarray(image, dtype=np.float32), self.side)
        return self.from_small(small)

    def from_small(self, small: np.ndarray) -> np.ndarray:
        """As :meth:`__call__` on an already downscaled copy."""
        patch = odd(min(small.shape[:2]) * self.patch_fraction)
        dark = channel_min(patch_minimum(small, patch)).reshape(-1)
        count = max(1, round(dark.size * self.top_fraction))
        top = np.argpartition(dark, dark.size - count)[dark.size - count :]
        colour = np.median(small.reshape(-1, 3)[top], axis=0)
        grey = float(colour.mean())
        colour = grey + self.chroma * (colour - grey)
        return np.clip(colour, self.floor, 1.0).astype(np.float32)
