"""Typed errors of video reading and writing. Messages say what is wrong and what to do."""

from __future__ import annotations


class VideoError(ValueError):
    """The file is not a readable video; the message says why."""


class IncompleteVideoError(VideoError):
    """Fewer frames could be read than the file declares (a truncated or damaged file).

    ``frames``: frames read; ``expected_frames``: frames a complete file would give for
    the selected range (None when not known). Raised by the caller after it has kept the
    frames that could be read (see :meth:`~dcmp_cli.data.video.decode.ReadResult.raise_if_short`).
    """

    def __init__(self, message: str, frames: int, expected_frames: int | None) -> None:
        super().__init__(message)
        self.frames = frames
        self.expected_frames = expected_frames


class VideoWriteError(ValueError):
    """The video cannot be written as asked; the message says why."""
