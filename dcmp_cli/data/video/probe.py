"""What a video file holds: one ffmpeg pass over its packets, no decoding.

:func:`probe_video` reads the coded frame size, the exact frame rate (a
:class:`~fractions.Fraction`, e.g. 30000/1001), the frame count (video packets, counted
without decoding), the display rotation, colour tags, pixel aspect ratio, codec tag and
audio streams, and compares the frames present with the length the container declares
(MP4/MOV index, Matroska/WebM track duration): a file cut short (a copy that stopped, a
full disk) reads without error but holds fewer frames than it declares, and is marked
``truncated``.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from dcmp_cli.data.video.container import mp4_video_length
from dcmp_cli.data.video.errors import VideoError
from dcmp_cli.data.video.ffmpeg import ffmpeg_exe, ffmpeg_reason

#: Input formats that are still images, not videos.
_IMAGE_DEMUXERS = re.compile(r"^(image2|.*_pipe)$")
#: Frames by which a count may miss the declared one without meaning a short file
#: (rounding of durations to frames, a frame an edit list half covers).
SHORT_READ_SLACK = 2
#: ffmpeg colourspace tag -> the scale filter's matrix name.
MATRICES = {
    "bt709": "bt709",
    "bt470bg": "bt470",
    "smpte170m": "smpte170m",
    "smpte240m": "smpte240m",
    "fcc": "fcc",
    "bt2020nc": "bt2020",
    "bt2020c": "bt2020",
}


@dataclass(frozen=True)
class ColorInfo:
    """Colour tags of a stream as ffmpeg names them (None = unspecified)."""

    range: str | None = None  # "tv" (limited) or "pc" (full)
    space: str | None = None  # matrix, e.g. "bt709"
    primaries: str | None = None
    transfer: str | None = None


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` found.

    ``width``/``height``: the coded frame size (frames are read and written in this, the
    stored, orientation). ``fps``: the stream's frame rate, exact. ``frame_count``: video
    packets present in the file (= frames for all common codecs). ``duration``: the
    container's length in seconds (all streams). ``rotation``: counter-clockwise degrees a
    player turns the picture by (the display matrix), 0 if none. ``sample_aspect``: the
    pixel aspect ratio (SAR), if given. ``codec_tag``: the stream's four-character code
    (``avc1``, ``hvc1``), if the container has one.

    ``declared_frames``/``declared_duration``: the video's length as the container
    declares it (MP4/MOV: its index; Matroska/WebM: the track's duration tag), None when
    it declares none. ``truncated``: the file holds fewer frames than declared (by more
    than :data:`SHORT_READ_SLACK`): it was cut short and only its beginning can be read.
    """

    path: Path
    width: int
    height: int
    fps: Fraction
    frame_count: int
    duration: float
    codec: str
    pix_fmt: str
    rotation: float = 0.0
    color: ColorInfo = field(default_factory=ColorInfo)
    audio_codecs: tuple[str, ...] = ()
    sample_aspect: Fraction | None = None
    codec_tag: str | None = None
    declared_frames: int | None = None
    declared_duration: float | None = None
    truncated: bool = False

    @property
    def has_audio(self) -> bool:
        return bool(self.audio_codecs)


def _input_section(stderr: str) -> str:
    """The ``Input #0`` block of ffmpeg's banner (stops before the output/mapping part)."""
    start = stderr.find("Input #0")
    if start < 0:
        return ""
    end = len(stderr)
    for marker in ("Stream mapping:", "Output #0"):
        pos = stderr.find(marker, start)
        if pos >= 0:
            end = min(end, pos)
    return stderr[start:end]


def parse_color(pix_fmt_text: str) -> tuple[str, ColorInfo]:
    """``'yuv420p(tv, bt709/unknown/bt709, progressive)'`` -> ('yuv420p', ColorInfo(...))."""
    m = re.match(r"\s*([\w]+)(?:\((.*)\))?", pix_fmt_text)
    if not m:
        return pix_fmt_text.strip(), ColorInfo()
    name, inner = m.group(1), m.group(2) or ""
    parts = [p.strip() for p in inner.split(",") if p.strip()]
    colour_range = space = primaries = transfer = None
    for part in parts:
        if part in ("tv", "pc"):
            colour_range = part
        elif "/" in part and len(part.split("/")) == 3:
            space, primaries, transfer = part.split("/")
        elif part in MATRICES or part in ("unknown", "gbr", "ycgco"):
            space = primaries = transfer = part

    def known(value: str | None) -> str | None:
        return None if value in (None, "unknown", "reserved", "unspecified") else value

    return name, ColorInfo(colour_range, known(space), known(primaries), known(transfer))


