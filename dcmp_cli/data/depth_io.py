"""Writing depth maps.

dcmp writes every depth map in one convention, whatever produced it: **relative depth,
normalised per image to [0, 1], 0 = nearest, 1 = farthest**. A network whose output is
disparity-like (larger = nearer, as the published DCMPNet depth weights) is flipped
before normalising. Formats, chosen by the output extension:

* ``.png``: 16-bit greyscale, value = round(depth · 65535). The text chunks
  ``dcmp:depth_min`` / ``dcmp:depth_max`` hold the raw range that was mapped to 0 and
  65535, and ``dcmp:convention`` the convention above.
* ``.npy``: the normalised depth as float32 (H, W).
* ``.tif`` / ``.tiff``: 16-bit greyscale like PNG.
* a colour-mapped 8-bit preview (any image extension) when a colormap is given.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from dcmp_cli.atomic import write_bytes_atomic
from dcmp_cli.data.image_io import ImageWriteError, encode_image

CONVENTION_TEXT = "relative depth, per-image min-max normalised, 0 = nearest, 1 = farthest"
COLORMAPS = {
    "turbo": cv2.COLORMAP_TURBO,
    "viridis": cv2.COLORMAP_VIRIDIS,
    "inferno": cv2.COLORMAP_INFERNO,
    "magma": cv2.COLORMAP_MAGMA,
    "plasma": cv2.COLORMAP_PLASMA,
    "jet": cv2.COLORMAP_JET,
    "gray": -1,
}
#: Extensions of depth maps dcmp reads and writes, in order of preference when several share a stem.
DEPTH_EXTENSIONS = (".png", ".npy", ".tif", ".tiff")


def normalise_depth(raw: np.ndarray, larger_is_nearer: bool) -> tuple[np.ndarray, float, float]:
    """Raw (H, W) map -> ([0, 1] relative depth with 0 = nearest, raw min, raw max)."""
    raw = raw.astype(np.float32)
    lo, hi = float(raw.min()), float(raw.max())
    span = hi - lo
    depth = (raw - lo) / span if span > 0 else np.zeros_like(raw)
    if larger_is_nearer:
        depth = 1.0 - depth
    return depth.astype(np.float32), lo, hi


def colorize(depth: np.ndarray, colormap: str) -> np.ndarray:
    """[0, 1] depth (H, W) -> float RGB (H, W, 3) in [0, 1] through a named colormap."""
    if colormap not in COLORMAPS:
        raise ValueError(f"unknown colormap {colormap!r}; choose one of {', '.join(COLORMAPS)}")
    grey = np.round(np.clip(depth, 0, 1) * 255).astype(np.uint8)
    if COLORMAPS[colormap] < 0:
        return np.repeat(grey[:, :, None], 3, axis=2).astype(np.float32) / 255.0
    bgr = cv2.applyColorMap(grey, COLORMAPS[colormap])
    return bgr[:, :, ::-1].astype(np.float32) / 255.0


def encode_depth(depth: np.ndarray, ext: str, raw_range: tuple[float, float], colormap: str | None = None) -> bytes:
    """Encodes a [0, 1] relative depth map (H, W) as ``ext``."""
    ext = ext.lower()
    if colormap is not None:
        return encode_image(colorize(depth, colormap), ext, bit_depth=8)
    if ext == ".npy":
        out = io.BytesIO()
        np.save(out, depth.astype(np.float32))
        return out.getvalue()
    pixels = np.round(np.clip(depth, 0, 1) * 65535).astype(np.uint16)
    if ext == ".png":
        info = PngInfo()
        info.add_text("dcmp:depth_min", repr(raw_range[0]))
        info.add_text("dcmp:depth_max", repr(raw_range[1]))
        info.add_text("dcmp:convention", CONVENTION_TEXT)
        out = io.BytesIO()
        Image.fromarray(pixels).save(out, format="PNG", pnginfo=info)
        return out.getvalue()
    if ext in (".tif", ".tiff"):
        ok, buffer = cv2.imencode(ext, pixels)
        if ok:
            return buffer.tobytes()
    raise ImageWriteError(
        f"cannot write depth as {ext or 'a file without extension'}; use .png, .tif or .npy "
        "(or any image extension for a colour-mapped preview)"
    )


def write_depth(
    path: str | os.PathLike, depth: np.ndarray, raw_range: tuple[float, float], colormap: str | None = None
) -> Path:
    """Writes a [0, 1] relative depth map atomically (format from the extension)."""
    path = Path(path)
    return write_bytes_atomic(path, encode_depth(depth, path.suffix, raw_range, colormap))


def read_depth_png(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, str]]:
    """Reads a depth PNG written by dcmp: ([0, 1] float32 depth, its text chunks)."""
    with Image.open(path) as im:
        pixels = np.asarray(im).astype(np.float32)
        text = dict(getattr(im, "text", {}) or {})
    return pixels / 65535.0, text
