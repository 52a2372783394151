"""The weight-free default: a dark channel prior that holds up on real photos (``--method layered``).

Classic haze removal ``J = (I − A) / t + A`` (He, Sun, Tang 2009) multiplies *everything*
in the input by the gain 1/t: in a flat bright sky or dense fog t is small, and JPEG
8×8 blocks, chroma blotches and sensor noise come out 3–10× stronger. This method keeps
the dark channel prior's transmission but changes what the gain is applied to, and where:

1. **Airlight** — :class:`~dcmp_cli.prior.airlight.RobustAirlight`: large-patch dark
   channel on a small copy, median colour of its top 0.5 %, half its tint removed (no
   hijacking by white objects, no casts from tinted light).
2. **Transmission** on a small copy (shorter side 256 px): ``t = 1 − ω·dark(I / A)``
   (He et al. 2009) with ω = 0.93 (a little more haze kept than He's 0.95: real clear
   photos are only 20–30 % darker than hazy ones).
3. **Sky/fog tolerance** (Jiang, Hou, Qi 2011; the "K" tolerance of later DCP variants):
   where the scene colour is within ``K`` (0.25) of the airlight (sky, fog banks, smoke)
   the prior does not hold, so ``t ← min(1, max(K / |I − A|, 1) · t)``, |·| the largest
   channel difference.
4. **Refinement and upsampling** with the guided filter (He, Sun, Tang 2010) on the small
   copy; its linear coefficients are upsampled to full size and applied to the full-size
   grey image (the fast guided filter, He & Sun 2015), so edges stay sharp.
5. **Layered recovery** (edge-preserving decomposition, as in Li, Zheng, Pan, Yao et al.,
   "Edge-preserving decomposition-based single image haze removal", TIP 2015): a
   self-guided guided filter splits the input into a *base* (edges and shading kept,
   variations below ``base_eps``^½ ≈ 0.02 flattened) and the *detail* residual (noise,
   JPEG blocks, faint texture). The base is dehazed with the full gain 1/max(t, t₀);
   the detail is added back with gain min(1/t, ``detail_gain``). Edges and shading get
   their contrast back; blocks and noise are not blown up.
6. **Exposure floor**: if the restored image's mean luma falls below ``exposure_floor``
   (0.55) of the input's (measured on a 128-px copy), a global gamma brings it up to that
   ratio (the darkest outputs only, e.g. night scenes; real clear photos are ~20–30 %
   darker than hazy ones).

Image-global quantities (``globals``, for video smoothing): airlight R, G, B and the
exposure gamma (1 = none), float32 (4,). Images are float32 RGB (H, W, 3) in [0, 1].
Memory: the full-size work is a few float32 planes per pixel, done in row strips.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import ClassVar

import cv2
import numpy as np

from dcmp_cli.prior.airlight import RobustAirlight, channel_max, channel_min, downscale, odd, patch_minimum
from dcmp_cli.prior.base import PriorResult

_GREY = np.array([[0.299, 0.587, 0.114]], np.float32)
#: Rows of the full-size image processed at a time in the recovery (keeps buffers in cache, bounds memory).
STRIP_ROWS = 256


def grey(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB -> (H, W) BT.601 luma."""
    return cv2.transform(image, _GREY).reshape(image.shape[:2])


def box(x: np.ndarray, radius: int) -> np.ndarray:
    """Mean over a (2r+1)² window, reflected borders."""
    return cv2.boxFilter(x, -1, (2 * radius + 1, 2 * radius + 1), borderType=cv2.BORDER_REFLECT)


class Upsampler:
    """Bilinear upsampling of a small map (h, w[, c]) to (height, width), produced a strip of rows at a time.

    Same sampling as ``cv2.resize(..., INTER_LINEAR)`` (pixel centres aligned, edges clamped), without a
    full-size buffer: rows are interpolated on the small width, then resized horizontally.
    """

    def __init__(self, small: np.ndarray, height: int, width: int) -> None:
        self.small, self.height, self.width = small, height, width
        h = small.shape[0]
        y = (np.arange(height, dtype=np.float64) + 0.5) * (h / height) - 0.5
        y = np.clip(y, 0.0, h - 1)
        self.i0 = np.floor(y).astype(np.intp)
        self.i1 = np.minimum(self.i0 + 1, h - 1)
        self.frac = (y - self.i0).astype(np.float32)

    def rows(self, y0: int, y1: int) -> np.ndarray:
        """Rows [y0, y1) of the upsampled map, (y1 − y0, width[, c]) float32."""
        if self.small.shape[:2] == (self.height, self.width):
            return self.small[y0:y1]
        frac = self.frac[y0:y1].reshape(-1, *([1] * (self.small.ndim - 1)))
        top = self.small[self.i0[y0:y1]]
        block = top + (self.small[self.i1[y0:y1]] - top) * frac
        return cv2.resize(block, (self.width, y1 - y0), interpolation=cv2.INTER_LINEAR)


