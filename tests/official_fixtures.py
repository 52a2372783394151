"""Builds official-format state dicts by the deterministic fill rule of ../shared/reference."""

from __future__ import annotations

import numpy as np
import torch

from dcmp_cli.models.transformer import log_relative_positions

from helpers import shared_path

SEEDS = {"dehaze": 20240617, "depth": 20240618}
KEY_FILES = {"dehaze": "dcmpnet_keys.tsv", "depth": "depthnet_keys.tsv"}


def read_keys(kind: str) -> list[tuple[str, tuple[int, ...], str]]:
    rows = []
    lines = shared_path("reference", KEY_FILES[kind]).read_text().splitlines()[1:]
    for line in lines:
        key, shape, dtype = line.split("\t")
        dims = () if shape == "scalar" else tuple(int(s) for s in shape.split("x"))
        rows.append((key, dims, dtype))
    return rows


def official_state_dict(kind: str) -> dict[str, torch.Tensor]:
    """The authors' state dict filled by the reference fill rule (reference/README.md)."""
    rng = np.random.default_rng(SEEDS[kind])
    state = {}
    for key, shape, _dtype in read_keys(kind):
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(0, dtype=torch.int64)
            continue
        if key.endswith("relative_positions"):
            # The network's own value: a fixed function of the window size.
            state[key] = log_relative_positions(round(shape[0] ** 0.5))
            continue
        z = rng.standard_normal(shape)
        if key.endswith("running_var"):
            value = np.abs(z) * 0.5 + 0.5
        elif key.endswith("running_mean"):
            value = z * 0.1
        elif len(shape) >= 2:
            value = z * 0.5 / np.sqrt(np.prod(shape[1:]))
        else:
            value = z * 0.1
        state[key] = torch.from_numpy(value.astype(np.float32))
    return state
