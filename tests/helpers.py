"""Helpers shared by the tests: paths to ../shared (skipped cleanly when absent), synthetic haze."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test when it is not there."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs ../shared/{'/'.join(parts)} (not present)")
    return path


def synthetic_hazy(height: int = 48, width: int = 64, seed: int = 0, beta: float = 1.2, airlight: float = 0.9):
    """(clear, hazy, depth) float32 arrays: a textured scene hazed by I = J·t + A·(1 − t)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    clear = (
        np.stack(
            [
                0.5 + 0.4 * np.sin(xx / 5.0 + c) * np.cos(yy / 7.0 - c) + 0.05 * rng.standard_normal((height, width))
                for c in range(3)
            ],
            axis=2,
        )
        .clip(0, 1)
        .astype(np.float32)
    )
    depth = (1.0 - yy / height).astype(np.float32)  # top far, bottom near
    t = np.exp(-beta * depth)[:, :, None]
    hazy = (clear * t + airlight * (1 - t)).astype(np.float32)
    return clear, hazy, depth


def write_png(path: Path, rgb: np.ndarray) -> Path:
    from dcmp_cli.data.image_io import write_image

    return write_image(path, rgb)


def interrupting_dehazer(at: int):
    """The dark channel prior as a dehazer that raises KeyboardInterrupt (as Ctrl-C would) on its ``at``-th call."""
    from dcmp_cli.core.prior_models import PriorDehazer
    from dcmp_cli.prior import DarkChannelPrior

    class Interrupting(PriorDehazer):
        calls = 0

        def run(self, images, *, progress=None, temporal=None):
            self.calls += 1
            if self.calls == at:
                raise KeyboardInterrupt
            return super().run(images, progress=progress, temporal=temporal)

    return Interrupting(DarkChannelPrior())


def write_pairs(root: Path, count: int = 4) -> Path:
    """``count`` synthetic hazy/clear 48×64 PNG pairs in ``root``/hazy and ``root``/GT (the training layout)."""
    for i in range(count):
        clear, hazy, _ = synthetic_hazy(48, 64, seed=i, beta=1.0 + 0.2 * i)
        write_png(root / "hazy" / f"img{i}.png", hazy)
        write_png(root / "GT" / f"img{i}.png", clear)
    return root


def tiny_train_config(data: Path, device: str = "cpu", **values):
    """A resolved training config of the tiny preset on ``data``: 2×32² patches, no workers, logs every step."""
    from dcmp_cli.training.config import build_config

    base = dict(
        data=str(data),
        preset="dcmpnet-tiny",
        batch_size=2,
        patch_size=32,
        num_workers=0,
        device=device,
        log_every=1,
        seed=7,
        deterministic=True,
    )
    return build_config(None, {**base, **values})


def random_tiny(seed: int = 0):
    """A randomly initialised ``dcmpnet-tiny`` dehazing network in eval mode (seeded)."""
    import torch

    from dcmp_cli.models import create_model

    torch.manual_seed(seed)
    return create_model("dcmpnet-tiny").eval()


def model_image(model):
    """The dehazing network as a tile function: (N, 3, h, w) -> its restored image."""
    return lambda t: model(t).image


def guide_runs(model) -> list[int]:
    """A list that grows by one each time ``model``'s guide UNet runs (once per network pass it does not skip)."""
    runs: list[int] = []
    model.guide_unet.inc.register_forward_hook(lambda *_: runs.append(1))
    return runs
