"""Training data: checked pairs, random crops with the published augmentation, resumable sampling.

* :func:`check_pairs` reads every pair before training (or only the image sizes) and
  raises one :class:`DataCheckError` listing every bad file: unpaired hazy names,
  corrupt images, size mismatches (except the SOTS-indoor border rule), images smaller
  than the crop.
* :class:`TrainPairs` returns random crops; each sample's randomness comes from
  ``(seed, epoch, index)`` alone, so the data a step sees does not depend on worker
  processes, process count or on whether the run was resumed.
* :class:`EpochBatchSampler` draws one permutation per epoch from ``(seed, epoch)``,
  cuts it into global batches and gives each training process its slice of every
  batch, so a global batch is the same images whatever the number of processes; it can
  start mid-epoch (when a run resumes).

Images leave this module as float32 tensors in [0, 1], (3, H, W); depth targets as
(1, H, W) in [0, 1] in the disparity convention (larger = nearer, see
:mod:`dcmp_cli.training.depth_targets`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from dcmp_cli.atomic import atomic_output
from dcmp_cli.data.datasets import DatasetError, Pair, PairedDataset, align_clear, load_pair
from dcmp_cli.data.haze import normalise_depth_map
from dcmp_cli.data.image_io import ImageReadError, read_image
from dcmp_cli.training.depth_targets import depth_to_disparity_target, estimate_pair_depth

#: How many bad files a data-check error names before "and K more".
LISTED_PROBLEMS = 8
#: Where TrainPairs takes depth targets from: the dataset's depth/ folder, the pair itself, or
#: nowhere (a teacher computes them on the device).
DepthMode = Literal["folder", "pair", "none"]


class DataCheckError(DatasetError):
    """Some pairs cannot be used for training; ``problems`` holds one line per bad file."""

    def __init__(self, root: Path, problems: Sequence[str], total: int) -> None:
        self.problems = list(problems)
        shown = "; ".join(self.problems[:LISTED_PROBLEMS])
        more = len(self.problems) - LISTED_PROBLEMS
        super().__init__(
            f"{root}: {len(self.problems)} problem(s) in {total} pair(s), fix or remove these files before training: "
            + shown
            + (f"; and {more} more" if more > 0 else "")
        )


def _header_size(path: Path) -> tuple[int, int]:
    """(height, width) from the file header, with EXIF rotation applied."""
    if path.suffix.lower() == ".npy":
        shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
        shape = tuple(s for s in shape if s != 1) or (1, 1)
        return int(shape[0]), int(shape[1])
    try:
        with Image.open(path) as im:
            width, height = im.size
            if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                width, height = height, width
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"not a readable image ({e})") from None
    return height, width


def check_pair(pair: Pair, patch_size: int, mode: str = "decode", require_depth: bool = False) -> str | None:
    """None when ``pair`` is usable for ``patch_size`` crops, else one line naming the bad file."""
    if require_depth and pair.depth is None:
        return f"{pair.clear}: no depth map named {pair.clear.stem}.* in the dataset's depth/ folder"
    try:
        if mode == "decode":
            hazy, _, _ = load_pair(pair)
            height, width = hazy.shape[:2]
        else:
            height, width = _header_size(pair.hazy)
            clear_h, clear_w = _header_size(pair.clear)
            align_clear((height, width), np.empty((clear_h, clear_w), np.uint8), pair.hazy, pair.clear)
            if pair.depth is not None:
                depth_h, depth_w = _header_size(pair.depth)
                align_clear((height, width), np.empty((depth_h, depth_w), np.uint8), pair.hazy, pair.depth)
    except ImageReadError as e:
        # load_pair reads hazy, then clear, then depth: say which file failed.
        return f"{_failing_file(pair, mode)}: {e}"
    except DatasetError as e:
        return str(e)
    except (OSError, ValueError) as e:
        return f"{pair.hazy}: {e}"
    if min(height, width) < patch_size:
        return f"{pair.hazy} is {width}×{height}, smaller than the {patch_size}-pixel training crop (lower patch_size)"
    return None


def _failing_file(pair: Pair, mode: str) -> Path:
    for path in (pair.hazy, pair.clear):
        try:
            _header_size(path) if mode == "header" else read_image(path)
        except (ImageReadError, OSError, ValueError):
            return path
    return pair.depth or pair.hazy


def check_pairs(
    dataset: PairedDataset,
    patch_size: int,
    mode: str = "decode",
    indices: Sequence[int] | None = None,
    progress: Callable[[int, int], None] | None = None,
    workers: int = 4,
    require_depth: bool = False,
) -> list[str]:
    """Problems (one line each) of the pairs at ``indices`` (default: all) and of unpaired hazy files.

    ``mode``: ``decode`` reads every image (finds corrupt files), ``header`` only sizes.
    ``require_depth``: every pair needs a map in the dataset's depth/ folder.
    """
    problems = [f"{path}: no clear image matches this name in {dataset.clear_dir}" for path in dataset.unmatched]
    chosen = [dataset.pairs[i] for i in (range(len(dataset.pairs)) if indices is None else indices)]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for done, problem in enumerate(pool.map(lambda p: check_pair(p, patch_size, mode, require_depth), chosen), 1):
            if problem:
                problems.append(problem)
            if progress:
                progress(done, len(chosen))
    return problems


def folder_depth_target(depth: np.ndarray, convention: str) -> np.ndarray:
    """A dataset depth/ map (H, W) -> the training target in [0, 1], larger = nearer."""
    normalised = normalise_depth_map(depth)
    return depth_to_disparity_target(normalised) if convention == "depth" else normalised


def _cache_name(pair: Pair) -> str:
    stats = [f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in (pair.hazy, pair.clear)]
    digest = hashlib.sha1("|".join(stats).encode()).hexdigest()[:12]
    return f"{pair.name}-{digest}.npy"


def pair_depth_target(pair: Pair, hazy: np.ndarray, clear: np.ndarray, cache_dir: Path | None) -> np.ndarray:
    """The pair-derived target (H, W) in [0, 1], larger = nearer; cached as float16 when ``cache_dir`` is set."""
    path = cache_dir / _cache_name(pair) if cache_dir is not None else None
    if path is not None and path.exists():
        try:
            cached = np.load(path, allow_pickle=False)
            if cached.shape == hazy.shape[:2]:
                return cached.astype(np.float32)
        except (OSError, ValueError):
            pass  # a damaged cache entry is recomputed
    target = depth_to_disparity_target(estimate_pair_depth(hazy, clear).depth)
    if path is not None:
        with atomic_output(path) as tmp:
            np.save(tmp, target.astype(np.float16))
    return target


def random_crop_box(height: int, width: int, size: int, edge_decay: float, rng: np.random.Generator) -> tuple[int, int]:
    """Top-left corner of a ``size`` crop; with probability size/side·edge_decay it touches a border (authors' rule)."""

    def start(side: int) -> int:
        if rng.random() < size / side * edge_decay:
            return 0 if rng.integers(0, 2) == 0 else side - size
        return int(rng.integers(0, side - size + 1))

    return start(height), start(width)


def augment(
    arrays: list[np.ndarray], size: int, edge_decay: float, only_h_flip: bool, rng: np.random.Generator
) -> list[np.ndarray]:
    """The same random crop, horizontal flip and 90° rotation of (H, W, C) arrays."""
    height, width = arrays[0].shape[:2]
    top, left = random_crop_box(height, width, size, edge_decay, rng)
    arrays = [a[top : top + size, left : left + size] for a in arrays]
    if rng.integers(0, 2) == 1:
        arrays = [a[:, ::-1] for a in arrays]
    if not only_h_flip:
        k = int(rng.integers(0, 4))
        arrays = [np.rot90(a, k, axes=(0, 1)) for a in arrays]
    return arrays


def _chw(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32))


