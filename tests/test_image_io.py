"""Image files in and out: pixels, layouts and metadata (EXIF, ICC, XMP, PNG text), frames."""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image, ImageCms
from PIL.ExifTags import IFD, Base
from PIL.PngImagePlugin import PngInfo

from dcmp_cli.data.image_io import (
    ImageMetadata,
    ImageWriteError,
    decode_image,
    encode_image,
    encode_like,
    read_image,
    write_like,
)

from helpers import shared_path

XMP = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6" '
    b'xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:creator>A. Photographer</dc:creator>'
    b"</rdf:Description></rdf:RDF></x:xmpmeta>"
)


# ---------------------------------------------------------------------------- helpers


def _pixels(h: int = 20, w: int = 30, channels: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (h, w) if channels == 1 else (h, w, channels)
    return rng.integers(0, 256, shape).astype(np.uint8)


def _srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _icc_tags(profile: bytes) -> dict[bytes, tuple[int, int]]:
    count = struct.unpack(">I", profile[128:132])[0]
    entries = (struct.unpack(">4sII", profile[132 + 12 * i : 144 + 12 * i]) for i in range(count))
    return {sig: (offset, size) for sig, offset, size in entries}


def _p3_profile() -> bytes:
    """A Display-P3 matrix/TRC profile: lcms's sRGB profile with P3's D50 colorants and name, profile ID cleared."""
    data = bytearray(_srgb_profile())
    tags = _icc_tags(bytes(data))
    colorants = {
        b"rXYZ": (0.5151, 0.2412, -0.0011),
        b"gXYZ": (0.2920, 0.6922, 0.0419),
        b"bXYZ": (0.1571, 0.0666, 0.7841),
    }
    for sig, xyz in colorants.items():
        offset, _ = tags[sig]
        data[offset + 8 : offset + 20] = struct.pack(">3i", *(round(v * 65536) for v in xyz))
    offset, size = tags[b"desc"]
    old_name = "sRGB built-in".encode("utf-16-be")
    at = data.index(old_name, offset, offset + size)
    data[at : at + len(old_name)] = "Display P3 v4".encode("utf-16-be")
    data[84:100] = bytes(16)
    return bytes(data)


def _with_colour_space(profile: bytes, signature: bytes) -> bytes:
    data = bytearray(profile)
    data[16:20] = signature
    return bytes(data)


def _camera_exif(orientation: int = 6, with_thumbnail: bool = True) -> bytes:
    """EXIF as a camera writes it (make, model, date, GPS, orientation), plus an IFD1 thumbnail."""
    exif = Image.Exif()
    exif[Base.Make] = "Canon"
    exif[Base.Model] = "EOS R5"
    exif[Base.DateTime] = "2024:05:01 10:11:12"
    exif[Base.Orientation] = orientation
    exif[IFD.GPSInfo] = {1: "N", 2: (52.0, 31.0, 12.5), 3: "E", 4: (13.0, 24.0, 18.0)}
    exif[IFD.Exif] = {0x9003: "2024:05:01 10:11:12", 0xA002: 30, 0xA003: 20, 0x829A: 0.004}
    tiff = exif.tobytes()[6:]
    if not with_thumbnail:
        return tiff
    thumb = io.BytesIO()
    Image.fromarray(np.full((8, 12, 3), 128, np.uint8)).save(thumb, format="JPEG")
    endian = "<" if tiff[:2] == b"II" else ">"
    first = struct.unpack(endian + "I", tiff[4:8])[0]
    count = struct.unpack(endian + "H", tiff[first : first + 2])[0]
    next_at = first + 2 + 12 * count
    ifd1_at = len(tiff) + (len(tiff) % 2)
    thumb_at = ifd1_at + 2 + 3 * 12 + 4
    ifd1 = struct.pack(endian + "H", 3)
    ifd1 += struct.pack(endian + "HHII", 259, 3, 1, 6 << (16 if endian == ">" else 0))
    ifd1 += struct.pack(endian + "HHII", 513, 4, 1, thumb_at)
    ifd1 += struct.pack(endian + "HHII", 514, 4, 1, len(thumb.getvalue()))
    ifd1 += struct.pack(endian + "I", 0)
    padded = tiff + b"\x00" * (ifd1_at - len(tiff))
    patched = padded[:next_at] + struct.pack(endian + "I", ifd1_at) + padded[next_at + 4 :]
    return patched + ifd1 + thumb.getvalue()


def _save(array: np.ndarray, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format=fmt, **options)
    return out.getvalue()


def _exif_of(data: bytes) -> Image.Exif:
    with Image.open(io.BytesIO(data)) as im:
        exif = im.getexif()
        exif.get_ifd(IFD.Exif), exif.get_ifd(IFD.GPSInfo), exif.get_ifd(IFD.IFD1)
        return exif


def _info_of(data: bytes) -> dict:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return dict(im.info)


# ---------------------------------------------------------------------------- EXIF


def test_camera_exif_is_kept_upright_without_thumbnail():
    exif = _camera_exif(orientation=6)
    block = Image.Exif()
    block.load(exif)
    assert block.get_ifd(IFD.IFD1).get(513), "the fixture must hold a thumbnail"
    stored = _pixels(20, 30)
    data = _save(stored, "JPEG", exif=b"Exif\x00\x00" + exif, quality=100)
    image = decode_image(data)
    assert image.rgb.shape == (30, 20, 3)  # turned upright (orientation 6: 90° clockwise)
    upright = np.rot90(np.asarray(Image.open(io.BytesIO(data))), k=-1)
    assert np.array_equal(np.round(image.rgb * 255).astype(np.uint8), upright)
    for ext in (".jpg", ".png", ".webp", ".tif"):
        out = encode_like(image.rgb, image, ext)
        written = _exif_of(out)
        assert written[Base.Orientation] == 1, ext
        camera = (written[Base.Make], written[Base.Model], written[Base.DateTime])
        assert camera == ("Canon", "EOS R5", "2024:05:01 10:11:12"), ext
        gps = written.get_ifd(IFD.GPSInfo)
        assert gps[1] == "N" and tuple(float(v) for v in gps[2]) == (52.0, 31.0, 12.5), ext
        sub = written.get_ifd(IFD.Exif)
        assert sub[0x9003] == "2024:05:01 10:11:12" and (sub[0xA002], sub[0xA003]) == (20, 30), ext
        assert not written.get_ifd(IFD.IFD1), f"{ext}: thumbnail of the hazy image kept"
        again = decode_image(out)
        assert again.rgb.shape == (30, 20, 3), f"{ext}: turned twice"


def test_exif_orientation_untouched_when_pixels_were_not_turned():
    data = _save(_pixels(), "JPEG", exif=b"Exif\x00\x00" + _camera_exif(orientation=1, with_thumbnail=False))
    image = decode_image(data)
    assert image.metadata.exif is not None
    assert _exif_of(encode_like(image.rgb, image, ".png"))[Base.Make] == "Canon"
    no_exif = decode_image(_save(_pixels(), "PNG"))
    assert no_exif.metadata == ImageMetadata()
    assert "exif" not in _info_of(encode_like(no_exif.rgb, no_exif, ".png"))


def test_damaged_exif_does_not_cost_the_image():
    data = _save(_pixels(20, 30), "JPEG", exif=b"Exif\x00\x00II*\x00\xff\xff\x00\x00")
    image = decode_image(data)
    assert image.rgb.shape == (20, 30, 3) and image.metadata.exif is None
    assert image.notes == ["its EXIF block is damaged; not kept"]
    assert "exif" not in _info_of(encode_like(image.rgb, image, ".jpg"))


def test_oversized_maker_note_is_left_out_of_jpeg_only():
    exif = Image.Exif()
    exif[Base.Make] = "Canon"
    exif[IFD.Exif] = {0x927C: bytes(70_000), 0x9003: "2024:05:01 10:11:12"}
    image = decode_image(_save(_pixels(), "PNG", exif=exif.tobytes()))
    jpeg = _exif_of(encode_like(image.rgb, image, ".jpg"))
    assert jpeg[Base.Make] == "Canon" and 0x927C not in jpeg.get_ifd(IFD.Exif)
    assert jpeg.get_ifd(IFD.Exif)[0x9003] == "2024:05:01 10:11:12"
    assert len(_exif_of(encode_like(image.rgb, image, ".png")).get_ifd(IFD.Exif)[0x927C]) == 70_000


# ---------------------------------------------------------------------------- ICC and XMP


@pytest.mark.parametrize("profile_name", ["p3", "srgb"])
@pytest.mark.parametrize("ext", [".png", ".jpg", ".webp", ".tif"])
def test_colour_profile_is_kept_and_pixels_stay_in_the_files_space(profile_name, ext):
    profile = _p3_profile() if profile_name == "p3" else _srgb_profile()
    assert ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(profile))).strip() == (
        "Display P3 v4" if profile_name == "p3" else "sRGB built-in"
    )
    stored = _pixels()
    source = _save(stored, "PNG", icc_profile=profile)
    image = decode_image(source)
    assert image.metadata.icc_profile == profile
    assert np.array_equal(np.round(image.rgb * 255).astype(np.uint8), stored)  # no conversion on read
    out = encode_like(image.rgb, image, ext)
    assert _info_of(out).get("icc_profile") == profile
    if ext in (".png", ".tif"):
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(out)).convert("RGB")), stored)


