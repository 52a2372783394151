"""Inference speed of the dehazing network: fast path vs plain eager, precisions, whole vs tiled, compiled.

    python benchmarks/inference.py                       # CPU (or CUDA when present), default sizes
    python benchmarks/inference.py --device cuda --large --json results.json
    python benchmarks/inference.py --device cuda --sizes 512 1024 2048 --precisions fp32 fp16 bf16 \
        --compile all --compile-sizes 1024 --json gpu.json

For each case prints milliseconds per image, megapixels per second, peak memory (CUDA
allocations, or the process's resident set on Linux CPUs) and achieved GFLOP/s, with the
fraction of the machine's measured peak (a large float32 matmul, and a bf16/fp16 one for
reduced-precision cases). FLOPs are counted with ``torch.utils.flop_counter`` on the plain
network at 256×256 and scaled by pixels (the network's cost is linear in the pixel count;
tiled runs are credited with the whole image's nominal FLOPs, so their overlap and
statistics pass show up as lower GFLOP/s). Reduced-precision, fast-path and compiled outputs
are compared with the fp32 output of the same size (PSNR, max |Δ|). The first call of each
case (warm-up: cuDNN autotuning, or compilation for compiled cases) is timed separately.
A case that fails (out of memory, a compiler error) is reported in its row and the run goes on.

Weights: ``--weights`` (default ../shared/weights/dcmpnet-sots-briefly-trained.pth if
present, else random weights; speed does not depend on them); ``--preset NAME`` uses random
weights of another preset (e.g. dcmpnet-tiny for a quick check of this script).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import math
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from dcmp_cli.core.checkpoint import read_checkpoint
from dcmp_cli.core.device import PRECISIONS, check_precision, resolve_device
from dcmp_cli.core.memory import PeakMemory
from dcmp_cli.core.predictor import DehazePredictor, TileSettings
from dcmp_cli.data.image_io import image_to_tensor, read_image
from dcmp_cli.models import create_model

SHARED = Path(__file__).resolve().parents[2] / "shared"
DEFAULT_WEIGHTS = SHARED / "weights" / "dcmpnet-sots-briefly-trained.pth"
PHOTO = SHARED / "data" / "real" / "classic_canyon.png"
#: Above this many pixels an image is "big": no plain eager or fixed-tile case, auto tiling.
BIG_PIXELS = 2_000_000
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, repeats: int = 5) -> float:
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


def time_case(
    predictor: DehazePredictor, image: torch.Tensor, repeats: int
) -> tuple[float, float, torch.Tensor, int | None]:
    """(median seconds, first-call seconds, output, peak bytes); the first call is the warm-up."""
    sync(predictor.device)
    start = time.perf_counter()
    output = predictor.run(image)  # warm-up: cuDNN autotuning, compilation, the memory probe of auto tiling
    sync(predictor.device)
    first = time.perf_counter() - start
    times = []
    peak = None
    for i in range(repeats):
        sync(predictor.device)
        with PeakMemory(predictor.device) as meter:
            start = time.perf_counter()
            output = predictor.run(image)
            sync(predictor.device)
            times.append(time.perf_counter() - start)
        if i == 0:
            peak = meter.bytes
    return statistics.median(times), first, output, peak


@dataclass(frozen=True)
class Case:
    """One measurement: ``path`` plain (eager, unmodified network), fast or compiled; ``tile`` None = auto."""

    path: str
    precision: str
    tile: int | None


def plan_cases(
    height: int, width: int, precisions: list[str], compile_precisions: list[str], compile_here: bool
) -> list[Case]:
    """The cases measured at one size; the first fp32 case is the reference of the others."""
    big = height * width > BIG_PIXELS
    whole = None if big else 0
    cases = [] if big else [Case("plain", "fp32", 0)]
    cases += [Case("fast", "fp32", whole)]
    cases += [Case("fast", p, whole) for p in precisions if p != "fp32"]
    if height >= 512 and not big:
        cases.append(Case("fast", "fp32", 256))
    if compile_here and not big:
        cases += [Case("compiled", p, 0) for p in compile_precisions]
    return cases


def environment(device: torch.device) -> dict[str, Any]:
    """Hardware and software the figures were measured with."""
    info: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            {
                "hardware": torch.cuda.get_device_name(device),
                "cuda": torch.version.cuda,
                "cudnn": torch.backends.cudnn.version(),
                "gpu_memory_bytes": props.total_memory,
                "compute_capability": f"{props.major}.{props.minor}",
                "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
                "tf32_cudnn": torch.backends.cudnn.allow_tf32,
            }
        )
    else:
        info["hardware"] = platform.processor() or platform.machine()
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS if DEFAULT_WEIGHTS.exists() else None)
    parser.add_argument("--preset", help="random weights of this preset instead of --weights (e.g. dcmpnet-tiny)")
    parser.add_argument("--sizes", type=int, nargs="*", help="square sizes (default: 256 512 1024, +2048 on CUDA)")
    parser.add_argument(
        "--precisions",
        nargs="+",
        choices=PRECISIONS,
        help="precisions to measure (default: fp32 and bf16 on the CPU, fp32, fp16 and bf16 on GPUs); "
        "fp32 always runs as the reference",
    )
    parser.add_argument("--large", action="store_true", help="also a 12 MP (4000×3000) image, auto-tiled")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--compile",
        nargs="?",
        const="fp32",
        default="none",
        choices=["none", "fp32", "all"],
        help="also the torch.compile'd fast path: fp32 (the bare flag) or every measured precision",
    )
    parser.add_argument(
        "--compile-sizes", type=int, nargs="+", help="sizes with compiled cases (default: every size up to 2 MP)"
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    device = resolve_device(args.device)
    if args.preset:
        torch.manual_seed(0)
        plain = create_model(args.preset).eval()
        weights = f"random ({args.preset})"
    elif args.weights:
        plain = read_checkpoint(args.weights, kind="dehaze").build()
        weights = str(args.weights)
    else:
        torch.manual_seed(0)
        plain = create_model("dcmpnet").eval()
        weights = "random"
    plain = plain.to(device)
    default_reduced = ["bf16"] if device.type == "cpu" else ["fp16", "bf16"]
    precisions = ["fp32"] + [p for p in (args.precisions or default_reduced) if p != "fp32"]
    for precision in precisions:
        check_precision(precision, device)
    compile_precisions = {"none": [], "fp32": ["fp32"], "all": precisions}[args.compile]
    per_pixel = flops_per_pixel(plain, device)
    n = 8192 if device.type == "cuda" else 2048
    peaks = {p: matmul_peak(device, _DTYPES[p], n) for p in precisions}
    sizes = args.sizes or ([256, 512, 1024] + ([2048] if device.type == "cuda" else []))
    shapes = [(s, s) for s in sizes] + ([(3000, 4000)] if args.large else [])

    def predictor(case: Case) -> DehazePredictor:
        return DehazePredictor(
            copy.deepcopy(plain),
            device,
            case.precision,  # type: ignore[arg-type]
            fast=case.path != "plain",
            compile=case.path == "compiled",
            tiling=TileSettings(tile=case.tile),
        )

    cases = [
        ((h, w), plan_cases(h, w, precisions, compile_precisions, not args.compile_sizes or h in args.compile_sizes))
        for h, w in shapes
    ]
    env = environment(device)
    print(
        f"device {device} ({env['hardware']}), torch {torch.__version__}"
        + (f", CUDA {env['cuda']}, cuDNN {env['cudnn']}" if device.type == "cuda" else "")
        + f", {torch.get_num_threads()} CPU threads; weights: {weights}"
    )
    print(f"network: {per_pixel / 1e6:.3f} MFLOP per pixel ({per_pixel * 65536 / 1e9:.1f} GFLOP at 256×256)")
    print(f"measured matmul peak ({n}²): " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items()))
    header = (
        f"{'size':>11} {'path':>8} {'prec':>5} {'tiles':>6} {'first s':>8} {'ms/img':>9} {'MP/s':>7} "
        f"{'peak MiB':>9} {'GFLOP/s':>8} {'of peak':>7} {'PSNR vs fp32':>12}"
    )
    print(header)
    results: list[dict[str, Any]] = []
    speedups: dict[str, float] = {}

    def write_json() -> None:
        if args.json:
            args.json.write_text(
                json.dumps(
                    {
                        **env,
                        "weights": weights,
                        "flops_per_pixel": per_pixel,
                        "matmul_size": n,
                        "matmul_peak_gflops": peaks,
                        "results": results,
                        "speedup_fast_vs_plain": speedups,
                    },
                    indent=2,
                )
            )

    for (h, w), plan in cases:
        image = test_image(h, w)
        reference = None
        for case in plan:
            row: dict[str, Any] = {
                "size": [h, w],
                "megapixels": h * w / 1e6,
                "path": case.path,
                "precision": case.precision,
            }
            try:
                pred = predictor(case)
                row["tile"] = pred.plan(h, w)
                seconds, first, output, peak = time_case(pred, image, args.repeats)
            except Exception as error:  # noqa: BLE001 - a failed case is reported in its row; the others go on
                row["error"] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:300]
                results.append(row)
                write_json()
                print(f"{w:>5}×{h:<5} {case.path:>8} {case.precision:>5} failed: {row['error']}")
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            if reference is None and case.precision == "fp32":
                reference = output
            quality = difference = None
            if reference is not None and output is not reference:
                quality, difference = psnr(output, reference), (output - reference).abs().max().item()
            gflops = per_pixel * h * w / seconds / 1e9
            row.update(
                {
                    "first_call_s": first,
                    "ms_per_image": seconds * 1e3,
                    "megapixels_per_s": h * w / 1e6 / seconds,
                    "peak_bytes": peak,
                    "gflops": gflops,
                    "fraction_of_peak": gflops / peaks[case.precision],
                    "psnr_vs_reference": quality,
                    "max_abs_diff_vs_reference": difference,
                }
            )
            results.append(row)
            write_json()  # after every case, so that a run stopped early keeps what it measured
            tiles = str(row["tile"]) if row["tile"] else "whole"
            peak_text = f"{peak / 2**20:9.0f}" if peak is not None else f"{'-':>9}"
            quality_text = "reference" if quality is None else ("exact" if math.isinf(quality) else f"{quality:.1f} dB")
            print(
                f"{w:>5}×{h:<5} {case.path:>8} {case.precision:>5} {tiles:>6} {first:8.2f} {seconds * 1e3:9.1f} "
                f"{h * w / 1e6 / seconds:7.3f} {peak_text} {gflops:8.1f} {gflops / peaks[case.precision]:6.0%} "
                f"{quality_text:>12}"
            )
            del pred
            if device.type == "cuda":
                torch.cuda.empty_cache()
    for (h, w), _ in cases:
        rows = {
            (r["path"], r["precision"], r.get("tile")): r for r in results if r["size"] == [h, w] and "error" not in r
        }
        plain_row, fast_row = rows.get(("plain", "fp32", 0)), rows.get(("fast", "fp32", 0))
        if plain_row and fast_row:
            speedups[f"{w}x{h}"] = plain_row["ms_per_image"] / fast_row["ms_per_image"]
    for size, factor in speedups.items():
        print(f"fast path vs plain eager at {size}: {factor:.2f}× faster")
    failed = [r for r in results if "error" in r]
    if failed:
        print(f"{len(failed)} case(s) failed")
    if args.json:
        write_json()
        print(f"wrote {args.json}")
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
