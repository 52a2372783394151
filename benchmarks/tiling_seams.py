"""Tiled vs whole-image output with real weights, over many crops of real hazy photos; compute cost.

    python benchmarks/tiling_seams.py                 # full run (≈ 2 h on 2 CPU cores)
    python benchmarks/tiling_seams.py --quick         # 6 crops of 640×480 (≈ 30 min)
    python benchmarks/tiling_seams.py --quick --diagnose   # where the differences come from
    python benchmarks/tiling_seams.py --large         # FLOP cost on 2–40 MP photos, memory vs memory + disk

Crops every photo of ``../shared/data/real`` and ``real_more`` (sizes from 300×300 up to
1200×1600, the largest whose whole-image pass fits comfortably in RAM here; kinds:
bright/sky-heavy, dark, uniform fog, detailed; see :func:`make_crops`), runs the network on
each crop whole (cached on disk) and tiled by several methods, and prints the PSNR of every
8-bit tiled output against the 8-bit whole-image output:

* ``naive``: each tile its own statistics (dcmp's tile grid and blending);
* ``before``: dcmp ≤ 0.2: every statistic from one pass on the crop downscaled
  (fractional area resampling) to ≤ max(tile², 512²) pixels, replayed in every tile of
  a grid over the crop padded to a multiple of 32;
* ``dcmp``: :func:`dcmp_cli.core.tiled_inference.tiled_forward` (the predictor's path),
  with ``--reuse-memory`` for the features the final tiles take over from the sweep.
  Its statistics pass averages blocks of at least ``--min-stats-factor`` (default 2)
  pixels a side, as on a photo larger than the statistics budget: a crop of ≤ 512²
  pixels would otherwise get the exact whole-image pass as its result (factor 1);
* ``s0only``: dcmp's statistics pass alone, without the accumulation sweep;
  ``halfsweep``: the sweep on the crop averaged over 2×2 blocks; ``widesweep``: the
  sweep on tiles of twice the side (trade-offs of a cheaper sweep).

Compute cost: FLOPs of each method's convolutions and matrix products (which are nearly
all of the network's work), measured while it runs, over those of the whole-image pass
(counted on a meta-device copy of the network), and over those of ``naive`` on the same
grid. CPU time is too noisy on a shared machine. ``--diagnose`` adds, per crop: tiles
replaying the exact whole-image statistics (what remains is tile borders), the ``before``
statistics with one family replaced by its exact whole-image values, and an
integer-factor statistics pass.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import statistics
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from dcmp_cli.core.checkpoint import read_checkpoint
from dcmp_cli.core.memory import available_ram
from dcmp_cli.core.predictor import DehazePredictor, TileSettings
from dcmp_cli.core.tiled_inference import (
    DEHAZE_REUSE_ENCODER,
    DEHAZE_REUSE_PRIORS,
    ReuseOutputs,
    ReusePlan,
    accumulate_statistics,
    downscale_for_stats,
    is_instance_norm,
    statistic_modules,
    statistics_pass,
    stats_factors,
    tiled_forward,
)
from dcmp_cli.core.tiling import ALIGN, plan_tiles, tiled_apply
from dcmp_cli.core.value_range import from_network_range, to_network_range
from dcmp_cli.data.image_io import image_to_tensor, read_image
from dcmp_cli.models.global_stats import RecordStats, ReplayStats, StatTuple, global_statistics
from dcmp_cli.sizes import GIB

SHARED = Path(__file__).resolve().parents[2] / "shared"
PHOTO_DIRS = (SHARED / "data" / "real", SHARED / "data" / "real_more")
DEFAULT_WEIGHTS = SHARED / "weights" / "dcmpnet-sots-briefly-trained.pth"
#: (height, width) crop sizes, landscape; portrait photos get them transposed.
SIZES = ((300, 300), (384, 512), (480, 640), (600, 800), (768, 1024))
#: One extra crop of the largest photo at this size (its whole-image pass needs ≈ 5 GiB).
LARGE = (1200, 1600)
#: Crops above this many pixels run only at tiles ≥ 256 (time: the CPU is shared).
LARGE_PIXELS = 1_000_000
KINDS = ("bright", "dark", "uniform", "detailed")
#: Peak resident bytes per pixel of a whole-image pass of the full model on the CPU (measured, with margin).
BYTES_PER_PIXEL = 3.2 * 1024
QUICK = 6
CPU = torch.device("cpu")


@dataclass(frozen=True)
class Crop:
    photo: Path
    kind: str
    top: int
    left: int
    height: int
    width: int

    @property
    def name(self) -> str:
        return f"{self.photo.stem[:28]}/{self.kind}"

    def tensor(self) -> torch.Tensor:
        image = image_to_tensor(read_image(self.photo).rgb)
        return image[:, :, self.top : self.top + self.height, self.left : self.left + self.width].contiguous()


def _place(luma: np.ndarray, grad: np.ndarray, height: int, width: int, kind: str) -> tuple[int, int]:
    """Top-left corner of the height×width window (on a 5×5 grid of positions) that best fits ``kind``."""
    ph, pw = luma.shape
    best, where = -math.inf, (0, 0)
    for top in np.linspace(0, ph - height, 5).astype(int):
        for left in np.linspace(0, pw - width, 5).astype(int):
            lum = float(luma[top : top + height, left : left + width].mean())
            detail = float(grad[top : top + height, left : left + width].mean())
            score = {"bright": lum, "dark": -lum, "uniform": -detail, "detailed": detail}[kind]
            if score > best:
                best, where = score, (int(top), int(left))
    return where


def make_crops(sizes: tuple[tuple[int, int], ...] = SIZES, large: bool = True) -> list[Crop]:
    """One crop per photo, ``sizes`` (height, width) taken in turn from those that fit, plus
    (``large``) a :data:`LARGE` crop of the largest photo; kinds in turn. Deterministic."""
    photos = sorted(
        p for d in PHOTO_DIRS if d.is_dir() for p in d.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg")
    )
    largest = max(photos, key=lambda p: np.prod(read_image(p).rgb.shape[:2]))
    crops = []
    for i, photo in enumerate(photos):
        rgb = read_image(photo).rgb
        luma = rgb.mean(axis=2)
        grad = np.abs(np.diff(luma, axis=0, append=luma[-1:])) + np.abs(np.diff(luma, axis=1, append=luma[:, -1:]))
        ph, pw = luma.shape
        fitting = [
            (h, w) if pw >= ph else (w, h) for h, w in sizes if min(h, w) <= min(ph, pw) and max(h, w) <= max(ph, pw)
        ]
        chosen = [fitting[i % len(fitting)] if fitting else (ph, pw)]
        if large and photo == largest:
            chosen.append((LARGE[1], LARGE[0]) if ph > pw else LARGE)
        for j, (h, w) in enumerate(chosen):
            kind = KINDS[(i + j) % len(KINDS)]
            top, left = _place(luma, grad, h, w, kind)
            crops.append(Crop(photo, kind, top, left, h, w))
    return crops


def psnr_8bit(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = ((torch.round(a * 255) - torch.round(b * 255)) ** 2).mean().item()
    return float("inf") if mse == 0 else 10 * math.log10(255**2 / mse)


def _fractional_downscale(x: torch.Tensor, max_pixels: int) -> torch.Tensor:
    """dcmp ≤ 0.2's statistics input: fractional area resampling to ≤ max_pixels."""
    h, w = x.shape[2:]
    if h * w <= max_pixels:
        return x
    scale = math.sqrt(max_pixels / (h * w))
    return F.interpolate(x, size=(max(32, int(h * scale)), max(32, int(w * scale))), mode="area")


