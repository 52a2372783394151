"""The bundled ffmpeg binary: where it is, what it encodes, what its complaints mean."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from functools import lru_cache
from types import MappingProxyType


def ffmpeg_exe() -> str:
    """The ffmpeg binary of the imageio-ffmpeg wheel (or $IMAGEIO_FFMPEG_EXE)."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@lru_cache(maxsize=1)
def video_encoders() -> Mapping[str, str]:
    """The bundled ffmpeg's video encoders: encoder name -> codec name (libx265 -> hevc)."""
    out = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-encoders"], capture_output=True, text=True, check=False
    ).stdout
    encoders = {}
    for line in out.split("------", 1)[-1].splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith("V"):
            codec = re.search(r"\(codec (\w+)\)\s*$", line)
            encoders[parts[1]] = codec.group(1) if codec else parts[1]
    return MappingProxyType(encoders)


def ffmpeg_reason(stderr: str) -> str:
    """The most telling line of ffmpeg's stderr, without its ``[in#0 @ 0x…]`` prefix."""
    lines = [re.sub(r"^\[[^\]]*\]\s*", "", line).strip() for line in stderr.strip().splitlines()]
    lines = [line for line in lines if line]
    for line in reversed(lines):
        if line.startswith("Error opening input:"):
            return line.split(":", 1)[1].strip()
    for hint in ("moov atom not found", "Invalid data found", "No such file", "Permission denied"):
        for line in lines:
            if hint in line:
                return line
    return lines[-1] if lines else "ffmpeg failed without a message"


def first_line(error: BaseException) -> str:
    """The first meaningful line of an exception's text (imageio's errors run long)."""
    text = str(error).strip()
    for line in text.splitlines():
        if line.strip() and not line.startswith("==="):
            return line.strip()
    return type(error).__name__
