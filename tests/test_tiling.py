"""Tiled inference: the tile contract, exact blending, alignment, image-global statistics, memory fallbacks."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from dcmp_cli.core.checkpoint import read_checkpoint
from dcmp_cli.core.device import resolve_device
from dcmp_cli.core.predictor import DehazePredictor, TileMemoryError, TileSettings
from dcmp_cli.core.tiled_inference import (
    DEHAZE_REUSE_ENCODER,
    DEHAZE_REUSE_PRIORS,
    ReuseOutputs,
    accumulate_statistics,
    downscale_for_stats,
    is_instance_norm,
    reuse_plans,
    statistic_modules,
    statistics_pass,
    stats_factors,
    tiled_forward,
)
from dcmp_cli.core.tiling import (
    ALIGN,
    FINE_STEP,
    TileRequestError,
    min_tile_for,
    normalize_tiles,
    plan_tiles,
    round_up,
    tile_stride,
    tiled_apply,
)
from dcmp_cli.data.image_io import image_to_tensor, read_image
from dcmp_cli.models import create_model
from dcmp_cli.models.global_stats import (
    AccumulateMoments,
    RecordStats,
    ReplayStats,
    StatisticsComplete,
    StatsPolicy,
    global_statistics,
)

from helpers import guide_runs, model_image, random_tiny, synthetic_hazy

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_thread")


# -- the tile contract ------------------------------------------------------------------


@pytest.mark.parametrize(
    "tile, overlap, expected, note",
    [
        (32, 32, 64, "tile size 32 raised to 64 to keep the 32-pixel overlap"),
        (50, 32, 64, "tile size 50 raised to 64 to keep the 32-pixel overlap"),
        (63, 32, 64, "tile size 63 raised to 64 to keep the 32-pixel overlap"),
        (64, 32, 64, None),
        (100, 32, 96, "tile size 100 rounded down to 96, the 32-pixel grid"),
        (256, 32, 256, None),
        (32, 0, 32, None),
        (50, 0, 32, "tile size 50 rounded down to 32, the 32-pixel grid"),
        (100, 16, 96, "tile size 100 rounded down to 96, the 32-pixel grid"),
        (32, 8, 32, "32-pixel tiles step by 24 to keep the 8-pixel overlap, off the 32-pixel grid"),
        (63, 16, 32, "tile size 63 rounded down to 32, the 32-pixel grid; 32-pixel tiles step by 16"),
        (64, 48, 64, "64-pixel tiles step by 16 to keep the 48-pixel overlap"),
        (100, 64, 96, "tile size 100 rounded down to 96, the 32-pixel grid"),
        (100, 70, 96, "tile size 100 rounded down to 96, the 32-pixel grid; 96-pixel tiles step by 24"),
        (256, 100, 256, None),
        (None, 32, None, None),
        (0, 32, 0, None),
    ],
)
def test_tile_requests_are_normalised_once_keeping_the_overlap(tile, overlap, expected, note):
    request = normalize_tiles(tile, overlap)
    assert (request.tile, request.overlap) == (expected, overlap)
    if note is None:
        assert request.note is None
    else:
        assert request.note is not None and request.note.startswith(note) and "\n" not in request.note
    settings = TileSettings(tile=tile, overlap=overlap)
    assert (settings.tile, settings.overlap, settings.note) == (request.tile, overlap, request.note)


@pytest.mark.parametrize(
    "tile, overlap, message",
    [
        (16, 32, "tile size must be 0 (whole image) or at least 32"),
        (-64, 32, "tile size must be 0"),
        (256, -1, "tile overlap must be ≥ 0"),
    ],
)
def test_impossible_tile_requests_raise_a_typed_error_without_cli_flags(tile, overlap, message):
    with pytest.raises(TileRequestError, match=re.escape(message)) as error:
        normalize_tiles(tile, overlap)
    assert isinstance(error.value, ValueError) and "--" not in str(error.value)
    with pytest.raises(TileRequestError):
        TileSettings(tile=tile, overlap=overlap)


@pytest.mark.parametrize("overlap", [0, 8, 16, 32, 40, 64, 100])
def test_every_legal_tile_keeps_the_requested_overlap(overlap):
    for requested in range(ALIGN, 300, 7):
        request = normalize_tiles(requested, overlap)
        assert request.tile >= min_tile_for(overlap) and request.tile % ALIGN == 0
        for size in ((request.tile * 3 + 5, request.tile * 2 + 17), (1000, 37)):
            grid = plan_tiles(*size, request.tile, overlap)
            assert grid.size[0] <= min(request.tile, size[0]) and grid.size[1] <= min(request.tile, size[1])
            for starts, lengths in ((grid.ys, grid.heights), (grid.xs, grid.widths)):
                assert all(s % FINE_STEP == 0 for s in starts)
                if request.tile - overlap >= ALIGN:
                    assert all(s % ALIGN == 0 for s in starts)
                assert all(a + n - b >= overlap for a, n, b in zip(starts, lengths, starts[1:]))


def test_planning_never_shrinks_the_overlap():
    with pytest.raises(TileRequestError, match="cannot share a 64-pixel overlap"):
        plan_tiles(100, 100, 64, 64)
    with pytest.raises(TileRequestError, match="at least 64"):
        plan_tiles(100, 100, 32, 32)
    with pytest.raises(TileRequestError):
        tiled_apply(lambda t: t, torch.rand(1, 3, 100, 100), 32, 32)
    assert TileSettings(tile=256, overlap=48).min_tile == 64
    assert TileSettings(tile=256, overlap=100).min_tile == 128


def test_tiled_apply_gives_every_tile_its_overlap_of_real_context():
    """Tiles really share the overlap: each output pixel near a seam is seen by two tiles."""
    seen = []

    def record(t):
        seen.append(t.clone())
        return t

    x = torch.arange(90, dtype=torch.float32).expand(1, 1, 70, 90)  # each pixel holds its column
    tiled_apply(record, x, 32, 8)
    columns = sorted({int(t[0, 0, 0, 0].item()) for t in seen})
    assert columns == [0, 24, 48, 72]  # stride 24 keeps the 8-pixel overlap; the last tile ends at the image edge


@pytest.mark.parametrize("size", [(100, 70), (256, 256), (257, 511), (33, 700)])
@pytest.mark.parametrize("tile, overlap", [(64, 16), (96, 32), (128, 0)])
def test_grid_covers_the_image_from_aligned_origins_to_its_edges(size, tile, overlap):
    grid = plan_tiles(*size, tile, overlap)
    assert (grid.height, grid.width) == size
    covered = np.zeros(size, bool)
    for y, x, th, tw in grid.tiles():
        assert y % ALIGN == 0 and x % ALIGN == 0
        assert th <= tile and tw <= tile
        covered[y : y + th, x : x + tw] = True
    assert covered.all()
    assert grid.ys[-1] + grid.heights[-1] == size[0] and grid.xs[-1] + grid.widths[-1] == size[1]
    for starts, lengths in ((grid.ys, grid.heights), (grid.xs, grid.widths)):
        assert all(length == lengths[0] <= tile for length in lengths[:-1])  # only the last tile is shorter
        for a, length, b in zip(starts, lengths, starts[1:]):
            assert a + length - b >= overlap  # neighbours overlap by at least `overlap`


@pytest.mark.parametrize("tile, overlap", [(256, 32), (128, 32), (96, 16), (64, 8), (32, 8), (256, 48), (64, 0)])
def test_grids_use_the_fewest_tiles_and_the_least_area(tile, overlap):
    """Per axis: the fewest tiles that stepping by the stride needs, sharing exactly the overlap."""
    stride = tile_stride(tile, overlap)
    for length in range(1, 1200, 3):
        grid = plan_tiles(length, 7, tile, overlap)
        starts, lengths = grid.ys, grid.heights
        fewest = 1 if length <= tile else -(-(length - overlap) // stride)
        assert len(starts) == fewest
        assert sum(lengths) == length + (fewest - 1) * overlap  # no tile overlaps more than it must
        assert starts[-1] + lengths[-1] == length and lengths[-1] > min(overlap, length - 1)
        assert all(n <= tile for n in lengths)


def test_a_300_pixel_image_takes_two_tiles_of_256_and_192_sharing_32_pixels():
    grid = plan_tiles(300, 300, 256, 32)
    assert grid.xs == (0, 160) and grid.widths == (192, 140)  # 332 pixels per axis; 256 + 236 before


@pytest.mark.parametrize("size", [(45, 77), (200, 130), (321, 257)])
@pytest.mark.parametrize("tile, overlap", [(64, 0), (64, 16), (64, 40), (96, 40)])
def test_blending_is_a_partition_of_unity(size, tile, overlap):
    """An identity network comes back unchanged, whatever the grid: weights sum to one."""
    x = torch.rand(1, 3, *size)
    out = tiled_apply(lambda t: t, x, tile, overlap, batch_tiles=3)
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
    predictor = _OutOfMemoryAbove(
        create_model("dcmpnet-tiny"), CPU, tiling=TileSettings(tile=256, stats_pixels=64 * 64), on_notice=notices.append
    )
    predictor.limit = 128 * 128
    out = predictor(torch.rand(1, 3, 300, 300))
    assert out.shape == (1, 3, 300, 300)
    assert notices == ["out of memory with 256-pixel tiles; retrying with 128-pixel tiles"]


def test_out_of_memory_shrinks_the_statistics_pass_with_the_tiles():
    notices = []
    predictor = _OutOfMemoryAbove(create_model("dcmpnet-tiny"), CPU, on_notice=notices.append)
    predictor.limit = 128 * 128  # the whole 300×300 image, and a statistics pass of it, do not fit
    predictor._bytes_per_pixel = 1.0  # the budget alone would run the image whole
    out = predictor(torch.rand(1, 3, 300, 300))
    assert out.shape == (1, 3, 300, 300) and torch.isfinite(out).all()
    assert notices == [
        "out of memory with the whole image; retrying with 128-pixel tiles",
    ]


def test_out_of_memory_with_a_batch_of_tiles_retries_one_tile_at_a_time():
    notices = []
    tiling = TileSettings(tile=128, batch_tiles=4)
    predictor = _OutOfMemoryAbove(create_model("dcmpnet-tiny"), CPU, tiling=tiling, on_notice=notices.append)
    predictor.limit = 3 * 64 * 64  # four 64-pixel tiles in one pass would not fit either
    out = predictor(torch.rand(1, 3, 300, 300))
    assert out.shape == (1, 3, 300, 300)
    assert notices == ["out of memory with 128-pixel tiles; retrying with 64-pixel tiles"]


def test_out_of_memory_at_the_smallest_tile_says_what_to_do():
    predictor = _OutOfMemoryAbove(create_model("dcmpnet-tiny"), CPU, tiling=TileSettings(tile=128))
    predictor.limit = 10
    with pytest.raises(TileMemoryError, match="lower the memory budget, or run on the CPU") as caught:
        predictor(torch.rand(1, 3, 300, 300))
    assert caught.value.tile == 64 and caught.value.device == CPU


def test_a_probe_that_runs_out_of_memory_gives_the_conservative_estimate():
    from dcmp_cli.core.memory import FALLBACK_BYTES_PER_PIXEL, measure_bytes_per_pixel

    def tight(x):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")

    assert measure_bytes_per_pixel(tight, CPU) == FALLBACK_BYTES_PER_PIXEL

    def broken(x):
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        measure_bytes_per_pixel(broken, CPU)


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


@pytest.mark.slow
@pytest.mark.parametrize(
    "photo, box", [("real/classic_canyon.png", None), ("real_more/fattal_cabin-fog.png", (0, 128, 480, 640))]
)
def test_tiles_match_the_whole_image_with_real_weights(trained_weights, photo, box):
    """Tiled (256) vs whole-image ≥ 45 dB with real weights (8-bit); naive tiling is far worse.

    The cabin crop is the worst case of dcmp ≤ 0.2 (31 dB, naive 30 dB): its statistics
    pass was downscaled and the instance norms of the fusion came out wrong.
    """
    from helpers import shared_path

    image = image_to_tensor(read_image(shared_path("data", *photo.split("/"))).rgb)
    if box is not None:
        top, left, height, width = box
        image = image[:, :, top : top + height, left : left + width]
    checkpoint = read_checkpoint(trained_weights)
    model = checkpoint.build()
    whole = DehazePredictor(model, CPU, tiling=TileSettings(tile=0))(image)
    tiled = DehazePredictor(model, CPU, tiling=TileSettings(tile=256, overlap=32))(image)

    class Naive(DehazePredictor):
        def _tiled(self, x, tile, stats, progress, retried=False):
            return tiled_apply(self._tile_network, x, tile, 32)

    naive = Naive(model, CPU, tiling=TileSettings(tile=256, overlap=32))(image)
    ours, plain = _psnr_8bit(tiled, whole), _psnr_8bit(naive, whole)
    assert ours >= 45.0, ours
    assert ours > plain + 10.0, (ours, plain)


def test_cli_tile_options(tmp_path, tiny_dehaze_ckpt):
    from typer.testing import CliRunner

    from dcmp_cli.cli.app import app

    from helpers import write_png

    _, hazy, _ = synthetic_hazy(130, 100, seed=1)
    source = write_png(tmp_path / "in.png", hazy)
    runner = CliRunner()
    ok = runner.invoke(
        app,
        [
            "dehaze",
            str(source),
            str(tmp_path / "out.png"),
            "-w",
            str(tiny_dehaze_ckpt),
            "--tile",
            "64",
            "--tile-overlap",
            "16",
            "--max-memory",
            "1G",
            "--max-disk",
            "0",
        ],
    )
    assert ok.exit_code == 0, ok.output
    assert read_image(tmp_path / "out.png").rgb.shape == (130, 100, 3)
    for args, message in (
        (["--tile", "20"], "at least 32"),
        (["--tile", "big"], "--tile must be auto"),
        (["--max-memory", "lots"], "cannot read size"),
        (["--max-disk", "-3G"], "--max-disk"),
    ):
        bad = runner.invoke(app, ["dehaze", str(source), str(tmp_path / "x.png"), "-w", str(tiny_dehaze_ckpt), *args])
        assert bad.exit_code == 2 and message in bad.output, bad.output
    assert resolve_device("cpu") == CPU


# -- image-global statistics --------------------------------------------------------------


def test_statistics_pass_averages_whole_blocks():
    assert stats_factors(480, 640, 512 * 512) == (2, 2)
    assert stats_factors(300, 300, 512 * 512) == (1, 1)
    assert stats_factors(3000, 4000, 576 * 576) == (7, 7)
    kh, kw = stats_factors(40, 100_000, 512 * 512)
    assert kh == 1 and 40 * -(-100_000 // kw) <= 512 * 512
    x = torch.rand(1, 3, 64, 96)
    small = downscale_for_stats(x, 32 * 48)
    assert torch.allclose(small, x.view(1, 3, 32, 2, 48, 2).mean(dim=(3, 5)), atol=1e-6)
    assert downscale_for_stats(x, 64 * 96) is x


@pytest.mark.parametrize(
    "size, tile, overlap",
    [((300, 300), 256, 32), ((150, 170), 64, 16), ((70, 90), 32, 8), ((480, 640), 128, 0), ((130, 257), 96, 70)],
)
def test_tile_cores_partition_the_network_extent(size, tile, overlap):
    grid = plan_tiles(*size, tile, overlap)
    extent = (round_up(size[0], FINE_STEP), round_up(size[1], FINE_STEP))
    count = np.zeros(extent, int)
    sizes = {(y, x): (th, tw) for y, x, th, tw in grid.tiles()}
    for (y, x), (top, bottom, left, right) in grid.cores(*extent).items():
        assert all(v % FINE_STEP == 0 for v in (top, bottom, left, right))
        th, tw = (round_up(n, FINE_STEP) for n in sizes[y, x])  # the network pads each tile to a multiple of 4
        assert 0 <= top <= bottom <= th and 0 <= left <= right <= tw
        count[y + top : y + bottom, x + left : x + right] += 1
    assert (count == 1).all()


@torch.no_grad()
def test_accumulated_moments_equal_one_pass_over_the_whole_input():
    """Summing moments over windows that partition the input gives every statistic of one pass, exactly."""
    model = random_tiny()
    x = torch.rand(1, 3, 96, 128) * 2 - 1
    with global_statistics(model, RecordStats()) as recorder:
        model(x)
    accumulator = AccumulateMoments(recorder.values, recorder.values.keys(), stop_when_done=False)
    windows = [(0, 32, 0, 128), (32, 96, 0, 68), (32, 96, 68, 128)]
    with global_statistics(model, accumulator):
        accumulator.begin((96, 128), windows[:1])
        model(x)
        accumulator.begin((96, 128), windows[1:])  # a batch of two samples, one window each
        model(torch.cat([x, x]))
    accumulated = accumulator.values()
    assert accumulated.keys() == recorder.values.keys()
    kinds = {key.rsplit(":", 1)[1] for key in accumulated}
    assert kinds == {"mean_std", "mean_var", "mean"}
    for key, value in recorder.values.items():
        for a, b in zip(accumulated[key], value):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@torch.no_grad()
def test_accumulation_stops_after_the_last_chosen_statistic():
    model = random_tiny()
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with global_statistics(model, RecordStats()) as recorder:
        model(x)
    heads = []
    model.head.register_forward_hook(lambda *_: heads.append(1))
    layers = statistic_modules(model, is_instance_norm)
    assert layers == {"cross_scale.to_half.norm", "cross_scale.to_quarter.norm"}
    keys = [k for k in recorder.values if k.rsplit(":", 1)[0] in layers]
    accumulator = AccumulateMoments(recorder.values, keys)
    with global_statistics(model, accumulator), pytest.raises(StatisticsComplete):
        accumulator.begin((64, 64), [(0, 64, 0, 64)])
        model(x)
    assert not heads  # the decoder never ran
    with pytest.raises(ValueError, match="between feature pixels"):
        with global_statistics(model, accumulator):
            accumulator.begin((64, 64), [(0, 62, 0, 64)])
            model(x)


class _CountingStats(StatsPolicy):
    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    def resolve(self, key, compute):
        self.calls[key] = self.calls.get(key, 0) + 1
        return compute()


@torch.no_grad()
def test_tiled_forward_sweeps_only_when_the_statistics_pass_is_downscaled():
    model = random_tiny(1)
    x = torch.rand(1, 3, 150, 170) * 2 - 1
    seen = []
    calls = []

    def counted(t):
        calls.append(tuple(t.shape))
        return model(t).image

    exact = tiled_forward(counted, model, x, 64, 16, stats_pixels=150 * 170, progress=lambda d, t: seen.append(t))
    # The statistics pass runs the whole image: its output is the result, no tiles run.
    assert calls == [(1, 3, 150, 170)] and seen == [1]
    assert torch.equal(exact, model(x).image)
    seen.clear()
    policy = _CountingStats()
    out = tiled_forward(
        model_image(model),
        model,
        x,
        64,
        16,
        stats_pixels=40 * 40,
        stats=policy,
        progress=lambda d, t: seen.append((d, t)),
    )
    tiles = len(plan_tiles(150, 170, 64, 16))
    assert seen[-1] == (2 * tiles, 2 * tiles) and len(seen) == 2 * tiles  # the sweep, then the tiles
    assert out.shape == (1, 3, 150, 170)
    with global_statistics(model, RecordStats()) as recorder:
        model(x)
    assert policy.calls == {key: 1 for key in recorder.values}  # a video policy decides each value once


@torch.no_grad()
def test_full_resolution_instance_norms_bring_tiles_closer_to_the_whole_image():
    """With statistics from a small downscaled pass only, tiles drift; the accumulated instance norms pull them back."""
    model = random_tiny(2)
    for module in model.cross_scale.modules():  # stronger weights: make the fusion's statistics matter
        if isinstance(module, torch.nn.Conv2d):
            module.weight.mul_(4.0)
    _, hazy, _ = synthetic_hazy(192, 256, seed=5)
    x = image_to_tensor(hazy) * 2 - 1
    network = model_image(model)
    whole = network(x)
    small = downscale_for_stats(x, 48 * 64)
    with global_statistics(model, RecordStats()) as recorder:
        network(small)
    with global_statistics(model, ReplayStats(recorder.values)):
        downscaled_only = tiled_apply(network, x, 64, 32)
    fixed = tiled_forward(network, model, x, 64, 32, stats_pixels=48 * 64)
    error_before = (downscaled_only - whole).abs().mean().item()
    error_after = (fixed - whole).abs().mean().item()
    assert error_after < 0.5 * error_before, (error_after, error_before)


@torch.no_grad()
def test_batched_tiles_give_the_same_image_as_single_tiles():
    """One image's statistics broadcast over a batch of its tiles (GPU batching)."""
    _, hazy, _ = synthetic_hazy(150, 170, seed=4)
    image = image_to_tensor(hazy)
    single = _tiny_predictor(TileSettings(tile=64, overlap=16, batch_tiles=1, stats_pixels=40 * 40))(image)
    batched = _tiny_predictor(TileSettings(tile=64, overlap=16, batch_tiles=3, stats_pixels=40 * 40))(image)
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-5)


