"""Video files: probe, stream frames in, stream frames out, keep audio and metadata.

Everything goes through the ffmpeg binary that ships in the ``imageio-ffmpeg`` wheel
(``imageio_ffmpeg.get_ffmpeg_exe()``); no system ffmpeg is needed.

* :func:`probe_video` reads what a file holds: coded frame size, exact frame rate (a
  :class:`~fractions.Fraction`, e.g. 30000/1001), frame count (video packets, counted
  without decoding), display rotation, colour tags and audio streams.
* :func:`read_frames` streams decoded frames through imageio's ffmpeg plugin, one at a
  time: (H, W, 3) uint8 RGB in the *stored* orientation (``-noautorotate``), every frame
  exactly once (``-fps_mode passthrough``), so memory stays bounded and the frame count
  is kept.
* :func:`open_video_writer` streams frames into a video through imageio's ffmpeg plugin
  (H.264 / yuv420p / CRF by default), then remuxes it with the source's audio streams
  (copied unchanged), its global metadata and its display rotation. Everything is
  written to hidden temporary files beside the target and renamed at the end; an
  interrupted run leaves no partial output.

Colour: frames are decoded with the matrix and range the source is tagged with
(BT.601 when untagged, as ffmpeg does) and encoded back with the same matrix, range and
tags, so colours survive the round trip in any player.

Odd frame sizes: H.264 and H.265 cannot store odd widths or heights in 4:2:0. dcmp keeps
the exact size and encodes such videos in 4:4:4 (yuv444p, H.264 High 4:4:4), with a
note; VP9 and AV1 (``--codec libvpx-vp9`` / ``libsvtav1``) store odd sizes in 4:2:0.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import numpy as np

from dcmp_cli.atomic import atomic_output
from dcmp_cli.data.haze import add_haze

#: Extensions taken for videos when scanning a folder (lower case).
VIDEO_EXTENSIONS = (
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts", ".wmv", ".flv", ".3gp",
)
#: Containers that take ``-movflags +faststart`` (index at the front, for streaming).
_MOV_FAMILY = (".mp4", ".m4v", ".mov", ".3gp")
#: Input formats that are still images, not videos.
_IMAGE_DEMUXERS = re.compile(r"^(image2|.*_pipe)$")
#: Short names for common encoders.
CODEC_ALIASES = {"h264": "libx264", "avc": "libx264", "h265": "libx265", "hevc": "libx265", "vp9": "libvpx-vp9", "av1": "libsvtav1"}
#: Encoders that take ``-crf`` (constant quality).
_CRF_CODECS = ("libx264", "libx265", "libvpx-vp9", "libaom-av1", "libsvtav1")
#: Encoders whose 4:2:0 mode needs even sides.
_EVEN_420_CODECS = ("libx264", "libx265")
#: ffmpeg colourspace tag -> the scale filter's matrix name.
_MATRICES = {
    "bt709": "bt709",
    "bt470bg": "bt470",
    "smpte170m": "smpte170m",
    "smpte240m": "smpte240m",
    "fcc": "fcc",
    "bt2020nc": "bt2020",
    "bt2020c": "bt2020",
}


class VideoError(ValueError):
    """The file is not a readable video; the message says why."""


class VideoWriteError(ValueError):
    """The video cannot be written as asked; the message says why."""


def ffmpeg_exe() -> str:
    """The ffmpeg binary of the imageio-ffmpeg wheel (or $IMAGEIO_FFMPEG_EXE)."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def is_video_path(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def find_videos(directory: Path, recursive: bool = False) -> tuple[list[Path], list[Path]]:
    """(videos, other files) in ``directory``, sorted; hidden files are skipped."""
    entries = directory.rglob("*") if recursive else directory.iterdir()
    files = sorted(
        p for p in entries if p.is_file() and not any(part.startswith(".") for part in p.relative_to(directory).parts)
    )
    return [p for p in files if is_video_path(p)], [p for p in files if not is_video_path(p)]


# --------------------------------------------------------------------------- probing


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

    ``width``/``height``: the coded frame size (frames are read and written in this,
    the stored, orientation); ``sample_aspect``: the pixel aspect ratio (SAR), if given. ``rotation``: counter-clockwise degrees a player turns the
    picture by (the display matrix), 0 if none. ``frame_count``: video packets in the
    file (= frames for all common codecs). ``fps``: the stream's frame rate, exact.
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

    @property
    def has_audio(self) -> bool:
        return bool(self.audio_codecs)


