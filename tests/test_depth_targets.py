"""The pair-derived depth estimator: recovers known depth from synthetic pairs, sane on real SOTS pairs."""

from __future__ import annotations

import zlib

import cv2
import numpy as np
import pytest

from dcmp_cli.data.haze import add_haze, normalise_depth_map
from dcmp_cli.training.depth_targets import (
    DepthEstimateError,
    depth_to_disparity_target,
    estimate_airlight,
    estimate_pair_depth,
)

from helpers import shared_path


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra = np.argsort(np.argsort(a.ravel(), kind="stable")).astype(np.float64)
    rb = np.argsort(np.argsort(b.ravel(), kind="stable")).astype(np.float64)
    return float(np.corrcoef(ra, rb)[0, 1])


def textured_scene(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Coloured sinusoid texture with solid blobs, float32 (H, W, 3) in [0.05, 0.95]."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.zeros((height, width, 3), np.float32)
    for c in range(3):
        for _ in range(4):
            fy, fx = rng.uniform(0.02, 0.3, 2)
            image[:, :, c] += rng.uniform(0.05, 0.2) * np.sin(fx * xx + fy * yy + rng.uniform(0, 6.3))
    for _ in range(12):
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(5, 25)
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0, 1, 3) - 0.45
    image += 0.03 * rng.standard_normal(image.shape).astype(np.float32)
    lo, hi = np.percentile(image, [1, 99])
    return np.clip(0.05 + 0.9 * (image - lo) / (hi - lo), 0, 1).astype(np.float32)


def depth_field(kind: str, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    yy = np.mgrid[0:height, 0:width][0].astype(np.float32)
    if kind == "ramp":
        depth = 1 - yy / height
    elif kind == "smooth":
        coarse = rng.standard_normal((height // 16 + 2, width // 16 + 2)).astype(np.float32)
        depth = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    else:  # a ground plane with boxes standing on it
        depth = 1 - yy / height
        for _ in range(3):
            y0, x0 = rng.integers(0, height - 20), rng.integers(0, width - 20)
            depth[y0 : y0 + rng.integers(10, 60), x0 : x0 + rng.integers(10, 60)] = rng.uniform(0, 1)
    return normalise_depth_map(depth)


def eight_bit(x: np.ndarray) -> np.ndarray:
    return (np.round(x * 255) / 255).astype(np.float32)


@pytest.mark.parametrize("kind", ["ramp", "smooth", "planes"])
@pytest.mark.parametrize("beta,airlight", [(0.5, 1.0), (1.2, 0.8), (2.5, 0.9), (1.5, (0.95, 0.9, 0.85))])
def test_recovers_known_depth_on_synthetic_pairs(kind, beta, airlight):
    rng = np.random.default_rng(zlib.crc32(f"{kind}-{beta}".encode()))
    clear = textured_scene(96, 128, rng)
    depth = depth_field(kind, 96, 128, rng)
    hazy = eight_bit(add_haze(clear, depth, beta, np.asarray(airlight, np.float32)))
    result = estimate_pair_depth(hazy, eight_bit(clear))
    assert result.usable
    assert result.depth.shape == depth.shape and result.depth.dtype == np.float32
    assert 0.0 <= result.depth.min() and result.depth.max() <= 1.0
    assert spearman(result.depth, depth) >= 0.95
    np.testing.assert_allclose(result.airlight, np.broadcast_to(airlight, (3,)), atol=0.01)
    assert result.fit_rms < 0.003  # 8-bit quantisation noise, nothing more


def test_airlight_search_reaches_above_one():
    rng = np.random.default_rng(3)
    clear = textured_scene(64, 80, rng) * 0.8
    depth = depth_field("ramp", 64, 80, rng)
    hazy = add_haze(clear, depth, 1.0, 1.1)  # not clipped: clear ≤ 0.8 keeps I < 1 nearly everywhere
    a = estimate_airlight(np.minimum(hazy, 0.999), clear, colour=False)
    assert a == pytest.approx(np.full(3, 1.1), abs=0.01)


def test_pair_without_haze_is_flagged_not_invented():
    rng = np.random.default_rng(4)
    clear = textured_scene(48, 64, rng)
    result = estimate_pair_depth(clear.copy(), clear)
    assert not result.usable
    assert np.all(result.depth == 0.5)


def test_disparity_target_flips_depth():
    depth = np.array([[0.0, 0.25], [0.5, 1.0]], np.float32)
    np.testing.assert_array_equal(depth_to_disparity_target(depth), [[1.0, 0.75], [0.5, 0.0]])


def test_shape_mismatch_is_an_error():
    with pytest.raises(DepthEstimateError, match="one size"):
        estimate_pair_depth(np.zeros((8, 8, 3), np.float32), np.zeros((8, 9, 3), np.float32))


def test_real_sots_pairs_give_full_range_depth():
    from dcmp_cli.data.datasets import discover_pairs, load_pair

    dataset = discover_pairs(shared_path("data", "sots_indoor_sample"))
    for pair in dataset.pairs[:4]:
        hazy, clear, _ = load_pair(pair)
        result = estimate_pair_depth(hazy, clear)
        assert result.usable, pair.name
        assert np.isfinite(result.depth).all()
        assert result.fit_rms < 0.003, (pair.name, result.fit_rms)  # the model explains real SOTS pairs
        assert np.all(np.abs(result.airlight - 1.0) < 0.05), (pair.name, result.airlight)
        lo, hi = np.percentile(result.depth, [1, 99])
        assert lo < 0.02 and hi > 0.98, (pair.name, lo, hi)  # fills the range
        assert result.depth.std() > 0.15  # not collapsed onto a few values
        assert result.informative > 0.8
