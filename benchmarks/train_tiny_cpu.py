"""Does `dcmp train` learn? A few minutes of the tiny preset on the CPU, on synthetic haze.

    python benchmarks/train_tiny_cpu.py --work /tmp/dcmp-train-bench

1. Draws procedural street-like scenes (sky, a textured ground plane receding to the
   horizon, boxes standing on it) with their exact depth maps: 64 for training and 16
   held out for validation (different seeds, so different scenes).
2. Hazes them with `dcmp synth` (β in 0.6–1.8, grey airlight 0.7–1.0, per image).
3. Trains with `dcmp train --config configs/tiny-cpu.toml` and reports the validation
   PSNR/SSIM of the restored images against the hazy inputs' own PSNR (the same
   pairs, the evaluation protocol `dcmpnet`).

Everything is generated here: no downloads, no shared data. Extra arguments after
``--`` go to `dcmp train` (e.g. ``-- --iters 300``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from dcmp_cli.data.image_io import write_image

ROOT = Path(__file__).resolve().parents[1]
SIZE = (96, 128)  # height, width of the scenes


def _texture(height: int, width: int, rng: np.random.Generator, base: np.ndarray, strength: float) -> np.ndarray:
    """``base`` colour modulated by a few random sinusoids and fine noise, (H, W, 3)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    pattern = np.zeros((height, width), np.float32)
    for _ in range(3):
        fy, fx = rng.uniform(0.05, 0.6, 2)
        pattern += np.sin(fx * xx + fy * yy + rng.uniform(0, 6.3))
    noise = rng.standard_normal((height, width)).astype(np.float32)
    shade = 1.0 + strength * (pattern / 3.0 + 0.3 * noise)
    return base.reshape(1, 1, 3) * shade[:, :, None]


def scene(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(clear (H, W, 3) in [0, 1], depth (H, W) in [0, 1], 0 nearest) of one procedural scene."""
    rng = np.random.default_rng(seed)
    h, w = SIZE
    horizon = int(rng.uniform(0.25, 0.45) * h)
    rows = np.arange(h, dtype=np.float32)[:, None].repeat(w, axis=1)
    depth = np.where(rows < horizon, 1.0, 0.9 * (h - 1 - rows) / max(1, h - 1 - horizon)).astype(np.float32)
    sky = np.array(rng.uniform([0.45, 0.55, 0.7], [0.7, 0.8, 0.95]), np.float32)
    ground = np.array(rng.uniform(0.15, 0.6, 3), np.float32)
    image = np.where(rows[:, :, None] < horizon, _texture(h, w, rng, sky, 0.05), _texture(h, w, rng, ground, 0.35))
    bases = np.sort(rng.uniform(horizon + 4, h, int(rng.integers(3, 7))).astype(int))
    for base in bases:  # boxes standing on the ground; nearer ones (lower base) drawn last, in front
        height = int(rng.uniform(0.15, 0.6) * (base - horizon + 20))
        width = int(rng.uniform(8, 40))
        left = int(rng.uniform(0, w - width))
        top = max(0, base - height)
        colour = np.array(rng.uniform(0.05, 0.95, 3), np.float32)
        image[top:base, left : left + width] = _texture(base - top, width, rng, colour, 0.3)
        depth[top:base, left : left + width] = 0.9 * (h - 1 - base) / max(1, h - 1 - horizon)
    return np.clip(image, 0.0, 1.0).astype(np.float32), depth


def write_scenes(folder: Path, seeds: range) -> None:
    for seed in seeds:
        clear, depth = scene(seed)
        write_image(folder / "clear" / f"scene{seed:04d}.png", clear)
        write_image(folder / "depth" / f"scene{seed:04d}.png", np.repeat(depth[:, :, None], 3, axis=2), bit_depth=16)


def dcmp(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dcmp_cli", *args], check=True, capture_output=True, text=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/dcmp-train-bench"), help="scratch folder (recreated)")
    parser.add_argument("--train-scenes", type=int, default=64)
    parser.add_argument("--val-scenes", type=int, default=16)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "tiny-cpu.toml")
    parser.add_argument("train_args", nargs="*", help="extra `dcmp train` arguments (after --)")
    args = parser.parse_args()

    if args.work.exists():
        shutil.rmtree(args.work)
    write_scenes(args.work / "scenes-train", range(args.train_scenes))
    write_scenes(args.work / "scenes-val", range(10_000, 10_000 + args.val_scenes))
    for split, seed in (("train", "1"), ("val", "2")):
        dcmp(
            "synth",
            str(args.work / f"scenes-{split}" / "clear"),
            str(args.work / split),
            "--depth",
            str(args.work / f"scenes-{split}" / "depth"),
            "--seed",
            seed,
        )

    command = [
        "train",
        "--config",
        str(args.config),
        "--data",
        str(args.work / "train"),
        "--val-data",
        str(args.work / "val"),
        "--out",
        str(args.work / "run"),
        "--json",
        *args.train_args,
    ]
    start = time.perf_counter()
    result = json.loads(dcmp(*command).stdout)
    minutes = (time.perf_counter() - start) / 60
    rows = [json.loads(line) for line in (args.work / "run" / "metrics.jsonl").read_text().splitlines()]
    validations = [r for r in rows if r["type"] == "val"]
    print("command: dcmp " + " ".join(command))
    print(f"{result['step']} iterations in {minutes:.1f} min (wall clock, including data checks and validation)")
    print("validation (held-out scenes), protocol dcmpnet:")
    print(f"  hazy inputs      PSNR {validations[-1]['hazy_psnr']:.2f} dB  SSIM {validations[-1]['hazy_ssim']:.4f}")
    for row in validations:
        print(f"  iteration {row['step']:>5}  PSNR {row['psnr']:.2f} dB  SSIM {row['ssim']:.4f}")
    print(f"  best             PSNR {result['best_psnr']:.2f} dB")


if __name__ == "__main__":
    main()
