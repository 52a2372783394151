"""PSNR/SSIM under both protocols, checked by hand and against an independent implementation;
no-reference measures checked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dcmp_cli.data.datasets import discover_pairs, load_pair
from dcmp_cli.data.image_io import image_to_tensor
from dcmp_cli.metrics import (
    IDENTICAL_PSNR,
    PROTOCOLS,
    gaussian_window,
    psnr,
    score,
    ssim,
    ssim_downscale,
    ssim_map,
)
from dcmp_cli.noref import colourfulness, haze_density, no_reference, rms_contrast
from dcmp_cli.prior import DarkChannelPrior

from helpers import shared_path, synthetic_hazy

C1, C2 = 0.01**2, 0.03**2


# --- An independent implementation of the protocols as dcmp_cli.metrics documents them (float32, block means,
# --- a Gaussian built from math.exp, dcmpnet: 2-D conv padding 5; dehazeformer: separable, valid).


def _gauss(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    values = [math.exp(-((i - size // 2) ** 2) / (2 * sigma * sigma)) for i in range(size)]
    total = sum(values)
    return torch.tensor([v / total for v in values], dtype=torch.float32)


def _block_mean(x: torch.Tensor) -> torch.Tensor:
    _, c, h, w = x.shape
    r = max(1, round(min(h, w) / 256))
    assert h % r == 0 and w % r == 0, "the independent version needs sizes divisible by the ratio"
    return x.reshape(1, c, h // r, r, w // r, r).mean(dim=(3, 5))


def independent_psnr(out: torch.Tensor, gt: torch.Tensor) -> float:
    mse = torch.mean((out.float().clamp(0, 1) - gt.float().clamp(0, 1)) ** 2).item()
    return 100.0 if mse == 0 else 10 * math.log10(1 / mse)


def independent_ssim(out: torch.Tensor, gt: torch.Tensor, protocol: str) -> float:
    # channels become the batch: (C, 1, h, w), one single-channel filter
    x = _block_mean(out.float().clamp(0, 1)).transpose(0, 1)
    y = _block_mean(gt.float().clamp(0, 1)).transpose(0, 1)
    g = _gauss()
    if protocol == "dcmpnet":
        kernel = torch.outer(g, g).view(1, 1, 11, 11)

        def blur(t):
            return F.conv2d(t, kernel, padding=5)
    else:
        row, col = g.view(1, 1, 1, 11), g.view(1, 1, 11, 1)

        def blur(t):
            return F.conv2d(F.conv2d(t, row), col)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    m = ((2 * mx * my + C1) * (2 * cxy + C2)) / ((mx * mx + my * my + C1) * (vx + vy + C2))
    return m.mean().item()


def assert_agrees(out: torch.Tensor, gt: torch.Tensor) -> None:
    for protocol in PROTOCOLS:
        ours = score(out, gt, protocol)
        assert abs(ours.psnr - independent_psnr(out, gt)) <= 0.01, protocol
        assert abs(ours.ssim - independent_ssim(out, gt, protocol)) <= 0.001, protocol


def _texture(h: int, w: int, seed: int = 0) -> torch.Tensor:
    clear, _, _ = synthetic_hazy(h, w, seed=seed)
    return image_to_tensor(clear)


# --- hand-computed cases


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_identical_images(protocol):
    x = _texture(64, 80)
    assert psnr(x, x) == IDENTICAL_PSNR == 100.0
    assert ssim(x, x, protocol) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("delta", [0.01, 0.05, 0.2])
def test_uniform_offset_psnr_is_exact(delta):
    x = _texture(48, 64).double() * 0.7  # stays in [0, 0.7], so +delta is not clamped
    assert psnr(x + delta, x) == pytest.approx(20 * math.log10(1 / delta), abs=1e-9)


def test_uniform_offset_ssim_on_a_flat_image_matches_the_formula():
    mu, delta = 0.5, 0.05
    flat = torch.full((1, 3, 40, 40), mu, dtype=torch.float64)
    expected = (2 * mu * (mu + delta) + C1) / (mu**2 + (mu + delta) ** 2 + C1)  # contrast/structure term is 1
    assert ssim(flat + delta, flat, "dehazeformer") == pytest.approx(expected, abs=1e-12)
    interior = ssim_map(flat + delta, flat, "same")[..., 5:-5, 5:-5]
    assert torch.allclose(interior, torch.full_like(interior, expected), atol=1e-12)


@pytest.mark.parametrize("sigma", [0.01, 0.05, 0.1])
def test_gaussian_noise_of_known_sigma(sigma):
    gen = torch.Generator().manual_seed(0)
    clean = torch.full((1, 3, 256, 256), 0.5, dtype=torch.float64)
    noisy = clean + sigma * torch.randn(clean.shape, generator=gen, dtype=torch.float64)
    assert float(noisy.min()) > 0 and float(noisy.max()) < 1  # no clamping
    assert psnr(noisy, clean) == pytest.approx(-20 * math.log10(sigma), abs=0.05)


def test_shifted_images():
    x = _texture(96, 128)
    previous = 1.0
    for shift in (1, 2, 4, 8):
        a, b = x[..., :, shift:], x[..., :, :-shift]  # b is a moved right by `shift` pixels
        rmse = float(np.sqrt(np.mean((a.numpy().astype(np.float64) - b.numpy()) ** 2)))
        assert psnr(a, b) == pytest.approx(20 * math.log10(1 / rmse), abs=1e-9)
        value = ssim(a, b)
        assert value < previous  # the further the shift, the lower the SSIM
        assert ssim(b, a) == pytest.approx(value, abs=1e-12)  # symmetric
        previous = value
    assert previous < 0.9


def test_outputs_are_clamped_before_measuring():
    x = _texture(32, 32)
    assert psnr(x + 2.0, torch.ones_like(x)) == IDENTICAL_PSNR
    assert psnr(x - 2.0, torch.zeros_like(x)) == IDENTICAL_PSNR


@pytest.mark.parametrize(
    ("size", "pooled"),
    [
        ((460, 620), (230, 310)),  # SOTS-indoor: ratio 2
        ((480, 640), (240, 320)),
        ((256, 300), (256, 300)),  # ratio 1: untouched
        ((383, 500), (383, 500)),  # round(1.496) = 1
        ((640, 640), (320, 320)),  # round(2.5) = 2: Python's round, as the authors' script
        ((1080, 1920), (270, 480)),  # round(4.22) = 4
    ],
)
def test_ssim_downscale_ratio(size, pooled):
    assert tuple(ssim_downscale(torch.zeros(1, 3, *size)).shape[2:]) == pooled


def test_protocols_differ_only_by_the_padding():
    out, gt = _texture(60, 90, seed=1), _texture(60, 90, seed=2)
    same = ssim_map(out.double(), gt.double(), "same")
    valid = ssim_map(out.double(), gt.double(), "valid")
    assert valid.shape[2:] == (50, 80)
    assert torch.allclose(same[..., 5:-5, 5:-5], valid, atol=1e-12)
    assert ssim(out, gt, "dehazeformer") == pytest.approx(valid.mean().item(), abs=1e-12)
    assert ssim(out, gt, "dcmpnet") == pytest.approx(same.mean().item(), abs=1e-12)
    # zero padding drags the border windows' means down, so the two protocols do differ
    assert abs(ssim(out, gt, "dcmpnet") - ssim(out, gt, "dehazeformer")) > 1e-4


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_ssim_map_equals_a_direct_float64_2d_convolution(padding):
    out, gt = _texture(40, 52, seed=4).double(), _texture(40, 52, seed=5).double()
    g = gaussian_window()  # float64; this checks the separable blur, not the window
    kernel = torch.outer(g, g).expand(3, 1, 11, 11).contiguous()

    def blur(t):
        return F.conv2d(t, kernel, padding=5 if padding == "same" else 0, groups=3)

    mx, my = blur(out), blur(gt)
    vx, vy, cxy = blur(out * out) - mx * mx, blur(gt * gt) - my * my, blur(out * gt) - mx * my
    direct = ((2 * mx * my + C1) * (2 * cxy + C2)) / ((mx * mx + my * my + C1) * (vx + vy + C2))
    ours = ssim_map(out, gt, padding)
    assert ours.shape == direct.shape and ours.dtype == torch.float64
    assert torch.allclose(ours, direct, rtol=0, atol=1e-12)


def test_unknown_protocol_and_shape_mismatch_raise():
    x = _texture(32, 32)
    with pytest.raises(ValueError, match="unknown protocol"):
        ssim(x, x, "psnr-only")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(x, x[..., :31])


# --- agreement with the independent implementation


@pytest.mark.parametrize("size", [(460, 620), (256, 256), (48, 64)])
def test_agrees_with_independent_implementation_on_synthetic_outputs(size):
    clear, hazy, _ = synthetic_hazy(*size, seed=3)
    gt = image_to_tensor(clear)
    assert_agrees(image_to_tensor(DarkChannelPrior().dehaze(hazy)[0]), gt)
    if size[0] <= 256:
        assert_agrees(image_to_tensor(hazy), gt)
        noisy = (gt + 0.03 * torch.randn(gt.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
        assert_agrees(noisy, gt)


def _check_sots_pairs(count: int | None) -> None:
    dataset = discover_pairs(shared_path("data", "sots_indoor_sample"))
    prior = DarkChannelPrior()
    for pair in dataset.pairs[:count]:
        hazy, clear, _ = load_pair(pair)
        gt = image_to_tensor(clear)
        assert_agrees(image_to_tensor(hazy), gt)
        assert_agrees(image_to_tensor(prior.dehaze(hazy)[0]), gt)


def test_agrees_with_independent_implementation_on_real_sots_pairs():
    _check_sots_pairs(2)


@pytest.mark.slow
def test_agrees_with_independent_implementation_on_all_sots_sample_pairs():
    _check_sots_pairs(None)


# --- no-reference measures


def test_colourfulness_by_hand():
    grey = torch.rand(1, 1, 20, 20).expand(1, 3, 20, 20)
    assert colourfulness(grey) == pytest.approx(0.0, abs=1e-9)
    image = torch.zeros(3, 10, 10)
    image[0, :, :5] = 1.0  # left half pure red
    image[2, :, 5:] = 1.0  # right half pure blue
    # rg: 255 | 0 -> mean 127.5, std 127.5;  yb: 127.5 | -255 -> mean -63.75, std 191.25
    expected = math.hypot(127.5, 191.25) + 0.3 * math.hypot(127.5, 63.75)
    assert colourfulness(image) == pytest.approx(expected, rel=1e-9)


def test_rms_contrast_by_hand():
    assert rms_contrast(torch.full((3, 8, 8), 0.3)) == pytest.approx(0.0, abs=1e-9)
    half = torch.zeros(3, 8, 8)
    half[:, :, 4:] = 1.0  # luma 0 | 1
    assert rms_contrast(half) == pytest.approx(0.5, abs=1e-6)


def test_haze_density_by_hand():
    assert haze_density(torch.full((3, 32, 32), 0.3)) == pytest.approx(0.3, abs=1e-6)
    image = torch.full((3, 64, 64), 0.8)
    image[:, 20, 20] = 0.0  # one black pixel darkens its 15×15 neighbourhood
    assert haze_density(image) == pytest.approx(0.8 * (1 - 15 * 15 / (64 * 64)), abs=1e-6)
    one_channel_black = torch.rand(3, 32, 32)
    one_channel_black[2] = 0.0
    assert haze_density(one_channel_black) == 0.0


def test_haze_raises_density_and_lowers_colour_and_contrast():
    clear, hazy, _ = synthetic_hazy(64, 96, beta=1.5, airlight=0.9)
    before, after = no_reference(image_to_tensor(clear)), no_reference(image_to_tensor(hazy))
    assert after.haze > before.haze + 0.2
    assert after.colourfulness < before.colourfulness
    assert after.contrast < before.contrast


# --- change measures (input -> output of a dehazer)


def _smooth_bright(height: int = 96, width: int = 128, noise: float = 0.01, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.linspace(0.7, 0.8, width, dtype=np.float32)[None, :, None] * np.ones((height, 1, 3), np.float32)
    return np.clip(base + noise * rng.standard_normal((height, width, 1)).astype(np.float32), 0, 1)


def test_noise_amplification_measures_the_fine_scale_gain_in_smooth_bright_areas():
    from dcmp_cli.noref import noise_amplification, smooth_bright_mask

    image = _smooth_bright()
    assert smooth_bright_mask(image).mean() == pytest.approx(0.5, abs=0.05)  # the brighter half
    assert noise_amplification(image, image) == pytest.approx(1.0)
    mean = image.mean(axis=(0, 1), keepdims=True)
    doubled = np.clip(mean + 2.0 * (image - mean), 0, 1)  # every deviation twice as large
    assert noise_amplification(image, doubled) == pytest.approx(2.0, rel=0.05)
    flattened = np.broadcast_to(mean, image.shape)
    assert noise_amplification(image, flattened) < 0.2
    # textured or dark images have no smooth bright area: no figure
    rng = np.random.default_rng(1)
    assert math.isnan(noise_amplification(rng.random((64, 64, 3), dtype=np.float32), image[:64, :64]))
    assert math.isnan(noise_amplification(image * 0.2, image))


def test_luma_ratio_colour_cast_and_dark_channel_ratio():
    from dcmp_cli.noref import (
        colour_cast,
        colour_cast_shift,
        dark_channel_ratio,
        luma_ratio,
    )

    image = _smooth_bright(noise=0.0)
    assert luma_ratio(image, image * 0.5) == pytest.approx(0.5, rel=1e-4)
    assert colour_cast(image) == pytest.approx(0.0, abs=0.05)  # grey
    tinted = image * np.array([1.0, 0.9, 0.7], np.float32)
    assert colour_cast(tinted) > 5
    assert colour_cast_shift(image, tinted) == pytest.approx(colour_cast(tinted), abs=0.05)
    assert colour_cast_shift(tinted, image) < 0  # a cast removed
    assert dark_channel_ratio(image, image * 0.5) == pytest.approx(0.5, rel=1e-3)
    # tensors in (3, H, W) work as well
    assert luma_ratio(torch.from_numpy(image).permute(2, 0, 1), torch.from_numpy(image * 0.5).permute(2, 0, 1)) == (
        pytest.approx(0.5, rel=1e-4)
    )
    with pytest.raises(ValueError, match="differ in shape"):
        luma_ratio(image, image[:10])


def test_change_scores_bundle():
    from dcmp_cli.noref import ChangeScores, change_scores

    image = _smooth_bright()
    scores = change_scores(image, image)
    assert isinstance(scores, ChangeScores)
    assert scores.luma_ratio == pytest.approx(1.0) and scores.colour_cast_shift == pytest.approx(0.0)
    assert scores.dark_channel_ratio == pytest.approx(1.0) and scores.noise_amplification == pytest.approx(1.0)