@dataclass
class TrainPairs(Dataset):
    """Random training crops of checked pairs.

    Indexed by ``(epoch, index)`` (what :class:`EpochBatchSampler` yields). Returns
    ``{"hazy": (3, P, P), "clear": (3, P, P)}`` in [0, 1], plus ``"depth": (1, P, P)`` in
    [0, 1] (larger = nearer) unless ``depth_mode`` is ``"none"`` (a teacher provides it).
    """

    pairs: list[Pair]
    patch_size: int
    seed: int = 0
    edge_decay: float = 0.1
    only_h_flip: bool = False
    depth_mode: DepthMode = "pair"
    folder_convention: str = "depth"
    cache_dir: Path | None = None

    def __len__(self) -> int:
        return len(self.pairs)

    def depth_target(self, pair: Pair, hazy: np.ndarray, clear: np.ndarray, depth: np.ndarray | None) -> np.ndarray:
        if self.depth_mode == "folder":
            if depth is None:
                raise DatasetError(f"{pair.hazy}: no depth map in the dataset's depth/ folder for {pair.clear.name}")
            return folder_depth_target(depth, self.folder_convention)
        return pair_depth_target(pair, hazy, clear, self.cache_dir)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, index = key
        pair = self.pairs[index]
        try:
            hazy, clear, depth = load_pair(pair)
        except ImageReadError as e:  # possible after a header-only data check
            raise DatasetError(f"{_failing_file(pair, 'decode')}: {e}") from None
        arrays = [hazy, clear]
        if self.depth_mode != "none":
            arrays.append(self.depth_target(pair, hazy, clear, depth)[:, :, None])
        rng = np.random.default_rng([self.seed, epoch, index])
        arrays = augment(arrays, self.patch_size, self.edge_decay, self.only_h_flip, rng)
        sample = {"hazy": _chw(arrays[0]), "clear": _chw(arrays[1])}
        if self.depth_mode != "none":
            sample["depth"] = _chw(arrays[2])
        return sample