class Bench:
    """The network and the tiled methods, all on network-range (1, 3, H, W) inputs."""

    def __init__(
        self, weights: Path, overlap: int, stats_pixels: int | None, min_factor: int, reuse_bytes: int
    ) -> None:
        predictor = DehazePredictor(read_checkpoint(weights, kind="dehaze").build(), CPU, tiling=TileSettings(tile=0))
        self.model, self.network, self.overlap = predictor.model, predictor.network, overlap
        self.stats_pixels, self.min_factor, self.reuse_bytes = stats_pixels, min_factor, reuse_bytes

    def stats_budget(self, tile: int) -> int:
        """Pixels of the statistics pass: the predictor's rule unless --stats-pixels says otherwise."""
        return self.stats_pixels or max(tile * tile, TileSettings().stats_pixels)

    def dcmp_budget(self, height: int, width: int, tile: int) -> int:
        """The statistics budget, lowered so that the pass averages blocks of at least --min-stats-factor a side."""
        k = self.min_factor
        return min(self.stats_budget(tile), -(-height // k) * -(-width // k))

    def record(self, x: torch.Tensor) -> tuple[dict[str, StatTuple], torch.Tensor]:
        recorder = RecordStats()
        with global_statistics(self.model, recorder):
            y = self.network(x)
        return recorder.values, y

    def replayed_tiles(self, x: torch.Tensor, tile: int, values: dict[str, StatTuple]) -> torch.Tensor:
        with global_statistics(self.model, ReplayStats(values)):
            return tiled_apply(self.network, x, tile, self.overlap)

    def naive(self, x: torch.Tensor, tile: int) -> torch.Tensor:
        return tiled_apply(self.network, x, tile, self.overlap)

    def before_stats(self, x: torch.Tensor, tile: int) -> dict[str, StatTuple]:
        return self.record(_fractional_downscale(x, self.stats_budget(tile)))[0]

    def before(self, x: torch.Tensor, tile: int) -> torch.Tensor:
        """dcmp ≤ 0.2: those statistics, and tiles over the image padded to the 32-pixel grid."""
        h, w = x.shape[2:]
        ph, pw = -(-h // ALIGN) * ALIGN, -(-w // ALIGN) * ALIGN
        mode = "reflect" if ph - h < h and pw - w < w else "replicate"
        padded = F.pad(x, (0, pw - w, 0, ph - h), mode=mode)
        return self.replayed_tiles(padded, tile, self.before_stats(x, tile))[:, :, :h, :w]

    def dcmp(self, x: torch.Tensor, tile: int) -> torch.Tensor:
        budget = self.dcmp_budget(*x.shape[2:], tile)
        return tiled_forward(
            self.network, self.model, x, tile, self.overlap, stats_pixels=budget, reuse_bytes=self.reuse_bytes
        )

    def s0only(self, x: torch.Tensor, tile: int) -> torch.Tensor:
        """dcmp's integer-factor statistics pass alone, without the accumulation sweep."""
        budget = self.dcmp_budget(*x.shape[2:], tile)
        return self.replayed_tiles(x, tile, self.record(downscale_for_stats(x, budget))[0])

    def _swept(self, x: torch.Tensor, tile: int, sweep_input: torch.Tensor, sweep_tile: int) -> torch.Tensor:
        """dcmp's statistics pass, the instance norms accumulated over ``sweep_input`` in ``sweep_tile`` tiles."""
        values = statistics_pass(self.network, self.model, x, self.dcmp_budget(*x.shape[2:], tile))[0]
        layers = statistic_modules(self.model, is_instance_norm)
        values.update(
            accumulate_statistics(self.network, self.model, sweep_input, values, layers, sweep_tile, self.overlap)
        )
        return self.replayed_tiles(x, tile, values)

    def halfsweep(self, x: torch.Tensor, tile: int) -> torch.Tensor:
        return self._swept(x, tile, F.avg_pool2d(x, 2, 2, ceil_mode=True, count_include_pad=False), tile)

    def widesweep(self, x: torch.Tensor, tile: int) -> torch.Tensor:
        return self._swept(x, tile, x, 2 * tile)


METHODS = ("naive", "before", "dcmp", "s0only", "halfsweep", "widesweep")


def method_versions() -> dict[str, str]:
    """Cache tags: dcmp's methods change with the sources of its tiled inference."""
    root = Path(__file__).resolve().parents[1] / "dcmp_cli"
    sources = ("core/tiling.py", "core/tiled_inference.py", "models/global_stats.py", "models/layers.py")
    tiles = hashlib.sha1((root / sources[0]).read_bytes()).hexdigest()[:10]
    digest = hashlib.sha1(b"".join((root / s).read_bytes() for s in sources)).hexdigest()[:10]
    return {m: tiles if m in ("naive", "before") else digest for m in METHODS}


def counted(fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, int]:
    """fn's result and the floating-point operations of its convolutions and matrix products."""
    with FlopCounterMode(display=False) as counter:
        y = fn()
    return y, counter.get_total_flops()


class FlopModel:
    """FLOPs of whole-image passes and of each step of dcmp's tiling, counted on a meta-device copy.

    The network's FLOPs depend only on the input's shape, so an image's cost is the sum
    over its tile grid of per-shape counts: no pixel is computed.
    """

    PLANS: tuple[tuple[str, ReusePlan], ...] = (("encoder", DEHAZE_REUSE_ENCODER), ("priors", DEHAZE_REUSE_PRIORS))

    def __init__(self, model: torch.nn.Module, overlap: int) -> None:
        self.model = copy.deepcopy(model).to("meta")
        self.overlap = overlap
        self.layers = statistic_modules(self.model, is_instance_norm)

    def network(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).image

    @cache  # noqa: B019 - a few dozen shapes, the object lives as long as the run
    def whole(self, height: int, width: int) -> int:
        return counted(lambda: self.network(torch.zeros(1, 3, height, width, device="meta")))[1]

    @cache  # noqa: B019 - as above
    def tile(self, height: int, width: int) -> dict[str, float]:
        """One tile of this shape: FLOPs of the sweep, of the final pass by plan, bytes kept by plan."""
        x = torch.zeros(1, 3, height, width, device="meta")
        values = statistics_pass(self.network, self.model, x, 64 * 64)[0]
        out = {
            "sweep": float(counted(lambda: self._sweep(x, values, None))[1]),
            "final": float(self.whole(height, width)),
        }
        for name, plan in self.PLANS:
            reuse = ReuseOutputs(self.model, [plan], 2**62, height * width, torch.device("meta"))
            self._sweep(x, values, reuse)
            with global_statistics(self.model, ReplayStats(values)), reuse.replaying(x.device):
                reuse.batch(0)
                out[f"final-{name}"] = float(counted(lambda: self.network(x))[1])
            out[f"bytes-{name}"] = float(reuse.bytes)
        return out

    def _sweep(self, x: torch.Tensor, values: dict[str, StatTuple], reuse: ReuseOutputs | None) -> torch.Tensor:
        size = -(-max(x.shape[2:]) // ALIGN) * ALIGN  # one tile
        accumulate_statistics(self.network, self.model, x, values, self.layers, size, 0, reuse=reuse)
        return x

    def costs(self, height: int, width: int, tile: int, stats_pixels: int, reuse_bytes: int) -> dict[str, float]:
        """FLOPs / whole-image FLOPs: naive tiles, dcmp without reuse, dcmp with ``reuse_bytes``; and the plan used."""
        grid = plan_tiles(height, width, tile, self.overlap)
        shapes = [(th, tw) for _, _, th, tw in grid.tiles()]
        whole = self.whole(height, width)
        naive = sum(n * self.whole(*shape) for shape, n in Counter(shapes).items())
        kh, kw = stats_factors(height, width, stats_pixels)
        if (kh, kw) == (1, 1):
            return {"naive": naive / whole, "recompute": 1.0, "reuse": 1.0, "plan": 0.0, "covered": 1.0}
        stats = self.whole(-(-height // kh), -(-width // kw))
        sweep = sum(self.tile(*shape)["sweep"] for shape in shapes)
        recompute = stats + sweep + naive
        plan, covered, final = self._reuse(shapes, reuse_bytes)
        return {
            "naive": naive / whole,
            "recompute": recompute / whole,
            "reuse": (stats + sweep + final) / whole,
            "plan": plan,
            "covered": covered,
        }

    def kept_bytes(self, height: int, width: int, tile: int) -> float:
        """Bytes of the encoder plan over every tile of the grid (what full reuse keeps)."""
        grid = plan_tiles(height, width, tile, self.overlap)
        return sum(self.tile(th, tw)["bytes-encoder"] for _, _, th, tw in grid.tiles())

    def _reuse(self, shapes: list[tuple[int, int]], budget: int) -> tuple[float, float, float]:
        """(plan: 2 encoder, 1 priors, 0 none; share of tiles reusing; final-pass FLOPs), as ReuseOutputs decides.

        ``budget``: reuse memory and scratch disk together (ReuseOutputs fills one, then the other).
        """
        full = [self.tile(*s) for s in shapes]
        if budget > 0 and sum(t["bytes-encoder"] for t in full) <= budget:
            return 2.0, 1.0, sum(t["final-encoder"] for t in full)
        used, final, covered = 0.0, 0.0, 0
        for t in full:
            if budget > 0 and used + t["bytes-priors"] <= budget:
                used += t["bytes-priors"]
                final += t["final-priors"]
                covered += 1
            else:
                final += t["final"]
        return (1.0 if covered else 0.0), covered / len(full), final


def family(key: str) -> str:
    if ".norm:mean_std" in key:
        return "layer norms"
    if "norm:mean_var" in key:
        return "instance norms"
    return "fusion pools" if key.startswith("cross_scale") else "skip pools"


def _size(text: str) -> tuple[int, int]:
    height, _, width = text.lower().partition("x")
    return int(height), int(width)


def size_label(height: int, width: int) -> str:
    return f"{max(height, width)}×{min(height, width)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--tiles", type=int, nargs="+", default=[256, 128])
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help=f"only {QUICK} crops of 640×480")
    parser.add_argument(
        "--stats-pixels",
        type=int,
        help="pixels of the statistics pass (default: as the predictor, max(tile², 512²)); small values emulate "
        "photos far larger than the memory budget",
    )
    parser.add_argument(
        "--min-stats-factor",
        type=int,
        default=2,
        help="dcmp's statistics pass averages blocks of at least this side (1: the predictor's rule, under which "
        "crops of ≤ 512² pixels get the exact whole-image pass as their result)",
    )
    parser.add_argument(
        "--reuse-memory",
        type=float,
        default=1.0,
        help="GiB for the features dcmp's final tiles reuse from the sweep (default 1, the CPU default; 0: none)",
    )
    parser.add_argument(
        "--max-disk",
        type=float,
        default=64.0,
        help="--large: GiB of scratch disk beyond the reuse memory (the CPU default is half the free space of TMPDIR)",
    )
    parser.add_argument(
        "--sizes",
        nargs="+",
        type=_size,
        help="crop sizes HxW taken in turn, landscape (default: 300x300 to 768x1024 plus one 1200x1600 crop); "
        "given sizes drop the 1200x1600 crop",
    )
    parser.add_argument("--min-pixels", type=int, default=0, help="only crops of at least this many pixels")
    parser.add_argument("--only", nargs="+", default=[], help="only crops whose name contains one of these")
    parser.add_argument("--diagnose", action="store_true", help="also split the difference by cause (slow)")
    parser.add_argument("--methods", nargs="+", default=["naive", "before", "dcmp"], choices=METHODS)
    parser.add_argument("--large", action="store_true", help="only the FLOP cost on large photos (no image is run)")
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path("/tmp/tiling-cache"),
        help="whole-image outputs and per-method results (reruns skip what is there)",
    )
    args = parser.parse_args()
    if not args.weights.exists():
        raise SystemExit(f"needs the briefly trained weights at {args.weights}")
    torch.set_grad_enabled(False)
    reuse_bytes = int(args.reuse_memory * GIB)
    bench = Bench(args.weights, args.overlap, args.stats_pixels, args.min_stats_factor, reuse_bytes)
    flops = FlopModel(bench.model, args.overlap)
    if args.large:
        large_costs(flops, bench, args.tiles, reuse_bytes, int(args.max_disk * GIB))
        return
    weights_id = hashlib.sha1(args.weights.read_bytes()).hexdigest()[:12]
    crops = make_crops(tuple(args.sizes), large=False) if args.sizes else make_crops()
    if args.quick:
        crops = [c for c in crops if c.height * c.width == 480 * 640][:QUICK]
    if args.only:
        crops = [c for c in crops if any(part in c.name for part in args.only)]
    crops = [c for c in crops if c.height * c.width >= args.min_pixels]
    args.cache.mkdir(parents=True, exist_ok=True)
    versions = method_versions()
    print(
        f"{len(crops)} crops, tiles {args.tiles}, overlap {args.overlap}, statistics pass "
        f"{args.stats_pixels or 'max(tile², 512²)'} pixels (dcmp: blocks of ≥ {args.min_stats_factor} a side), "
        f"reuse memory {args.reuse_memory:g} GiB, torch {torch.__version__}, {torch.get_num_threads()} threads; "
        "PSNR (dB) of 8-bit tiled vs 8-bit whole-image output; cost = FLOPs (convolutions, matrix products) / "
        "whole-image FLOPs"
    )
    header = f"{'crop':38s} {'size':>9s} " + " ".join(
        f"{m + '@' + str(t):>12s}" for t in args.tiles for m in args.methods
    )
    print(header)
    scores: dict[tuple[str, int], list[float]] = {}
    costs: dict[tuple[str, int], list[tuple[str, float]]] = {}
    for crop in crops:
        image = crop.tensor()
        x = to_network_range(image)
        key = hashlib.sha1(f"{weights_id}|{torch.__version__}|{crop}".encode()).hexdigest()[:16]
        cached = args.cache / f"whole-{key}.pt"
        if cached.exists():
            whole = torch.load(cached)[0]
        else:
            need = crop.height * crop.width * BYTES_PER_PIXEL
            if (available_ram() or 0) < need:
                print(f"{crop.name:38s} skipped: the whole-image pass needs about {need / 2**30:.1f} GiB")
                continue
            whole = from_network_range(bench.network(x).float())
            torch.save((whole, flops.whole(crop.height, crop.width)), cached)
        whole_flops = flops.whole(crop.height, crop.width)
        row = f"{crop.name:38s} {crop.width:>4d}x{crop.height:<4d} "
        for tile in args.tiles:
            for method in args.methods:
                if tile < 256 and crop.height * crop.width > LARGE_PIXELS:
                    row += f"{'-':>12s} "
                    continue
                if method in ("naive", "before"):
                    budget = "" if method == "naive" else f"-{bench.stats_budget(tile)}"
                else:
                    budget = f"-{bench.dcmp_budget(crop.height, crop.width, tile)}-{reuse_bytes}"
                result_file = (
                    args.cache / f"result-{key}-{method}-{tile}-{args.overlap}{budget}-{versions[method]}.json"
                )
                if result_file.exists():
                    value, ratio = json.loads(result_file.read_text())
                else:
                    y, n = counted(lambda method=method, tile=tile, x=x: getattr(bench, method)(x, tile))
                    value, ratio = psnr_8bit(from_network_range(y), whole), n / whole_flops
                    result_file.write_text(json.dumps([value, ratio]))
                scores.setdefault((method, tile), []).append(value)
                costs.setdefault((method, tile), []).append((size_label(crop.height, crop.width), ratio))
                row += f"{value:12.2f} "
        print(row, flush=True)
        if args.diagnose:
            diagnose(bench, x, whole, args.tiles)
    summarize(scores, costs)


def summarize(
    scores: dict[tuple[str, int], list[float]], costs: dict[tuple[str, int], list[tuple[str, float]]]
) -> None:
    """Worst and median PSNR per method and tile; FLOP cost over the whole-image pass and over naive tiling."""
    print(
        f"\nsummary over {len(next(iter(scores.values()), []))} crops (PSNR dB; cost: FLOPs × whole-image pass, "
        "and × naive tiling on the same grid)"
    )
    for (method, tile), values in scores.items():
        c = [r for _, r in costs[(method, tile)]]
        naive = [r for _, r in costs.get(("naive", tile), [])]
        versus = f"  vs naive median {statistics.median(a / b for a, b in zip(c, naive)):.2f}" if naive else ""
        print(
            f"  {method:9s} tile {tile:4d}: worst {min(values):6.2f}  median {statistics.median(values):6.2f}  "
            f"cost median {statistics.median(c):.2f} max {max(c):.2f}{versus}"
        )
    print("\ncost by crop size (median FLOPs × whole-image pass / × naive tiling)")
    for (method, tile), entries in costs.items():
        naive = costs.get(("naive", tile), [])
        by_size: dict[str, list[tuple[float, float]]] = {}
        for (size, ratio), (_, base) in zip(entries, naive or entries):
            by_size.setdefault(size, []).append((ratio, ratio / base))
        cells = "  ".join(
            f"{size} {statistics.median(r for r, _ in v):.2f}/{statistics.median(n for _, n in v):.2f}"
            for size, v in sorted(by_size.items(), key=lambda kv: math.prod(map(int, kv[0].split("×"))))
        )
        print(f"  {method:9s} tile {tile:4d}: {cells}")


def large_costs(flops: FlopModel, bench: Bench, tiles: list[int], reuse_bytes: int, disk_bytes: int) -> None:
    """FLOP cost of naive tiling and of dcmp on 4:3 photos of 2–40 MP (per-shape counts over the tile grid).

    dcmp three ways: recomputing everything in the final tiles; reusing the sweep's
    features within ``reuse_bytes`` of memory; and within that memory plus ``disk_bytes``
    of scratch disk (the CPU default), with the disk it writes.
    """
    print(
        f"FLOPs × the whole-image pass on 4:3 photos, overlap {flops.overlap}; dcmp: statistics pass ≤ "
        f"max(tile², 512²) pixels, reuse memory {reuse_bytes / GIB:g} GiB, scratch disk up to {disk_bytes / GIB:g} GiB"
    )
    print(
        f"{'photo':>14s} {'tile':>5s} {'naive':>6s} {'recompute':>10s} {'memory':>7s}  {'reuse (memory)':24s} "
        f"{'+ disk':>7s} {'÷ naive':>8s} {'disk GiB':>9s}"
    )
    for megapixels in (2, 4, 8, 12, 24, 40):
        width = round(math.sqrt(megapixels * 1e6 * 4 / 3) / 4) * 4
        height = width * 3 // 4
        for tile in tiles:
            stats_pixels = bench.stats_pixels or max(tile * tile, 512 * 512)
            c = flops.costs(height, width, tile, stats_pixels, reuse_bytes)
            d = flops.costs(height, width, tile, stats_pixels, reuse_bytes + disk_bytes)
            plan = {2.0: "encoder", 1.0: "priors", 0.0: "none"}[c["plan"]]
            kept = flops.kept_bytes(height, width, tile)
            written = max(0.0, kept - reuse_bytes) if d["plan"] == 2.0 else float("nan")
            print(
                f"{width:>6d}×{height:<6d} {tile:>5d} {c['naive']:6.2f} {c['recompute']:10.2f} {c['reuse']:7.2f}  "
                f"{plan + ', ' + format(c['covered'], '.0%') + ' of tiles':24s} {d['reuse']:7.2f} "
                f"{d['reuse'] / d['naive']:8.2f} {written / GIB:9.1f}",
                flush=True,
            )


def diagnose(bench: Bench, x: torch.Tensor, whole: torch.Tensor, tiles: list[int]) -> None:
    """Prints, per tile size: exact statistics, each family exact on top of ``before``, integer-factor pass."""
    exact, _ = bench.record(x)
    for tile in tiles:
        before = bench.before_stats(x, tile)

        def score(values: dict[str, StatTuple], tile: int = tile) -> float:
            return psnr_8bit(from_network_range(bench.replayed_tiles(x, tile, values)), whole)

        parts = {"exact stats": score(exact)}
        for fam in ("layer norms", "fusion pools", "instance norms", "skip pools"):
            parts[f"+{fam}"] = score({k: exact[k] if family(k) == fam else v for k, v in before.items()})
        parts["integer-k pass"] = score(bench.record(downscale_for_stats(x, bench.stats_budget(tile)))[0])
        print(f"    tile {tile}: " + "  ".join(f"{k} {v:.2f}" for k, v in parts.items()), flush=True)


if __name__ == "__main__":
    main()
