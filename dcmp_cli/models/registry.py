"""Named model presets and the one function that builds them.

A preset names a pair of configurations: the dehazing network and the depth network
that trains beside it (DCMPNet's mutual promotion). ``create_model(name, kind)`` builds
either one.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn

from dcmp_cli.models.dehaze_net import DehazeNet
from dcmp_cli.models.depth_net import DepthNet

Kind = Literal["dehaze", "depth"]
KINDS: tuple[Kind, ...] = ("dehaze", "depth")
DEFAULT_PRESET = "dcmpnet"

_BUILDERS: dict[str, type[nn.Module]] = {"dehaze": DehazeNet, "depth": DepthNet}


@dataclass(frozen=True)
class Preset:
    """Constructor arguments of both networks under one name."""

    name: str
    description: str
    dehaze: dict[str, Any] = field(default_factory=dict)
    depth: dict[str, Any] = field(default_factory=dict)

    def kwargs(self, kind: Kind) -> dict[str, Any]:
        return dict(self.dehaze if kind == "dehaze" else self.depth)


_PRESETS: dict[str, Preset] = {}


def register_preset(preset: Preset) -> Preset:
    """Adds a preset; names are unique."""
    if preset.name in _PRESETS:
        raise ValueError(f"preset {preset.name!r} is already registered")
    _PRESETS[preset.name] = preset
    return preset


def list_presets() -> list[str]:
    return sorted(_PRESETS)


def get_preset(name: str) -> Preset:
    try:
        return _PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(list_presets())}") from None


def check_kind(kind: str) -> Kind:
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}; choose 'dehaze' or 'depth'")
    return kind


def build_model(kind: Kind, kwargs: dict[str, Any]) -> nn.Module:
    """Builds a network of ``kind`` from explicit constructor arguments."""
    return _BUILDERS[check_kind(kind)](**kwargs)


def create_model(name: str = DEFAULT_PRESET, kind: Kind = "dehaze", **overrides: Any) -> nn.Module:
    """Builds the ``kind`` network of preset ``name``; ``overrides`` replace preset arguments."""
    return build_model(kind, {**get_preset(name).kwargs(kind), **overrides})


def match_preset(kind: Kind, kwargs: dict[str, Any]) -> str | None:
    """Name of the preset whose ``kind`` network has exactly these arguments, if any."""
    wanted = full_kwargs(kind, kwargs)
    for name in list_presets():
        if full_kwargs(kind, _PRESETS[name].kwargs(kind)) == wanted:
            return name
    return None


def full_kwargs(kind: Kind, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` completed with the constructor defaults, JSON-friendly (lists, not tuples)."""
    params = inspect.signature(_BUILDERS[check_kind(kind)].__init__).parameters
    merged = {n: p.default for n, p in params.items() if n != "self"}
    unknown = set(kwargs) - set(merged)
    if unknown:
        raise ValueError(f"unknown {kind} network arguments: {', '.join(sorted(unknown))}")
    merged.update(kwargs)
    return _normalise(merged)


def _normalise(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {
        k: [float(x) if isinstance(x, float) else x for x in v] if isinstance(v, (tuple, list)) else v
        for k, v in kwargs.items()
    }


register_preset(
    Preset(
        name="dcmpnet",
        description="The published DCMPNet (the authors' indoor configuration, DIACMPN-*-Indoor.pth).",
        dehaze={},
        depth={},
    )
)

register_preset(
    Preset(
        name="dcmpnet-tiny",
        description="Same structure, narrow and one block per stage: for tests and CPU training.",
        dehaze=dict(
            widths=(16, 32, 48),
            depths=(1, 1, 1, 1, 1),
            attention_blocks=(1, 1, 1, 0, 0),
            num_heads=(1, 2, 3, 1, 1),
            mlp_ratios=(2.0, 2.0, 2.0, 2.0, 2.0),
            position_mlp_hidden=32,
            fusion_hidden=32,
            guide_widths=(8, 16, 32, 64),
            depth_widths=(8, 16, 24, 32),
            depth_growth=8,
            depth_dense_layers=3,
            refine_growth=8,
            refine_layers=3,
        ),
        depth=dict(widths=(8, 16, 24, 32), growth=8, dense_layers=3),
    )
)
