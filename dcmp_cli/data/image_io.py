"""Reading and writing real image files.

:func:`read_image` returns the colour content as float32 RGB in [0, 1] plus what is
needed to write a result back in the same form: the bit depth (8 or 16), whether the
file was greyscale, and the alpha channel untouched. EXIF orientation is applied.
Pillow decodes (it refuses truncated files instead of filling them with grey); OpenCV
decodes 16-bit colour PNG/TIFF, which Pillow reduces to 8 bits.

:func:`write_image` quantises with rounding, as the authors' scripts do, and writes
atomically.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from dcmp_cli.atomic import write_bytes_atomic

#: Extensions read as images (lower case).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp")
_PIL_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
    ".bmp": "BMP",
}
#: Formats that hold 16 bits per channel.
SIXTEEN_BIT_EXTENSIONS = (".png", ".tif", ".tiff")
#: ITU-R BT.601 luma weights (Pillow's RGB -> L).
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)


class ImageReadError(ValueError):
    """The file is not a readable image; the message says why."""


class ImageWriteError(ValueError):
    """The image cannot be written as asked (unknown extension, …)."""


@dataclass
class LoadedImage:
    """An image as dcmp processes it.

    ``rgb``: float32 (H, W, 3) in [0, 1]. ``alpha``: the file's alpha channel as stored
    (uint8 or uint16, (H, W)) or None. ``bit_depth``: 8 or 16 bits per channel in the
    file. ``grey``: the file had one colour channel.
    """

    rgb: np.ndarray
    alpha: np.ndarray | None = None
    bit_depth: int = 8
    grey: bool = False

    @property
    def height(self) -> int:
        return self.rgb.shape[0]

    @property
    def width(self) -> int:
        return self.rgb.shape[1]


def _is_16bit_colour(im: Image.Image) -> bool:
    if im.mode not in ("RGB", "RGBA") or not im.tile:
        return False
    args = im.tile[0].args if hasattr(im.tile[0], "args") else im.tile[0][3]
    rawmode = args if isinstance(args, str) else (args[0] if args else "")
    return isinstance(rawmode, str) and ";16" in rawmode


def _orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """Applies an EXIF orientation (1-8) to an (H, W[, C]) array."""
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: np.swapaxes(a, 0, 1),
        6: lambda a: np.swapaxes(a, 0, 1)[:, ::-1],
        7: lambda a: np.swapaxes(a, 0, 1)[::-1, ::-1],
        8: lambda a: np.swapaxes(a, 0, 1)[::-1],
    }
    op = ops.get(orientation)
    return np.ascontiguousarray(op(array)) if op else array


def _decode_16bit_colour(data: bytes) -> np.ndarray:
    array = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None or array.dtype != np.uint16:
        raise ImageReadError("corrupt 16-bit image data")
    if array.ndim == 2:
        return array
    order = [2, 1, 0, 3] if array.shape[2] == 4 else [2, 1, 0]
    return array[:, :, order]


def _decode_pil(im: Image.Image) -> np.ndarray:
    """Pillow image -> uint8/uint16 array (H, W), (H, W, 3) or (H, W, 4)/(H, W, 2)."""
    mode = im.mode
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode == "PA":
        im = im.convert("RGBA")
    elif mode == "1":
        im = im.convert("L")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        im = im.convert("RGB")
    elif mode in ("RGBa", "La"):
        im = im.convert("RGBA" if mode == "RGBa" else "LA")
    elif mode == "F":
        raise ImageReadError("32-bit floating-point images are not supported; convert to 16-bit PNG or TIFF")
    array = np.asarray(im)
    if mode.startswith("I"):
        # 16-bit greyscale ("I;16", "I;16B", or "I" holding 16-bit values).
        if array.dtype != np.uint16:
            if array.min() < 0 or array.max() > 65535:
                raise ImageReadError("32-bit integer images are not supported")
            array = array.astype(np.uint16)
        array = array.astype(np.uint16, copy=False)
    return array


def read_image(path: str | os.PathLike) -> LoadedImage:
    """Reads an image file. Raises :class:`ImageReadError` with a short reason."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ImageReadError("file not found") from None
    except IsADirectoryError:
        raise ImageReadError("is a directory") from None
    except PermissionError:
        raise ImageReadError("permission denied") from None
    except OSError as e:
        raise ImageReadError(f"cannot read file ({e.strerror or e})") from None
    return decode_image(data)


