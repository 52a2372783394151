"""Tiled vs whole-image output with real weights, over many crops of real hazy photos.

    python benchmarks/tiling_seams.py                 # full run (≈ 2 h on 2 CPU cores)
    python benchmarks/tiling_seams.py --quick         # 6 crops of 640×480 (≈ 30 min)
    python benchmarks/tiling_seams.py --quick --diagnose   # where the differences come from

Crops every photo of ``../shared/data/real`` and ``real_more`` (sizes from 300×300 up to
1200×1600, the largest whose whole-image pass fits comfortably in RAM here; kinds:
bright/sky-heavy, dark, uniform fog, detailed; see :func:`make_crops`), runs the network on
each crop whole (cached on disk, with its CPU time) and tiled by three methods, and
prints the PSNR of every 8-bit tiled output against the 8-bit whole-image output:

* ``naive``: each tile its own statistics (dcmp's tile grid and blending);
* ``before``: dcmp ≤ 0.2: every statistic from one pass on the crop downscaled
  (fractional area resampling) to ≤ max(tile², 512²) pixels, replayed in every tile of
  a grid over the crop padded to a multiple of 32;
* ``dcmp``: :func:`dcmp_cli.core.tiled_inference.tiled_forward` (the predictor's path).

Compute cost: FLOPs of each method's convolutions and matrix products (which are nearly
all of the network's work) over those of the whole-image pass, per crop (median and max);
CPU time is too noisy on a shared machine. ``--diagnose`` adds, per crop: tiles replaying the exact whole-image
statistics (what remains is tile borders), the ``before`` statistics with one family
replaced by its exact whole-image values, and an integer-factor statistics pass.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from dcmp_cli.core.checkpoint import read_checkpoint
from dcmp_cli.core.memory import available_ram
from dcmp_cli.core.predictor import DehazePredictor, TileSettings
from dcmp_cli.core.tiled_inference import downscale_for_stats, tiled_forward
from dcmp_cli.core.tiling import ALIGN, tiled_apply
from dcmp_cli.core.value_range import from_network_range, to_network_range
from dcmp_cli.data.image_io import image_to_tensor, read_image
from dcmp_cli.models.global_stats import RecordStats, ReplayStats, StatTuple, global_statistics

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


def make_crops() -> list[Crop]:
    """One crop per photo, sizes taken in turn from those that fit, plus a :data:`LARGE`
    crop of the largest photo; kinds in turn. Deterministic."""
    photos = sorted(p for d in PHOTO_DIRS if d.is_dir() for p in d.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    largest = max(photos, key=lambda p: np.prod(read_image(p).rgb.shape[:2]))
    crops = []
    for i, photo in enumerate(photos):
        rgb = read_image(photo).rgb
        luma = rgb.mean(axis=2)
        grad = np.abs(np.diff(luma, axis=0, append=luma[-1:])) + np.abs(np.diff(luma, axis=1, append=luma[:, -1:]))
        ph, pw = luma.shape
        fitting = [(h, w) if pw >= ph else (w, h) for h, w in SIZES if min(h, w) <= min(ph, pw) and max(h, w) <= max(ph, pw)]
        sizes = [fitting[i % len(fitting)] if fitting else (ph, pw)]
        if photo == largest:
            sizes.append((LARGE[1], LARGE[0]) if ph > pw else LARGE)
        for j, (h, w) in enumerate(sizes):
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

    def __init__(self, weights: Path, overlap: int, stats_pixels: int | None) -> None:
        predictor = DehazePredictor(read_checkpoint(weights, kind="dehaze").build(), CPU, tiling=TileSettings(tile=0))
        self.model, self.network, self.overlap = predictor.model, predictor.network, overlap
        self.stats_pixels = stats_pixels

    def stats_budget(self, tile: int) -> int:
        """Pixels of the statistics pass: the predictor's rule unless --stats-pixels says otherwise."""
        return self.stats_pixels or max(tile * tile, TileSettings().stats_pixels)

    def record(self, x: torch.Tensor) -> tuple[dict[str, StatTuple], torch.Tensor]:
        with global_statistics(self.model, RecordStats()) as recorder:
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
        return tiled_forward(self.network, self.model, x, tile, self.overlap, stats_pixels=self.stats_budget(tile))

    def s0only(self, x: torch.Tensor, tile: int) -> torch.Tensor:
        """dcmp's integer-factor statistics pass alone, without the accumulation sweep."""
        return self.replayed_tiles(x, tile, self.record(downscale_for_stats(x, self.stats_budget(tile)))[0])


def method_versions() -> dict[str, str]:
    """Cache tags: dcmp's methods change with the sources of its tiled inference."""
    root = Path(__file__).resolve().parents[1] / "dcmp_cli"
    sources = ("core/tiling.py", "core/tiled_inference.py", "models/global_stats.py", "models/layers.py")
    tiles = hashlib.sha1((root / sources[0]).read_bytes()).hexdigest()[:10]
    digest = hashlib.sha1(b"".join((root / s).read_bytes() for s in sources)).hexdigest()[:10]
    return {"naive": tiles, "before": tiles, "s0only": digest, "dcmp": digest}


def counted(fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, int]:
    """fn's result and the floating-point operations of its convolutions and matrix products."""
    with FlopCounterMode(display=False) as counter:
        y = fn()
    return y, counter.get_total_flops()


