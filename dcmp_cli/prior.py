"""The dark channel prior (He, Sun, Tang, CVPR 2009 / TPAMI 2011), with guided-filter refinement.

In haze-free outdoor patches at least one colour channel is nearly black, so the
"dark channel" of a hazy image measures haze. With the scattering model
``I = J·t + A·(1 − t)``:

1. dark channel: per-pixel minimum over RGB, then a ``patch``×``patch`` minimum filter
   (15×15);
2. airlight ``A``: the mean colour of the input over the brightest 0.1 % of the dark
   channel;
3. transmission: ``t = 1 − ω·dark(I / A)`` with ω = 0.95 (keeps a trace of haze for depth
   perception);
4. refinement: a guided filter (He, Sun, Tang, ECCV 2010) with the grey input as guide,
   radius ≈ 1/20 of the shorter side (at least 8), ε = 1e-3;
5. recovery: ``J = (I − A) / max(t, t₀) + A`` with t₀ = 0.1.

Images are float32 (H, W, 3) RGB arrays in [0, 1]; everything runs in OpenCV/NumPy.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class DarkChannelPrior:
    """Parameters of the dark channel prior; defaults are He et al.'s."""

    patch: int = 15
    top_fraction: float = 0.001
    omega: float = 0.95
    t_min: float = 0.1
    guided_radius: int | None = None
    guided_eps: float = 1e-3

    def dark_channel(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) -> (H, W) minimum over channels and a patch."""
        kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (self.patch, self.patch))
        return cv2.erode(np.ascontiguousarray(image.min(axis=2)), kernel, borderType=cv2.BORDER_REPLICATE)

    def airlight(self, image: np.ndarray, dark: np.ndarray | None = None) -> np.ndarray:
        """RGB airlight (3,): the input's mean over the brightest ``top_fraction`` of the dark channel."""
        dark = self.dark_channel(image) if dark is None else dark
        flat = dark.reshape(-1)
        count = max(1, int(round(flat.size * self.top_fraction)))
        brightest = np.argpartition(flat, flat.size - count)[flat.size - count :]
        return image.reshape(-1, 3)[brightest].mean(axis=0).astype(np.float32)

    def raw_transmission(self, image: np.ndarray, airlight: np.ndarray) -> np.ndarray:
        """Unrefined t = 1 − ω·dark(I / A), (H, W)."""
        normalised = image / np.maximum(airlight.reshape(1, 1, 3), 1e-6)
        return 1.0 - self.omega * self.dark_channel(normalised.astype(np.float32))

    def radius(self, height: int, width: int) -> int:
        return self.guided_radius or max(8, round(min(height, width) / 20))

    def transmission(self, image: np.ndarray, airlight: np.ndarray) -> np.ndarray:
        """Guided-filter-refined transmission (H, W) in [0, 1]."""
        raw = self.raw_transmission(image, airlight)
        guide = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
        refined = guided_filter(guide, raw, self.radius(*raw.shape), self.guided_eps)
        return np.clip(refined, 0.0, 1.0)

    def dehaze(self, image: np.ndarray, airlight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Returns (restored image (H, W, 3) in [0, 1], transmission (H, W), airlight (3,)).

        Pass ``airlight`` to override the estimate (e.g. a value smoothed over video frames).
        """
        image = np.ascontiguousarray(image, dtype=np.float32)
        a = self.airlight(image) if airlight is None else np.asarray(airlight, dtype=np.float32)
        t = self.transmission(image, a)
        a3 = a.reshape(1, 1, 3)
        restored = (image - a3) / np.maximum(t, self.t_min)[:, :, None] + a3
        return np.clip(restored, 0.0, 1.0).astype(np.float32), t, a


def guided_filter(guide: np.ndarray, source: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """Grey-guide guided filter (He et al. 2010) with box means: (H, W) float32 -> (H, W)."""
    size = (2 * radius + 1, 2 * radius + 1)

    def mean(x: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(x, cv2.CV_32F, size, borderType=cv2.BORDER_REFLECT)

    guide = guide.astype(np.float32)
    source = source.astype(np.float32)
    mean_i, mean_p = mean(guide), mean(source)
    cov_ip = mean(guide * source) - mean_i * mean_p
    var_i = mean(guide * guide) - mean_i * mean_i
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return mean(a) * guide + mean(b)


def depth_from_transmission(t: np.ndarray, t_floor: float = 1e-3) -> np.ndarray:
    """Relative depth −ln t (larger = farther), unnormalised, (H, W)."""
    return -np.log(np.clip(t, t_floor, 1.0)).astype(np.float32)
