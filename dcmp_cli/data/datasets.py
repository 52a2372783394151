"""Paired hazy/clear datasets in the layouts seen in practice.

A dataset folder holds a hazy folder (``hazy``, ``haze``, ``input``…) and a clear one
(``GT``, ``gt``, ``clear``, ``target``…), optionally a ``depth`` folder of per-image depth
or disparity maps named like the clear images; or, flat (NH-HAZE), ``NN_hazy.*`` beside
``NN_GT.*``. Each hazy file is matched to its clear image by the first rule that finds
one:

``same-name``
    identical stem (DehazeFormer's rearranged RESIDE, what ``dcmp synth`` writes:
    ``hazy/img.png`` ↔ ``GT/img.png``);
``hazy-token``
    the token ``hazy`` replaced by ``GT``/``gt``/``clear`` (O-HAZE ``01_outdoor_hazy.jpg`` →
    ``01_outdoor_GT.jpg``, Dense-/NH-HAZE ``01_hazy.png`` → ``01_GT.png``);
``reside``
    the longest ``_``-separated prefix that names a clear image (RESIDE ``1400_1.png`` →
    ``1400.png``, ``1_1_0.90179.png`` → ``1.png``, ``0001_0.8_0.2.jpg`` → ``0001.png``).

:func:`load_pair` reads a pair and checks sizes: the original SOTS-indoor 640×480 clear
images beside 620×460 hazy ones lose their 10-pixel white border; any other mismatch
is an error naming the files.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dcmp_cli.data.depth_io import DEPTH_EXTENSIONS
from dcmp_cli.data.image_io import IMAGE_EXTENSIONS, read_image

HAZY_DIRS = ("hazy", "haze", "Hazy", "HAZY", "hazy_images", "input", "inputs", "IN")
CLEAR_DIRS = ("GT", "gt", "clear", "Clear", "CLEAR", "clean", "target", "targets", "GT_images")
DEPTH_DIRS = ("depth", "Depth", "depths")
#: Original SOTS-indoor: clear (640, 480) with a white border around hazy (620, 460).
SOTS_BORDER = 10


class DatasetError(ValueError):
    """A dataset folder does not match any layout, or a pair cannot be used; names the files."""


@dataclass(frozen=True)
class Pair:
    """One hazy image, its clear ground truth, and (if present) the clear image's depth map."""

    name: str
    hazy: Path
    clear: Path
    depth: Path | None = None
    rule: str = "same-name"


@dataclass
class PairedDataset:
    root: Path
    hazy_dir: Path
    clear_dir: Path
    pairs: list[Pair]
    unmatched: list[Path] = field(default_factory=list)
    depth_dir: Path | None = None

    @property
    def layout(self) -> str:
        """Human-readable description of how pairs were matched."""
        counts = Counter(p.rule for p in self.pairs)
        rules = ", ".join(f"{rule} ({n})" for rule, n in counts.most_common())
        flat = " (flat folder)" if self.hazy_dir == self.clear_dir else ""
        return f"{rules}{flat}" if rules else "no pairs"