def test_p3_fixture_is_really_another_colour_space():
    green = Image.fromarray(np.array([[[0, 255, 0]]], np.uint8))
    p3 = ImageCms.ImageCmsProfile(io.BytesIO(_p3_profile()))
    as_srgb = ImageCms.profileToProfile(green, p3, ImageCms.createProfile("sRGB"))
    assert np.asarray(as_srgb)[0, 0, 0] < 10 and np.asarray(as_srgb)[0, 0, 1] == 255  # P3 green lies outside sRGB
    assert np.asarray(as_srgb)[0, 0, 2] < 60


def test_grey_profile_only_on_grey_output_and_cmyk_profile_dropped_with_a_note():
    grey_profile = _with_colour_space(_srgb_profile(), b"GRAY")
    grey = decode_image(_save(_pixels(channels=1), "PNG", icc_profile=grey_profile))
    assert grey.grey and _info_of(encode_like(grey.rgb, grey, ".png")).get("icc_profile") == grey_profile
    colour = decode_image(_save(_pixels(), "PNG", icc_profile=grey_profile))
    assert "icc_profile" not in _info_of(encode_like(colour.rgb, colour, ".png"))
    cmyk = Image.fromarray(_pixels()).convert("CMYK")
    out = io.BytesIO()
    cmyk.save(out, format="JPEG", icc_profile=_with_colour_space(_srgb_profile(), b"CMYK"))
    image = decode_image(out.getvalue())
    assert image.metadata.icc_profile is None and any("CMYK" in n for n in image.notes)


