"""Reading and writing real image files, with their metadata.

:func:`read_image` returns the colour content as float32 RGB in [0, 1] plus what is
needed to write a result back in the same form: the bit depth (8 or 16), whether the
file was greyscale, the alpha channel untouched, and the file's metadata
(:class:`ImageMetadata`). EXIF orientation is applied to the pixels. Pillow decodes
(it refuses truncated files instead of filling them with grey); OpenCV decodes 16-bit
colour and grey+alpha PNG/TIFF, which Pillow reduces to 8 bits.

:func:`encode_like` / :func:`write_like` write a result in its input's form: bit depth,
greyscale or colour, alpha, metadata. :func:`encode_image` / :func:`write_image` take
the form explicitly. Quantisation rounds, as the authors' scripts do; files are written
atomically.

**Metadata.** Kept where the output format can hold it:

* EXIF (JPEG, PNG ``eXIf``, WebP, TIFF): every tag, with the orientation set to 1 when
  the pixels were turned upright, the embedded thumbnail dropped (it would show the
  hazy image), and ``PixelXDimension``/``PixelYDimension`` set to the written size.
  Maker notes are copied as bytes; makers whose notes hold absolute offsets may find
  them moved.
* ICC colour profile (JPEG, PNG ``iCCP``, WebP, TIFF), when its colour space fits the
  written pixels (an RGB profile on colour output, a grey one on grey output). A CMYK
  file's profile cannot describe the RGB result and is dropped (with a note).
* XMP (JPEG, PNG ``iTXt``, WebP, TIFF), with ``tiff:Orientation`` set to 1 when the
  pixels were turned. JPEG holds at most ~64 KB of XMP and of EXIF; larger blocks are
  left out (the maker note first, for EXIF).
* PNG text chunks (``tEXt``/``zTXt``/``iTXt``, wherever they sit), PNG to PNG only;
  an ``iTXt`` chunk's language tag is not kept.

BMP holds none of these. Other ancillary data (PNG ``gAMA``/``cHRM``, JPEG comments,
resolution) is not carried over.

**Colour spaces.** dcmp processes every image in its own colour space: the encoded
values go to the model as they are, and the result is written with the same ICC
profile. A Display-P3 or Adobe RGB photo therefore comes out in Display-P3 or Adobe
RGB, tagged as such, and displays with its colours; nothing is converted (a conversion
to sRGB would clip wide-gamut colours and cost precision, and a dehazer has no need of
a common space). The networks were trained on sRGB images, so on wide-gamut files they
see values encoded differently than in training (not measured here).

**Layouts.** 16-bit grey with alpha is written as such to PNG (colour type 4, 16
bits); 16-bit TIFF stores it as RGBA (no common reader handles 16-bit grey+alpha TIFF)
and WebP as 8-bit RGBA. JPEG and BMP (as read back by common decoders) have no alpha
channel: it is dropped. TIFF is written with Deflate compression and the horizontal
predictor. Multi-frame files (animations, multi-page TIFF) are read at their first
frame, with a note (:attr:`LoadedImage.notes`).
"""

from __future__ import annotations

import io
import os
import re
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image, ImageFile, TiffImagePlugin, TiffTags, UnidentifiedImageError
from PIL.ExifTags import IFD, Base

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

