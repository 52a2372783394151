"""Old import path of :mod:`dcmp_cli.data.video` (one module per job); import from there instead.

Holds exactly the names its remaining importers use (``dcmp_cli.core.video``,
``dcmp_cli.cli.video``, ``benchmarks/flicker.py``, ``tests/test_video_core.py``,
``tests/test_video_cli.py``); delete it once they import from the new modules.
"""

from __future__ import annotations

from dcmp_cli.data.video.decode import FrameRange, read_frames
from dcmp_cli.data.video.encode import EncodeOptions, check_encoder, open_video_writer
from dcmp_cli.data.video.errors import VideoError, VideoWriteError
from dcmp_cli.data.video.ffmpeg import ffmpeg_exe
from dcmp_cli.data.video.files import VIDEO_EXTENSIONS, find_videos
from dcmp_cli.data.video.probe import probe_video
from dcmp_cli.data.video.testclips import hazy_clip

__all__ = [
    "VIDEO_EXTENSIONS",
    "EncodeOptions",
    "FrameRange",
    "VideoError",
    "VideoWriteError",
    "check_encoder",
    "ffmpeg_exe",
    "find_videos",
    "hazy_clip",
    "open_video_writer",
    "probe_video",
    "read_frames",
]
