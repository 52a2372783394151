"""What every weight-free (prior-based) dehazer provides.

A prior works on float32 RGB arrays (H, W, 3) in [0, 1]. Besides the restored image it
returns its transmission map (for depth: −ln t) and its *image-global quantities* as a
1-D float32 vector (for the dark channel prior, the airlight). Video smoothing averages
that vector over frames and hands it back through ``dehaze(image, globals=...)``.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import numpy as np


class PriorResult(NamedTuple):
    """``image``: restored (H, W, 3) in [0, 1]; ``transmission``: (H, W) in [0, 1];
    ``globals``: the image-global quantities used (1-D float32)."""

    image: np.ndarray
    transmission: np.ndarray
    globals: np.ndarray


class ImagePrior(Protocol):
    """A weight-free dehazer of (H, W, 3) float32 [0, 1] RGB arrays."""

    #: The method's name as ``--method`` spells it.
    name: str
    #: What it is, for messages ("dark channel prior").
    title: str

    def estimate_globals(self, image: np.ndarray) -> np.ndarray:
        """The image-global quantities of ``image`` (1-D float32), as :meth:`dehaze` would estimate them."""
        ...

    def dehaze(self, image: np.ndarray, globals: np.ndarray | None = None) -> PriorResult:
        """Restores ``image``; ``globals`` (e.g. averaged over video frames) replaces the estimate."""
        ...

    def depth_transmission(self, image: np.ndarray, globals: np.ndarray | None = None) -> np.ndarray:
        """The transmission (H, W) in [0, 1] as a depth cue: the scattering model's t, without the
        controls that change it for a better-looking restoration (e.g. a sky tolerance)."""
        ...


def depth_from_transmission(t: np.ndarray, t_floor: float = 1e-3) -> np.ndarray:
    """Relative depth −ln t (larger = farther), unnormalised, (H, W)."""
    return -np.log(np.clip(t, t_floor, 1.0)).astype(np.float32)