def _ffmpeg_reason(stderr: str) -> str:
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
        elif part in _MATRICES or part in ("unknown", "gbr", "ycgco"):
            space = primaries = transfer = part
    def unknown(v):
        return None if v in (None, "unknown", "reserved", "unspecified") else v
    return name, ColorInfo(colour_range, unknown(space), unknown(primaries), unknown(transfer))


def _parse_banner(section: str) -> dict:
    video = [line for line in section.splitlines() if re.match(r"\s*Stream #0:\d+.*: Video: ", line)]
    if not video:
        return {}
    line = video[0]
    spec = line.split("Video: ", 1)[1]
    fields = re.split(r",\s*(?![^()]*\))", spec)
    codec = fields[0].split()[0]
    pix_fmt, color = parse_color(fields[1]) if len(fields) > 1 else ("unknown", ColorInfo())
    size = re.search(r"\b(\d{1,5})x(\d{1,5})\b", spec)
    sar = re.search(r"SAR (\d+):(\d+)", spec)
    fps = re.search(r"([\d.]+)(k?) fps", spec)
    tbr = re.search(r"([\d.]+)(k?) tbr", spec)
    rate = fps or tbr
    rotation = re.search(r"(?i)display\s*matrix: rotation of (-?[\d.]+) degrees", section)
    duration = re.search(r"Duration: (\d+):(\d+):([\d.]+)", section)
    audio = re.findall(r"Stream #0:\d+.*: Audio: (\w+)", section)
    return {
        "codec": codec,
        "pix_fmt": pix_fmt,
        "color": color,
        "size": (int(size.group(1)), int(size.group(2))) if size else None,
        "rate": float(rate.group(1)) * (1000 if rate.group(2) else 1) if rate else 0.0,
        "rotation": float(rotation.group(1)) if rotation else 0.0,
        "duration": int(duration.group(1)) * 3600 + int(duration.group(2)) * 60 + float(duration.group(3)) if duration else 0.0,
        "audio": tuple(audio),
        "sar": Fraction(int(sar.group(1)), int(sar.group(2))) if sar and int(sar.group(2)) else None,
        "format": re.search(r"Input #0, ([^,]+(?:,[^,\s]+)*), from", section),
    }


