"""The atmospheric scattering model, for synthesising hazy images.

A hazy image is ``I = J·t + A·(1 − t)`` with ``J`` the clear scene, ``A`` the airlight
and ``t = exp(−β·d)`` the transmission at scene depth ``d``. dcmp uses depth maps
normalised per image to [0, 1] (0 = nearest, 1 = farthest), so β is "optical thickness
at the far end": with β = 1.8 the farthest point keeps exp(−1.8) ≈ 17 % of its light.
"""

from __future__ import annotations

import numpy as np


def transmission(depth: np.ndarray, beta: float) -> np.ndarray:
    """t = exp(−β·d) for a depth map (H, W)."""
    return np.exp(-beta * depth).astype(np.float32)


def add_haze(clear: np.ndarray, depth: np.ndarray, beta: float, airlight: float | np.ndarray) -> np.ndarray:
    """Hazes a clear float RGB image (H, W, 3) in [0, 1] with depth (H, W) in [0, 1].

    ``airlight`` is a grey level or an RGB triple. Returns float32 (H, W, 3) in [0, 1].
    """
    t = transmission(depth, beta)[:, :, None]
    a = np.asarray(airlight, dtype=np.float32).reshape(1, 1, -1)
    return np.clip(clear * t + a * (1.0 - t), 0.0, 1.0).astype(np.float32)


def normalise_depth_map(depth: np.ndarray) -> np.ndarray:
    """Any depth map (H, W) (larger = farther) -> [0, 1] per image."""
    depth = depth.astype(np.float32)
    lo, hi = float(depth.min()), float(depth.max())
    return (depth - lo) / (hi - lo) if hi > lo else np.zeros_like(depth)


def vertical_gradient_depth(height: int, width: int, near: float = 0.0, far: float = 1.0) -> np.ndarray:
    """A stand-in depth model for photos without depth: a ground plane seen level.

    The top row is farthest (``far``), the bottom row nearest (``near``), linear in
    between. Crude but monotone like most landscape and street photos; it is a stand-in,
    not an estimate of the scene.
    """
    column = np.linspace(far, near, height, dtype=np.float32)
    return np.repeat(column[:, None], width, axis=1)
