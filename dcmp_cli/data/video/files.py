"""Which paths are videos."""

from __future__ import annotations

from pathlib import Path

#: Extensions taken for videos when scanning a folder (lower case).
VIDEO_EXTENSIONS = (
    ".mp4",
    ".m4v",
    ".mov",
    ".mkv",
    ".webm",
    ".avi",
    ".mpg",
    ".mpeg",
    ".ts",
    ".mts",
    ".m2ts",
    ".wmv",
    ".flv",
    ".3gp",
)


def is_video_path(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def find_videos(directory: Path, recursive: bool = False) -> tuple[list[Path], list[Path]]:
    """(videos, other files) in ``directory``, sorted; hidden files are skipped."""
    entries = directory.rglob("*") if recursive else directory.iterdir()
    files = sorted(
        p for p in entries if p.is_file() and not any(part.startswith(".") for part in p.relative_to(directory).parts)
    )
    return [p for p in files if is_video_path(p)], [p for p in files if not is_video_path(p)]