def family(key: str) -> str:
    if ".norm:mean_std" in key:
        return "layer norms"
    if "norm:mean_var" in key:
        return "instance norms"
    return "fusion pools" if key.startswith("cross_scale") else "skip pools"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--tiles", type=int, nargs="+", default=[256, 128])
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help=f"only {QUICK} crops of 640×480")
    parser.add_argument("--stats-pixels", type=int, help="pixels of the statistics pass (default: as the predictor, "
                        "max(tile², 512²)); small values emulate photos far larger than the memory budget")
    parser.add_argument("--only", nargs="+", default=[], help="only crops whose name contains one of these")
    parser.add_argument("--diagnose", action="store_true", help="also split the difference by cause (slow)")
    parser.add_argument("--methods", nargs="+", default=["naive", "before", "dcmp"],
                        choices=["naive", "before", "s0only", "dcmp"])
    parser.add_argument("--cache", type=Path, default=Path("/tmp/tiling-cache"),
                        help="whole-image outputs and per-method results (reruns skip what is there)")
    args = parser.parse_args()
    if not args.weights.exists():
        raise SystemExit(f"needs the briefly trained weights at {args.weights}")
    torch.set_grad_enabled(False)
    bench = Bench(args.weights, args.overlap, args.stats_pixels)
    weights_id = hashlib.sha1(args.weights.read_bytes()).hexdigest()[:12]
    crops = make_crops()
    if args.quick:
        crops = [c for c in crops if c.height * c.width == 480 * 640][:QUICK]
    if args.only:
        crops = [c for c in crops if any(part in c.name for part in args.only)]
    args.cache.mkdir(parents=True, exist_ok=True)
    versions = method_versions()
    print(f"{len(crops)} crops, tiles {args.tiles}, overlap {args.overlap}, statistics pass "
          f"{args.stats_pixels or 'max(tile², 512²)'} pixels, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; PSNR (dB) of 8-bit tiled vs 8-bit whole-image output; "
          "cost = FLOPs (convolutions, matrix products) / whole-image FLOPs")
    header = f"{'crop':38s} {'size':>9s} " + " ".join(f"{m + '@' + str(t):>12s}" for t in args.tiles for m in args.methods)
    print(header)
    scores: dict[tuple[str, int], list[float]] = {}
    costs: dict[tuple[str, int], list[float]] = {}
    for crop in crops:
        image = crop.tensor()
        x = to_network_range(image)
        key = hashlib.sha1(f"{weights_id}|{torch.__version__}|{crop}".encode()).hexdigest()[:16]
        cached = args.cache / f"whole-{key}.pt"
        if cached.exists():
            whole, whole_flops = torch.load(cached)
        else:
            need = crop.height * crop.width * BYTES_PER_PIXEL
            if (available_ram() or 0) < need:
                print(f"{crop.name:38s} skipped: the whole-image pass needs about {need / 2**30:.1f} GiB")
                continue
            y, whole_flops = counted(lambda: bench.network(x))
            whole = from_network_range(y.float())
            torch.save((whole, whole_flops), cached)
        row = f"{crop.name:38s} {crop.width:>4d}x{crop.height:<4d} "
        for tile in args.tiles:
            for method in args.methods:
                if tile < 256 and crop.height * crop.width > LARGE_PIXELS:
                    row += f"{'-':>12s} "
                    continue
                method_run = method
                budget = "" if method_run == "naive" else f"-{bench.stats_budget(tile)}"
                result_file = args.cache / f"result-{key}-{method_run}-{tile}-{args.overlap}{budget}-{versions[method_run]}.json"
                if result_file.exists():
                    value, ratio = json.loads(result_file.read_text())
                else:
                    y, flops = counted(lambda: getattr(bench, method_run)(x, tile))
                    value, ratio = psnr_8bit(from_network_range(y), whole), flops / whole_flops
                    result_file.write_text(json.dumps([value, ratio]))
                scores.setdefault((method, tile), []).append(value)
                costs.setdefault((method, tile), []).append(ratio)
                row += f"{value:12.2f} "
        print(row, flush=True)
        if args.diagnose:
            diagnose(bench, x, whole, args.tiles)
    print(f"\nsummary over {len(next(iter(scores.values()), []))} crops (PSNR dB; cost × whole-image FLOPs)")
    for (method, tile), values in scores.items():
        c = costs[(method, tile)]
        print(f"  {method:7s} tile {tile:4d}: worst {min(values):6.2f}  median {statistics.median(values):6.2f}  "
              f"cost median {statistics.median(c):.2f} max {max(c):.2f}")


def diagnose(bench: Bench, x: torch.Tensor, whole: torch.Tensor, tiles: list[int]) -> None:
    """Prints, per tile size: exact statistics, each family exact on top of ``before``, integer-factor pass."""
    exact, _ = bench.record(x)
    for tile in tiles:
        before = bench.before_stats(x, tile)

        def score(values: dict[str, StatTuple]) -> float:
            return psnr_8bit(from_network_range(bench.replayed_tiles(x, tile, values)), whole)

        parts = {"exact stats": score(exact)}
        for fam in ("layer norms", "fusion pools", "instance norms", "skip pools"):
            parts[f"+{fam}"] = score({k: exact[k] if family(k) == fam else v for k, v in before.items()})
        parts["integer-k pass"] = score(bench.record(downscale_for_stats(x, bench.stats_budget(tile)))[0])
        print(f"    tile {tile}: " + "  ".join(f"{k} {v:.2f}" for k, v in parts.items()), flush=True)


if __name__ == "__main__":
    main()
