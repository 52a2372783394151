"""Weight-free dehazers built on image priors (no network, no weights).

* :class:`DarkChannelPrior` — He, Sun, Tang's dark channel prior (``--method dcp``),
  kept as the classic reference.
* :class:`LayeredDehazer` — the weight-free default (``--method layered``): the dark
  channel prior with a robust airlight, a sky/fog tolerance and a base/detail recovery
  that does not amplify noise or JPEG blocks (see :mod:`dcmp_cli.prior.layered`).

Every prior follows :class:`ImagePrior`: float32 RGB (H, W, 3) in [0, 1] in, a
:class:`PriorResult` (restored image, transmission, image-global quantities) out.
"""

from dcmp_cli.prior.airlight import RobustAirlight
from dcmp_cli.prior.base import ImagePrior, PriorResult, depth_from_transmission
from dcmp_cli.prior.dcp import DarkChannelPrior, recover
from dcmp_cli.prior.guided_filter import guided_filter
from dcmp_cli.prior.layered import LayeredDehazer

#: Every prior by its method name (``dcmp_cli.choices.PRIOR_METHODS`` lists the same names).
PRIORS: dict[str, type] = {DarkChannelPrior.name: DarkChannelPrior, LayeredDehazer.name: LayeredDehazer}


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
    "LayeredDehazer",
    "PriorResult",
    "RobustAirlight",
    "create_prior",
    "depth_from_transmission",
    "guided_filter",
    "recover",
]
