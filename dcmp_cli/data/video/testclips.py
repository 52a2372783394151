"""Synthetic hazy clips for tests and benchmarks (frames in memory, no files).

Not part of reading or writing videos: :func:`hazy_clip` makes frames whose haze level
varies the way real footage does, to measure temporal smoothing and flicker.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from dcmp_cli.data.haze import add_haze


def textured_scene(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A clear synthetic scene, float32 (H, W, 3) in [0, 1]: smooth colour waves plus grain."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    phases = rng.uniform(0, 2 * np.pi, size=(3, 2))
    channels = [
        0.45
        + 0.35 * np.sin(xx / 6.0 + phases[c, 0]) * np.cos(yy / 9.0 + phases[c, 1])
        + 0.05 * rng.standard_normal((height, width))
        for c in range(3)
    ]
    return np.clip(np.stack(channels, axis=2), 0.0, 1.0).astype(np.float32)


def hazy_clip(
    num_frames: int = 32,
    height: int = 96,
    width: int = 128,
    *,
    seed: int = 0,
    beta: tuple[float, float] = (1.0, 1.6),
    jitter: float = 0.1,
    airlight: float = 0.85,
    vehicles: int = 2,
    noise: float = 0.01,
    pan: int = 1,
) -> Iterator[np.ndarray]:
    """A hazy clip whose haze level varies: float32 (H, W, 3) frames in [0, 1].

    A clear :func:`textured_scene` with depth from far (top) to near (bottom) is hazed
    with ``I = J·t + A·(1 − t)``, ``t = exp(−β·d)``, grey airlight ``airlight``. The
    thickness β sweeps from ``beta[0]`` to ``beta[1]`` and back over the clip and changes
    by up to ``jitter`` (relative) from frame to frame, like passing fog. ``vehicles``
    near-white 24×18 px boxes near the camera cross the view at different speeds,
    entering and leaving it (the classic trap for the dark channel prior's airlight
    estimate, which jumps to a bright object whenever one is in view). The view pans
    ``pan`` pixels per frame; every frame gets Gaussian sensor noise of standard
    deviation ``noise``.
    """
    rng = np.random.default_rng(seed)
    span = width + pan * max(0, num_frames - 1)
    scene = textured_scene(height, span, seed)
    depth = np.repeat(np.linspace(1.0, 0.0, height, dtype=np.float32)[:, None], span, axis=1)
    box_h, box_w = 18, 24
    for i in range(num_frames):
        phase = np.sin(np.pi * i / max(1, num_frames - 1))  # 0 -> 1 -> 0
        b = (beta[0] + (beta[1] - beta[0]) * phase) * (1.0 + jitter * rng.uniform(-1, 1))
        x0 = pan * i
        clear, d = scene[:, x0 : x0 + width].copy(), depth[:, x0 : x0 + width].copy()
        for k in range(vehicles):
            period = width + 2 * box_w
            x = (i * 7 * (k + 1) + 57 * k) % period - box_w
            y = min(height - box_h, int(0.45 * height) + 20 * k)
            left, right = max(0, x), min(width, x + box_w)
            if right > left:
                clear[y : y + box_h, left:right] = 0.98
                d[y : y + box_h, left:right] = 0.15
        frame = add_haze(clear, d, b, airlight) + noise * rng.standard_normal((height, width, 3)).astype(np.float32)
        yield np.clip(frame, 0.0, 1.0).astype(np.float32)