# -- the final tiles reuse the sweep's features ------------------------------------------


@torch.no_grad()
@pytest.mark.parametrize("plans", [None, [DEHAZE_REUSE_PRIORS], [DEHAZE_REUSE_ENCODER]])
def test_final_tiles_reusing_the_sweep_give_the_same_image(plans):
    """Reused features are those the final tiles would compute: same output, the priors run once per tile."""
    model = random_tiny(3)
    x = torch.rand(1, 3, 100, 120) * 2 - 1
    tiles = len(plan_tiles(100, 120, 64, 16))
    runs = guide_runs(model)
    recomputed = tiled_forward(model_image(model), model, x, 64, 16, stats_pixels=40 * 40)
    assert len(runs) == 1 + 2 * tiles  # statistics pass, sweep, final tiles
    runs.clear()
    reused = tiled_forward(model_image(model), model, x, 64, 16, stats_pixels=40 * 40, reuse_bytes=2**30, reuse=plans)
    assert len(runs) == 1 + tiles
    assert torch.equal(reused, recomputed)
    assert all("forward" not in m.__dict__ for m in model.modules())  # the overrides are gone


@torch.no_grad()
def test_reuse_beyond_its_memory_recomputes_the_rest():
    model = random_tiny(3)
    x = torch.rand(1, 3, 100, 120) * 2 - 1
    tiles = len(plan_tiles(100, 120, 64, 16))
    recomputed = tiled_forward(model_image(model), model, x, 64, 16, stats_pixels=40 * 40)
    plans = reuse_plans(model)
    assert plans == (DEHAZE_REUSE_ENCODER, DEHAZE_REUSE_PRIORS)
    reuse = ReuseOutputs(model, plans, 2**30, 64 * 64, CPU)
    accumulate_statistics(
        model_image(model),
        model,
        x[:, :, :64, :64],
        statistics_pass(model_image(model), model, x, 40 * 40)[0],
        statistic_modules(model, is_instance_norm),
        64,
        16,
        reuse=reuse,
    )
    assert reuse.plan is DEHAZE_REUSE_ENCODER
    per_tile = reuse.bytes  # one full 64×64 tile, everything upstream of the instance norms
    runs = guide_runs(model)
    partial = tiled_forward(model_image(model), model, x, 64, 16, stats_pixels=40 * 40, reuse_bytes=per_tile)
    assert 1 + tiles < len(runs) < 1 + 2 * tiles  # the priors plan, for the tiles it had room for
    assert torch.equal(partial, recomputed)
    runs.clear()
    tiled_forward(model_image(model), model, x, 64, 16, stats_pixels=40 * 40, reuse_bytes=per_tile // 40)
    assert len(runs) == 1 + 2 * tiles  # not even the priors of the smallest tile fit


def test_predictor_reuse_leaves_the_result_unchanged():
    _, hazy, _ = synthetic_hazy(100, 120, seed=6)
    image = image_to_tensor(hazy)
    settings = {"tile": 64, "overlap": 16, "stats_pixels": 40 * 40}
    default = _tiny_predictor(TileSettings(**settings))(image)
    none = _tiny_predictor(TileSettings(**settings, reuse_memory=0))(image)
    torch.testing.assert_close(default, none, rtol=0, atol=1e-6)
    # Automatic tiles on the CPU leave half the budget to the reused features.
    for reuse_memory, side in ((None, 160), (0, 256)):
        predictor = _tiny_predictor(TileSettings(max_memory=256 * 256 * 4096, reuse_memory=reuse_memory))
        predictor._bytes_per_pixel = 4096.0
        assert predictor.plan(1000, 1000) == side
        assert predictor._reuse_bytes() == (256 * 256 * 4096 // 2 if reuse_memory is None else 0)


def test_statistics_pass_stays_within_the_memory_budget():
    predictor = _tiny_predictor(TileSettings(max_memory=300 * 300 * 4096))
    predictor._bytes_per_pixel = 4096.0
    assert predictor._stats_pixels(128) == 300 * 300  # not 512², which the budget cannot hold
    assert predictor._stats_pixels(512) == 512 * 512  # never below one tile
    roomy = _tiny_predictor(TileSettings(max_memory=2**34))
    roomy._bytes_per_pixel = 4096.0
    assert roomy._stats_pixels(128) == 512 * 512