_EXIF_HEADER = b"Exif\x00\x00"
#: Largest payload of one JPEG marker segment (APP1 for EXIF and XMP).
_JPEG_SEGMENT_BYTES = 65533
_XMP_JPEG_OVERHEAD = len(b"http://ns.adobe.com/xap/1.0/\x00")
_XMP_PNG_KEY = "XML:com.adobe.xmp"
#: PNG text chunks that hold EXIF (ImageMagick's legacy form); replaced by a proper eXIf chunk.
_RAW_EXIF_TEXT_KEYS = ("Raw profile type exif", "Raw profile type APP1")
#: Largest decompressed PNG text chunk kept (as Pillow's own limit).
_MAX_TEXT_BYTES = 1 << 20
#: TIFF tags that describe a file's pixel layout or hold data kept elsewhere: never copied as EXIF.
_LAYOUT_TAGS = frozenset(
    {
        254,
        255,
        256,
        257,
        258,
        259,
        262,
        263,
        266,
        273,
        277,
        278,
        279,
        280,
        281,
        284,
        292,
        293,
        317,
        320,
        322,
        323,
        324,
        325,
        338,
        339,
        340,
        341,
        347,
        513,
        514,
        529,
        530,
        531,
        532,
        700,  # XMP (kept as ImageMetadata.xmp)
        34377,  # Photoshop image resources (thumbnails, layer data)
        34675,  # ICC profile (kept as ImageMetadata.icc_profile)
        37724,  # Photoshop layer data
    }
)
#: What Pillow raises on EXIF blocks it cannot parse.
_EXIF_ERRORS = (OSError, ValueError, SyntaxError, KeyError, TypeError, struct.error)
_ORIENTATION_XMP = re.compile(rb"(tiff:Orientation(?:=\"|>))([0-9])")


class ImageReadError(ValueError):
    """The file is not a readable image; the message says why."""


class ImageWriteError(ValueError):
    """The image cannot be written as asked (unknown extension, …)."""


@dataclass(frozen=True)
class ImageMetadata:
    """What a file says about its image besides the pixels.

    ``exif``: the EXIF block as TIFF-structured bytes (``II*``/``MM*`` …, no ``Exif``
    header), orientation already 1 when the pixels were turned, no thumbnail.
    ``icc_profile``: the ICC profile's bytes. ``xmp``: the XMP packet (UTF-8 bytes).
    ``text``: PNG text chunks (keyword -> text) other than XMP.
    """

    exif: bytes | None = None
    icc_profile: bytes | None = None
    xmp: bytes | None = None
    text: dict[str, str] = field(default_factory=dict)


@dataclass
class LoadedImage:
    """An image as dcmp processes it.

    ``rgb``: float32 (H, W, 3) in [0, 1], in the file's own colour space. ``alpha``: the
    file's alpha channel as stored (uint8 or uint16, (H, W)) or None. ``bit_depth``: 8
    or 16 bits per channel in the file. ``grey``: the file had one colour channel.
    ``metadata``: see :class:`ImageMetadata`. ``frames``: frames or pages in the file
    (only the first is in ``rgb``). ``notes``: what the reader changed or left out, one
    short sentence each, for the batch to report.
    """

    rgb: np.ndarray
    alpha: np.ndarray | None = None
    bit_depth: int = 8
    grey: bool = False
    metadata: ImageMetadata = field(default_factory=ImageMetadata)
    frames: int = 1
    notes: list[str] = field(default_factory=list)

    @property
    def height(self) -> int:
        return self.rgb.shape[0]

    @property
    def width(self) -> int:
        return self.rgb.shape[1]


# ---------------------------------------------------------------------------- reading


def _sixteen_bit_layout(im: ImageFile.ImageFile) -> str | None:
    """'colour' or 'grey_alpha' for a 16-bit PNG/TIFF that Pillow would reduce to 8 bits, else None."""
    if im.mode not in ("RGB", "RGBA") or not im.tile:
        return None
    args = im.tile[0].args if hasattr(im.tile[0], "args") else im.tile[0][3]
    rawmode = args if isinstance(args, str) else (args[0] if args else "")
    if not isinstance(rawmode, str) or ";16" not in rawmode:
        return None
    return "grey_alpha" if rawmode.startswith("LA;") else "colour"


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


def _decode_16bit(data: bytes, layout: str) -> np.ndarray:
    """16-bit PNG/TIFF bytes -> uint16 (H, W, 3|4) RGB(A), or (H, W, 2) grey+alpha for ``layout='grey_alpha'``."""
    array = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None or array.dtype != np.uint16:
        raise ImageReadError("corrupt 16-bit image data")
    if array.ndim == 2:
        return array
    if layout == "grey_alpha" and array.shape[2] == 4:
        return np.ascontiguousarray(array[:, :, [0, 3]])  # OpenCV expands grey+alpha to BGRA
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