def _images(directory: Path) -> list[Path]:
    return sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def _find_dir(root: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        if (root / name).is_dir():
            return root / name
    return None


def _index_by_stem(files: list[Path]) -> dict[str, Path]:
    return {p.stem: p for p in files}


_HAZY_TOKEN = re.compile(r"hazy", re.IGNORECASE)


def match_clear(hazy: Path, clear_by_stem: dict[str, Path]) -> tuple[Path, str] | None:
    """The clear image for ``hazy`` and the rule that matched, or None."""
    stem = hazy.stem
    if stem in clear_by_stem and clear_by_stem[stem] != hazy:
        return clear_by_stem[stem], "same-name"
    if _HAZY_TOKEN.search(stem):
        for token in ("GT", "gt", "clear", "Clear", "CLEAR"):
            candidate = _HAZY_TOKEN.sub(token, stem)
            if candidate in clear_by_stem:
                return clear_by_stem[candidate], "hazy-token"
    parts = stem.split("_")
    for end in range(len(parts) - 1, 0, -1):
        candidate = "_".join(parts[:end])
        if candidate in clear_by_stem:
            return clear_by_stem[candidate], "reside"
    return None


def discover_pairs(root: str | os.PathLike) -> PairedDataset:
    """Finds the hazy/clear (/depth) pairs under ``root``; raises :class:`DatasetError` if none."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found: {root}")
    hazy_dir, clear_dir = _find_dir(root, HAZY_DIRS), _find_dir(root, CLEAR_DIRS)
    if hazy_dir is None or clear_dir is None:
        flat = _images(root)
        hazy_files = [p for p in flat if _HAZY_TOKEN.search(p.stem)]
        if not hazy_files:
            raise DatasetError(
                f"{root} has no hazy/clear pairs: expected sub-folders like hazy/ + GT/ (or clear/), "
                "or files named NN_hazy.* beside NN_GT.*"
            )
        hazy_dir = clear_dir = root
        clear_files = [p for p in flat if p not in hazy_files]
    else:
        hazy_files, clear_files = _images(hazy_dir), _images(clear_dir)
    if not hazy_files:
        raise DatasetError(f"no images in {hazy_dir}")
    if not clear_files:
        raise DatasetError(f"no clear images in {clear_dir}")
    clear_by_stem = _index_by_stem(clear_files)
    depth_dir = _find_dir(root, DEPTH_DIRS)
    depth_by_stem: dict[str, Path] = {}
    if depth_dir:  # one map per stem, preferring extensions in DEPTH_EXTENSIONS order
        maps = [p for p in depth_dir.iterdir() if p.suffix.lower() in DEPTH_EXTENSIONS]
        for p in sorted(maps, key=lambda p: (DEPTH_EXTENSIONS.index(p.suffix.lower()), p.name)):
            depth_by_stem.setdefault(p.stem, p)
    pairs, unmatched = [], []
    for hazy in hazy_files:
        match = match_clear(hazy, clear_by_stem)
        if match is None:
            unmatched.append(hazy)
            continue
        clear, rule = match
        pairs.append(Pair(hazy.stem, hazy, clear, depth_by_stem.get(clear.stem), rule))
    if not pairs:
        raise DatasetError(
            f"none of the {len(hazy_files)} hazy images in {hazy_dir} has a clear image in {clear_dir} "
            f"(e.g. {hazy_files[0].name}); names must match, or follow RESIDE / O-HAZE / NH-HAZE conventions"
        )
    return PairedDataset(root, hazy_dir, clear_dir, pairs, unmatched, depth_dir)


def align_clear(hazy_shape: tuple[int, int], clear: np.ndarray, hazy_path: Path, clear_path: Path) -> np.ndarray:
    """Crops the SOTS-indoor border when exactly that mismatch occurs; raises on any other.

    ``clear`` is the clear image (H, W, 3) or a depth map (H, W) belonging to ``hazy_path``.
    """
    h, w = hazy_shape
    ch, cw = clear.shape[:2]
    if (ch, cw) == (h, w):
        return clear
    if (ch, cw) == (h + 2 * SOTS_BORDER, w + 2 * SOTS_BORDER):
        return clear[SOTS_BORDER:-SOTS_BORDER, SOTS_BORDER:-SOTS_BORDER]
    raise DatasetError(f"size mismatch: {hazy_path} is {w}×{h} but {clear_path} is {cw}×{ch}")


def read_depth_map(path: Path) -> np.ndarray:
    """A depth/disparity map file -> float32 (H, W) (image values scaled to [0, 1])."""
    if path.suffix.lower() == ".npy":
        depth = np.load(path, allow_pickle=False)
        depth = np.squeeze(depth)
        if depth.ndim != 2:
            raise DatasetError(f"{path}: depth array must be 2-D, got shape {depth.shape}")
        return depth.astype(np.float32)
    return read_image(path).rgb[:, :, 0]


def load_pair(pair: Pair) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(hazy, clear, depth or None): float32 RGB (H, W, 3) in [0, 1] and (H, W) depth, aligned."""
    hazy = read_image(pair.hazy).rgb
    clear = align_clear(hazy.shape[:2], read_image(pair.clear).rgb, pair.hazy, pair.clear)
    depth = None
    if pair.depth is not None:
        depth = align_clear(hazy.shape[:2], read_depth_map(pair.depth), pair.hazy, pair.depth)
    return hazy, clear, depth


@dataclass(frozen=True)
class NamedDataset:
    """Where a public benchmark's test set sits below a data root, and how its files are named.

    ``folders``: candidate sub-folders of the data root, tried in order (the release
    archives' own names first, then common re-arrangements; ``.`` is the data root
    itself). ``naming``: the matching rule the release needs (see the module docstring).
    ``release_pairs``: how many test pairs the full set has (a smaller count is reported).
    """

    name: str
    title: str
    folders: tuple[str, ...]
    naming: str
    release_pairs: int
    note: str = ""


NAMED_DATASETS: dict[str, NamedDataset] = {
    d.name: d
    for d in (
        NamedDataset(
            "sots-indoor",
            "RESIDE SOTS-indoor",
            (
                "SOTS/indoor/nyuhaze500",
                "SOTS/indoor",
                "sots/indoor",
                "indoor/nyuhaze500",
                "indoor",
                "nyuhaze500",
                "SOTS-indoor",
                "sots-indoor",
                "RESIDE-IN/test",
                "reside-indoor/test",
                ".",
            ),
            "hazy/ + gt/ with RESIDE names (1400_1.png → 1400.png; 640×480 clear images lose their 10-px "
            "border), or hazy/ + GT/ with identical names (DehazeFormer's rearranged copy)",
            500,
        ),
        NamedDataset(
            "sots-outdoor",
            "RESIDE SOTS-outdoor",
            (
                "SOTS/outdoor",
                "sots/outdoor",
                "outdoor",
                "SOTS-outdoor",
                "sots-outdoor",
                "RESIDE-OUT/test",
                "reside-outdoor/test",
                ".",
            ),
            "hazy/ + gt/ with RESIDE names (0001_0.8_0.2.jpg → 0001.png), or identical names",
            500,
        ),
        NamedDataset(
            "o-haze",
            "O-HAZE (NTIRE 2018)",
            ("# O-HAZY NTIRE 2018", "O-HAZE/# O-HAZY NTIRE 2018", "O-HAZE", "O-HAZY", "o-haze", "OHAZE", "."),
            "hazy/ + GT/ with 01_outdoor_hazy.jpg → 01_outdoor_GT.jpg",
            45,
            "papers usually report on pairs 41–45 (use a folder with only those)",
        ),
        NamedDataset(
            "i-haze",
            "I-HAZE (NTIRE 2018)",
            ("# I-HAZY NTIRE 2018", "I-HAZE/# I-HAZY NTIRE 2018", "I-HAZE", "I-HAZY", "i-haze", "IHAZE", "."),
            "hazy/ + GT/ with 01_indoor_hazy.jpg → 01_indoor_GT.jpg",
            35,
            "papers usually report on pairs 31–35 (use a folder with only those)",
        ),
        NamedDataset(
            "dense-haze",
            "Dense-Haze (NTIRE 2019)",
            (
                "Dense_Haze_NTIRE19",
                "Dense-Haze/Dense_Haze_NTIRE19",
                "Dense-Haze",
                "Dense_Haze",
                "dense-haze",
                "DENSE-HAZE",
                ".",
            ),
            "hazy/ + GT/ with 01_hazy.png → 01_GT.png",
            55,
            "papers usually report on pairs 51–55 (use a folder with only those)",
        ),
        NamedDataset(
            "nh-haze",
            "NH-HAZE (NTIRE 2020)",
            ("NH-HAZE", "NH-Haze", "NH_HAZE", "nh-haze", "NHHAZE", "."),
            "one flat folder with 01_hazy.png beside 01_GT.png (or hazy/ + GT/)",
            55,
            "papers usually report on pairs 51–55 (use a folder with only those)",
        ),
    )
}


def resolve_named_dataset(name: str, data_root: str | os.PathLike) -> PairedDataset:
    """The pairs of a named benchmark (:data:`NAMED_DATASETS`) below ``data_root``.

    Tries the spec's folders in order and returns the first that holds pairs; raises
    :class:`DatasetError` (one line listing the folders tried) when none does.
    """
    key = name.lower()
    if key not in NAMED_DATASETS:
        raise DatasetError(
            f"unknown dataset name {name!r}; named datasets: {', '.join(NAMED_DATASETS)} (or pass a folder)"
        )
    spec = NAMED_DATASETS[key]
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"--data-root {root} is not a folder")
    tried = []
    for folder in spec.folders:
        candidate = root / folder if folder != "." else root
        tried.append(f"{folder}/" if folder != "." else "./")
        if not candidate.is_dir():
            continue
        try:
            return discover_pairs(candidate)
        except DatasetError:
            continue
    raise DatasetError(f"no {spec.title} pairs under {root}: tried {', '.join(tried)}; expected {spec.naming}")