@pytest.mark.parametrize("ext", [".jpg", ".png", ".webp", ".tif"])
def test_xmp_is_kept_with_its_orientation_reset_when_pixels_turn(ext):
    turned = decode_image(_save(_pixels(), "JPEG", exif=b"Exif\x00\x00" + _camera_exif(6), xmp=XMP))
    out = decode_image(encode_like(turned.rgb, turned, ext))
    assert out.metadata.xmp == XMP.replace(b'tiff:Orientation="6"', b'tiff:Orientation="1"')
    assert out.rgb.shape == turned.rgb.shape  # no viewer-visible second turn
    plain = decode_image(_save(_pixels(), "JPEG", xmp=XMP.replace(b'tiff:Orientation="6" ', b"")))
    assert decode_image(encode_like(plain.rgb, plain, ext)).metadata.xmp == plain.metadata.xmp
    assert b"A. Photographer" in plain.metadata.xmp


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def test_png_text_chunks_are_kept_including_after_the_image_data():
    info = PngInfo()
    info.add_text("Title", "Misty valley")
    info.add_text("Comment", "long " * 200, zip=True)
    info.add_itxt("Description", "Nebel über dem Tal — 霧")
    data = _save(_pixels(), "PNG", pnginfo=info)
    end = data.rindex(b"IEND") - 4
    data = data[:end] + _chunk(b"tEXt", b"Author\x00Somebody") + data[end:]
    image = decode_image(data)
    expected = {
        "Title": "Misty valley",
        "Comment": "long " * 200,
        "Description": "Nebel über dem Tal — 霧",
        "Author": "Somebody",
    }
    assert image.metadata.text == expected
    with Image.open(io.BytesIO(encode_like(image.rgb, image, ".png"))) as out:
        assert dict(out.text) == expected