def _exif_bytes(exif: Image.Exif) -> bytes:
    """Serialised EXIF (TIFF structure, no thumbnail: Pillow writes IFD0 and its sub-IFDs only)."""
    return exif.tobytes()[len(_EXIF_HEADER) :]


def _read_exif(im: Image.Image, exif: Image.Exif, turned: bool) -> bytes | None:
    """The file's EXIF block, cleaned of layout tags, with orientation 1 when ``turned``; None if none."""
    is_tiff = hasattr(im, "tag_v2")
    has_block = "exif" in im.info or any(k in im.info for k in _RAW_EXIF_TEXT_KEYS)
    if not (is_tiff or has_block):
        return None
    for tag in list(exif):
        if tag in _LAYOUT_TAGS:
            del exif[tag]
    if turned:
        exif[Base.Orientation] = 1
    if not [t for t in exif if t not in (IFD.Exif, IFD.GPSInfo)] and not (
        exif.get_ifd(IFD.Exif) or exif.get_ifd(IFD.GPSInfo)
    ):
        return None
    return _exif_bytes(exif)


def _as_bytes(value: Any) -> bytes | None:
    """XMP as Pillow or a PNG text chunk gives it (bytes or str) -> non-empty bytes or None."""
    if isinstance(value, str):
        value = value.encode("utf-8")
    return value if isinstance(value, bytes) and value else None


def _reset_xmp_orientation(xmp: bytes) -> bytes:
    return _ORIENTATION_XMP.sub(rb"\g<1>1", xmp)


def _png_text_payloads(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, payload) of the tEXt/zTXt/iTXt chunks of a PNG stream, in order (others are skipped unread)."""
    found, pos = [], 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind in (b"tEXt", b"zTXt", b"iTXt"):
            found.append((kind, data[pos + 8 : pos + 8 + length]))
        elif kind == b"IEND":
            break
        pos += 12 + length
    return found


def _inflate(payload: bytes) -> bytes | None:
    """zlib-decompressed ``payload``, or None if corrupt or larger than the text limit."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(payload, _MAX_TEXT_BYTES + 1)
    except zlib.error:
        return None
    return out if len(out) <= _MAX_TEXT_BYTES else None


def _decode_text_chunk(kind: bytes, payload: bytes) -> tuple[str, str] | None:
    """A tEXt/zTXt/iTXt chunk -> (keyword, text), or None if malformed."""
    key, sep, rest = payload.partition(b"\x00")
    if not sep or not key:
        return None
    if kind == b"tEXt":
        text: bytes | None = rest
        encoding = "latin-1"
    elif kind == b"zTXt":
        text, encoding = (_inflate(rest[1:]) if rest[:1] == b"\x00" else None), "latin-1"
    else:  # iTXt: flag, method, language\0, translated keyword\0, text
        if len(rest) < 2:
            return None
        compressed = rest[0] == 1
        parts = rest[2:].split(b"\x00", 2)
        if len(parts) != 3:
            return None
        text, encoding = (_inflate(parts[2]) if compressed else parts[2]), "utf-8"
    if text is None:
        return None
    try:
        return key.decode("latin-1"), text.decode(encoding)
    except UnicodeDecodeError:
        return None


def _png_text(data: bytes) -> dict[str, str]:
    """Every text chunk of a PNG stream (before and after the image data)."""
    text: dict[str, str] = {}
    for kind, payload in _png_text_payloads(data):
        decoded = _decode_text_chunk(kind, payload)
        if decoded is not None:
            text.setdefault(*decoded)
    return text


