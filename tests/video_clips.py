"""Test video files made with the bundled ffmpeg, and what tests measure in them."""

from __future__ import annotations

import subprocess
from fractions import Fraction
from pathlib import Path

from dcmp_cli.data.video.ffmpeg import ffmpeg_exe


def make_clip(
    path: Path,
    frames: int = 12,
    size: str = "64x48",
    rate: str = "30000/1001",
    audio: bool = True,
    rotation: int | None = None,
    extra: tuple[str, ...] = (),
) -> Path:
    """A test-pattern clip (``testsrc``, H.264; 4:4:4 for odd sizes) with a sine tone as audio.

    ``extra``: more ffmpeg output arguments (filters, ``-movflags``...); ``rotation``: a
    display rotation in degrees, set by a remux.
    """
    cmd = [ffmpeg_exe(), "-hide_banner", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc=size={size}:rate={rate}"]
    if audio:
        cmd += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
    odd = any(int(v) % 2 for v in size.split("x"))
    cmd += ["-frames:v", str(frames), "-c:v", "libx264", "-pix_fmt", "yuv444p" if odd else "yuv420p", *extra]
    if audio:
        cmd += ["-c:a", "aac", "-shortest"]
    cmd.append(str(path))
    subprocess.run(cmd, check=True)
    if rotation is not None:
        rotated = path.with_name("rot-" + path.name)
        subprocess.run(
            [
                ffmpeg_exe(),
                "-hide_banner",
                "-v",
                "error",
                "-y",
                "-display_rotation",
                str(rotation),
                "-i",
                str(path),
                "-c",
                "copy",
                str(rotated),
            ],
            check=True,
        )
        rotated.replace(path)
    return path


def truncate(source: Path, target: Path, fraction: float = 0.5) -> Path:
    """A copy of ``source`` cut after ``fraction`` of its bytes (a copy that stopped halfway)."""
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * fraction)])
    return target


def audio_seconds(path: Path) -> float:
    """Total duration of the first audio stream's packets."""
    out = subprocess.run(
        [
            ffmpeg_exe(),
            "-hide_banner",
            "-v",
            "error",
            "-i",
            str(path),
            "-map",
            "0:a:0",
            "-c",
            "copy",
            "-f",
            "framecrc",
            "-",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    tb = next(Fraction(line.split(":", 1)[1].strip()) for line in out.splitlines() if line.startswith("#tb"))
    return float(sum(int(line.split(",")[3]) for line in out.splitlines() if line.startswith("0,")) * tb)
