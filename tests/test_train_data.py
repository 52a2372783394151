"""Training data: the pre-flight check of every pair, aligned augmentation, resumable sampling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dcmp_cli.data.datasets import discover_pairs
from dcmp_cli.data.image_io import write_image
from dcmp_cli.training import data as training_data
from dcmp_cli.training.data import (
    DataCheckError,
    EpochBatchSampler,
    TrainPairs,
    augment,
    check_pairs,
    folder_depth_target,
)

from helpers import synthetic_hazy, write_png

pytestmark = pytest.mark.usefixtures("one_thread")


def make_pairs(root: Path, count: int = 3, size: tuple[int, int] = (48, 64), depth: bool = False) -> Path:
    for i in range(count):
        clear, hazy, d = synthetic_hazy(*size, seed=i)
        write_png(root / "hazy" / f"img{i}.png", hazy)
        write_png(root / "GT" / f"img{i}.png", clear)
        if depth:
            write_image(root / "depth" / f"img{i}.png", np.repeat(d[:, :, None], 3, axis=2), bit_depth=16)
    return root


def test_every_bad_file_is_named_in_one_error(tmp_path):
    root = make_pairs(tmp_path / "ds")
    clear, hazy, _ = synthetic_hazy(48, 64, seed=9)
    write_png(root / "hazy" / "orphan.png", hazy)  # no GT/orphan.png
    write_png(root / "hazy" / "mismatch.png", hazy)
    write_png(root / "GT" / "mismatch.png", clear[:40])
    good = (root / "hazy" / "img0.png").read_bytes()
    (root / "hazy" / "corrupt.png").write_bytes(good[: len(good) // 2])
    write_png(root / "GT" / "corrupt.png", clear)
    small_clear, small_hazy, _ = synthetic_hazy(20, 64, seed=3)
    write_png(root / "hazy" / "small.png", small_hazy)
    write_png(root / "GT" / "small.png", small_clear)

    problems = check_pairs(discover_pairs(root), patch_size=32)
    text = " | ".join(problems)
    assert len(problems) == 4, problems
    assert "orphan.png: no clear image matches" in text
    assert "size mismatch" in text and "mismatch.png" in text and "64×48" in text and "64×40" in text
    assert "corrupt.png" in text and "truncated" in text
    assert "small.png is 64×20, smaller than the 32-pixel training crop" in text

    error = DataCheckError(root, problems, 7)
    assert str(error).startswith(f"{root}: 4 problem(s) in 7 pair(s)")
    many = DataCheckError(root, [f"file{i}.png: bad" for i in range(12)], 12)
    assert "file7.png" in str(many) and "file8.png" not in str(many) and str(many).endswith("; and 4 more")


def test_header_check_finds_size_problems_without_decoding(tmp_path):
    root = make_pairs(tmp_path / "ds")
    clear, hazy, _ = synthetic_hazy(48, 64, seed=9)
    write_png(root / "hazy" / "mismatch.png", hazy)
    write_png(root / "GT" / "mismatch.png", clear[:, :50])
    problems = check_pairs(discover_pairs(root), patch_size=32, mode="header")
    assert len(problems) == 1 and "mismatch.png" in problems[0]


def test_sots_border_is_accepted_and_depth_maps_required_when_asked(tmp_path):
    root = make_pairs(tmp_path / "ds", count=2, depth=True)
    clear, hazy, _ = synthetic_hazy(60, 70, seed=5)
    write_png(root / "hazy" / "sots.png", hazy[10:-10, 10:-10])  # 50×40 beside a 70×60 clear image
    write_png(root / "GT" / "sots.png", clear)
    dataset = discover_pairs(root)
    assert check_pairs(dataset, patch_size=32) == []
    missing = check_pairs(dataset, patch_size=32, require_depth=True)
    assert len(missing) == 1 and "sots.png" in missing[0] and "depth" in missing[0]


def test_augment_applies_one_transform_to_every_array():
    rng_image = np.random.default_rng(0).random((40, 50, 3)).astype(np.float32)
    for seed in range(20):
        a, b, c = augment(
            [rng_image, rng_image + 1.0, rng_image[:, :, :1] * 2], 32, 0.1, False, np.random.default_rng(seed)
        )
        assert a.shape == (32, 32, 3) and c.shape == (32, 32, 1)
        np.testing.assert_array_equal(b, a + 1.0)
        np.testing.assert_array_equal(c, a[:, :, :1] * 2)


def test_samples_depend_on_seed_epoch_and_index_only(tmp_path):
    root = make_pairs(tmp_path / "ds", count=2, depth=True)
    pairs = discover_pairs(root).pairs
    dataset = TrainPairs(pairs, 32, seed=3, depth_mode="folder")
    first, again, other_epoch = dataset[(0, 1)], dataset[(0, 1)], dataset[(1, 1)]
    assert first["hazy"].shape == (3, 32, 32) and first["depth"].shape == (1, 32, 32)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["hazy"], other_epoch["hazy"])
    for tensor in first.values():
        assert tensor.dtype == torch.float32 and 0 <= tensor.min() and tensor.max() <= 1


def test_folder_depth_targets_follow_the_disparity_convention(tmp_path):
    root = make_pairs(tmp_path / "ds", count=1, depth=True)  # synthetic depth: top far, bottom near
    dataset = TrainPairs(discover_pairs(root).pairs, 48, only_h_flip=True, depth_mode="folder", edge_decay=0.0)
    target = dataset[(0, 0)]["depth"][0]
    assert target[-1].mean() > 0.9 and target[0].mean() < 0.1  # near (bottom) = large
    depth = np.linspace(0, 1, 5, dtype=np.float32)[:, None].repeat(3, axis=1)
    np.testing.assert_allclose(folder_depth_target(depth, "depth")[:, 0], [1, 0.75, 0.5, 0.25, 0])
    np.testing.assert_allclose(folder_depth_target(depth * 3 + 1, "disparity")[:, 0], [0, 0.25, 0.5, 0.75, 1])


def test_pair_depth_targets_are_cached(tmp_path, monkeypatch):
    root = make_pairs(tmp_path / "ds", count=1)
    dataset = TrainPairs(discover_pairs(root).pairs, 32, depth_mode="pair", cache_dir=tmp_path / "cache")
    first = dataset[(0, 0)]["depth"]
    assert len(list((tmp_path / "cache").glob("img0-*.npy"))) == 1
    assert first.std() > 0.05  # real structure, not a constant map

    def no_second_estimate(*args, **kwargs):
        raise AssertionError("the cached target should have been used")

    monkeypatch.setattr(training_data, "estimate_pair_depth", no_second_estimate)
    torch.testing.assert_close(dataset[(0, 0)]["depth"], first, atol=1e-3, rtol=0)  # float16 cache


def test_sampler_global_batches_do_not_depend_on_the_process_count():
    single = EpochBatchSampler(10, 4, seed=1)
    single.set_epoch(2)
    batches = list(single)
    assert len(batches) == 2 == single.batches_per_epoch  # 10 // 4, the rest dropped
    assert all(epoch == 2 for batch in batches for epoch, _ in batch)
    flat = [i for batch in batches for _, i in batch]
    assert len(set(flat)) == 8
    ranks = [EpochBatchSampler(10, 4, seed=1, rank=r, world_size=2) for r in range(2)]
    for sampler in ranks:
        sampler.set_epoch(2)
    for k, (part0, part1) in enumerate(zip(*ranks)):
        assert part0 + part1 == batches[k]
    single.set_epoch(2, start_batch=1)
    assert list(single) == batches[1:] and len(single) == 1
    single.set_epoch(3)
    assert list(single) != batches
    with pytest.raises(ValueError, match="not divisible"):
        EpochBatchSampler(10, 3, world_size=2)
    with pytest.raises(ValueError, match="fewer than one batch"):
        EpochBatchSampler(3, 4)