def _read_metadata(im: Image.Image, data: bytes) -> tuple[ImageMetadata, int, list[str]]:
    """(metadata, EXIF orientation 1-8 to apply, notes) of an opened image file."""
    notes: list[str] = []
    try:
        exif = im.getexif()
        orientation = exif.get(Base.Orientation, 1)
        orientation = orientation if isinstance(orientation, int) and 1 <= orientation <= 8 else 1
        exif_block = _read_exif(im, exif, turned=orientation != 1)
    except _EXIF_ERRORS:
        orientation, exif_block = 1, None
        notes.append("its EXIF block could not be read: not kept, orientation not applied")
    turned = orientation != 1
    text = _png_text(data) if im.format == "PNG" else {}
    xmp = _as_bytes(text.pop(_XMP_PNG_KEY, None)) or _as_bytes(im.info.get("xmp"))
    if exif_block is not None:
        for key in _RAW_EXIF_TEXT_KEYS:
            text.pop(key, None)
    if xmp is not None and turned:
        xmp = _reset_xmp_orientation(xmp)
    icc = im.info.get("icc_profile") or None
    if im.mode == "CMYK":
        dropped = "; its CMYK colour profile is not kept" if icc is not None else ""
        notes.append(f"CMYK converted to RGB without colour management{dropped}")
        icc = None
    return ImageMetadata(exif_block, icc, xmp, text), orientation, notes


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
        with warnings.catch_warnings(record=True) as caught:  # Pillow warns of damaged EXIF blocks
            warnings.simplefilter("always")
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                layout = _sixteen_bit_layout(im)  # before getexif(), which may load and change the tiles
                frames = int(getattr(im, "n_frames", 1) or 1)
                metadata, orientation, notes = _read_metadata(im, data)
                if layout is not None:
                    array = _decode_16bit(data, layout)
                else:
                    im.load()
                    array = _decode_pil(im)
    except UnidentifiedImageError:
        raise ImageReadError("not an image (unknown or unsupported format)") from None
    except Image.DecompressionBombError as e:
        raise ImageReadError(f"image too large ({e})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        if isinstance(e, ImageReadError):
            raise
        raise ImageReadError(f"corrupt or truncated image ({e})") from None
    if frames > 1:
        notes.insert(0, f"only the first of its {frames} frames or pages was used")
    if any("EXIF" in str(w.message) for w in caught):
        notes.append(f"its EXIF block is damaged; {'what could be read is kept' if metadata.exif else 'not kept'}")
    loaded = _to_loaded(_orient(array, orientation))
    loaded.metadata, loaded.frames, loaded.notes = metadata, frames, notes
    return loaded


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


# ---------------------------------------------------------------------------- writing


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


def _icc_colour_space(icc: bytes) -> bytes:
    """The data colour space signature of an ICC profile (b'RGB ', b'GRAY', b'CMYK' …)."""
    return icc[16:20] if len(icc) >= 20 else b""


def _exif_for_output(exif: bytes, width: int, height: int) -> bytes | None:
    """EXIF bytes with the pixel dimensions of the written image; None if unreadable."""
    block = Image.Exif()
    try:
        block.load(exif)
        sub = block.get_ifd(IFD.Exif)
        if sub:
            for tag, value in ((0xA002, width), (0xA003, height)):
                if tag in sub:
                    sub[tag] = value
        return _exif_bytes(block)
    except _EXIF_ERRORS:
        return None


def _exif_for_jpeg(exif: bytes) -> bytes | None:
    """EXIF that fits one JPEG APP1 segment: the maker note goes first, then the whole block."""
    if len(exif) + len(_EXIF_HEADER) <= _JPEG_SEGMENT_BYTES:
        return exif
    block = Image.Exif()
    block.load(exif)
    sub = block.get_ifd(IFD.Exif)
    sub.pop(0x927C, None)  # MakerNote
    smaller = _exif_bytes(block)
    return smaller if len(smaller) + len(_EXIF_HEADER) <= _JPEG_SEGMENT_BYTES else None


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png_text_chunk(key: str, value: str) -> bytes | None:
    """tEXt when Latin-1 holds the text, else iTXt (UTF-8); None for an invalid keyword."""
    try:
        keyword = key.encode("latin-1")
    except UnicodeEncodeError:
        return None
    if not 1 <= len(keyword) <= 79 or b"\x00" in keyword:
        return None
    try:
        return _png_chunk(b"tEXt", keyword + b"\x00" + value.encode("latin-1"))
    except UnicodeEncodeError:
        return _png_chunk(b"iTXt", keyword + b"\x00\x00\x00\x00\x00" + value.encode("utf-8"))


def _png_with_metadata(png: bytes, metadata: ImageMetadata, icc: bytes | None, exif: bytes | None) -> bytes:
    """Inserts iCCP, eXIf, XMP and text chunks after IHDR of an encoded PNG."""
    extra = []
    if icc:
        extra.append(_png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc)))
    if exif:
        extra.append(_png_chunk(b"eXIf", exif))
    if metadata.xmp:
        extra.append(_png_chunk(b"iTXt", _XMP_PNG_KEY.encode("latin-1") + b"\x00\x00\x00\x00\x00" + metadata.xmp))
    for key, value in metadata.text.items():
        chunk = _png_text_chunk(key, value)
        if chunk is not None:
            extra.append(chunk)
    if not extra:
        return png
    ihdr_end = 8 + 12 + struct.unpack(">I", png[8:12])[0]
    return png[:ihdr_end] + b"".join(extra) + png[ihdr_end:]


