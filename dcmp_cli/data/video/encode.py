"""Streaming frames into a video file, written atomically, with the source's audio and metadata.

:func:`open_video_writer` streams (H, W, 3) uint8 RGB frames through a pipe into the ffmpeg
binary (``imageio_ffmpeg.write_frames``; H.264 / yuv420p / CRF by default) into a hidden temporary file, then remuxes it
with the source's audio streams (copied unchanged), global metadata and display
rotation into a second temporary file, checks that file, and renames it to the target.
An interrupted run (Ctrl-C included) leaves no partial output.

Colour: frames are converted to YUV with the matrix and range the source is tagged with
and carry its tags, so colours survive the round trip in any player. The pixel aspect
ratio (SAR) is set exactly as the source gives it.

Odd frame sizes: H.264 and H.265 cannot store odd widths or heights in 4:2:0. The exact
size is kept by encoding such videos in 4:4:4 (yuv444p, H.264 High 4:4:4), with a note;
VP9 and AV1 store odd sizes in 4:2:0. Frames are never padded or cropped.

HEVC in MP4/MOV is tagged ``hvc1`` (parameter sets in the sample description), which
Apple players require; ffmpeg's default ``hev1`` does not play there.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from dcmp_cli.atomic import atomic_output
from dcmp_cli.data.video.errors import VideoError, VideoWriteError
from dcmp_cli.data.video.ffmpeg import ffmpeg_exe, ffmpeg_reason, first_line, video_encoders
from dcmp_cli.data.video.probe import MATRICES, ColorInfo, VideoInfo, probe_video

#: Containers of the MP4/QuickTime family: ``-movflags +faststart`` (index first) and four-character codec tags.
_MOV_FAMILY = (".mp4", ".m4v", ".mov", ".3gp")
#: Short names for common encoders.
CODEC_ALIASES = {
    "h264": "libx264",
    "avc": "libx264",
    "h265": "libx265",
    "hevc": "libx265",
    "vp9": "libvpx-vp9",
    "av1": "libsvtav1",
}
#: Encoders that take ``-crf`` (constant quality).
_CRF_CODECS = ("libx264", "libx265", "libvpx-vp9", "libaom-av1", "libsvtav1")
#: Encoders whose 4:2:0 mode needs even sides.
_EVEN_420_CODECS = ("libx264", "libx265")


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


def check_encoder(options: EncodeOptions) -> str:
    """The ffmpeg encoder for ``options``; raises :class:`VideoWriteError` if there is none."""
    encoder = options.encoder
    if encoder not in video_encoders():
        raise VideoWriteError(
            f"unknown video encoder {options.codec!r}; use libx264 (h264), libx265 (hevc), libvpx-vp9 (vp9) or "
            "libsvtav1 (av1)"
        )
    return encoder


def codec_tag(encoder: str, target: Path) -> str | None:
    """The four-character code to give the video stream in ``target``, None for the muxer's default:
    ``hvc1`` for HEVC in MP4/MOV (Apple players refuse ``hev1``)."""
    if target.suffix.lower() in _MOV_FAMILY and video_encoders().get(encoder) == "hevc":
        return "hvc1"
    return None


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
            "the exact size; some hardware players do not play 4:4:4 (VP9 and AV1 store odd sizes in 4:2:0)"
        )
    args: list[str] = []
    if encoder in _CRF_CODECS:
        args += ["-crf", str(options.crf)]
        if encoder == "libvpx-vp9":
            args += ["-b:v", "0"]
    # RGB -> YUV with the source's matrix and range, then the source's tags on the frames
    # (ffmpeg 9 takes tags from the frames, not from -color_* options).
    scale = []
    matrix = MATRICES.get(color.space or "")
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
    sar = source.sample_aspect if source is not None else None
    if sar is not None:
        # setsar turns the ratio into a float and back with terms up to `max` (default 100):
        # 148/195 would come back as 63/83. A bound of the ratio's own terms keeps it exact.
        filters.append(f"setsar=sar={sar.numerator}/{sar.denominator}:max={max(sar.numerator, sar.denominator)}")
    if filters:
        args += ["-vf", ",".join(filters)]
    args += ["-fps_mode", "passthrough"]
    return encoder, pix_fmt, args, notes


class FrameSink:
    """Receives (H, W, 3) uint8 RGB frames for :func:`open_video_writer`.

    ``result`` describes the finished video once the writer's block has ended.
    """

    def __init__(
        self,
        path: Path,
        width: int,
        height: int,
        fps: Fraction,
        options: EncodeOptions,
        source: VideoInfo | None,
        result: WrittenVideo,
    ) -> None:
        import imageio_ffmpeg

        self.encoder, pix_fmt, args, notes = encoder_arguments(width, height, options, source)
        self.result = result
        self.result.notes += notes
        self.size = (height, width)
        self.frames = 0
        self._writer = imageio_ffmpeg.write_frames(
            str(path),
            (width, height),
            pix_fmt_in="rgb24",
            pix_fmt_out=pix_fmt,
            fps=fps,
            quality=None,
            codec=self.encoder,
            macro_block_size=1,
            ffmpeg_log_level="error",
            output_params=args,
        )
        self._writer.send(None)  # starts ffmpeg

    def write(self, frame: np.ndarray) -> None:
        if frame.shape != (*self.size, 3) or frame.dtype != np.uint8:
            raise ValueError(
                f"expected a {self.size[1]}×{self.size[0]} uint8 RGB frame, got {frame.shape} {frame.dtype}"
            )
        try:
            self._writer.send(np.ascontiguousarray(frame))
        except OSError as e:
            raise VideoWriteError(f"ffmpeg stopped encoding ({first_line(e)})") from None
        self.frames += 1

    def close(self) -> None:
        """Ends the stream and waits for ffmpeg to finish the file (again: nothing)."""
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
    video_tag: str | None = None,
) -> subprocess.CompletedProcess:
    """Puts the encoded video stream, the source's audio streams (copied, or re-encoded to
    AAC, Opus for WebM, when ``reencode_audio``), its global metadata and its display
    rotation into ``target``. ``audio_start``/``audio_duration`` cut the audio (at packet
    boundaries, about 20 ms) to match a trimmed video. ``video_tag``: a four-character
    code for the video stream (see :func:`codec_tag`)."""
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
    if video_tag is not None:
        cmd += ["-tag:v", video_tag]
    if audio_start:
        cmd += ["-copypriorss", "0"]  # drop audio packets before the cut instead of keeping them at t < 0
    if target.suffix.lower() in _MOV_FAMILY:
        cmd += ["-movflags", "+faststart"]
    cmd.append(str(target))
    return subprocess.run(cmd, capture_output=True, check=False)


def _check_written(path: Path, frames: int, source: VideoInfo | None, result: WrittenVideo, suffix: str) -> None:
    """Reads the finished file back: its frame count must be ``frames``; a pixel aspect
    ratio the container could not store exactly gets a note."""
    try:
        written = probe_video(path)
    except VideoError as e:
        raise VideoWriteError(f"the written video does not read back ({e})") from None
    if written.frame_count != frames:
        raise VideoWriteError(f"the encoder wrote {written.frame_count} frames instead of {frames}")
    wanted = source.sample_aspect if source is not None else None
    if wanted is not None and (written.sample_aspect or Fraction(1)) != wanted:
        got = written.sample_aspect or Fraction(1)
        result.notes.append(
            f"{suffix} cannot store the pixel aspect ratio {wanted.numerator}:{wanted.denominator} exactly (it stores "
            f"the display width in whole pixels): written as {got.numerator}:{got.denominator}; .mkv and .mp4 keep it"
        )


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
    finished file is read back and its frame count checked before it is renamed.
    Raises :class:`VideoWriteError` when nothing can be written as asked.
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
            duration = float(sink.frames / fps) if trim_audio else None
            tag = codec_tag(sink.encoder, target)

            def mux(reencode_audio: bool = False) -> subprocess.CompletedProcess:
                return remux(
                    encoded,
                    final_tmp,
                    source,
                    audio_start=audio_start,
                    audio_duration=duration,
                    reencode_audio=reencode_audio,
                    video_tag=tag,
                )

            proc = mux()
            if proc.returncode != 0 and source is not None and source.has_audio:
                proc = mux(reencode_audio=True)
                if proc.returncode == 0:
                    result.audio = "re-encoded"
                    result.notes.append(
                        f"audio ({', '.join(source.audio_codecs)}) cannot be stored in {target.suffix} as is: "
                        f"re-encoded ({_fallback_audio_codec(target)})"
                    )
            elif source is not None and source.has_audio:
                result.audio = "copied"
            if proc.returncode != 0:
                raise VideoWriteError(f"muxing failed ({ffmpeg_reason(proc.stderr.decode('utf-8', 'replace'))})")
            _check_written(final_tmp, sink.frames, source, result, target.suffix.lower())
            result.frames = sink.frames
        finally:
            if sink is not None:
                sink.close()
            encoded.unlink(missing_ok=True)
