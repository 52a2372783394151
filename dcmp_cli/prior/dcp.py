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
   radius ≈ 1/20 of the shorter side (at least 8), ε = 1e-3, computed on a copy
   subsampled by radius // 8 (the fast guided filter);
5. recovery: ``J = (I − A) / max(t, t₀) + A`` with t₀ = 0.1.

Images are float32 (H, W, 3) RGB arrays in [0, 1]; everything runs in OpenCV/NumPy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import cv2
import numpy as np

from dcmp_cli.prior.base import PriorResult
from dcmp_cli.prior.guided_filter import guided_filter


def _channel_min(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) -> (H, W) minimum over channels (OpenCV reduction: fast on large images)."""
    h, w, c = image.shape
    return cv2.reduce(np.ascontiguousarray(image).reshape(-1, c), 1, cv2.REDUCE_MIN).reshape(h, w)


@dataclass(frozen=True)
class DarkChannelPrior:
    """Parameters of the dark channel prior; defaults are He et al.'s.

    Implementation notes: the patch minimum commutes with the channel minimum and with
    per-channel scaling by 1/A, so one 3-channel erosion serves both the dark channel
    and dark(I / A). The guided filter runs on a copy subsampled by ``radius // 8``
    (He & Sun's fast guided filter, 2015) when the radius is large.
    """

    name: ClassVar[str] = "dcp"
    title: ClassVar[str] = "dark channel prior"

    patch: int = 15
    top_fraction: float = 0.001
    omega: float = 0.95
    t_min: float = 0.1
    guided_radius: int | None = None
    guided_eps: float = 1e-3

    def patch_minimum(self, image: np.ndarray) -> np.ndarray:
        """Per-channel ``patch``×``patch`` minimum filter of (H, W, C)."""
        kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (self.patch, self.patch))
        return cv2.erode(np.ascontiguousarray(image), kernel, borderType=cv2.BORDER_REPLICATE)

    def dark_channel(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) -> (H, W) minimum over channels and a patch."""
        return _channel_min(self.patch_minimum(image))

    def airlight(self, image: np.ndarray, dark: np.ndarray | None = None) -> np.ndarray:
        """RGB airlight (3,): the input's mean over the brightest ``top_fraction`` of the dark channel."""
        dark = self.dark_channel(image) if dark is None else dark
        flat = dark.reshape(-1)
        count = max(1, int(round(flat.size * self.top_fraction)))
        brightest = np.argpartition(flat, flat.size - count)[flat.size - count :]
        return image.reshape(-1, 3)[brightest].mean(axis=0).astype(np.float32)

    def raw_transmission(self, image: np.ndarray, airlight: np.ndarray, eroded: np.ndarray | None = None) -> np.ndarray:
        """Unrefined t = 1 − ω·dark(I / A), (H, W). ``eroded``: a precomputed :meth:`patch_minimum`."""
        eroded = self.patch_minimum(image) if eroded is None else eroded
        scale = np.diag(1.0 / np.maximum(np.asarray(airlight, np.float32), 1e-6)).astype(np.float32)
        dark = _channel_min(cv2.transform(eroded, scale))
        return 1.0 - self.omega * dark

    def radius(self, height: int, width: int) -> int:
        return self.guided_radius or max(8, round(min(height, width) / 20))

    def refine(self, image: np.ndarray, raw: np.ndarray) -> np.ndarray:
        """Guided-filter refinement of a raw transmission, clipped to [0, 1]."""
        guide = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
        radius = self.radius(*raw.shape)
        refined = guided_filter(guide, raw, radius, self.guided_eps, subsample=max(1, radius // 8))
        return np.clip(refined, 0.0, 1.0, out=refined)

    def transmission(self, image: np.ndarray, airlight: np.ndarray) -> np.ndarray:
        """Guided-filter-refined transmission (H, W) in [0, 1]."""
        return self.refine(image, self.raw_transmission(image, airlight))

    def estimate_globals(self, image: np.ndarray) -> np.ndarray:
        """The airlight (3,): the prior's only image-global quantity."""
        return self.airlight(np.ascontiguousarray(image, dtype=np.float32))

    def dehaze(self, image: np.ndarray, globals: np.ndarray | None = None) -> PriorResult:
        """Restored image (H, W, 3) in [0, 1], transmission (H, W) and airlight (3,).

        Pass ``globals`` (an airlight) to override the estimate (e.g. a value smoothed over video frames).
        """
        image = np.ascontiguousarray(image, dtype=np.float32)
        eroded = self.patch_minimum(image)
        a = self.airlight(image, _channel_min(eroded)) if globals is None else np.asarray(globals, dtype=np.float32)
        t = self.refine(image, self.raw_transmission(image, a, eroded))
        return PriorResult(recover(image, t, a, self.t_min), t, a)

    def depth_transmission(self, image: np.ndarray, globals: np.ndarray | None = None) -> np.ndarray:
        """The refined transmission (H, W), the same the restoration uses."""
        return self.dehaze(image, globals).transmission


def recover(image: np.ndarray, t: np.ndarray, airlight: np.ndarray, t_min: float = 0.1, rows: int = 128) -> np.ndarray:
    """J = (I − A) / max(t, t_min) + A, clipped to [0, 1]; in row blocks that stay in cache."""
    out = np.empty_like(image)
    inverse = 1.0 / np.maximum(t, t_min)
    a3 = np.asarray(airlight, np.float32).reshape(1, 1, 3)
    for y in range(0, image.shape[0], rows):
        block = out[y : y + rows]
        np.subtract(image[y : y + rows], a3, out=block)
        block *= inverse[y : y + rows, :, None]
        block += a3
        np.clip(block, 0.0, 1.0, out=block)
    return out
