"""Streaming decoded frames out of a video, and telling whether the whole range was there.

Frames come from the ffmpeg binary through a pipe (``imageio_ffmpeg.read_frames``) one at a
time: (H, W, 3) uint8 RGB in the *stored* orientation (``-noautorotate``), every frame exactly once (``-fps_mode
passthrough``), so memory stays bounded and the frame count is kept. Colours are
converted with the matrix and range the source is tagged with (BT.601 when untagged,
as ffmpeg does).

A file cut short reads without any error from ffmpeg: it simply ends. When the frames
run out, :attr:`FrameReader.result` compares the frames read with what a complete file
gives for the selected range (:meth:`FrameRange.expected_frames`) and says whether the
read was short, so the caller can keep what was read and report the rest.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from dcmp_cli.data.video.errors import IncompleteVideoError, VideoError
from dcmp_cli.data.video.ffmpeg import first_line
from dcmp_cli.data.video.probe import SHORT_READ_SLACK, VideoInfo


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
        """Frames reading this range gives from a complete file: exact for the whole video
        when the container declares its length (or when counting its packets), otherwise
        an estimate from the duration and rate (±1 frame)."""
        whole = info.declared_frames if info.declared_frames is not None else info.frame_count
        if self.start is None and self.end is None and self.fps is None:
            count = whole
        else:
            length = info.declared_duration or info.duration or float(info.frame_count / info.fps)
            begin = self.start or 0.0
            end = length if self.end is None else min(self.end, length)
            count = max(0, round((end - begin) * float(self.fps or info.fps)))
            if self.fps is None:
                count = min(count, whole)
        return min(count, self.max_frames) if self.max_frames is not None else count


@dataclass(frozen=True)
class ReadResult:
    """How a read ended. ``frames``: frames read; ``expected_frames``: what a complete file
    gives for the range (:meth:`FrameRange.expected_frames`); ``short_read``: the file
    ended early (truncated) or decoding broke off, so frames of the range are missing;
    ``note``: one line saying so for the user (None when nothing is missing)."""

    frames: int
    expected_frames: int
    short_read: bool = False
    note: str | None = None

    def raise_if_short(self) -> None:
        """Raises :class:`~dcmp_cli.data.video.errors.IncompleteVideoError` for a short read."""
        if self.short_read:
            raise IncompleteVideoError(self.note or "frames are missing", self.frames, self.expected_frames)


class FrameReader(Iterator[np.ndarray]):
    """Decoded frames of ``info.path`` one by one: (H, W, 3) uint8 RGB, stored orientation.

    Memory holds one frame (plus ffmpeg's pipe buffer) whatever the video's length.
    ffmpeg starts at the first ``next()``. :attr:`result` is None until the frames run
    out, then a :class:`ReadResult`. Raises :class:`VideoError` when not even the first
    frame decodes; when decoding breaks off later, the frames stop and the result is a
    short read.
    """

    def __init__(self, info: VideoInfo, frames: FrameRange = FrameRange()) -> None:
        self.info = info
        self.range = frames
        self.count = 0
        self.result: ReadResult | None = None
        self._frames = self._decode()

    def __iter__(self) -> FrameReader:
        return self

    def __next__(self) -> np.ndarray:
        return next(self._frames)

    def close(self) -> None:
        """Stops ffmpeg (also done when the frames run out)."""
        self._frames.close()

    def _finish(self, error: str | None) -> None:
        expected = self.range.expected_frames(self.info)
        if error is not None:
            note = f"decoding stopped after {self.count} of {expected} frames ({error}): the file is damaged"
            self.result = ReadResult(self.count, expected, True, note)
        elif self.info.truncated and self.count < expected - SHORT_READ_SLACK:
            note = (
                f"only {self.count} of {expected} frames could be read: the file is truncated (it declares "
                f"{self.info.declared_frames} frames but holds {self.info.frame_count})"
            )
            self.result = ReadResult(self.count, expected, True, note)
        else:
            self.result = ReadResult(self.count, expected)

    def _decode(self) -> Generator[np.ndarray, None, None]:
        import imageio_ffmpeg

        input_params = ["-noautorotate"]
        if self.range.start is not None:
            input_params += ["-ss", f"{self.range.start:.6f}"]
        if self.range.end is not None:
            input_params += ["-t", f"{self.range.end - (self.range.start or 0.0):.6f}"]
        if self.range.fps is not None:
            output_params = ["-vf", f"fps={self.range.fps}"]
        else:
            output_params = ["-fps_mode", "passthrough"]
        if self.range.max_frames is not None:
            output_params += ["-frames:v", str(self.range.max_frames)]
        frames = imageio_ffmpeg.read_frames(
            str(self.info.path), pix_fmt="rgb24", input_params=input_params, output_params=output_params
        )
        try:
            try:
                width, height = next(frames)["size"]
            except (OSError, RuntimeError, StopIteration, KeyError) as e:
                raise VideoError(f"cannot decode the video ({first_line(e)})") from None
            while True:
                try:
                    raw = next(frames)
                except StopIteration:
                    self._finish(None)
                    return
                except (OSError, RuntimeError) as e:
                    if self.count == 0:
                        raise VideoError(f"cannot decode the video ({first_line(e)})") from None
                    self._finish(first_line(e))
                    return
                self.count += 1
                yield np.frombuffer(raw, np.uint8).reshape(height, width, 3).copy()
        finally:
            frames.close()


def read_frames(info: VideoInfo, frames: FrameRange = FrameRange()) -> FrameReader:
    """The frames of ``frames`` in ``info.path``, streamed (see :class:`FrameReader`)."""
    return FrameReader(info, frames)
