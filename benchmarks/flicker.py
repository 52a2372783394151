"""Flicker of dehazed video with and without temporal smoothing.

    .venv/bin/python benchmarks/flicker.py [--weights FILE] [--smooth 0 0.5 0.8 0.9] [--device cpu]

Flicker = mean over t of mean|out_t − out_{t−1}| divided by the same for the input
frames (1 = the output changes from frame to frame as much as the input does). It is
measured on the frames in memory, before video encoding, with the same
:class:`~dcmp_cli.core.video.TemporalDehazer` that `dcmp video` uses.

Clips:
* ``synthetic``: :func:`dcmp_cli.data.video.testclips.hazy_clip` (32 frames, 128×96): a textured
  scene whose haze thickness sweeps 1.0 → 1.6 → 1.0 and jitters ±10 % per frame, two
  near-white vehicles crossing, panning 1 px per frame, sensor noise σ = 0.01;
* ``real``: ../shared/data/video/dvp30_hazy_video.mp4 (158 frames of drifting smoke, one
  scene cut), downscaled with area averaging to ``--real-size`` (the network gets its first
  ``--network-frames`` frames: full DCMPNet is slow on a CPU).

Prints one row per (clip, method, smoothing) and the exact command line.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from dcmp_cli.core.device import resolve_device
from dcmp_cli.core.flicker import flicker
from dcmp_cli.core.predictor import DehazePredictor
from dcmp_cli.core.prior_models import PriorDehazer
from dcmp_cli.core.temporal import SceneCutDetector, TemporalDehazer, TemporalOptions
from dcmp_cli.data.video.decode import FrameRange, read_frames
from dcmp_cli.data.video.probe import probe_video
from dcmp_cli.data.video.testclips import hazy_clip
from dcmp_cli.prior import DarkChannelPrior, LayeredDehazer

REAL_CLIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "video" / "dvp30_hazy_video.mp4"


def real_frames(path: Path, size: tuple[int, int], count: int | None = None) -> list[np.ndarray]:
    """Frames of ``path`` as float32 in [0, 1], area-downscaled to ``size`` (0 0: full size)."""
    info = probe_video(path)
    frames = read_frames(info, FrameRange(max_frames=count))
    if not size[0]:
        return [f.astype(np.float32) / 255.0 for f in frames]
    return [cv2.resize(f, size, interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0 for f in frames]


def measure(frames: list[np.ndarray], model, smooth: float, scene_cut: float) -> tuple[float, float, int]:
    """(flicker, seconds per frame, scene cuts) for one setting."""
    dehazer = TemporalDehazer(model, TemporalOptions(smooth=smooth, scene_cut=scene_cut))
    start = time.perf_counter()
    outputs = dehazer(frames)
    seconds = (time.perf_counter() - start) / len(frames)
    return flicker(frames, outputs), seconds, dehazer.scene_cuts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, help="DCMPNet checkpoint (adds the network's rows)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--smooth", type=float, nargs="+", default=[0.0, 0.5, 0.8, 0.9])
    parser.add_argument("--scene-cut", type=float, default=0.1)
    parser.add_argument("--real", type=Path, default=REAL_CLIP, help="real hazy clip (skipped when absent)")
    parser.add_argument(
        "--real-size",
        type=int,
        nargs=2,
        default=[320, 180],
        metavar=("W", "H"),
        help="size the weight-free methods get the real clip at (0 0: full size)",
    )
    parser.add_argument("--network-frames", type=int, default=56, help="frames of the real clip the network gets")
    parser.add_argument("--network-size", type=int, nargs=2, default=[160, 96], metavar=("W", "H"))
    args = parser.parse_args()

    models: list[tuple[str, object]] = [
        ("layered", PriorDehazer(LayeredDehazer())),
        ("dcp", PriorDehazer(DarkChannelPrior())),
    ]
    if args.weights is not None:
        models.append(("dcmp", DehazePredictor.from_checkpoint(args.weights, resolve_device(args.device))))
    synthetic = list(hazy_clip())
    print("command:", shlex.join([".venv/bin/python", "benchmarks/flicker.py", *sys.argv[1:]]))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'clip':<34} {'method':<7} {'smooth':>6} {'flicker':>8} {'vs off':>7} {'cuts':>4} {'s/frame':>8}")
    for method, model in models:
        clips = [(f"synthetic {len(synthetic)}×128×96", synthetic)]
        if args.real.exists():
            if method != "dcmp":
                frames = real_frames(args.real, tuple(args.real_size))
            else:
                frames = real_frames(args.real, tuple(args.network_size), args.network_frames)
            clips.append((f"real {len(frames)}×{frames[0].shape[1]}×{frames[0].shape[0]}", frames))
        for label, frames in clips:
            baseline = None
            for smooth in args.smooth:
                value, seconds, cuts = measure(frames, model, smooth, args.scene_cut)
                baseline = value if baseline is None else baseline
                change = f"{100 * (value / baseline - 1):+.1f}%" if smooth != args.smooth[0] else "-"
                print(
                    f"{label:<34} {method:<7} {smooth:>6.2f} {value:>8.3f} {change:>7} {cuts:>4} {seconds:>8.3f}",
                    flush=True,
                )
    if args.real.exists():
        detector = SceneCutDetector(args.scene_cut)
        frames = real_frames(args.real, tuple(args.real_size))
        flags = [detector(f) for f in frames]
        print("scene cuts found in the real clip at frames:", [i for i, f in enumerate(flags) if f and i > 0])


if __name__ == "__main__":
    main()