@dataclass
class ValPairs(Dataset):
    """Validation pairs: whole images (or centre crops of ``crop`` pixels),
    ``{"hazy", "clear"}`` (3, H, W) in [0, 1]."""

    pairs: list[Pair]
    crop: int = 0

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        hazy, clear, _ = load_pair(self.pairs[index])
        if self.crop:
            h, w = hazy.shape[:2]
            size_h, size_w = min(self.crop, h), min(self.crop, w)
            top, left = (h - size_h) // 2, (w - size_w) // 2
            hazy = hazy[top : top + size_h, left : left + size_w]
            clear = clear[top : top + size_h, left : left + size_w]
        return {"hazy": _chw(hazy), "clear": _chw(clear)}


class EpochBatchSampler(Sampler[list[tuple[int, int]]]):
    """This process's share of each global batch of an epoch, as ``(epoch, index)`` keys.

    The epoch's order is ``torch.randperm(n)`` seeded by ``seed + epoch``; the last
    incomplete global batch is dropped (as the authors' ``drop_last=True``). Process
    ``rank`` of ``world_size`` gets items ``rank·b … (rank+1)·b − 1`` of every global
    batch, ``b = global_batch / world_size``.
    """

    def __init__(self, num_items: int, global_batch: int, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if global_batch % world_size:
            raise ValueError(f"batch size {global_batch} is not divisible by the {world_size} training processes")
        if num_items < global_batch:
            raise ValueError(f"{num_items} training pairs are fewer than one batch of {global_batch}")
        self.num_items = num_items
        self.global_batch = global_batch
        self.local_batch = global_batch // world_size
        self.seed = seed
        self.rank = rank
        self.epoch = 0
        self.start_batch = 0

    @property
    def batches_per_epoch(self) -> int:
        return self.num_items // self.global_batch

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Selects the epoch to draw, skipping its first ``start_batch`` batches (resume)."""
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch - self.start_batch)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.num_items, generator=generator).tolist()
        lo = self.rank * self.local_batch
        for b in range(self.start_batch, self.batches_per_epoch):
            batch = order[b * self.global_batch : (b + 1) * self.global_batch]
            yield [(self.epoch, i) for i in batch[lo : lo + self.local_batch]]


def worker_init(_: int) -> None:
    """Data-loader workers: one thread each for OpenCV and torch (the processes already run in parallel)."""
    import cv2

    cv2.setNumThreads(0)
    torch.set_num_threads(1)


def shard(count: int, rank: int, world_size: int) -> list[int]:
    """Indices ``rank, rank + world_size, …`` below ``count``."""
    return list(range(rank, count, world_size))


__all__ = [
    "DataCheckError",
    "EpochBatchSampler",
    "TrainPairs",
    "ValPairs",
    "augment",
    "check_pair",
    "check_pairs",
    "folder_depth_target",
    "pair_depth_target",
    "random_crop_box",
    "shard",
    "worker_init",
]
