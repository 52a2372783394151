"""The README's contact sheet: each example photo as input | dcp | layered (the weight-free default).

    .venv/bin/python tools/make_readme_sheet.py [--out docs/images/weight-free-examples.jpg]

Uses only `examples/` (freely licensed photos with synthetic haze); `benchmarks/weightfree_quality.py`
writes the full sheets over the real photos of ../shared/data.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from dcmp_cli.data.image_io import quantize, read_image, write_image
from dcmp_cli.prior import DarkChannelPrior, LayeredDehazer

ROOT = Path(__file__).resolve().parents[1]
ROW_HEIGHT = 200


def _label(panel: np.ndarray, text: str) -> np.ndarray:
    pixels = np.ascontiguousarray(quantize(panel, 8)[:, :, ::-1])
    cv2.rectangle(pixels, (0, 0), (8 + 9 * len(text), 22), (0, 0, 0), thickness=-1)
    cv2.putText(pixels, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return pixels[:, :, ::-1].astype(np.float32) / 255.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "weight-free-examples.jpg")
    args = parser.parse_args()
    methods = [("dcp", DarkChannelPrior()), ("layered", LayeredDehazer())]
    rows = []
    for path in sorted((ROOT / "examples").glob("*.jpg")):
        rgb = read_image(path).rgb
        panels = [("input", rgb)] + [(name, prior.dehaze(rgb).image) for name, prior in methods]
        width = round(rgb.shape[1] * ROW_HEIGHT / rgb.shape[0])
        rows.append([_label(cv2.resize(p, (width, ROW_HEIGHT), interpolation=cv2.INTER_AREA), n) for n, p in panels])
    width = max(sum(p.shape[1] for p in row) for row in rows)
    sheet = np.ones((ROW_HEIGHT * len(rows), width, 3), np.float32)
    for i, row in enumerate(rows):
        strip = np.concatenate(row, axis=1)
        sheet[i * ROW_HEIGHT : (i + 1) * ROW_HEIGHT, : strip.shape[1]] = strip
    write_image(args.out, sheet, quality=88)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
