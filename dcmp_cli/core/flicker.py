"""Flicker: how much a video's output changes from frame to frame, relative to its input.

The mean absolute difference between consecutive output frames divided by the same
for the input frames (:class:`FlickerMeter`): 1 means the output changes from frame to
frame as much as the input does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _as_unit_float(frame: np.ndarray) -> np.ndarray:
    if frame.dtype == np.uint8:
        return frame.astype(np.float32) / 255.0
    if frame.dtype == np.uint16:
        return frame.astype(np.float32) / 65535.0
    return frame.astype(np.float32, copy=False)


class FlickerMeter:
    """Mean absolute difference between consecutive frames, of inputs and of outputs.

    Frames are (H, W, C) uint8, uint16 or float in [0, 1]; values are in [0, 1] units.
    Pairs whose sizes differ are left out. ``ratio`` = output / input (flicker figure).
    """

    def __init__(self) -> None:
        self._previous: tuple[np.ndarray, np.ndarray] | None = None
        self.input_sum = 0.0
        self.output_sum = 0.0
        self.pairs = 0

    def update(self, input_frame: np.ndarray, output_frame: np.ndarray) -> None:
        current = (_as_unit_float(input_frame), _as_unit_float(output_frame))
        previous = self._previous
        if previous is not None and previous[0].shape == current[0].shape:
            self.input_sum += float(np.abs(current[0] - previous[0]).mean())
            self.output_sum += float(np.abs(current[1] - previous[1]).mean())
            self.pairs += 1
        self._previous = current

    @property
    def input(self) -> float | None:
        return self.input_sum / self.pairs if self.pairs else None

    @property
    def output(self) -> float | None:
        return self.output_sum / self.pairs if self.pairs else None

    @property
    def ratio(self) -> float | None:
        return self.output_sum / self.input_sum if self.pairs and self.input_sum > 0 else None


def flicker(inputs: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> float:
    """Flicker of ``outputs`` relative to ``inputs``: mean over t of mean|out_t − out_{t−1}|
    divided by the same for the inputs."""
    if len(inputs) != len(outputs) or len(inputs) < 2:
        raise ValueError("flicker needs two equally long sequences of at least two frames")
    meter = FlickerMeter()
    for a, b in zip(inputs, outputs):
        meter.update(a, b)
    if meter.ratio is None:
        raise ValueError("the input frames do not change; flicker is undefined")
    return meter.ratio
