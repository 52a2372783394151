"""The inference fast path changes speed, not results."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from dcmp_cli.core.checkpoint import read_checkpoint
from dcmp_cli.core.fastpath import prepare_for_inference
from dcmp_cli.core.official import convert_official_state_dict, infer_official_config
from dcmp_cli.core.predictor import DehazePredictor, TileSettings
from dcmp_cli.data.image_io import image_to_tensor, read_image
from dcmp_cli.models import build_model, create_model
from dcmp_cli.models.fuse import fuse_modules
from dcmp_cli.models.guide_unet import DoubleConv
from dcmp_cli.models.transformer import WindowAttention

from helpers import shared_path, synthetic_hazy
from official_fixtures import official_state_dict

CPU = torch.device("cpu")


def _randomise_batch_norms(model: torch.nn.Module, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
            module.weight.data.copy_(1 + 0.1 * torch.randn(module.num_features, generator=generator))
            module.bias.data.copy_(0.1 * torch.randn(module.num_features, generator=generator))


def test_fast_path_reproduces_the_reference_fixtures(reference_npz):
    state = official_state_dict("dehaze")
    plain = build_model("dehaze", infer_official_config(state, "dehaze")).eval()
    plain.load_state_dict(convert_official_state_dict(state, "dehaze").state_dict)
    fast = prepare_for_inference(copy.deepcopy(plain), CPU)
    for case in ("a", "b"):
        x = torch.from_numpy(reference_npz[f"input_{case}"])
        with torch.inference_mode():
            ours = fast(x.contiguous(memory_format=torch.channels_last))
            eager = plain(x)
        for name, a, b in zip(("dehaze", "guide1", "guide2", "guide3"), ours, eager):
            expected = torch.from_numpy(reference_npz[f"{name}_{case}"])
            assert (a - expected).abs().max() <= 1e-4, name
            assert (a - b).abs().max() <= 1e-4, name


def test_batch_norm_folding_is_exact_to_float_rounding():
    torch.manual_seed(0)
    model = create_model("dcmpnet-tiny").eval()
    _randomise_batch_norms(model)
    folded = copy.deepcopy(model)
    n_double = sum(isinstance(m, DoubleConv) for m in model.modules())
    assert sum(m.fuse() for m in folded.modules() if isinstance(m, DoubleConv)) == 2 * n_double
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert sum(m.fuse() for m in folded.modules() if isinstance(m, DoubleConv)) == 0  # idempotent
    x = torch.rand(1, 3, 64, 80) * 2 - 1
    with torch.inference_mode():
        assert (model(x).image - folded(x).image).abs().max() < 1e-5


def test_fused_attention_equals_the_eager_attention():
    torch.manual_seed(0)
    attention = WindowAttention(dim=24, num_heads=3, window_size=8).eval()
    qkv = torch.randn(5, 64, 72)
    with torch.no_grad():
        eager = attention(qkv)
        bias = attention.position_bias()
        attention.fuse()
        assert torch.equal(attention.position_bias(), bias)
        fused = attention(qkv)
    assert (eager - fused).abs().max() < 1e-5


def test_cached_bias_is_a_buffer_that_moves_and_is_not_saved():
    attention = WindowAttention(dim=24, num_heads=3, window_size=8).eval()
    attention.fuse()
    assert "frozen_bias" in dict(attention.named_buffers())
    assert "frozen_bias" not in attention.state_dict()
    attention.to(torch.float64)
    assert attention.frozen_bias is not None and attention.frozen_bias.dtype == torch.float64


def test_building_a_predictor_leaves_the_callers_model_unchanged():
    torch.manual_seed(0)
    model = create_model("dcmpnet-tiny")
    _randomise_batch_norms(model)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modules = [type(m) for m in model.modules()]
    predictor = DehazePredictor(model, CPU, tiling=TileSettings(tile=0))
    predictor(torch.rand(1, 3, 40, 48))
    assert model.training
    assert [type(m) for m in model.modules()] == modules  # no batch norm folded away
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(m.frozen_bias is None for m in model.modules() if isinstance(m, WindowAttention))
    assert all(p.is_contiguous() for p in model.parameters())  # not switched to channels-last


def test_a_model_that_went_through_inference_still_trains():
    torch.manual_seed(0)
    model = create_model("dcmpnet-tiny").eval()
    DehazePredictor(model, CPU, tiling=TileSettings(tile=0))(torch.rand(1, 3, 32, 32))
    fuse_modules(model)  # even a model fused in place: training mode ignores the cached bias
    model.train()
    out = model(torch.rand(1, 3, 32, 32) * 2 - 1).image
    out.mean().backward()
    grads = [m.position_mlp[0].weight.grad for m in model.modules() if isinstance(m, WindowAttention)]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_a_predictor_does_not_switch_cudnn_autotuning_on_for_the_process():
    before = torch.backends.cudnn.benchmark
    DehazePredictor(create_model("dcmpnet-tiny"), CPU, tiling=TileSettings(tile=0))(torch.rand(1, 3, 32, 32))
    assert torch.backends.cudnn.benchmark == before


def test_predictors_agree_with_and_without_the_fast_path():
    torch.manual_seed(1)
    model = create_model("dcmpnet-tiny").eval()
    _randomise_batch_norms(model, 1)
    image = image_to_tensor(synthetic_hazy(70, 90, seed=2)[1])
    plain = DehazePredictor(copy.deepcopy(model), CPU, fast=False, tiling=TileSettings(tile=0))(image)
    fast = DehazePredictor(copy.deepcopy(model), CPU, fast=True, tiling=TileSettings(tile=0))(image)
    tiled_plain = DehazePredictor(copy.deepcopy(model), CPU, fast=False, tiling=TileSettings(tile=64))(image)
    tiled_fast = DehazePredictor(copy.deepcopy(model), CPU, fast=True, tiling=TileSettings(tile=64))(image)
    assert (plain - fast).abs().max() < 1e-5
    assert (tiled_plain - tiled_fast).abs().max() < 1e-5


@pytest.mark.slow
def test_fast_path_on_a_real_photo_with_real_weights(trained_weights):
    """≥ 50 dB between fast and plain outputs on a real image."""
    photo = read_image(shared_path("data", "real", "rtts_BJ_Baidu_544.jpeg")).rgb[:192, :256]
    image = image_to_tensor(photo)
    checkpoint = read_checkpoint(trained_weights)
    plain = DehazePredictor(checkpoint.build(), CPU, fast=False, tiling=TileSettings(tile=0))(image)
    fast = DehazePredictor(checkpoint.build(), CPU, fast=True, tiling=TileSettings(tile=0))(image)
    mse = ((plain - fast) ** 2).mean().item()
    assert mse == 0 or 10 * np.log10(1 / mse) >= 50.0


def test_bf16_on_the_cpu_stays_close():
    torch.manual_seed(0)
    model = create_model("dcmpnet-tiny").eval()
    image = image_to_tensor(synthetic_hazy(64, 64, seed=3)[1])
    fp32 = DehazePredictor(copy.deepcopy(model), CPU, "fp32", tiling=TileSettings(tile=0))(image)
    bf16 = DehazePredictor(copy.deepcopy(model), CPU, "bf16", tiling=TileSettings(tile=0))(image)
    assert bf16.dtype == torch.float32 and bf16.shape == fp32.shape
    psnr = 10 * np.log10(1 / ((fp32 - bf16) ** 2).mean().item())
    assert psnr > 30.0, psnr


@pytest.mark.slow
def test_compiled_network_matches():
    torch.manual_seed(0)
    model = create_model("dcmpnet-tiny").eval()
    image = image_to_tensor(synthetic_hazy(64, 96, seed=4)[1])
    eager = DehazePredictor(copy.deepcopy(model), CPU, tiling=TileSettings(tile=0))(image)
    compiled = DehazePredictor(copy.deepcopy(model), CPU, compile=True, tiling=TileSettings(tile=0))(image)
    assert (eager - compiled).abs().max() < 1e-4