def test_png_xmp_is_metadata_not_text():
    xmp = XMP.replace(b'tiff:Orientation="6" ', b"")
    info = PngInfo()
    info.add_itxt("XML:com.adobe.xmp", xmp.decode())
    image = decode_image(_save(_pixels(), "PNG", pnginfo=info))
    assert image.metadata.xmp == xmp and image.metadata.text == {}
    assert decode_image(encode_like(image.rgb, image, ".tif")).metadata.xmp == xmp


def test_xmp_orientation_alone_turns_the_pixels_and_is_reset():
    info = PngInfo()
    info.add_itxt("XML:com.adobe.xmp", XMP.decode())  # tiff:Orientation="6", no EXIF block
    image = decode_image(_save(_pixels(20, 30), "PNG", pnginfo=info))
    assert image.rgb.shape == (30, 20, 3) and b'tiff:Orientation="1"' in image.metadata.xmp
    assert image.metadata.exif is None


def test_real_photos_keep_their_metadata():
    folder = shared_path("data", "real_more")
    names = ["aodpt_test10.jpg", "utk_Foggy_Day_in_Brussels_by_BenHeine.jpg"]  # colour and grey, EXIF+ICC+XMP
    paths = [folder / n for n in names if (folder / n).is_file()]
    if not paths:
        pytest.skip("the sample photos with metadata are not in ../shared/data/real_more")
    for path in paths:
        image = read_image(path)
        with Image.open(path) as original:
            source_exif = original.getexif()
            icc = original.info.get("icc_profile")
        for ext in (".jpg", ".tif"):
            out = encode_like(image.rgb, image, ext)
            exif = _exif_of(out)
            for tag in (Base.Make, Base.Model, Base.DateTime, Base.Software):
                assert exif.get(tag) == source_exif.get(tag), (path.name, ext, tag)
            assert not exif.get_ifd(IFD.IFD1)
            assert _info_of(out).get("icc_profile") == icc
            again = decode_image(out)
            assert again.grey == image.grey and again.rgb.shape == image.rgb.shape
            assert again.metadata.xmp == image.metadata.xmp


# ---------------------------------------------------------------------------- layouts


def _grey_alpha16(h: int = 9, w: int = 13) -> tuple[np.ndarray, np.ndarray]:
    grey = (np.arange(h * w).reshape(h, w) * 517 % 65536).astype(np.uint16)
    alpha = (65535 - np.arange(h * w).reshape(h, w) * 311 % 65536).astype(np.uint16)
    return grey, alpha


def _independent_la16_png(grey: np.ndarray, alpha: np.ndarray) -> bytes:
    """A 16-bit grey+alpha PNG written by hand (filter 0), as other programs write them."""
    h, w = grey.shape
    rows = np.dstack([grey, alpha]).astype(">u2")
    raw = b"".join(b"\x00" + rows[y].tobytes() for y in range(h))
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 4, 0, 0, 0))
        + _chunk(b"IDAT", zlib.compress(raw))
        + _chunk(b"IEND", b"")
    )


def test_16bit_grey_alpha_png_stays_grey_alpha():
    grey, alpha = _grey_alpha16()
    image = decode_image(_independent_la16_png(grey, alpha))
    assert image.grey and image.bit_depth == 16 and image.alpha is not None
    assert np.array_equal(np.round(image.rgb[:, :, 0] * 65535).astype(np.uint16), grey)
    assert np.array_equal(image.alpha, alpha)
    out = encode_like(image.rgb, image, ".png")
    assert out[24:26] == b"\x10\x04"  # IHDR: 16 bits, colour type 4 (grey + alpha)
    decoded = cv2.imdecode(np.frombuffer(out, np.uint8), cv2.IMREAD_UNCHANGED)  # an independent decoder
    assert decoded.dtype == np.uint16
    assert np.array_equal(decoded[:, :, 0], grey) and np.array_equal(decoded[:, :, 3], alpha)
    again = decode_image(out)
    assert again.grey and again.bit_depth == 16 and np.array_equal(again.alpha, alpha)
    assert np.array_equal(again.rgb, image.rgb)


