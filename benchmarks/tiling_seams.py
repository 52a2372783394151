"""Tiled vs whole-image output with real weights: shared global statistics vs naive tiling.

    python benchmarks/tiling_seams.py --weights ../shared/weights/dcmpnet-sots-briefly-trained.pth

For each image that fits in one pass, runs the network whole, tiled with dcmp's shared
statistics, and tiled naively (each tile its own statistics; same overlap blending), and
prints PSNR of the 8-bit tiled outputs against the 8-bit whole-image output.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from dcmp_cli.core.checkpoint import read_checkpoint
from dcmp_cli.core.predictor import DehazePredictor, TileSettings
from dcmp_cli.core.tiling import tiled_apply
from dcmp_cli.data.image_io import image_to_tensor, read_image

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DEFAULT_IMAGES = [
    SHARED / "real" / "classic_canyon.png",
    SHARED / "real" / "classic_tower.png",
    SHARED / "real" / "rtts_BJ_Baidu_544.jpeg",
    SHARED / "sots_indoor_sample" / "hazy" / "1441_2.png",
]


class NaiveTiles(DehazePredictor):
    """Tiles that compute their own statistics (what a generic tiling helper does)."""

    def _tiled(self, x, tile, stats, progress):
        return tiled_apply(self.network, x, tile, min(self.tiling.overlap, tile // 2))


def psnr_8bit(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = ((torch.round(a * 255) - torch.round(b * 255)) ** 2).mean().item()
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--resize", type=int, nargs=2, metavar=("WIDTH", "HEIGHT"),
                        help="resize every image first (bicubic), e.g. to test multi-megapixel photos")
    parser.add_argument("images", nargs="*", type=Path, default=DEFAULT_IMAGES)
    args = parser.parse_args()
    model = read_checkpoint(args.weights, kind="dehaze").build()
    cpu = torch.device("cpu")
    whole_p = DehazePredictor(model, cpu, tiling=TileSettings(tile=0))
    ours_p = DehazePredictor(model, cpu, tiling=TileSettings(tile=args.tile, overlap=args.overlap))
    naive_p = NaiveTiles(model, cpu, tiling=TileSettings(tile=args.tile, overlap=args.overlap))
    print(f"tile {args.tile}, overlap {args.overlap}; PSNR (dB) of 8-bit tiled output vs 8-bit whole-image output")
    print(f"{'image':32s} {'size':>9s} {'shared stats':>13s} {'naive':>7s}")
    for path in args.images:
        if not path.exists():
            continue
        image = image_to_tensor(read_image(path).rgb)
        if args.resize:
            width, height = args.resize
            image = torch.nn.functional.interpolate(image, size=(height, width), mode="bicubic").clamp(0, 1)
        whole = whole_p(image)
        ours, naive = psnr_8bit(ours_p(image), whole), psnr_8bit(naive_p(image), whole)
        size = f"{image.shape[3]}x{image.shape[2]}"
        print(f"{path.name:32s} {size:>9s} {ours:13.2f} {naive:7.2f}")


if __name__ == "__main__":
    main()