def _cv2_png(pixels: np.ndarray) -> bytes:
    """uint8/uint16 (H, W), (H, W, 3) RGB or (H, W, 4) RGBA -> PNG bytes through OpenCV (libpng)."""
    if pixels.ndim == 3:
        pixels = pixels[:, :, [2, 1, 0, 3][: pixels.shape[2]]]  # RGB(A) -> BGR(A)
    ok, buffer = cv2.imencode(".png", np.ascontiguousarray(pixels))
    if not ok:
        raise ImageWriteError(f"OpenCV could not encode a {pixels.dtype.itemsize * 8}-bit PNG image")
    return buffer.tobytes()


def _encode_png_grey_alpha16(pixels: np.ndarray) -> bytes:
    """uint16 (H, W, 2) grey+alpha -> a 16-bit grey+alpha PNG (colour type 4).

    Neither OpenCV nor Pillow writes this layout. Its rows hold 4 bytes per pixel (grey
    then alpha, big-endian), as 8-bit RGBA rows do, and PNG filters work on bytes with
    that same pixel stride; so the bytes are encoded as an 8-bit RGBA image and the
    header then says what they are (bit depth 16, colour type 4).
    """
    h, w = pixels.shape[:2]
    as_bytes = np.ascontiguousarray(pixels.astype(">u2")).view(np.uint8).reshape(h, w, 4)
    png = _cv2_png(as_bytes)
    header = png[16:29]
    if png[12:16] != b"IHDR" or header[8:10] != b"\x08\x06":
        raise ImageWriteError("unexpected PNG layout from OpenCV for grey+alpha 16-bit data")
    fixed = header[:8] + b"\x10\x04" + header[10:]
    return png[:8] + _png_chunk(b"IHDR", fixed) + png[33:]


def _encode_png(pixels: np.ndarray) -> bytes:
    """uint8/uint16 (H, W[, C]) grey, grey+alpha, RGB or RGBA -> PNG bytes without metadata."""
    if pixels.ndim == 3 and pixels.shape[2] == 2:
        if pixels.dtype == np.uint16:
            return _encode_png_grey_alpha16(pixels)
        out = io.BytesIO()
        Image.fromarray(pixels).save(out, format="PNG")  # LA: OpenCV has no grey+alpha layout
        return out.getvalue()
    return _cv2_png(pixels)


