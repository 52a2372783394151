"""Choice of device and numeric precision."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Literal

import torch

Precision = Literal["fp32", "fp16", "bf16"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "fp16", "bf16")
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


class DeviceError(ValueError):
    """The requested device or precision cannot be used here.

    ``option``: "device" or "precision"; ``value``: what was asked for; ``problem``: why it
    cannot be used and what to use instead. The message is ``"{option} {value}: {problem}"``.
    """

    def __init__(self, option: str, value: str, problem: str) -> None:
        super().__init__(f"{option} {value}: {problem}")
        self.option, self.value, self.problem = option, value, problem


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def resolve_device(spec: str = "auto") -> torch.device:
    """Turns ``auto|cpu|cuda|cuda:N|mps`` into a usable :class:`torch.device`.

    ``auto`` picks CUDA, then Apple MPS, then the CPU.
    """
    spec = spec.strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps":
        if not _mps_available():
            raise DeviceError("device", spec, "Apple MPS is not available on this machine; use cpu or auto")
        return torch.device("mps")
    m = re.fullmatch(r"cuda(?::(\d+))?", spec)
    if m:
        if not torch.cuda.is_available():
            build = "this PyTorch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise DeviceError("device", spec, f"{build}; use cpu or auto")
        index = int(m.group(1) or 0)
        if index >= torch.cuda.device_count():
            count = torch.cuda.device_count()
            raise DeviceError("device", spec, f"only {count} CUDA device(s) visible (cuda:0 … cuda:{count - 1})")
        return torch.device("cuda", index)
    raise DeviceError("device", spec, "unknown device; use auto, cpu, cuda, cuda:N or mps")


def check_precision(precision: str, device: torch.device) -> Precision:
    """Validates a precision for a device: fp16 needs a GPU; bf16 runs on CUDA, MPS and CPU."""
    if precision not in PRECISIONS:
        raise DeviceError("precision", precision, "unknown precision; use fp32, fp16 or bf16")
    if precision == "fp16" and device.type == "cpu":
        raise DeviceError("precision", precision, "fp16 is for GPUs; on the CPU use fp32 or bf16")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise DeviceError("precision", precision, "this GPU does not support bf16; use fp16 or fp32")
    return precision


def autocast(device: torch.device, precision: Precision) -> AbstractContextManager:
    """Mixed-precision context for ``precision`` (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])


@contextlib.contextmanager
def cudnn_autotune(device: torch.device) -> Iterator[None]:
    """Within the block, cuDNN picks the fastest convolution algorithms for the shapes it sees
    (on CUDA devices); the process-wide setting is restored afterwards."""
    if device.type != "cuda":
        yield
        return
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous
