"""The guided filter (He, Sun, Tang, ECCV 2010 / TPAMI 2013) and its fast form (He & Sun 2015)."""

from __future__ import annotations

import cv2
import numpy as np


def guided_filter(guide: np.ndarray, source: np.ndarray, radius: int, eps: float, subsample: int = 1) -> np.ndarray:
    """Grey-guide guided filter (He et al. 2010) with box means: (H, W) float32 -> (H, W).

    ``subsample`` > 1 computes the linear coefficients on copies reduced by that factor
    and upsamples them (the fast guided filter); the output keeps full resolution.
    """
    guide = np.ascontiguousarray(guide, dtype=np.float32)
    source = np.ascontiguousarray(source, dtype=np.float32)
    h, w = guide.shape
    small_size = (max(1, w // subsample), max(1, h // subsample))
    g = cv2.resize(guide, small_size, interpolation=cv2.INTER_AREA) if subsample > 1 else guide
    p = cv2.resize(source, small_size, interpolation=cv2.INTER_AREA) if subsample > 1 else source
    r = max(1, radius // subsample)
    size = (2 * r + 1, 2 * r + 1)

    def mean(x: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(x, cv2.CV_32F, size, borderType=cv2.BORDER_REFLECT)

    mean_i, mean_p = mean(g), mean(p)
    a = (mean(g * p) - mean_i * mean_p) / (mean(g * g) - mean_i * mean_i + eps)
    b = mean_p - a * mean_i
    mean_a, mean_b = mean(a), mean(b)
    if subsample > 1:
        mean_a = cv2.resize(mean_a, (w, h), interpolation=cv2.INTER_LINEAR)
        mean_b = cv2.resize(mean_b, (w, h), interpolation=cv2.INTER_LINEAR)
    return mean_a * guide + mean_b
