"""Networks of DCMPNet (nn.Modules only) and the preset registry."""

from dcmp_cli.models.dehaze_net import DehazeNet, DehazeOutput
from dcmp_cli.models.depth_net import DepthNet
from dcmp_cli.models.guide_unet import GuideUNet
from dcmp_cli.models.registry import (
    DEFAULT_PRESET,
    KINDS,
    Kind,
    Preset,
    build_model,
    create_model,
    full_kwargs,
    get_preset,
    list_presets,
    match_preset,
    register_preset,
)

__all__ = [
    "DEFAULT_PRESET",
    "KINDS",
    "DehazeNet",
    "DehazeOutput",
    "DepthNet",
    "GuideUNet",
    "Kind",
    "Preset",
    "build_model",
    "create_model",
    "full_kwargs",
    "get_preset",
    "list_presets",
    "match_preset",
    "register_preset",
]