def exact_frame_rate(printed: float, time_base: Fraction | None, durations: list[int]) -> Fraction:
    """The frame rate as a fraction.

    ffmpeg prints rates rounded to two decimals (29.97). When the first packets all last
    the same number of time-base ticks, the rate is exactly 1 / (ticks · time base)
    (30000/1001 for 1001 ticks of 1/30000 s); it is taken if it agrees with the printed
    value. Otherwise NTSC-style rates (N·1000/1001) are recognised, and anything else is
    the printed value as a fraction (e.g. 25/2).
    """
    if time_base is not None and durations:
        ticks = Counter(durations).most_common(1)[0][0]
        steady = ticks > 0 and sum(d == ticks for d in durations) >= 0.9 * len(durations)
        if steady:
            rate = 1 / (time_base * ticks)
            if printed <= 0 or abs(float(rate) - printed) <= 0.006:
                return rate
    if printed <= 0:
        raise VideoError("the video stream has no frame rate (pass --fps)")
    nearest = round(printed)
    if abs(printed - nearest) > 0.001:
        ntsc = round(printed * 1.001)
        if abs(ntsc * 1000 / 1001 - printed) <= 0.006:
            return Fraction(ntsc * 1000, 1001)
    return Fraction(printed).limit_denominator(1001)


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
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path), "-map", "0:v:0?", "-c", "copy", "-f", "framecrc", "-"]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    stderr = proc.stderr.decode("utf-8", "replace")
    section = _input_section(stderr)
    if not section:
        raise VideoError(f"not a readable video ({_ffmpeg_reason(stderr)})")
    banner = _parse_banner(section)
    if not banner:
        raise VideoError("no video stream in the file")
    demuxer = banner["format"].group(1) if banner["format"] else ""
    if _IMAGE_DEMUXERS.match(demuxer):
        raise VideoError("a still image, not a video (use `dcmp dehaze` for images)")
    if proc.returncode != 0:
        raise VideoError(f"not a readable video ({_ffmpeg_reason(stderr)})")
    time_base = None
    durations: list[int] = []
    packets = 0
    for line in proc.stdout.decode("ascii", "replace").splitlines():
        if line.startswith("#tb 0:"):
            num, den = line.split(":", 1)[1].strip().split("/")
            time_base = Fraction(int(num), int(den))
        elif line.startswith("0,"):
            packets += 1
            if len(durations) < 240:
                durations.append(int(line.split(",")[3]))
    if packets == 0:
        raise VideoError("no video frames could be read (truncated or corrupt file)")
    if banner["size"] is None:
        raise VideoError("the video stream has no frame size")
    width, height = banner["size"]
    return VideoInfo(
        path=path,
        width=width,
        height=height,
        fps=exact_frame_rate(banner["rate"], time_base, durations[:-1] or durations),
        frame_count=packets,
        duration=banner["duration"],
        codec=banner["codec"],
        pix_fmt=banner["pix_fmt"],
        rotation=banner["rotation"],
        color=banner["color"],
        audio_codecs=banner["audio"],
        sample_aspect=banner["sar"],
    )


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class FrameRange:
    """Which part of a video to read: ``start``/``end`` in seconds, at most ``max_frames``
    frames, resampled to ``fps`` (None keeps every frame at the source rate)."""

    start: float | None = None
    end: float | None = None
    max_frames: int | None = None
    fps: Fraction | None = None

    @property
    def trimmed(self) -> bool:
        return self.start is not None or self.end is not None or self.max_frames is not None

    def expected_frames(self, info: VideoInfo) -> int:
        """How many frames reading will give (exact without ``fps``/times, else an estimate)."""
        if self.start is None and self.end is None and self.fps is None:
            count = info.frame_count
        else:
            begin = self.start or 0.0
            end = info.duration if self.end is None else min(self.end, info.duration or self.end)
            rate = self.fps or info.fps
            count = max(0, round((end - begin) * float(rate)))
            if self.fps is None:
                count = min(count, info.frame_count)
        return min(count, self.max_frames) if self.max_frames is not None else count


def read_frames(info: VideoInfo, frames: FrameRange = FrameRange()) -> Iterator[np.ndarray]:
    """Decoded frames of ``info.path`` one by one: (H, W, 3) uint8 RGB, stored orientation.

    Memory holds one frame (plus ffmpeg's pipe buffer) whatever the video's length.
    Raises :class:`VideoError` if decoding breaks off.
    """
    import imageio.v2 as imageio

    input_params = ["-noautorotate"]
    if frames.start is not None:
        input_params += ["-ss", f"{frames.start:.6f}"]
    if frames.end is not None:
        input_params += ["-t", f"{frames.end - (frames.start or 0.0):.6f}"]
    output_params = ["-vf", f"fps={frames.fps}"] if frames.fps is not None else ["-fps_mode", "passthrough"]
    if frames.max_frames is not None:
        output_params += ["-frames:v", str(frames.max_frames)]
    try:
        reader = imageio.get_reader(
            info.path, format="FFMPEG", input_params=input_params, output_params=output_params, dtype="uint8"
        )
    except (OSError, RuntimeError) as e:
        raise VideoError(f"cannot decode the video ({_first_line(e)})") from None
    count = 0
    try:
        iterator = iter(reader)
        while True:
            try:
                frame = next(iterator)
            except StopIteration:
                return
            except (OSError, RuntimeError) as e:
                raise VideoError(f"decoding failed after {count} frame(s) ({_first_line(e)})") from None
            count += 1
            yield np.asarray(frame)
    finally:
        reader.close()


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    for line in text.splitlines():
        if line.strip() and not line.startswith("==="):
            return line.strip()
    return type(error).__name__


# --------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class EncodeOptions:
    """How frames are encoded: ``codec`` (an ffmpeg encoder or an alias: h264, hevc, vp9,
    av1), ``crf`` (constant-quality level for encoders that take one; lower = better),
    ``pix_fmt`` (4:2:0 for the widest player support)."""

    codec: str = "libx264"
    crf: int = 18
    pix_fmt: str = "yuv420p"

    @property
    def encoder(self) -> str:
        return CODEC_ALIASES.get(self.codec.lower(), self.codec)


