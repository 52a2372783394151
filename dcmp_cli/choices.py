"""The closed choices of dcmp's options, as enums (importing this module imports no torch).

Library functions take these members or their plain string values; the command line
shows them as choices in ``--help`` and rejects other values as usage errors.
"""

from __future__ import annotations

from enum import Enum


class Method(str, Enum):
    """How images are dehazed: DCMPNet, a weight-free prior, or ``auto`` (DCMPNet when weights
    are found, else the weight-free default)."""

    AUTO = "auto"
    DCMP = "dcmp"
    LAYERED = "layered"
    DCP = "dcp"


class EvalMethod(str, Enum):
    """A row of an evaluation: the dehazing methods, or ``none`` (the hazy input itself)."""

    AUTO = "auto"
    DCMP = "dcmp"
    LAYERED = "layered"
    DCP = "dcp"
    NONE = "none"


class Precision(str, Enum):
    """Numeric precision of the networks: fp32, or fp16/bf16 mixed precision."""

    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"


class Protocol(str, Enum):
    """How PSNR/SSIM are computed (see :mod:`dcmp_cli.metrics`)."""

    DCMPNET = "dcmpnet"
    DEHAZEFORMER = "dehazeformer"


class Colormap(str, Enum):
    """Colour maps for depth previews."""

    TURBO = "turbo"
    VIRIDIS = "viridis"
    INFERNO = "inferno"
    MAGMA = "magma"
    PLASMA = "plasma"
    JET = "jet"
    GRAY = "gray"


class DepthKind(str, Enum):
    """What given depth maps hold: depth (larger = farther) or disparity (larger = nearer)."""

    DEPTH = "depth"
    DISPARITY = "disparity"


class WatchBackend(str, Enum):
    """How a watched folder notices new files."""

    AUTO = "auto"
    EVENTS = "events"
    POLL = "poll"


#: Methods that need no weights, by name (the weight-free priors).
PRIOR_METHODS: tuple[str, ...] = (Method.LAYERED.value, Method.DCP.value)
#: The weight-free method ``auto`` falls back to without weights.
DEFAULT_PRIOR: str = Method.LAYERED.value


def value_of(choice: str | Enum) -> str:
    """The plain string of an enum member or string."""
    return choice.value if isinstance(choice, Enum) else str(choice)