@dataclass(frozen=True)
class LayeredDehazer:
    """Parameters of the layered dark-channel dehazer (see the module docstring)."""

    name: ClassVar[str] = "layered"
    title: ClassVar[str] = "layered dehazer"

    airlight: RobustAirlight = field(default_factory=RobustAirlight)
    #: Shorter side of the copy on which the transmission is estimated.
    work_side: int = 256
    #: Dark-channel patch as a fraction of the working copy's shorter side (1/24 ≈ 15 px at 360 px).
    patch_fraction: float = 1 / 24
    omega: float = 0.93
    tolerance: float = 0.25
    t_min: float = 0.1
    #: Guided-filter refinement of t: radius as a fraction of the shorter side, and ε.
    guided_fraction: float = 1 / 20
    guided_eps: float = 1e-3
    #: Base/detail split: radius (full-size px) and ε of the self-guided filter.
    base_radius: int = 8
    base_eps: float = 0.02**2
    #: Largest gain given to the detail layer (1 = detail kept as in the input).
    detail_gain: float = 1.0
    #: Lowest output/input mean-luma ratio before the exposure gamma steps in (0 = off).
    exposure_floor: float = 0.55
    #: Shorter side of the copy on which the exposure gamma is measured.
    exposure_side: int = 128

    # ------------------------------------------------------------------ transmission (small copy)

    def raw_transmission(self, small: np.ndarray, airlight: np.ndarray) -> np.ndarray:
        """t = 1 − ω·dark(I / A), raised where I is within ``tolerance`` of A; (h, w) of the small copy."""
        a = np.maximum(np.asarray(airlight, np.float32), 1e-3)
        patch = odd(min(small.shape[:2]) * self.patch_fraction)
        dark = channel_min(patch_minimum(cv2.transform(small, np.diag(1.0 / a).astype(np.float32)), patch))
        t = 1.0 - self.omega * dark
        if self.tolerance > 0:
            distance = channel_max(cv2.absdiff(small, np.broadcast_to(a, small.shape).astype(np.float32)))
            boost = np.maximum(self.tolerance / np.maximum(distance, 1e-3), 1.0)
            t = np.minimum(t * boost, 1.0)
        return t.astype(np.float32)

    def coefficients(self, small: np.ndarray, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Guided-filter coefficients (a, b), t ≈ a·grey + b, on the small copy (grey guide)."""
        guide = grey(small)
        r = max(2, round(min(small.shape[:2]) * self.guided_fraction))
        mean_i, mean_p = box(guide, r), box(raw, r)
        a = (box(guide * raw, r) - mean_i * mean_p) / (box(guide * guide, r) - mean_i * mean_i + self.guided_eps)
        b = mean_p - a * mean_i
        return box(a, r), box(b, r)

    def transmission(self, image: np.ndarray, small: np.ndarray, airlight: np.ndarray) -> np.ndarray:
        """Full-size t (H, W) in [0, 1]: the small copy's guided-filter coefficients applied to the full grey image."""
        h, w = image.shape[:2]
        coef_a, coef_b = (Upsampler(c, h, w) for c in self.coefficients(small, self.raw_transmission(small, airlight)))
        t = np.empty((h, w), np.float32)
        for y in range(0, h, STRIP_ROWS):
            y1 = min(h, y + STRIP_ROWS)
            np.clip(coef_a.rows(y, y1) * grey(image[y:y1]) + coef_b.rows(y, y1), 0.0, 1.0, out=t[y:y1])
        return t

    # ------------------------------------------------------------------ recovery (full size)

    def base_coefficients(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Self-guided filter coefficients (a, b) per channel, base = a·I + b, on a half-size copy."""
        h, w = image.shape[:2]
        sub = 2 if min(h, w) >= 4 * self.base_radius else 1
        small = (
            cv2.resize(image, (max(1, w // sub), max(1, h // sub)), interpolation=cv2.INTER_AREA) if sub > 1 else image
        )
        r = max(1, self.base_radius // sub)
        mean = box(small, r)
        var = box(small * small, r) - mean * mean
        a = var / (var + self.base_eps)
        b = mean - a * mean
        return box(a, r), box(b, r)

    def base(self, image: np.ndarray) -> np.ndarray:
        """Edge-preserving base layer (H, W, 3): edges and shading kept, small-amplitude variations flattened."""
        h, w = image.shape[:2]
        a, b = (Upsampler(c, h, w) for c in self.base_coefficients(image))
        return cv2.add(cv2.multiply(a.rows(0, h), image), b.rows(0, h))

    def recover(self, image: np.ndarray, t: np.ndarray, airlight: np.ndarray) -> np.ndarray:
        """J = A + (base − A)/t + detail·min(1/t, detail_gain), clipped to [0, 1]; (H, W, 3) float32.

        Works in row strips: no full-size temporary besides the output.
        """
        h, w = image.shape[:2]
        coef_a, coef_b = (Upsampler(c, h, w) for c in self.base_coefficients(image))
        a3 = np.asarray(airlight, np.float32).reshape(1, 1, 3)
        out = np.empty_like(image)
        for y in range(0, h, STRIP_ROWS):
            y1 = min(h, y + STRIP_ROWS)
            strip = image[y:y1]
            base = cv2.add(cv2.multiply(coef_a.rows(y, y1), strip), coef_b.rows(y, y1))
            excess = 1.0 / np.maximum(t[y:y1], self.t_min) - 1.0  # gain − 1 ≥ 0
            block = out[y:y1]
            np.subtract(base, a3, out=block)
            if self.detail_gain <= 1.0:  # A + (B − A)·g + (I − B)  =  I + (B − A)·(g − 1)
                block *= excess[..., None]
                block += strip
            else:  # A + (B − A)·g + (I − B)·gd
                detail_gain = np.minimum(excess + 1.0, self.detail_gain)[..., None]
                block *= (excess + 1.0)[..., None]
                block += a3
                block += (strip - base) * detail_gain
            np.clip(block, 0.0, 1.0, out=block)
        return out

    # ------------------------------------------------------------------ globals

    def exposure_gamma(self, small: np.ndarray, restored: np.ndarray) -> float:
        """Gamma (≤ 1) bringing the restored mean luma up to ``exposure_floor`` × the input's; 1 if not needed."""
        if self.exposure_floor <= 0:
            return 1.0
        target = self.exposure_floor * float(grey(small).mean())
        luma = grey(restored)
        if float(luma.mean()) >= target:
            return 1.0
        lo, hi = 0.2, 1.0
        for _ in range(16):  # mean(luma^γ) falls as γ rises: bisection
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if float(cv2.pow(luma, mid).mean()) >= target else (lo, mid)
        return 0.5 * (lo + hi)

    def _small_transmission(self, small: np.ndarray, airlight: np.ndarray) -> np.ndarray:
        ca, cb = self.coefficients(small, self.raw_transmission(small, airlight))
        return np.clip(ca * grey(small) + cb, 0.0, 1.0)

    def _globals(self, small: np.ndarray) -> np.ndarray:
        a = self.airlight.from_small(downscale(small, self.airlight.side))
        gamma = 1.0
        if self.exposure_floor > 0:
            tiny = downscale(small, self.exposure_side)
            gamma = self.exposure_gamma(tiny, self.recover(tiny, self._small_transmission(tiny, a), a))
        return np.array([*a, gamma], np.float32)

    def estimate_globals(self, image: np.ndarray) -> np.ndarray:
        """Airlight R, G, B and exposure gamma, float32 (4,)."""
        return self._globals(downscale(np.ascontiguousarray(image, dtype=np.float32), self.work_side))

    # ------------------------------------------------------------------ the method

    def dehaze(self, image: np.ndarray, globals: np.ndarray | None = None) -> PriorResult:
        """Restored image (H, W, 3) in [0, 1], transmission (H, W) in [0, 1], globals (4,).

        ``globals`` (airlight R, G, B, gamma; e.g. smoothed over video frames) replaces the estimate.
        """
        image = np.ascontiguousarray(image, dtype=np.float32)
        _h, _w = image.shape[:2]
        small = downscale(image, self.work_side)
        g = self._globals(small) if globals is None else np.asarray(globals, np.float32).reshape(-1)
        if g.shape != (4,):
            raise ValueError(f"globals must hold 4 values (airlight R, G, B, gamma), got {g.shape}")
        airlight, gamma = g[:3], float(g[3])
        t = self.transmission(image, small, airlight)
        restored = self.recover(image, t, airlight)
        if abs(gamma - 1.0) > 1e-4:
            restored = cv2.pow(restored, gamma)
        return PriorResult(restored, t, g)

    def depth_transmission(self, image: np.ndarray, globals: np.ndarray | None = None) -> np.ndarray:
        """Full-size t (H, W) without the sky/fog tolerance: dense haze (I near A) reads as far, as
        the scattering model says, instead of being raised for a gentler restoration."""
        image = np.ascontiguousarray(image, dtype=np.float32)
        small = downscale(image, self.work_side)
        g = self._globals(small) if globals is None else np.asarray(globals, np.float32).reshape(-1)
        return replace(self, tolerance=0.0).transmission(image, small, g[:3])