@lru_cache(maxsize=1)
def video_encoders() -> frozenset[str]:
    """Names of the video encoders the bundled ffmpeg has."""
    out = subprocess.run([ffmpeg_exe(), "-hide_banner", "-encoders"], capture_output=True, text=True, check=False).stdout
    names = set()
    for line in out.split("------", 1)[-1].splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith("V"):
            names.add(parts[1])
    return frozenset(names)


def check_encoder(options: EncodeOptions) -> str:
    """The ffmpeg encoder for ``options``; raises :class:`VideoWriteError` if there is none."""
    encoder = options.encoder
    if encoder not in video_encoders():
        raise VideoWriteError(
            f"unknown video encoder {options.codec!r}; use libx264 (h264), libx265 (hevc), libvpx-vp9 (vp9) or "
            "libsvtav1 (av1)"
        )
    return encoder


@dataclass
class WrittenVideo:
    """What :func:`open_video_writer` wrote: frame count, audio copied, notes for the user."""

    path: Path
    frames: int = 0
    audio: str = "none"  # "none", "copied", "re-encoded"
    notes: list[str] = field(default_factory=list)


def encoder_arguments(
    width: int, height: int, options: EncodeOptions, source: VideoInfo | None = None
) -> tuple[str, str, list[str], list[str]]:
    """(encoder, pixel format, extra ffmpeg output arguments, notes) for frames of this size,
    keeping the ``source``'s colour matrix, range, tags and pixel aspect ratio."""
    encoder = check_encoder(options)
    color = source.color if source is not None else ColorInfo()
    notes: list[str] = []
    pix_fmt = options.pix_fmt
    if encoder in _EVEN_420_CODECS and pix_fmt in ("yuv420p", "yuvj420p", "nv12") and (width % 2 or height % 2):
        pix_fmt = "yuv444p"
        notes.append(
            f"odd frame size {width}×{height}: {encoder} cannot store it in 4:2:0, encoding 4:4:4 (yuv444p) to keep "
            "the exact size; some hardware players do not play 4:4:4 (use --codec vp9 for odd sizes in 4:2:0)"
        )
    args: list[str] = []
    if encoder in _CRF_CODECS:
        args += ["-crf", str(options.crf)]
        if encoder == "libvpx-vp9":
            args += ["-b:v", "0"]
    # RGB -> YUV with the source's matrix and range, then the source's tags on the frames
    # (ffmpeg 9 takes tags from the frames, not from -color_* options).
    scale = []
    matrix = _MATRICES.get(color.space or "")
    if matrix:
        scale.append(f"out_color_matrix={matrix}")
    if color.range:
        scale.append(f"out_range={'full' if color.range == 'pc' else 'limited'}")
    tags = [
        f"{name}={value}"
        for name, value in (
            ("colorspace", color.space),
            ("color_primaries", color.primaries),
            ("color_trc", color.transfer),
            ("range", color.range),
        )
        if value
    ]
    filters = (["scale=" + ":".join(scale)] if scale else []) + (["setparams=" + ":".join(tags)] if tags else [])
    if source is not None and source.sample_aspect is not None:
        filters.append(f"setsar={source.sample_aspect.numerator}/{source.sample_aspect.denominator}")
    if filters:
        args += ["-vf", ",".join(filters)]
    args += ["-fps_mode", "passthrough"]
    return encoder, pix_fmt, args, notes


