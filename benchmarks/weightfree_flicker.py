"""Flicker of the weight-free dehazers on a real hazy clip, with and without smoothing of their globals.

    .venv/bin/python benchmarks/weightfree_flicker.py [--clip FILE] [--smooth 0 0.8] [--max-frames N]

Each prior's image-global quantities (``estimate_globals``: the airlight for ``dcp``; airlight
and exposure gamma for ``layered``) are averaged over frames with an exponential moving
average ``g_t = s·g_{t−1} + (1 − s)·estimate_t`` that restarts at scene cuts
(:class:`dcmp_cli.core.video.SceneCutDetector`, threshold 0.1), and handed back through
``dehaze(frame, globals=g_t)``; ``s = 0`` dehazes every frame on its own. Flicker
(:class:`dcmp_cli.core.video.FlickerMeter`) is the mean absolute difference between
consecutive output frames over the same for the input frames (1 = the output changes as
much as the input). Frames are read with :mod:`dcmp_cli.data.video_io` at full size.
The clip (../shared/data/video/dvp30_hazy_video.mp4) is skipped when absent.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from dcmp_cli.core.video import FlickerMeter, SceneCutDetector
from dcmp_cli.data.video_io import FrameRange, probe_video, read_frames
from dcmp_cli.prior import DarkChannelPrior, ImagePrior, LayeredDehazer

CLIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "video" / "dvp30_hazy_video.mp4"


def flicker(frames: list[np.ndarray], prior: ImagePrior, smooth: float, scene_cut: float = 0.1) -> tuple[float, int, float]:
    """(flicker ratio, scene cuts, seconds per frame) of ``prior`` on float32 frames, globals EMA ``smooth``."""
    detector, meter = SceneCutDetector(scene_cut), FlickerMeter()
    state: np.ndarray | None = None
    cuts = 0
    start = time.perf_counter()
    for i, frame in enumerate(frames):
        new_scene = detector(frame)
        cuts += int(new_scene and i > 0)
        estimate = prior.estimate_globals(frame)
        if state is None or new_scene or smooth == 0:
            state = estimate
        else:
            state = (smooth * state + (1.0 - smooth) * estimate).astype(np.float32)
        meter.update(frame, prior.dehaze(frame, globals=state).image)
    return float(meter.ratio), cuts, (time.perf_counter() - start) / len(frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", type=Path, default=CLIP)
    parser.add_argument("--smooth", type=float, nargs="+", default=[0.0, 0.8])
    parser.add_argument("--max-frames", type=int)
    args = parser.parse_args()
    print("command:", shlex.join([".venv/bin/python", "benchmarks/weightfree_flicker.py", *sys.argv[1:]]))
    if not args.clip.exists():
        print(f"skipped: {args.clip} not found")
        return
    info = probe_video(args.clip)
    frames = [f.astype(np.float32) / 255.0 for f in read_frames(info, FrameRange(max_frames=args.max_frames))]
    h, w = frames[0].shape[:2]
    print(f"clip: {args.clip.name}, {len(frames)} frames, {w}x{h}")
    print(f"{'method':<9} {'smooth':>6} {'flicker':>8} {'cuts':>5} {'ms/frame':>9}")
    for prior in (DarkChannelPrior(), LayeredDehazer()):
        for smooth in args.smooth:
            ratio, cuts, seconds = flicker(frames, prior, smooth)
            print(f"{prior.name:<9} {smooth:6.1f} {ratio:8.3f} {cuts:5d} {seconds * 1000:9.1f}")


if __name__ == "__main__":
    main()
