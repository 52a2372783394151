"""Tiled inference: exact blending, alignment, shared global statistics, memory fallbacks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import synthetic_hazy

from dcmp_cli.core.checkpoint import read_checkpoint
from dcmp_cli.core.device import resolve_device
from dcmp_cli.core.predictor import DehazePredictor, TileMemoryError, TileSettings
from dcmp_cli.core.tiling import ALIGN, plan_tiles, tiled_apply
from dcmp_cli.data.image_io import image_to_tensor, read_image
from dcmp_cli.models import create_model

CPU = torch.device("cpu")


@pytest.mark.parametrize("size", [(100, 70), (256, 256), (257, 511), (33, 700)])
@pytest.mark.parametrize("tile, overlap", [(64, 16), (96, 32), (128, 0)])
def test_grid_covers_the_padded_image_on_aligned_origins(size, tile, overlap):
    grid = plan_tiles(*size, tile, overlap)
    th, tw = grid.size
    assert grid.height % ALIGN == 0 and grid.width % ALIGN == 0
    assert grid.height >= size[0] and grid.width >= size[1]
    covered = np.zeros((grid.height, grid.width), bool)
    for y, x in grid.origins():
        assert y % ALIGN == 0 and x % ALIGN == 0
        covered[y : y + th, x : x + tw] = True
    assert covered.all()
    for starts, length in ((grid.ys, th), (grid.xs, tw)):
        for a, b in zip(starts, starts[1:]):
            assert a + length - b >= min(overlap, length)  # neighbours overlap by at least `overlap`


@pytest.mark.parametrize("size", [(45, 77), (200, 130), (321, 257)])
@pytest.mark.parametrize("overlap", [0, 16, 40])
def test_blending_is_a_partition_of_unity(size, overlap):
    """An identity network comes back unchanged, whatever the grid: weights sum to one."""
    x = torch.rand(1, 3, *size)
    out = tiled_apply(lambda t: t, x, 64, overlap, batch_tiles=3)
    assert out.shape == x.shape
    assert torch.allclose(out, x, atol=1e-6)


def test_progress_counts_every_tile_and_errors_propagate():
    x = torch.rand(1, 3, 130, 130)
    seen = []
    tiled_apply(lambda t: t, x, 64, 16, progress=lambda done, total: seen.append((done, total)))
    total = len(plan_tiles(130, 130, 64, 16))
    assert seen[-1] == (total, total) and len(seen) == total

    calls = []

    def failing(t):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom in tile 3")
        return t

    with pytest.raises(RuntimeError, match="boom in tile 3"):
        tiled_apply(failing, x, 64, 16)


def test_invalid_tile_settings():
    with pytest.raises(ValueError, match="at least 32"):
        TileSettings(tile=16)
    with pytest.raises(ValueError, match="overlap"):
        plan_tiles(100, 100, 64, 64)


def _tiny_predictor(tiling: TileSettings, notices=None) -> DehazePredictor:
    torch.manual_seed(0)
    return DehazePredictor(create_model("dcmpnet-tiny"), CPU, tiling=tiling, on_notice=notices)


def test_tiled_prediction_keeps_shape_and_range():
    _, hazy, _ = synthetic_hazy(150, 170, seed=3)
    image = image_to_tensor(hazy)
    whole = _tiny_predictor(TileSettings(tile=0))(image)
    predictor = _tiny_predictor(TileSettings(tile=64, overlap=16))
    assert predictor.plan(150, 170) == 64
    tiled = predictor(image)
    assert tiled.shape == whole.shape == image.shape
    assert 0.0 <= tiled.min() and tiled.max() <= 1.0
    assert torch.isfinite(tiled).all()


def test_image_smaller_than_the_tile_runs_whole():
    predictor = _tiny_predictor(TileSettings(tile=256))
    assert predictor.plan(100, 120) == 0


def test_auto_tiles_when_the_budget_is_small():
    predictor = _tiny_predictor(TileSettings(tile=None, max_memory=4 * 1024 * 1024))
    tile = predictor.plan(200, 260)
    assert tile >= 64 and tile % ALIGN == 0
    assert tile * tile * predictor.bytes_per_pixel() <= 4 * 1024 * 1024 or tile == 64
    out = predictor(torch.rand(1, 3, 200, 260))
    assert out.shape == (1, 3, 200, 260)
    roomy = _tiny_predictor(TileSettings(tile=None, max_memory=8 * 1024**3))
    assert roomy.plan(200, 260) == 0


class _OutOfMemoryAbove(DehazePredictor):
    """A predictor whose device "runs out of memory" for inputs above a pixel count."""

    limit = 0

    def network(self, x):
        if x.shape[0] * x.shape[2] * x.shape[3] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().network(x)


def test_out_of_memory_retries_with_smaller_tiles():
    notices = []
    torch.manual_seed(0)
    predictor = _OutOfMemoryAbove(create_model("dcmpnet-tiny"), CPU, tiling=TileSettings(tile=256, stats_pixels=64 * 64),
                                  on_notice=notices.append)
    predictor.limit = 128 * 128
    out = predictor(torch.rand(1, 3, 300, 300))
    assert out.shape == (1, 3, 300, 300)
    assert notices == ["out of memory with 256-pixel tiles; retrying with 128-pixel tiles"]


def test_out_of_memory_at_the_smallest_tile_says_what_to_do():
    predictor = _OutOfMemoryAbove(create_model("dcmpnet-tiny"), CPU, tiling=TileSettings(tile=128))
    predictor.limit = 10
    with pytest.raises(TileMemoryError, match="lower the memory budget, or run on the CPU") as caught:
        predictor(torch.rand(1, 3, 300, 300))
    assert caught.value.tile == 64 and caught.value.device == CPU


def test_other_errors_are_not_retried():
    class Broken(DehazePredictor):
        def network(self, x):
            raise RuntimeError("shape mismatch in layer 7")

    with pytest.raises(RuntimeError, match="layer 7"):
        Broken(create_model("dcmpnet-tiny"), CPU, tiling=TileSettings(tile=64))(torch.rand(1, 3, 100, 100))


def _psnr_8bit(a: torch.Tensor, b: torch.Tensor) -> float:
    qa, qb = torch.round(a * 255), torch.round(b * 255)
    mse = ((qa - qb) ** 2).mean().item()
    return 10 * np.log10(255**2 / mse) if mse else float("inf")


def test_tiles_with_shared_statistics_match_the_whole_image_with_real_weights(trained_weights):
    """DESIGN.md §4 / issue 3: tiled (256) vs whole-image ≥ 40 dB with real weights; naive tiling is worse."""
    from helpers import shared_path

    image = image_to_tensor(read_image(shared_path("data", "real", "classic_canyon.png")).rgb)
    checkpoint = read_checkpoint(trained_weights)
    model = checkpoint.build()
    whole = DehazePredictor(model, CPU, tiling=TileSettings(tile=0))(image)
    tiled = DehazePredictor(model, CPU, tiling=TileSettings(tile=256, overlap=32))(image)

    class Naive(DehazePredictor):
        def _tiled(self, x, tile, stats, progress):
            return tiled_apply(self.network, x, tile, 32)

    naive = Naive(model, CPU, tiling=TileSettings(tile=256, overlap=32))(image)
    ours, plain = _psnr_8bit(tiled, whole), _psnr_8bit(naive, whole)
    assert ours >= 40.0, ours
    assert ours > plain + 5.0, (ours, plain)


def test_cli_tile_options(tmp_path, tiny_dehaze_ckpt):
    from helpers import write_png
    from typer.testing import CliRunner

    from dcmp_cli.cli.app import app

    _, hazy, _ = synthetic_hazy(130, 100, seed=1)
    source = write_png(tmp_path / "in.png", hazy)
    runner = CliRunner()
    ok = runner.invoke(app, ["dehaze", str(source), str(tmp_path / "out.png"), "-w", str(tiny_dehaze_ckpt),
                             "--tile", "64", "--tile-overlap", "16", "--max-memory", "1G"])
    assert ok.exit_code == 0, ok.output
    assert read_image(tmp_path / "out.png").rgb.shape == (130, 100, 3)
    for args, message in ((["--tile", "20"], "at least 32"), (["--tile", "big"], "--tile must be auto"),
                          (["--max-memory", "lots"], "cannot read memory size")):
        bad = runner.invoke(app, ["dehaze", str(source), str(tmp_path / "x.png"), "-w", str(tiny_dehaze_ckpt), *args])
        assert bad.exit_code == 2 and message in bad.output, bad.output
    assert resolve_device("cpu") == CPU
