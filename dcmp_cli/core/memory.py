"""Memory budgets and measurements for choosing tile sizes.

The activation memory of a forward pass grows with the number of pixels. dcmp measures
it once per predictor with a small probe pass (peak CUDA allocation on GPUs; the
process's peak resident set, reset through ``/proc/self/clear_refs``, on Linux CPUs) and
sizes tiles so that a pass stays within a budget: free GPU memory, or on the CPU a
share of the available RAM (at most :data:`DEFAULT_CPU_BUDGET`); ``--max-memory``
overrides either.
"""

from __future__ import annotations

import ctypes
import re
from collections.abc import Callable
from pathlib import Path

import torch

from dcmp_cli.sizes import GIB

#: Activation budget on the CPU when none is given: keeps the full model's peak
#: resident memory well under 4 GB whatever the image size.
DEFAULT_CPU_BUDGET = 2 * GIB
#: Used where no measurement is possible (e.g. MPS, non-Linux CPUs): conservative.
FALLBACK_BYTES_PER_PIXEL = 6 * 1024
_PROBE_SIDE = 160


def _proc_bytes(path: str, field: str) -> int | None:
    """A ``FIELD: N kB`` entry of a Linux /proc file, in bytes, or None where there is none."""
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    m = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(m.group(1)) * 1024 if m else None


def available_ram() -> int | None:
    """Bytes of RAM available to new allocations (Linux MemAvailable), or None."""
    return _proc_bytes("/proc/meminfo", "MemAvailable")


def activation_budget(device: torch.device, max_memory: int | None = None) -> int:
    """Bytes one forward pass may use on ``device``."""
    if max_memory is not None:
        return max_memory
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.8)
    ram = available_ram()
    return min(DEFAULT_CPU_BUDGET, int(ram * 0.5)) if ram else DEFAULT_CPU_BUDGET


def _peak_rss() -> int | None:
    return _proc_bytes("/proc/self/status", "VmHWM")


def _trim_heap() -> None:
    """Returns free heap pages to the OS (glibc), so that the next peak counts real allocations."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak_rss() -> bool:
    _trim_heap()
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """Measures the peak memory of a block: CUDA allocations, or the process's resident set on Linux.

    ``with PeakMemory(device) as peak: ...`` then ``peak.bytes`` (None where unmeasurable):
    the peak above what was in use when the block began.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.bytes: int | None = None
        self._before: int | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._before = torch.cuda.memory_allocated(self.device)
        elif self.device.type == "cpu" and _reset_peak_rss():
            self._before = _peak_rss()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._before is None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.bytes = torch.cuda.max_memory_allocated(self.device) - self._before
        else:
            after = _peak_rss()
            self.bytes = None if after is None else max(0, after - self._before)


def measure_bytes_per_pixel(
    run: Callable[[torch.Tensor], object], device: torch.device, side: int = _PROBE_SIDE
) -> float:
    """Peak extra memory per input pixel of ``run`` on a (1, 3, side, side) probe.

    The probe's fixed overhead is counted as if it grew with the pixels, so the figure
    errs on the safe side for larger inputs. On Linux CPUs the heap is trimmed first, so
    memory freed by earlier work cannot hide the probe's allocations. A probe that runs
    out of memory gives :data:`FALLBACK_BYTES_PER_PIXEL` (memory is tight: err large).
    """
    probe = torch.zeros(1, 3, side, side, device=device)
    try:
        with PeakMemory(device) as peak:
            run(probe)
    except Exception as error:  # noqa: BLE001 - only out-of-memory errors are absorbed
        if not is_out_of_memory(error):
            raise
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return float(FALLBACK_BYTES_PER_PIXEL)
    return peak.bytes / (side * side) if peak.bytes else float(FALLBACK_BYTES_PER_PIXEL)


def is_out_of_memory(error: BaseException) -> bool:
    """True for CUDA/MPS/CPU allocation failures."""
    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(error, oom_type):
        return True
    text = str(error)
    return isinstance(error, (RuntimeError, MemoryError)) and (
        isinstance(error, MemoryError)
        or "out of memory" in text
        or "can't allocate memory" in text
        or "not enough memory" in text
    )