@pytest.mark.parametrize(
    "ext, bit_depth, layout", [(".tif", 16, "RGBA"), (".webp", 8, "RGBA"), (".tif", 8, "LA"), (".png", 8, "LA")]
)
def test_grey_alpha_in_other_formats(ext, bit_depth, layout):
    grey, alpha = _grey_alpha16()
    image = decode_image(_independent_la16_png(grey, alpha))
    out = encode_like(image.rgb, image, ext, bit_depth=bit_depth)
    with Image.open(io.BytesIO(out)) as im:
        assert im.mode == layout
    again = decode_image(out)
    assert again.bit_depth == bit_depth and again.alpha is not None
    tolerance = 1 / 65535 if bit_depth == 16 else 0.5 / 255 + 1e-6
    if ext != ".webp":
        assert np.abs(again.rgb - image.rgb).max() <= tolerance


@pytest.mark.parametrize("ext", [".png", ".tif"])
@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("bit_depth", [8, 16])
def test_lossless_round_trip_keeps_depth_layout_and_values(ext, channels, bit_depth):
    rng = np.random.default_rng(channels)
    maximum = 65535 if bit_depth == 16 else 255
    dtype = np.uint16 if bit_depth == 16 else np.uint8
    stored = rng.integers(0, maximum + 1, (17, 23, channels)).astype(dtype)
    rgb = np.repeat(stored[:, :, :1], 3, axis=2) if channels == 1 else stored[:, :, :3]
    alpha = stored[:, :, 3] if channels == 4 else None
    out = encode_image(rgb.astype(np.float32) / maximum, ext, bit_depth=bit_depth, grey=channels == 1, alpha=alpha)
    image = decode_image(out)
    assert (image.bit_depth, image.grey, image.alpha is not None) == (bit_depth, channels == 1, channels == 4)
    assert np.array_equal(np.round(image.rgb * maximum).astype(dtype), rgb)
    if alpha is not None:
        assert np.array_equal(image.alpha, alpha)
    by_opencv = cv2.imdecode(np.frombuffer(out, np.uint8), cv2.IMREAD_UNCHANGED)
    assert by_opencv.dtype == dtype and by_opencv.shape[:2] == (17, 23)
    if channels == 3:
        assert np.array_equal(by_opencv[:, :, ::-1], rgb)


def test_side_by_side_panels_repeat_the_alpha_and_sizes_are_checked(tmp_path):
    rgba = _pixels(channels=4)
    image = decode_image(_save(rgba, "PNG"))
    pair = np.concatenate([image.rgb, image.rgb], axis=1)
    path = write_like(tmp_path / "pair.png", pair, image, panels=2)
    with Image.open(path) as im:
        written = np.asarray(im)
    assert written.shape == (20, 60, 4)
    assert np.array_equal(written[:, :30, 3], rgba[:, :, 3]) and np.array_equal(written[:, 30:, 3], rgba[:, :, 3])
    with pytest.raises(ImageWriteError, match="expected 60×20"):
        encode_like(pair[:, :50], image, ".png", panels=2)


# ---------------------------------------------------------------------------- frames


def _frames() -> list[Image.Image]:
    return [Image.fromarray(np.full((16, 16, 3), 40 + 60 * i, np.uint8)) for i in range(3)]


@pytest.mark.parametrize("fmt", ["GIF", "TIFF", "WEBP", "PNG"])
def test_multi_frame_files_use_the_first_frame_and_say_so(fmt):
    first, *rest = _frames()
    out = io.BytesIO()
    first.save(out, format=fmt, save_all=True, append_images=rest, **({"lossless": True} if fmt == "WEBP" else {}))
    image = decode_image(out.getvalue())
    assert image.frames == 3
    assert image.notes and "first of its 3 frames" in image.notes[0]
    assert np.allclose(image.rgb, 40 / 255, atol=2 / 255)
    single = decode_image(_save(np.asarray(first), fmt))
    assert single.frames == 1 and single.notes == []