def _seconds(match: re.Match[str] | None) -> float | None:
    if match is None:
        return None
    return int(match.group(1)) * 3600 + int(match.group(2)) * 60 + float(match.group(3))


@dataclass(frozen=True)
class _Banner:
    """The first video stream as ffmpeg's banner describes it."""

    demuxer: str
    codec: str
    codec_tag: str | None
    pix_fmt: str
    color: ColorInfo
    size: tuple[int, int] | None
    rate: float
    rotation: float
    duration: float
    audio: tuple[str, ...]
    sar: Fraction | None
    stream_duration: float | None  # the stream's DURATION tag (Matroska)


def _parse_banner(section: str) -> _Banner | None:
    lines = section.splitlines()
    video = [i for i, line in enumerate(lines) if re.match(r"\s*Stream #0:\d+.*: Video: ", line)]
    if not video:
        return None
    line = lines[video[0]]
    following = []
    for other in lines[video[0] + 1 :]:
        if re.match(r"\s*Stream #", other):
            break
        following.append(other)
    stream_block = "\n".join([line, *following])
    spec = line.split("Video: ", 1)[1]
    fields = re.split(r",\s*(?![^()]*\))", spec)
    codec = fields[0].split()[0]
    tag = re.search(r"\((\w{4}) / 0x[0-9a-fA-F]+\)", fields[0])
    pix_fmt, color = parse_color(fields[1]) if len(fields) > 1 else ("unknown", ColorInfo())
    size = re.search(r"\b(\d{1,5})x(\d{1,5})\b", spec)
    sar = re.search(r"SAR (\d+):(\d+)", spec)
    rate = re.search(r"([\d.]+)(k?) fps", spec) or re.search(r"([\d.]+)(k?) tbr", spec)
    rotation = re.search(r"(?i)display\s*matrix: rotation of (-?[\d.]+) degrees", stream_block)
    demuxer = re.search(r"Input #0, ([^,]+(?:,[^,\s]+)*), from", section)
    return _Banner(
        demuxer=demuxer.group(1) if demuxer else "",
        codec=codec,
        codec_tag=tag.group(1) if tag else None,
        pix_fmt=pix_fmt,
        color=color,
        size=(int(size.group(1)), int(size.group(2))) if size else None,
        rate=float(rate.group(1)) * (1000 if rate.group(2) else 1) if rate else 0.0,
        rotation=float(rotation.group(1)) if rotation else 0.0,
        duration=_seconds(re.search(r"Duration: (\d+):(\d+):([\d.]+)", section)) or 0.0,
        audio=tuple(re.findall(r"Stream #0:\d+.*: Audio: (\w+)", section)),
        sar=Fraction(int(sar.group(1)), int(sar.group(2))) if sar and int(sar.group(2)) and int(sar.group(1)) else None,
        stream_duration=_seconds(re.search(r"(?m)^\s*DURATION\s*:\s*(\d+):(\d+):([\d.]+)", "\n".join(following))),
    )


def exact_frame_rate(printed: float, time_base: Fraction | None, durations: list[int]) -> Fraction:
    """The frame rate as a fraction.

    ffmpeg prints rates rounded to two decimals (29.97). When the first packets all last
    the same number of time-base ticks, the rate is exactly 1 / (ticks · time base)
    (30000/1001 for 1001 ticks of 1/30000 s); it is taken if it agrees with the printed
    value. Otherwise NTSC-style rates (N·1000/1001) are recognised, and anything else is
    the printed value as a fraction (e.g. 25/2). Raises :class:`VideoError` when the
    stream gives no rate at all.
    """
    if time_base is not None and durations:
        ticks = Counter(durations).most_common(1)[0][0]
        steady = ticks > 0 and sum(d == ticks for d in durations) >= 0.9 * len(durations)
        if steady:
            rate = 1 / (time_base * ticks)
            if printed <= 0 or abs(float(rate) - printed) <= 0.006:
                return rate
    if printed <= 0:
        raise VideoError("the video stream has no frame rate")
    nearest = round(printed)
    if abs(printed - nearest) > 0.001:
        ntsc = round(printed * 1.001)
        if abs(ntsc * 1000 / 1001 - printed) <= 0.006:
            return Fraction(ntsc * 1000, 1001)
    return Fraction(printed).limit_denominator(1001)


