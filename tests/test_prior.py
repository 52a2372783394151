"""Dark channel prior: its parts against hand-checkable cases, and that it removes haze."""

from __future__ import annotations

import numpy as np
import pytest

from dcmp_cli.data.haze import add_haze
from dcmp_cli.prior import DarkChannelPrior, depth_from_transmission, guided_filter

from helpers import synthetic_hazy


def _psnr(a, b):
    return 20 * np.log10(1.0 / np.sqrt(np.mean((a - b) ** 2)))


def test_dark_channel_is_the_patch_minimum_over_channels():
    rng = np.random.default_rng(0)
    image = rng.random((40, 50, 3), dtype=np.float32)
    prior = DarkChannelPrior(patch=5)
    dark = prior.dark_channel(image)
    padded = np.pad(image.min(axis=2), 2, mode="edge")
    expected = np.min([padded[dy : dy + 40, dx : dx + 50] for dy in range(5) for dx in range(5)], axis=0)
    np.testing.assert_array_equal(dark, expected)


def test_airlight_comes_from_the_haziest_pixels():
    rng = np.random.default_rng(1)
    image = rng.random((100, 100, 3), dtype=np.float32) * 0.3
    image[:20, :20] = [0.92, 0.90, 0.88]  # an opaque, hazy patch
    airlight = DarkChannelPrior().airlight(image)
    np.testing.assert_allclose(airlight, [0.92, 0.90, 0.88], atol=1e-6)


def test_guided_filter_limits():
    rng = np.random.default_rng(2)
    source = rng.random((64, 80), dtype=np.float32)
    # Guided by itself with tiny eps, the filter preserves the signal (edge-preserving limit).
    assert np.abs(guided_filter(source, source, 4, 1e-8) - source).max() < 1e-3
    # With a constant guide it reduces to a box mean.
    smooth = guided_filter(np.full_like(source, 0.5), source, 4, 1e-3)
    assert smooth.std() < source.std() / 3
    # The fast (subsampled) filter stays close to the full one on smooth signals.
    yy, xx = np.mgrid[0:256, 0:256].astype(np.float32)
    guide = (np.sin(xx / 40) * np.cos(yy / 30) + 1) / 2
    target = guide * 0.7 + 0.1
    full = guided_filter(guide, target, 32, 1e-3)
    fast = guided_filter(guide, target, 32, 1e-3, subsample=4)
    assert np.abs(full - fast).mean() < 0.01


@pytest.mark.parametrize("beta, airlight", [(1.0, 0.8), (1.6, 0.95)])
def test_prior_removes_synthetic_haze_and_orders_depth(beta, airlight):
    clear, hazy, depth = synthetic_hazy(160, 200, seed=4, beta=beta, airlight=airlight)
    restored, t, a = DarkChannelPrior().dehaze(hazy)
    assert restored.shape == hazy.shape and restored.dtype == np.float32
    assert 0.0 <= restored.min() and restored.max() <= 1.0
    assert _psnr(restored, clear) > _psnr(hazy, clear) + 3.0
    assert np.abs(a - airlight).max() < 0.15
    estimated = depth_from_transmission(t)
    rank = lambda x: np.argsort(np.argsort(x.ravel()))  # noqa: E731
    assert np.corrcoef(rank(estimated), rank(depth))[0, 1] > 0.8


def test_given_airlight_overrides_the_estimate():
    _, hazy, _ = synthetic_hazy(64, 64, seed=5)
    _, _, a = DarkChannelPrior().dehaze(hazy, globals=np.array([0.5, 0.6, 0.7], np.float32))
    np.testing.assert_allclose(a, [0.5, 0.6, 0.7], rtol=1e-6)


def test_haze_model_round_trip():
    clear, _, depth = synthetic_hazy(32, 32, seed=6)
    hazy = add_haze(clear, depth, beta=1.2, airlight=0.9)
    t = np.exp(-1.2 * depth)[:, :, None]
    np.testing.assert_allclose((hazy - 0.9 * (1 - t)) / t, clear, atol=1e-5)
