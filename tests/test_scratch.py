"""Scratch disk for the features tiled inference reuses: round trips, room, and results unchanged."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from dcmp_cli.core import scratch as scratch_module
from dcmp_cli.core.predictor import DehazePredictor, TileSettings
from dcmp_cli.core.scratch import ScratchFile, _file_system, _is_channels_last, scratch_capacity
from dcmp_cli.core.tiled_inference import tiled_forward
from dcmp_cli.core.tiling import plan_tiles
from dcmp_cli.data.image_io import image_to_tensor

from helpers import guide_runs, model_image, random_tiny, synthetic_hazy

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    "tensor",
    [
        torch.randn(2, 3, 5, 7),
        torch.randn(4, 6).t(),  # not contiguous
        torch.randn(3, 8).to(torch.bfloat16),
        torch.arange(10, dtype=torch.int64),
        torch.empty(0, 3),
        torch.tensor(1.5),
        torch.randn(2, 5, 4, 3).contiguous(memory_format=torch.channels_last),
        torch.randn(1, 1, 4, 3).contiguous(memory_format=torch.channels_last),
    ],
)
def test_scratch_gives_tensors_back_bit_for_bit(tmp_path, tensor):
    with ScratchFile(1 << 20, tmp_path) as scratch:
        before = scratch.put(torch.ones(3))
        parked = scratch.put(tensor)
        after = scratch.put(torch.full((5,), 7.0))
        back = scratch.get(parked, CPU)
        assert back.dtype == tensor.dtype and back.shape == tensor.shape
        assert back.is_contiguous(memory_format=torch.channels_last) == tensor.is_contiguous(
            memory_format=torch.channels_last
        )
        if _is_channels_last(tensor):  # the layout the fast path computes in comes back as it was
            assert back.stride() == tensor.stride()
        assert torch.equal(back, tensor)
        assert torch.equal(scratch.get(before, CPU), torch.ones(3))
        assert torch.equal(scratch.get(after, CPU), torch.full((5,), 7.0))
        assert scratch.bytes == 3 * 4 + tensor.numel() * tensor.element_size() + 5 * 4
    assert list(tmp_path.iterdir()) == []  # nothing left behind


def test_scratch_counts_its_room_and_writes_nothing_until_asked(tmp_path):
    scratch = ScratchFile(100, tmp_path)
    assert scratch.fits(100) and not scratch.fits(101)
    scratch.put(torch.zeros(20))  # 80 bytes
    assert scratch.fits(20) and not scratch.fits(21)
    scratch.close()
    scratch.close()  # twice is harmless
    unused = ScratchFile(100, tmp_path / "missing")  # created lazily: an absent folder is no error yet
    unused.close()
    with pytest.raises(FileNotFoundError):
        ScratchFile(100, tmp_path / "missing").put(torch.zeros(1))


def test_file_system_of_a_path_is_the_longest_matching_mount(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "/dev/vda / ext4 rw 0 0\n"
        "tmpfs /scratch tmpfs rw 0 0\n"
        "/dev/vdb /scratch/disk xfs rw 0 0\n"
        "tmpfs /scratch\\040space tmpfs rw 0 0\n"
    )
    assert _file_system(tmp_path / "x" / "y", mounts) == "ext4"
    assert _file_system(Path("/scratch/a"), mounts) == "tmpfs"
    assert _file_system(Path("/scratch/disk/a"), mounts) == "xfs"
    assert _file_system(Path("/scratchy"), mounts) == "ext4"
    assert _file_system(Path("/scratch space/a"), mounts) == "tmpfs"
    assert _file_system(tmp_path, tmp_path / "no-such-file") is None


def test_no_scratch_room_in_a_folder_kept_in_memory(tmp_path, monkeypatch):
    assert scratch_capacity(tmp_path) > 0 or _file_system(tmp_path) in scratch_module.MEMORY_FILE_SYSTEMS
    monkeypatch.setattr(scratch_module, "_file_system", lambda path: "tmpfs")
    assert scratch_capacity(tmp_path) == 0
    monkeypatch.setattr(scratch_module, "_file_system", lambda path: "ext4")
    assert 0 < scratch_capacity(tmp_path) <= shutil.disk_usage(tmp_path).free // 2 + 1
    assert scratch_capacity(tmp_path / "missing") == 0


@torch.no_grad()
@pytest.mark.parametrize("memory_tiles", [0, 2])
def test_reuse_spilled_to_disk_gives_the_same_image(tmp_path, memory_tiles):
    """Features beyond the reuse memory go to the scratch file: every tile reuses, bit for bit."""
    model = random_tiny(3)
    network = model_image(model)
    x = torch.rand(1, 3, 100, 120) * 2 - 1
    tiles = len(plan_tiles(100, 120, 64, 16))
    recomputed = tiled_forward(network, model, x, 64, 16, stats_pixels=40 * 40)
    runs = guide_runs(model)
    everything = tiled_forward(network, model, x, 64, 16, stats_pixels=40 * 40, reuse_bytes=2**30)
    assert len(runs) == 1 + tiles and torch.equal(everything, recomputed)
    runs.clear()
    per_tile = 48 * 48 * 75 * 4  # the encoder plan of DehazeNet: 75 float32 values per tile pixel
    spilled = tiled_forward(
        network,
        model,
        x,
        64,
        16,
        stats_pixels=40 * 40,
        reuse_bytes=memory_tiles * per_tile,
        scratch_bytes=2**30,
        scratch_dir=tmp_path,
    )
    assert len(runs) == 1 + tiles  # the priors ran once per tile: all of them reused
    assert torch.equal(spilled, recomputed)
    assert list(tmp_path.iterdir()) == []  # the scratch file is gone
    runs.clear()
    tiled_forward(
        network, model, x, 64, 16, stats_pixels=40 * 40, reuse_bytes=0, scratch_bytes=per_tile, scratch_dir=tmp_path
    )
    assert 1 + tiles < len(runs) < 1 + 2 * tiles  # a small scratch file: some tiles recompute


@torch.no_grad()
def test_predictor_uses_scratch_disk_on_the_cpu_unless_told_not_to(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)  # TMPDIR is read again
    _, hazy, _ = synthetic_hazy(100, 120, seed=6)
    image = image_to_tensor(hazy)
    settings = {"tile": 64, "overlap": 16, "stats_pixels": 40 * 40, "reuse_memory": 0}
    results, counts = [], []
    for max_disk in (None, 0):
        predictor = DehazePredictor(random_tiny(3), CPU, tiling=TileSettings(**settings, max_disk=max_disk))
        assert predictor._scratch_bytes() == (scratch_capacity(tmp_path) if max_disk is None else 0)
        runs = guide_runs(predictor.model)
        results.append(predictor(image))
        counts.append(len(runs))
    tiles = len(plan_tiles(100, 120, 64, 16))
    if scratch_capacity(tmp_path) > 0:
        assert counts == [1 + tiles, 1 + 2 * tiles]
    torch.testing.assert_close(results[0], results[1], rtol=0, atol=1e-6)
    in_memory_settings = TileSettings(**{**settings, "reuse_memory": 2**30}, max_disk=0)
    in_memory = DehazePredictor(random_tiny(3), CPU, tiling=in_memory_settings)
    assert torch.equal(results[0], in_memory(image))  # the fast path's channels-last features come back as kept
    assert list(tmp_path.iterdir()) == []


def test_loader_passes_the_scratch_disk_on(tiny_dehaze_ckpt):
    from dcmp_cli.core.loading import load_dehazer, tile_settings

    assert tile_settings(max_disk="20G").max_disk == 20 * 1024**3
    assert tile_settings(max_disk=0).max_disk == 0 and tile_settings().max_disk is None
    dehazer = load_dehazer("dcmp", tiny_dehaze_ckpt, device="cpu", max_disk="1M")
    assert dehazer._scratch_bytes() == 1024**2
    with pytest.raises(ValueError, match="cannot read size"):
        tile_settings(max_disk="plenty")


@torch.no_grad()
@pytest.mark.parametrize("good_writes", [0, 15])
def test_a_full_scratch_disk_falls_back_to_recomputing(tmp_path, monkeypatch, good_writes):
    """A write that fails (no space left) drops that tile's features; the rest recompute; the image is unchanged."""
    model = random_tiny(3)
    network = model_image(model)
    x = torch.rand(1, 3, 100, 120) * 2 - 1
    tiles = len(plan_tiles(100, 120, 64, 16))
    recomputed = tiled_forward(network, model, x, 64, 16, stats_pixels=40 * 40)
    put, writes = ScratchFile.put, []

    def failing_put(self, tensor):
        if len(writes) >= good_writes:
            raise OSError(28, "No space left on device")
        writes.append(1)
        return put(self, tensor)

    monkeypatch.setattr(ScratchFile, "put", failing_put)
    notices: list[str] = []
    runs = guide_runs(model)
    spill = {"scratch_bytes": 2**30, "scratch_dir": tmp_path, "on_notice": notices.append}
    result = tiled_forward(network, model, x, 64, 16, stats_pixels=40 * 40, **spill)
    assert torch.equal(result, recomputed)
    assert len(notices) == 1 and "No space left on device" in notices[0]
    assert "compute their features again" in notices[0]
    if good_writes:
        assert 1 + tiles < len(runs) < 1 + 2 * tiles  # the tiles written before the failure were reused
    else:
        assert len(runs) == 1 + 2 * tiles
    assert list(tmp_path.iterdir()) == []


@torch.no_grad()
def test_predictor_says_when_the_scratch_disk_fails(tmp_path, monkeypatch):
    def no_space(self, tensor):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ScratchFile, "put", no_space)
    _, hazy, _ = synthetic_hazy(100, 120, seed=6)
    notices: list[str] = []
    settings = TileSettings(tile=64, overlap=16, stats_pixels=40 * 40, reuse_memory=0, max_disk=2**30)
    result = DehazePredictor(random_tiny(3), CPU, tiling=settings, on_notice=notices.append)(image_to_tensor(hazy))
    assert result.shape == (1, 3, 100, 120) and any("cannot write the scratch file" in n for n in notices)