@dataclass
class _Packets:
    """The video packets ffmpeg's framecrc listing shows (stream time base units)."""

    time_base: Fraction | None = None
    count: int = 0
    durations: list[int] = field(default_factory=list)  # of the first 240 packets
    first_pts: int | None = None
    end: int | None = None  # latest pts + duration

    @classmethod
    def parse(cls, listing: str) -> _Packets:
        packets = cls()
        for line in listing.splitlines():
            if line.startswith("#tb 0:"):
                num, den = line.split(":", 1)[1].strip().split("/")
                packets.time_base = Fraction(int(num), int(den))
            elif line.startswith("0,"):
                parts = line.split(",")
                packets.count += 1
                pts, duration = int(parts[2]), int(parts[3])
                if len(packets.durations) < 240:
                    packets.durations.append(duration)
                packets.first_pts = pts if packets.first_pts is None else min(packets.first_pts, pts)
                packets.end = pts + duration if packets.end is None else max(packets.end, pts + duration)
        return packets


def _declared_length(
    path: Path, banner: _Banner, packets: _Packets, fps: Fraction
) -> tuple[int | None, float | None, bool]:
    """(declared frames, declared seconds, truncated) for the containers that declare a length."""
    if banner.demuxer.startswith("mov,mp4"):
        index = mp4_video_length(path)
        if index is None:
            return None, None, False
        frames = index.frames
        if index.seconds is not None:  # an edit list can hide stored frames: count what it shows
            frames = min(frames, round(index.seconds * fps))
        return frames, index.seconds, packets.count < index.frames - SHORT_READ_SLACK
    if banner.demuxer.startswith("matroska") and banner.stream_duration and packets.time_base is not None:
        # The DURATION tag is the track's end time; frames present end at the last packet.
        start = float(packets.first_pts * packets.time_base) if packets.first_pts is not None else 0.0
        end = float(packets.end * packets.time_base) if packets.end is not None else 0.0
        seconds = banner.stream_duration - max(0.0, start)
        truncated = end < banner.stream_duration - SHORT_READ_SLACK / fps
        return round(seconds * fps), seconds, truncated
    return None, None, False


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Reads a video's properties; raises :class:`VideoError` with a short reason.

    One ffmpeg pass copies the first video stream's packets to a checksum list
    (``-f framecrc``): no decoding, so it costs about one read of the file.
    """
    path = Path(path)
    if not path.exists():
        raise VideoError("file not found")
    if path.is_dir():
        raise VideoError("is a directory")
    cmd = [
        ffmpeg_exe(),
        "-hide_banner",
        "-nostdin",
        "-i",
        str(path),
        "-map",
        "0:v:0?",
        "-c",
        "copy",
        "-f",
        "framecrc",
        "-",
    ]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    stderr = proc.stderr.decode("utf-8", "replace")
    section = _input_section(stderr)
    if not section:
        raise VideoError(f"not a readable video ({ffmpeg_reason(stderr)})")
    banner = _parse_banner(section)
    if banner is None:
        raise VideoError("no video stream in the file")
    if _IMAGE_DEMUXERS.match(banner.demuxer):
        raise VideoError("a still image, not a video (use `dcmp dehaze` for images)")
    if proc.returncode != 0:
        raise VideoError(f"not a readable video ({ffmpeg_reason(stderr)})")
    packets = _Packets.parse(proc.stdout.decode("ascii", "replace"))
    if packets.count == 0:
        raise VideoError("no video frames could be read (truncated or corrupt file)")
    if banner.size is None:
        raise VideoError("the video stream has no frame size")
    fps = exact_frame_rate(banner.rate, packets.time_base, packets.durations[:-1] or packets.durations)
    declared_frames, declared_duration, truncated = _declared_length(path, banner, packets, fps)
    width, height = banner.size
    return VideoInfo(
        path=path,
        width=width,
        height=height,
        fps=fps,
        frame_count=packets.count,
        duration=banner.duration,
        codec=banner.codec,
        pix_fmt=banner.pix_fmt,
        rotation=banner.rotation,
        color=banner.color,
        audio_codecs=banner.audio,
        sample_aspect=banner.sar,
        codec_tag=banner.codec_tag,
        declared_frames=declared_frames,
        declared_duration=declared_duration,
        truncated=truncated,
    )
