"""Inference speed of the dehazing network: fast path vs plain eager, precisions, whole vs tiled.

    python benchmarks/inference.py                       # CPU (or CUDA when present), default sizes
    python benchmarks/inference.py --device cuda --large --json results.json

For each case prints milliseconds per image, megapixels per second, peak memory (CUDA
allocations, or the process's resident set on Linux CPUs) and achieved GFLOP/s, with the
fraction of the machine's measured peak (a large float32 matmul, and a bf16/fp16 one for
reduced-precision cases). FLOPs are counted with ``torch.utils.flop_counter`` on the plain
network at 256×256 and scaled by pixels (the network's cost is linear in the pixel count;
tiled runs are credited with the whole image's nominal FLOPs, so their overlap and
statistics pass show up as lower GFLOP/s). Reduced-precision and fast-path outputs are
compared with the plain fp32 output (PSNR, max |Δ|).

Weights: ``--weights`` (default ../shared/weights/dcmpnet-sots-briefly-trained.pth if
present, else random weights; speed does not depend on them).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from dcmp_cli.core.checkpoint import read_checkpoint
from dcmp_cli.core.device import resolve_device
from dcmp_cli.core.memory import PeakMemory
from dcmp_cli.core.predictor import DehazePredictor, TileSettings
from dcmp_cli.data.image_io import image_to_tensor, read_image
from dcmp_cli.models import create_model

SHARED = Path(__file__).resolve().parents[2] / "shared"
DEFAULT_WEIGHTS = SHARED / "weights" / "dcmpnet-sots-briefly-trained.pth"
PHOTO = SHARED / "data" / "real" / "classic_canyon.png"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """Measured GFLOP/s of an n×n matmul: the practical peak of this machine."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    sync(device)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def flops_per_pixel(model: torch.nn.Module, device: torch.device) -> float:
    x = torch.zeros(1, 3, 256, 256, device=device)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(x)
    return counter.get_total_flops() / (256 * 256)


