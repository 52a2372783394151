"""Memory sizes as people write them (importing this imports no torch)."""

from __future__ import annotations

import re

MIB = 1024**2
GIB = 1024**3


def parse_size(text: str) -> int:
    """'2G', '1536M', '800MB', '1.5GiB', '1000000' -> bytes."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(i?B)?\s*", text, re.IGNORECASE)
    if not m:
        raise ValueError(f"cannot read size {text!r}; use e.g. 2G, 1536M or 800MB")
    scale = {"": 1, "K": 1024, "M": MIB, "G": GIB, "T": 1024 * GIB}[m.group(2).upper()]
    return int(float(m.group(1)) * scale)