def count_packets(path: Path) -> int:
    """Video packets (frames) in the first video stream of ``path``, without decoding."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:v:0", "-c", "copy", "-f", "framecrc", "-"]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0:
        raise VideoWriteError(f"the written video does not read back ({_ffmpeg_reason(proc.stderr.decode('utf-8', 'replace'))})")
    return sum(1 for line in proc.stdout.decode("ascii", "replace").splitlines() if line.startswith("0,"))


class FrameSink:
    """Receives (H, W, 3) uint8 RGB frames for :func:`open_video_writer`.

    ``result`` describes the finished video once the writer's block has ended.
    """

    def __init__(
        self, path: Path, width: int, height: int, fps: Fraction, options: EncodeOptions, source: VideoInfo | None,
        result: WrittenVideo,
    ) -> None:
        import imageio.v2 as imageio

        encoder, pix_fmt, args, notes = encoder_arguments(width, height, options, source)
        self.result = result
        self.result.notes += notes
        self.size = (height, width)
        self.frames = 0
        self._writer = imageio.get_writer(
            path,
            format="FFMPEG",
            fps=fps,
            codec=encoder,
            pixelformat=pix_fmt,
            quality=None,
            macro_block_size=1,
            ffmpeg_log_level="error",
            output_params=args,
        )

    def write(self, frame: np.ndarray) -> None:
        if frame.shape != (*self.size, 3) or frame.dtype != np.uint8:
            raise ValueError(f"expected a {self.size[1]}×{self.size[0]} uint8 RGB frame, got {frame.shape} {frame.dtype}")
        try:
            self._writer.append_data(np.ascontiguousarray(frame))
        except OSError as e:
            raise VideoWriteError(f"ffmpeg stopped encoding ({_first_line(e)})") from None
        self.frames += 1

    def close(self) -> None:
        self._writer.close()


def _fallback_audio_codec(target: Path) -> str:
    return "libopus" if target.suffix.lower() == ".webm" else "aac"


def remux(
    encoded: Path,
    target: Path,
    source: VideoInfo | None,
    *,
    audio_start: float | None = None,
    audio_duration: float | None = None,
    reencode_audio: bool = False,
) -> subprocess.CompletedProcess:
    """Puts the encoded video stream, the source's audio streams (copied, or re-encoded to
    AAC, Opus for WebM, when ``reencode_audio``), its global metadata and its display
    rotation into ``target``. ``audio_start``/``audio_duration`` cut the audio (at packet
    boundaries, about 20 ms) to match a trimmed video."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-y", "-v", "error"]
    if source is not None and source.rotation:
        cmd += ["-display_rotation:v:0", f"{source.rotation:g}"]
    cmd += ["-i", str(encoded)]
    maps = ["-map", "0:v:0"]
    if source is not None:
        if audio_start:
            cmd += ["-ss", f"{audio_start:.6f}"]
        if audio_duration is not None:
            cmd += ["-t", f"{audio_duration:.6f}"]
        cmd += ["-i", str(source.path), "-map_metadata", "1"]
        if source.has_audio:
            maps += ["-map", "1:a"]
    cmd += maps + ["-c:v", "copy", "-c:a", _fallback_audio_codec(target) if reencode_audio else "copy"]
    if audio_start:
        cmd += ["-copypriorss", "0"]  # drop audio packets before the cut instead of keeping them at t < 0
    if target.suffix.lower() in _MOV_FAMILY:
        cmd += ["-movflags", "+faststart"]
    cmd.append(str(target))
    return subprocess.run(cmd, capture_output=True, check=False)


@contextmanager
def open_video_writer(
    target: str | os.PathLike,
    width: int,
    height: int,
    fps: Fraction,
    options: EncodeOptions = EncodeOptions(),
    source: VideoInfo | None = None,
    *,
    audio_start: float | None = None,
    trim_audio: bool = False,
) -> Iterator[FrameSink]:
    """Yields a :class:`FrameSink`; on leaving the block the video appears at ``target``
    and ``sink.result`` (a :class:`WrittenVideo`) says what was written.

    With a ``source`` its audio streams (cut to ``audio_start`` and the written length
    when ``trim_audio``), global metadata, colour matrix and tags, pixel aspect ratio
    and rotation are carried over.
    Frames go to a hidden temporary file beside ``target``; on an exception (Ctrl-C
    included) every temporary file is removed and ``target`` is left untouched. The
    result's frame count is checked against what was written.
    """
    target = Path(target)
    result = WrittenVideo(target)
    with atomic_output(target) as final_tmp:
        # ".NAME.XXXX.enc.tmp.EXT": hidden, and matched by the cleanup of stale temporaries.
        encoded = final_tmp.with_name(final_tmp.name[: -len(".tmp" + target.suffix)] + ".enc.tmp" + target.suffix)
        sink: FrameSink | None = None
        try:
            sink = FrameSink(encoded, width, height, fps, options, source, result)
            yield sink
            sink.close()
            if sink.frames == 0:
                raise VideoWriteError("no frames to write")
            written = count_packets(encoded)
            if written != sink.frames:
                raise VideoWriteError(f"the encoder wrote {written} frames instead of {sink.frames}")
            duration = float(sink.frames / fps) if trim_audio else None
            proc = remux(encoded, final_tmp, source, audio_start=audio_start, audio_duration=duration)
            if proc.returncode != 0 and source is not None and source.has_audio:
                proc = remux(encoded, final_tmp, source, audio_start=audio_start, audio_duration=duration, reencode_audio=True)
                if proc.returncode == 0:
                    result.audio = "re-encoded"
                    result.notes.append(
                        f"audio ({', '.join(source.audio_codecs)}) cannot be stored in {target.suffix} as is: "
                        f"re-encoded ({_fallback_audio_codec(target)})"
                    )
            elif source is not None and source.has_audio:
                result.audio = "copied"
            if proc.returncode != 0:
                raise VideoWriteError(f"muxing failed ({_ffmpeg_reason(proc.stderr.decode('utf-8', 'replace'))})")
            result.frames = sink.frames
        finally:
            if sink is not None:
                sink.close()
            encoded.unlink(missing_ok=True)