def test_image(height: int, width: int) -> torch.Tensor:
    """A real photo resized to (height, width) when available, else a synthetic scene; (1, 3, H, W) in [0, 1]."""
    if PHOTO.exists():
        base = image_to_tensor(read_image(PHOTO).rgb)
    else:
        yy, xx = torch.meshgrid(torch.arange(480.0), torch.arange(640.0), indexing="ij")
        base = torch.stack([0.5 + 0.3 * torch.sin(xx / (9 + c) + yy / 13) for c in range(3)])[None]
    return torch.nn.functional.interpolate(base, size=(height, width), mode="bilinear", align_corners=False).clamp(0, 1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = ((a - b) ** 2).mean().item()
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def time_case(predictor: DehazePredictor, image: torch.Tensor, repeats: int) -> tuple[float, torch.Tensor, int | None]:
    """(median seconds, output, peak bytes) after one warm-up run."""
    output = predictor(image)  # warm-up (and the memory probe of auto tiling)
    times = []
    peak = None
    for i in range(repeats):
        sync(predictor.device)
        with PeakMemory(predictor.device) as meter:
            start = time.perf_counter()
            output = predictor(image)
            sync(predictor.device)
            times.append(time.perf_counter() - start)
        if i == 0:
            peak = meter.bytes
    return statistics.median(times), output, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS if DEFAULT_WEIGHTS.exists() else None)
    parser.add_argument("--sizes", type=int, nargs="*", help="square sizes (default: 256 512 1024, +2048 on CUDA)")
    parser.add_argument("--large", action="store_true", help="also a 12 MP (4000×3000) image, auto-tiled")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="also torch.compile'd fast path")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    device = resolve_device(args.device)
    if args.weights:
        plain = read_checkpoint(args.weights, kind="dehaze").build()
        weights = str(args.weights)
    else:
        torch.manual_seed(0)
        plain = create_model("dcmpnet").eval()
        weights = "random"
    plain = plain.to(device)
    per_pixel = flops_per_pixel(plain, device)
    reduced = ["bf16"] if device.type == "cpu" else ["fp16", "bf16"]
    peaks = {"fp32": matmul_peak(device, torch.float32)}
    for name in reduced:
        peaks[name] = matmul_peak(device, torch.bfloat16 if name == "bf16" else torch.float16)
    sizes = args.sizes or ([256, 512, 1024] + ([2048] if device.type == "cuda" else []))
    shapes = [(s, s) for s in sizes] + ([(3000, 4000)] if args.large else [])

    def predictor(fast: bool, precision: str, tile: int | None, compiled: bool = False) -> DehazePredictor:
        return DehazePredictor(copy.deepcopy(plain), device, precision, fast=fast, compile=compiled,  # type: ignore[arg-type]
                               tiling=TileSettings(tile=tile))

    cases = []
    for h, w in shapes:
        big = h * w > 2_000_000
        plan = [("plain", "fp32", 0)] if not big else []
        plan += [("fast", "fp32", 0 if not big else None)]
        plan += [("fast", p, 0 if not big else None) for p in reduced]
        if h >= 512 and not big:
            plan += [("fast", "fp32", 256)]
        if args.compile and not big:
            plan += [("compiled", "fp32", 0)]
        cases.append(((h, w), plan))

    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    print(f"device {device} ({hardware}), torch {torch.__version__}, {torch.get_num_threads()} CPU threads; weights: {weights}")
    print(f"network: {per_pixel / 1e6:.3f} MFLOP per pixel ({per_pixel * 65536 / 1e9:.1f} GFLOP at 256×256)")
    print("measured matmul peak: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items()))
    header = f"{'size':>11} {'path':>8} {'prec':>5} {'tiles':>6} {'ms/img':>9} {'MP/s':>7} {'peak MiB':>9} {'GFLOP/s':>8} {'of peak':>7} {'PSNR vs ref':>11}"
    print(header)
    results = []
    for (h, w), plan in cases:
        image = test_image(h, w)
        reference = None
        for path, precision, tile in plan:
            pred = predictor(path != "plain", precision, tile, compiled=path == "compiled")
            seconds, output, peak = time_case(pred, image, args.repeats)
            if reference is None and precision == "fp32":
                reference = output
            gflops = per_pixel * h * w / seconds / 1e9
            quality = psnr(output, reference) if reference is not None and output is not reference else None
            row = {
                "size": [h, w], "megapixels": h * w / 1e6, "path": path, "precision": precision,
                "tile": pred.last_tile, "ms_per_image": seconds * 1e3, "megapixels_per_s": h * w / 1e6 / seconds,
                "peak_bytes": peak, "gflops": gflops, "fraction_of_peak": gflops / peaks[precision],
                "psnr_vs_reference": quality,
                "max_abs_diff_vs_reference": None if quality is None else (output - reference).abs().max().item(),
            }
            results.append(row)
            tiles = str(pred.last_tile) if pred.last_tile else "whole"
            peak_text = f"{peak / 2**20:9.0f}" if peak is not None else f"{'-':>9}"
            quality_text = "reference" if quality is None else ("exact" if math.isinf(quality) else f"{quality:.1f} dB")
            print(f"{w:>5}×{h:<5} {path:>8} {precision:>5} {tiles:>6} {seconds * 1e3:9.0f} {h * w / 1e6 / seconds:7.3f} "
                  f"{peak_text} {gflops:8.1f} {gflops / peaks[precision]:6.0%} {quality_text:>11}")
    speedups = {}
    for (h, w), _ in cases:
        rows = {(r["path"], r["precision"], r["tile"]): r for r in results if r["size"] == [h, w]}
        plain_row, fast_row = rows.get(("plain", "fp32", 0)), rows.get(("fast", "fp32", 0))
        if plain_row and fast_row:
            speedups[f"{w}x{h}"] = plain_row["ms_per_image"] / fast_row["ms_per_image"]
    for size, factor in speedups.items():
        print(f"fast path vs plain eager at {size}: {factor:.2f}× faster")
    if args.json:
        args.json.write_text(json.dumps({
            "device": str(device), "hardware": hardware, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "weights": weights, "flops_per_pixel": per_pixel, "matmul_peak_gflops": peaks,
            "results": results, "speedup_fast_vs_plain": speedups,
        }, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
