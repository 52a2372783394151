"""Peak memory and time of `dcmp dehaze` on a large photo (default 4000×3000 = 12 MP), CPU.

    python benchmarks/large_image.py --weights ../shared/weights/dcmpnet-sots-briefly-trained.pth
    python benchmarks/large_image.py --weights W --megapixels 40 --extra --max-memory 1G
    python benchmarks/large_image.py --tiny --megapixels 40 --extra --max-memory 1G

Builds the test photo by upscaling a real hazy image (or a synthetic scene) to the size
asked (``--megapixels`` at 4:3, or ``--width``/``--height``), runs the CLI in a child
process with default options (auto tiles) plus ``--extra``, and reports wall time and the
child's peak resident memory (ru_maxrss). ``--tiny`` runs a randomly initialised
``dcmpnet-tiny`` network: its activations are small and fast, so what it measures beyond
the budget is the image's own cost (about 45 MB per megapixel). Check that RAM allows
that on top of the budget.
"""

from __future__ import annotations

import argparse
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from dcmp_cli.data.image_io import read_image, write_image

SHARED_PHOTO = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "classic_canyon.png"


def make_photo(path: Path, width: int, height: int) -> None:
    if SHARED_PHOTO.exists():
        rgb = read_image(SHARED_PHOTO).rgb
    else:
        yy, xx = np.mgrid[0:480, 0:640].astype(np.float32)
        rgb = np.stack([0.5 + 0.3 * np.sin(xx / (9 + c) + yy / 13) for c in range(3)], axis=2)
    write_image(path, cv2.resize(rgb, (width, height), interpolation=cv2.INTER_CUBIC).clip(0, 1), quality=92)


def write_tiny_checkpoint(path: Path) -> Path:
    """A randomly initialised ``dcmpnet-tiny`` dehazing checkpoint at ``path``."""
    import torch

    from dcmp_cli.core.checkpoint import save_checkpoint
    from dcmp_cli.models import create_model
    from dcmp_cli.models.registry import get_preset

    torch.manual_seed(0)
    model = create_model("dcmpnet-tiny", "dehaze")
    kwargs = get_preset("dcmpnet-tiny").kwargs("dehaze")
    return save_checkpoint(path, model, "dehaze", kwargs, trained_on="nothing (random weights, memory benchmark)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, help="dehazing checkpoint (default: the weight-free default method)")
    parser.add_argument("--tiny", action="store_true", help="a random dcmpnet-tiny network instead of --weights")
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--megapixels", type=float, help="photo size at 4:3 (overrides --width/--height)")
    parser.add_argument("--output", default="out.jpg", help="output file name (its type: .jpg, .png, .tif)")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="further dcmp dehaze options")
    args = parser.parse_args()
    if args.megapixels:
        args.width = round(math.sqrt(args.megapixels * 1e6 * 4 / 3) / 4) * 4
        args.height = args.width * 3 // 4
    with tempfile.TemporaryDirectory() as tmp:
        if args.tiny:
            args.weights = write_tiny_checkpoint(Path(tmp) / "tiny.safetensors")
        photo = Path(tmp) / "big.jpg"
        make_photo(photo, args.width, args.height)
        output = Path(tmp) / args.output
        cmd = [sys.executable, "-m", "dcmp_cli", "dehaze", str(photo), str(output), "--device", "cpu"]
        cmd += ["--weights", str(args.weights)] if args.weights else []
        cmd += args.extra
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        ok = proc.returncode == 0 and read_image(output).rgb.shape[:2] == (args.height, args.width)
    network = "--tiny" if args.tiny else f"--weights {args.weights}" if args.weights else "(weight-free default)"
    print(
        f"command: dcmp dehaze {args.width}x{args.height} photo ({args.width * args.height / 1e6:.1f} MP) "
        f"{network} --device cpu {' '.join(args.extra)}"
    )
    print(f"exit {proc.returncode}, output ok: {ok}")
    print(f"wall time: {seconds:.1f} s; peak resident memory: {peak / 1024**3:.2f} GiB")
    if proc.returncode:
        print(proc.stderr[-2000:])


if __name__ == "__main__":
    main()
