"""Scratch space on disk for tensors that do not fit the memory budget.

Tiled inference on large images keeps features of every tile for a second pass
(:class:`dcmp_cli.core.tiled_inference.ReuseOutputs`). What the memory budget cannot hold
goes to a :class:`ScratchFile`: one unnamed temporary file (``O_TMPFILE`` where the
system has it), gone when closed or when the process ends, however it ends. Tensors come
back bit for bit.

:func:`scratch_capacity` is the default room: half the free space of the temporary
folder (``TMPDIR``), none where that folder lives in memory (tmpfs, ramfs): writing there
would spend the RAM the budget protects.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

#: File systems kept in memory: scratch files there would count against RAM.
MEMORY_FILE_SYSTEMS = frozenset({"tmpfs", "ramfs"})


def _file_system(path: Path, mounts: str = "/proc/self/mounts") -> str | None:
    """Type of the file system holding ``path`` (Linux), or None where that cannot be told."""
    try:
        lines = Path(mounts).read_text().splitlines()
    except OSError:
        return None
    target = str(path.resolve())
    best, kind = "", None
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


def scratch_capacity(directory: str | os.PathLike[str] | None = None) -> int:
    """Default scratch room in bytes: half the free space of ``directory`` (None: the temporary folder).

    0 where the folder is kept in memory (tmpfs, ramfs) or cannot be inspected.
    """
    folder = Path(directory if directory is not None else tempfile.gettempdir())
    if _file_system(folder) in MEMORY_FILE_SYSTEMS:
        return 0
    try:
        return shutil.disk_usage(folder).free // 2
    except OSError:
        return 0


def _is_channels_last(tensor: torch.Tensor) -> bool:
    return tensor.dim() == 4 and not tensor.is_contiguous() and tensor.is_contiguous(memory_format=torch.channels_last)


@dataclass(frozen=True)
class Parked:
    """Where a tensor lies in a :class:`ScratchFile`; ``channels_last``: its memory layout, kept."""

    offset: int
    shape: tuple[int, ...]
    dtype: torch.dtype
    channels_last: bool = False

    @property
    def nbytes(self) -> int:
        return torch.Size(self.shape).numel() * torch.empty((), dtype=self.dtype).element_size()


class ScratchFile:
    """Tensors in one temporary file in ``directory`` (None: ``TMPDIR``), ``max_bytes`` of room.

    Callers ask :meth:`fits` before :meth:`put`, which does not check. The file is created
    on the first :meth:`put`; :meth:`close` (or the ``with`` block) deletes it. Errors
    writing (a full disk) propagate.
    """

    def __init__(self, max_bytes: int, directory: str | os.PathLike[str] | None = None) -> None:
        self.max_bytes = max_bytes
        self.directory = directory
        self.bytes = 0
        self._file: io.BufferedRandom | None = None

    def fits(self, nbytes: float) -> bool:
        return self.bytes + nbytes <= self.max_bytes

    def put(self, tensor: torch.Tensor) -> Parked:
        """Writes ``tensor`` (any device, any dtype) and says where it lies.

        A channels-last tensor comes back channels-last (the layout the fast path computes in).
        """
        if self._file is None:
            self._file = tempfile.TemporaryFile(dir=self.directory)
        channels_last = _is_channels_last(tensor)
        data = tensor.detach().to("cpu")
        parked = Parked(self.bytes, tuple(data.shape), data.dtype, channels_last)
        data = data.permute(0, 2, 3, 1).contiguous() if channels_last else data.contiguous()
        if data.numel():
            self._file.seek(parked.offset)
            self._file.write(data.reshape(-1).view(torch.uint8).numpy().data)
        self.bytes += parked.nbytes
        return parked

    def get(self, parked: Parked, device: torch.device) -> torch.Tensor:
        """The tensor written at ``parked``, on ``device``."""
        raw = torch.empty(parked.nbytes, dtype=torch.uint8)
        if parked.nbytes:
            assert self._file is not None
            self._file.seek(parked.offset)
            if self._file.readinto(raw.numpy().data) != parked.nbytes:
                raise OSError("the scratch file came back short")
        values = raw.view(parked.dtype)
        if parked.channels_last:
            n, c, h, w = parked.shape
            return values.view(n, h, w, c).permute(0, 3, 1, 2).to(device)
        return values.view(parked.shape).to(device)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> ScratchFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
