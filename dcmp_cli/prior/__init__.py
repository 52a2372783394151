"""Weight-free dehazers built on image priors (no network, no weights).

* :class:`DarkChannelPrior` — He, Sun, Tang's dark channel prior (``--method dcp``),
  kept as the classic reference.

Every prior follows :class:`ImagePrior`: float32 RGB (H, W, 3) in [0, 1] in, a
:class:`PriorResult` (restored image, transmission, image-global quantities) out.
"""

from dcmp_cli.prior.base import ImagePrior, PriorResult, depth_from_transmission
from dcmp_cli.prior.dcp import DarkChannelPrior, recover
from dcmp_cli.prior.guided_filter import guided_filter

#: Every prior by its method name (``dcmp_cli.choices.PRIOR_METHODS`` lists the same names).
PRIORS: dict[str, type] = {DarkChannelPrior.name: DarkChannelPrior}


def create_prior(name: str) -> ImagePrior:
    """The prior called ``name`` with its default parameters."""
    try:
        return PRIORS[name]()
    except KeyError:
        raise ValueError(f"unknown weight-free method {name!r}; choose one of {', '.join(PRIORS)}") from None


__all__ = [
    "PRIORS",
    "DarkChannelPrior",
    "ImagePrior",
    "PriorResult",
    "create_prior",
    "depth_from_transmission",
    "guided_filter",
    "recover",
]