# --------------------------------------------------------------------------- synthetic clips


def textured_scene(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A clear synthetic scene, float32 (H, W, 3) in [0, 1]: smooth colour waves plus grain."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    phases = rng.uniform(0, 2 * np.pi, size=(3, 2))
    channels = [
        0.45 + 0.35 * np.sin(xx / 6.0 + phases[c, 0]) * np.cos(yy / 9.0 + phases[c, 1])
        + 0.05 * rng.standard_normal((height, width))
        for c in range(3)
    ]
    return np.clip(np.stack(channels, axis=2), 0.0, 1.0).astype(np.float32)


def hazy_clip(
    num_frames: int = 32,
    height: int = 96,
    width: int = 128,
    *,
    seed: int = 0,
    beta: tuple[float, float] = (1.0, 1.6),
    jitter: float = 0.1,
    airlight: float = 0.85,
    vehicles: int = 2,
    noise: float = 0.01,
    pan: int = 1,
) -> Iterator[np.ndarray]:
    """A hazy clip whose haze level varies: float32 (H, W, 3) frames in [0, 1].

    A clear :func:`textured_scene` with depth from far (top) to near (bottom) is hazed
    with ``I = J·t + A·(1 − t)``, ``t = exp(−β·d)``, grey airlight ``airlight``. The
    thickness β sweeps from ``beta[0]`` to ``beta[1]`` and back over the clip and changes
    by up to ``jitter`` (relative) from frame to frame, like passing fog. ``vehicles``
    near-white 24×18 px boxes near the camera cross the view at different speeds,
    entering and leaving it (the classic trap for the dark channel prior's airlight
    estimate, which jumps to a bright object whenever one is in view). The view pans
    ``pan`` pixels per frame; every frame gets Gaussian sensor noise of standard
    deviation ``noise``.
    """
    rng = np.random.default_rng(seed)
    span = width + pan * max(0, num_frames - 1)
    scene = textured_scene(height, span, seed)
    depth = np.repeat(np.linspace(1.0, 0.0, height, dtype=np.float32)[:, None], span, axis=1)
    box_h, box_w = 18, 24
    for i in range(num_frames):
        phase = np.sin(np.pi * i / max(1, num_frames - 1))  # 0 -> 1 -> 0
        b = (beta[0] + (beta[1] - beta[0]) * phase) * (1.0 + jitter * rng.uniform(-1, 1))
        x0 = pan * i
        clear, d = scene[:, x0 : x0 + width].copy(), depth[:, x0 : x0 + width].copy()
        for k in range(vehicles):
            period = width + 2 * box_w
            x = (i * 7 * (k + 1) + 57 * k) % period - box_w
            y = min(height - box_h, int(0.45 * height) + 20 * k)
            left, right = max(0, x), min(width, x + box_w)
            if right > left:
                clear[y : y + box_h, left:right] = 0.98
                d[y : y + box_h, left:right] = 0.15
        frame = add_haze(clear, d, b, airlight) + noise * rng.standard_normal((height, width, 3)).astype(np.float32)
        yield np.clip(frame, 0.0, 1.0).astype(np.float32)