def decode_image(data: bytes) -> LoadedImage:
    """Decodes an encoded image (PNG, JPEG, TIFF, WebP, BMP … bytes), see :func:`read_image`."""
    if not data:
        raise ImageReadError("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                sixteen_bit_colour = _is_16bit_colour(im)  # before getexif(), which may load
                orientation = im.getexif().get(0x0112, 1)
                if sixteen_bit_colour:
                    array = _decode_16bit_colour(data)
                else:
                    im.load()
                    array = _decode_pil(im)
    except UnidentifiedImageError:
        raise ImageReadError("not an image (unknown or unsupported format)") from None
    except Image.DecompressionBombError as e:
        raise ImageReadError(f"image too large ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:
        if isinstance(e, ImageReadError):
            raise
        raise ImageReadError(f"corrupt or truncated image ({e})") from None
    array = _orient(array, int(orientation) if isinstance(orientation, int) else 1)
    return _to_loaded(array)


def _to_loaded(array: np.ndarray) -> LoadedImage:
    bit_depth = 16 if array.dtype == np.uint16 else 8
    scale = 65535.0 if bit_depth == 16 else 255.0
    alpha = None
    if array.ndim == 2:
        grey, colour = True, array[:, :, None]
    elif array.shape[2] == 2:
        grey, colour, alpha = True, array[:, :, :1], array[:, :, 1].copy()
    elif array.shape[2] == 4:
        grey, colour, alpha = False, array[:, :, :3], array[:, :, 3].copy()
    else:
        grey, colour = False, array[:, :, :3]
    rgb = colour.astype(np.float32) / scale
    if grey:
        rgb = np.repeat(rgb, 3, axis=2)
    return LoadedImage(np.ascontiguousarray(rgb), alpha, bit_depth, grey)


def quantize(values: np.ndarray, bit_depth: int) -> np.ndarray:
    """[0, 1] floats -> uint8/uint16 with rounding (values outside [0, 1] are clipped)."""
    maximum = 65535.0 if bit_depth == 16 else 255.0
    dtype = np.uint16 if bit_depth == 16 else np.uint8
    return np.round(np.clip(values, 0.0, 1.0) * maximum).astype(dtype)


def _rescale_alpha(alpha: np.ndarray, bit_depth: int) -> np.ndarray:
    if bit_depth == 16 and alpha.dtype == np.uint8:
        return alpha.astype(np.uint16) * 257
    if bit_depth == 8 and alpha.dtype == np.uint16:
        return np.round(alpha / 257.0).astype(np.uint8)
    return alpha


def encode_image(
    rgb: np.ndarray,
    ext: str,
    *,
    bit_depth: int = 8,
    grey: bool = False,
    alpha: np.ndarray | None = None,
    quality: int = 95,
) -> bytes:
    """Encodes float RGB (H, W, 3) in [0, 1] as a file of type ``ext`` ('.png', …).

    Formats that cannot hold 16 bits (JPEG, WebP, BMP) get 8; JPEG drops the alpha channel.
    """
    ext = ext.lower()
    if ext not in _PIL_FORMATS:
        raise ImageWriteError(f"cannot write {ext or 'files without extension'}; use one of {', '.join(IMAGE_EXTENSIONS)}")
    if ext not in SIXTEEN_BIT_EXTENSIONS:
        bit_depth = 8
    if ext in (".jpg", ".jpeg"):
        alpha = None
    pixels = quantize(rgb @ LUMA_WEIGHTS if grey else rgb, bit_depth)
    if alpha is not None:
        if grey and (bit_depth == 16 or ext == ".webp"):
            # OpenCV and WebP have no grey+alpha layout: store grey as RGB beside the alpha.
            pixels = np.repeat(pixels[:, :, None], 3, axis=2)
        pixels = np.dstack([pixels, _rescale_alpha(alpha, bit_depth)])
    if bit_depth == 16:
        if pixels.ndim == 3:
            pixels = pixels[:, :, [2, 1, 0, 3][: pixels.shape[2]]]  # RGB(A) -> BGR(A)
        ok, buffer = cv2.imencode(ext, np.ascontiguousarray(pixels))
        if not ok:
            raise ImageWriteError(f"OpenCV could not encode a 16-bit {ext} image")
        return buffer.tobytes()
    out = io.BytesIO()
    options = {"quality": quality} if ext in (".jpg", ".jpeg", ".webp") else {}
    # Pillow infers L, LA, RGB or RGBA from the uint8 array's shape.
    Image.fromarray(np.ascontiguousarray(pixels)).save(out, format=_PIL_FORMATS[ext], **options)
    return out.getvalue()


def write_image(
    path: str | os.PathLike,
    rgb: np.ndarray,
    *,
    bit_depth: int = 8,
    grey: bool = False,
    alpha: np.ndarray | None = None,
    quality: int = 95,
) -> Path:
    """Writes float RGB (H, W, 3) in [0, 1] to ``path`` (format from its extension), atomically."""
    path = Path(path)
    return write_bytes_atomic(path, encode_image(rgb, path.suffix, bit_depth=bit_depth, grey=grey, alpha=alpha, quality=quality))


def write_like(path: str | os.PathLike, rgb: np.ndarray, like: LoadedImage, quality: int = 95) -> Path:
    """Writes ``rgb`` in the form of ``like``: its bit depth, greyscale or colour, its alpha."""
    return write_image(path, rgb, bit_depth=like.bit_depth, grey=like.grey, alpha=like.alpha, quality=quality)


def image_to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """(H, W, 3) float [0, 1] array -> (1, 3, H, W) float32 tensor."""
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).unsqueeze(0).float()


def tensor_to_image(tensor: torch.Tensor) -> np.ndarray:
    """(1, C, H, W) or (C, H, W) tensor -> (H, W, C) float32 array."""
    if tensor.ndim == 4:
        tensor = tensor[0]
    return tensor.detach().float().cpu().permute(1, 2, 0).numpy()


__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageReadError",
    "ImageWriteError",
    "LoadedImage",
    "decode_image",
    "encode_image",
    "image_to_tensor",
    "quantize",
    "read_image",
    "tensor_to_image",
    "write_image",
    "write_like",
]