def _encode_tiff(pixels: np.ndarray, exif: bytes | None, icc: bytes | None, xmp: bytes | None) -> bytes:
    """uint8/uint16 (H, W[, C]) -> baseline TIFF (Deflate, horizontal predictor) with metadata tags.

    EXIF tags go into the main directory with the EXIF and GPS sub-directories, as
    cameras and raw converters write them.
    """
    h, w = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    bits = pixels.dtype.itemsize * 8
    samples = pixels.reshape(h, w, channels).astype(pixels.dtype.newbyteorder("<"))
    differences = samples.copy()
    differences[:, 1:] = samples[:, 1:] - samples[:, :-1]  # unsigned wrap-around = TIFF predictor 2
    rows_per_strip = min(h, max(1, (1 << 20) // (w * channels * pixels.dtype.itemsize)))
    strips = [zlib.compress(differences[y : y + rows_per_strip].tobytes(), 1) for y in range(0, h, rows_per_strip)]

    ifd = TiffImagePlugin.ImageFileDirectory_v2(prefix=b"II")
    if exif is not None:
        block = Image.Exif()
        block.load(exif)
        for tag in block:
            if tag in _LAYOUT_TAGS:
                continue
            if tag == IFD.Exif:
                sub = dict(block.get_ifd(IFD.Exif))
                if IFD.Interop in sub:
                    sub[IFD.Interop] = block.get_ifd(IFD.Interop)
                ifd[tag] = sub
            elif tag == IFD.GPSInfo:
                ifd[tag] = block.get_ifd(IFD.GPSInfo)
            else:
                ifd[tag] = block[tag]
    ifd[256], ifd[257] = w, h
    ifd[258] = (bits,) * channels
    ifd[259] = 8  # Deflate (Adobe)
    ifd[262] = 2 if channels >= 3 else 1  # RGB or black-is-zero grey
    offsets, position = [], 0
    for strip in strips:
        offsets.append(position)  # relative: Pillow adds where the data starts
        position += len(strip)
    ifd[273] = tuple(offsets)
    ifd.tagtype[273] = TiffTags.LONG
    ifd[277] = channels
    ifd[278] = rows_per_strip
    ifd[279] = tuple(len(s) for s in strips)
    ifd.tagtype[279] = TiffTags.LONG
    ifd[284] = 1
    ifd[317] = 2  # horizontal differencing
    if channels in (2, 4):
        ifd[338] = (2,)  # unassociated alpha
    if icc:
        ifd[34675] = icc
        ifd.tagtype[34675] = TiffTags.UNDEFINED
    if xmp:
        ifd[700] = xmp
        ifd.tagtype[700] = TiffTags.BYTE
    out = io.BytesIO()
    ifd.save(out)
    for strip in strips:
        out.write(strip)
    return out.getvalue()


def encode_image(
    rgb: np.ndarray,
    ext: str,
    *,
    bit_depth: int = 8,
    grey: bool = False,
    alpha: np.ndarray | None = None,
    quality: int = 95,
    metadata: ImageMetadata | None = None,
) -> bytes:
    """Encodes float RGB (H, W, 3) in [0, 1] as a file of type ``ext`` ('.png', …).

    Formats that cannot hold 16 bits (JPEG, WebP, BMP) get 8; JPEG and BMP drop the
    alpha channel. ``metadata`` is written where the format holds it (see the module notes).
    """
    ext = ext.lower()
    if ext not in _PIL_FORMATS:
        raise ImageWriteError(
            f"cannot write {ext or 'files without extension'}; use one of {', '.join(IMAGE_EXTENSIONS)}"
        )
    if ext not in SIXTEEN_BIT_EXTENSIONS:
        bit_depth = 8
    if ext in (".jpg", ".jpeg", ".bmp"):
        alpha = None
    h, w = rgb.shape[:2]
    if alpha is not None and alpha.shape[:2] != (h, w):
        raise ImageWriteError(f"alpha channel is {alpha.shape[1]}×{alpha.shape[0]}, the image {w}×{h}")
    pixels = quantize(rgb @ LUMA_WEIGHTS if grey else rgb, bit_depth)
    if alpha is not None:
        if grey and (ext == ".webp" or (bit_depth == 16 and ext != ".png")):
            # These writers have no grey+alpha layout: store grey as RGB beside the alpha.
            pixels = np.repeat(pixels[:, :, None], 3, axis=2)
        pixels = np.dstack([pixels, _rescale_alpha(alpha, bit_depth)])

    metadata = metadata or ImageMetadata()
    colour = pixels.ndim == 3 and pixels.shape[2] >= 3
    icc = metadata.icc_profile
    if icc is not None and _icc_colour_space(icc) != (b"RGB " if colour else b"GRAY"):
        icc = None
    exif = _exif_for_output(metadata.exif, w, h) if metadata.exif else None
    fmt = _PIL_FORMATS[ext]
    if fmt == "PNG":
        return _png_with_metadata(_encode_png(pixels), metadata, icc, exif)
    if fmt == "TIFF":
        return _encode_tiff(pixels, exif, icc, metadata.xmp)
    options: dict[str, Any] = {}
    if fmt in ("JPEG", "WEBP"):
        options["quality"] = quality
        if fmt == "JPEG" and exif is not None:
            exif = _exif_for_jpeg(exif)
        if exif:
            options["exif"] = _EXIF_HEADER + exif
        if icc:
            options["icc_profile"] = icc
        if metadata.xmp and (fmt == "WEBP" or len(metadata.xmp) + _XMP_JPEG_OVERHEAD <= _JPEG_SEGMENT_BYTES):
            options["xmp"] = metadata.xmp
    out = io.BytesIO()
    # Pillow infers L, LA, RGB or RGBA from the uint8 array's shape.
    Image.fromarray(np.ascontiguousarray(pixels)).save(out, format=fmt, **options)
    return out.getvalue()


def encode_like(
    rgb: np.ndarray,
    like: LoadedImage,
    ext: str,
    *,
    bit_depth: int | None = None,
    quality: int = 95,
    panels: int = 1,
) -> bytes:
    """Encodes float RGB (H, W·panels, 3) in [0, 1] as ``ext`` in the form of ``like``.

    The form: ``like``'s bit depth (unless ``bit_depth``, 8 or 16, is given), greyscale
    or colour, alpha channel and metadata. ``panels``: ``rgb`` holds that many images of
    ``like``'s size side by side (e.g. input | result), each given ``like``'s alpha.
    """
    alpha = like.alpha
    if alpha is not None:
        if rgb.shape[:2] != (like.height, like.width * panels):
            raise ImageWriteError(
                f"result is {rgb.shape[1]}×{rgb.shape[0]}, expected {like.width * panels}×{like.height} "
                f"({panels} panel(s) of the input's size) to carry its alpha channel"
            )
        if panels > 1:
            alpha = np.tile(alpha, (1, panels))
    return encode_image(
        rgb,
        ext,
        bit_depth=bit_depth or like.bit_depth,
        grey=like.grey,
        alpha=alpha,
        quality=quality,
        metadata=like.metadata,
    )


def write_image(
    path: str | os.PathLike,
    rgb: np.ndarray,
    *,
    bit_depth: int = 8,
    grey: bool = False,
    alpha: np.ndarray | None = None,
    quality: int = 95,
    metadata: ImageMetadata | None = None,
) -> Path:
    """Writes float RGB (H, W, 3) in [0, 1] to ``path`` (format from its extension), atomically."""
    path = Path(path)
    data = encode_image(
        rgb, path.suffix, bit_depth=bit_depth, grey=grey, alpha=alpha, quality=quality, metadata=metadata
    )
    return write_bytes_atomic(path, data)


def write_like(
    path: str | os.PathLike,
    rgb: np.ndarray,
    like: LoadedImage,
    *,
    bit_depth: int | None = None,
    quality: int = 95,
    panels: int = 1,
) -> Path:
    """Writes ``rgb`` to ``path`` atomically in the form of ``like`` (see :func:`encode_like`)."""
    path = Path(path)
    data = encode_like(rgb, like, path.suffix, bit_depth=bit_depth, quality=quality, panels=panels)
    return write_bytes_atomic(path, data)


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
    "ImageMetadata",
    "ImageReadError",
    "ImageWriteError",
    "LoadedImage",
    "decode_image",
    "encode_image",
    "encode_like",
    "image_to_tensor",
    "quantize",
    "read_image",
    "tensor_to_image",
    "write_image",
    "write_like",
]
