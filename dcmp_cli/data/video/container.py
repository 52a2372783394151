"""The length an MP4/MOV container's index declares for its first video track.

A truncated file keeps its index (``moov``) when the index comes first (``+faststart``,
phones, most editors), so the index still lists every frame while the data holds only
some. ffmpeg reads what is there without complaint; comparing with the index is how a
short file is told apart from a short video. (A truncated file whose index came last
has no index left and does not open at all.)

Boxes read: ``moov`` → ``mvhd`` (movie time scale), ``trak`` → ``edts/elst`` (edit list),
``mdia`` → ``hdlr`` (track kind), ``mdhd`` (media time scale and duration),
``minf/stbl/stsz`` or ``stz2`` (sample count). Fragmented files (``mvex``) keep their samples
outside the index and declare nothing here.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

#: An index larger than this is not read (a sample table for about a day of video).
_MAX_MOOV_BYTES = 256 << 20


@dataclass(frozen=True)
class DeclaredLength:
    """``frames``: samples the index lists for the track (every frame stored, including
    any an edit list hides); ``seconds``: the track's presentation length (what the
    edit list keeps), None when the index gives none."""

    frames: int
    seconds: float | None


def _boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, payload end) of the boxes in ``data[start:end]``."""
    end = len(data) if end is None else end
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            if pos + 16 > end:
                return
            size = struct.unpack_from(">Q", data, pos + 8)[0]
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            return
        yield kind, pos + header, pos + size
        pos += size


def _child(data: bytes, start: int, end: int, kind: bytes) -> tuple[int, int] | None:
    for found, lo, hi in _boxes(data, start, end):
        if found == kind:
            return lo, hi
    return None


def _path(data: bytes, start: int, end: int, *kinds: bytes) -> tuple[int, int] | None:
    span: tuple[int, int] | None = (start, end)
    for kind in kinds:
        if span is None:
            return None
        span = _child(data, span[0], span[1], kind)
    return span


def _read_moov(path: Path) -> bytes | None:
    """The payload of the top-level ``moov`` box, or None if there is none."""
    size_of_file = os.path.getsize(path)
    with open(path, "rb") as f:
        pos = 0
        while pos + 8 <= size_of_file:
            f.seek(pos)
            head = f.read(16)
            if len(head) < 8:
                return None
            size, kind = struct.unpack_from(">I4s", head)
            header = 8
            if size == 1 and len(head) == 16:
                size, header = struct.unpack_from(">Q", head, 8)[0], 16
            elif size == 0:
                size = size_of_file - pos
            if size < header:
                return None
            if kind == b"moov":
                if size > _MAX_MOOV_BYTES:
                    return None
                f.seek(pos + header)
                data = f.read(size - header)
                return data if len(data) == size - header else None
            pos += size
    return None


def _track_length(moov: bytes, lo: int, hi: int, movie_scale: int) -> DeclaredLength | None:
    stbl = _path(moov, lo, hi, b"mdia", b"minf", b"stbl")
    mdhd = _path(moov, lo, hi, b"mdia", b"mdhd")
    if stbl is None or mdhd is None:
        return None
    stsz = _child(moov, *stbl, b"stsz")
    stz2 = _child(moov, *stbl, b"stz2")
    if stsz is not None and stsz[1] - stsz[0] >= 12:
        frames = struct.unpack_from(">I", moov, stsz[0] + 8)[0]
    elif stz2 is not None and stz2[1] - stz2[0] >= 12:
        frames = struct.unpack_from(">I", moov, stz2[0] + 8)[0]
    else:
        return None
    seconds: float | None = None
    elst = _path(moov, lo, hi, b"edts", b"elst")
    if elst is not None and movie_scale > 0:
        version = moov[elst[0]]
        count = struct.unpack_from(">I", moov, elst[0] + 4)[0]
        entry, layout = (20, ">Qq") if version == 1 else (12, ">Ii")
        if elst[0] + 8 + count * entry <= elst[1]:
            kept = 0
            for i in range(count):
                duration, media_time = struct.unpack_from(layout, moov, elst[0] + 8 + i * entry)
                if media_time != -1:  # -1 marks an empty edit: a delay before the track starts
                    kept += duration
            seconds = kept / movie_scale if kept > 0 else None
    if seconds is None:
        version = moov[mdhd[0]]
        scale, duration = struct.unpack_from(
            ">IQ" if version == 1 else ">II", moov, mdhd[0] + (20 if version == 1 else 12)
        )
        if scale > 0 and 0 < duration < (1 << (64 if version == 1 else 32)) - 1:
            seconds = duration / scale
    return DeclaredLength(frames, seconds)


def mp4_video_length(path: str | os.PathLike) -> DeclaredLength | None:
    """What the index of an MP4/MOV file declares for its first video track; None when the
    file has no readable index, no video track, or is fragmented."""
    try:
        moov = _read_moov(Path(path))
        return None if moov is None else _first_video_track(moov)
    except (OSError, struct.error):  # unreadable or malformed: the index declares nothing usable
        return None


def _first_video_track(moov: bytes) -> DeclaredLength | None:
    if _child(moov, 0, len(moov), b"mvex") is not None:
        return None
    movie_scale = 0
    mvhd = _child(moov, 0, len(moov), b"mvhd")
    if mvhd is not None and mvhd[1] - mvhd[0] >= 20:
        movie_scale = struct.unpack_from(">I", moov, mvhd[0] + (20 if moov[mvhd[0]] == 1 else 12))[0]
    for kind, lo, hi in _boxes(moov):
        if kind != b"trak":
            continue
        hdlr = _path(moov, lo, hi, b"mdia", b"hdlr")
        if hdlr is not None and hdlr[1] - hdlr[0] >= 12 and moov[hdlr[0] + 8 : hdlr[0] + 12] == b"vide":
            return _track_length(moov, lo, hi, movie_scale)
    return None
