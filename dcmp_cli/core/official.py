"""Conversion of the authors' published checkpoints onto this project's module names.

The official code (github.com/zhoushen1/DCMPNet) names its modules ``legm1``, ``mfm2``,
``Unet1``, ``dpn``, ``conv_d1``… :func:`convert_official_state_dict` renames every key of
its state dicts (``DIACMPN-dehaze-*.pth`` → ``dehaze_net``, ``DIACMPN-depth-*.pth`` →
``depth_net``) onto :class:`~dcmp_cli.models.DehazeNet` / :class:`~dcmp_cli.models.DepthNet`
and :func:`infer_official_config` reads the constructor arguments off the tensor shapes.

Official parameters that never influence the output are dropped (listed in
:data:`UNUSED_OFFICIAL_MODULES`), as are the attention layers' ``relative_positions``
buffers, which are a fixed function of the window size and are rebuilt by the model.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from dcmp_cli.models.registry import Kind

#: Official dehazing-network modules whose parameters do not affect its output:
#: ``conv11``, ``conv22``, ``conv_fu``, ``ccc`` are never called; ``fuse_conv1`` is
#: computed but its result is never used.
UNUSED_OFFICIAL_MODULES: tuple[str, ...] = ("conv11", "conv22", "conv_fu", "ccc", "fuse_conv1")

_DOUBLE_CONV = {"0": "conv1", "1": "bn1", "3": "conv2", "4": "bn2"}
_BLOCK_PARTS = [
    (r"norm1\.meta1\.", "norm.rescale_from_std."),
    (r"norm1\.meta2\.", "norm.rebias_from_mean."),
    (r"norm1\.", "norm."),
    (r"attn\.attn\.meta\.", "mixer.attention.position_mlp."),
    (r"attn\.conv\.", "mixer.spatial_conv."),
    (r"attn\.V\.", "mixer.value."),
    (r"attn\.proj\.", "mixer.proj."),
    (r"attn\.QK\.", "mixer.query_key."),
    (r"mlp\.mlp\.0\.", "mlp.fc1."),
    (r"mlp\.mlp\.2\.", "mlp.fc2."),
]
_DEHAZE_SIMPLE = {
    "patch_embed.proj.": "embed.",
    "patch_merge1.proj.": "downsample.0.",
    "patch_merge2.proj.": "downsample.1.",
    "skip2.": "skip_proj.0.",
    "skip1.": "skip_proj.1.",
    "patch_split1.proj.0.": "upsample.0.0.",
    "patch_split2.proj.0.": "upsample.1.0.",
    "mfm1.mlp.0.": "skip_fusion.0.squeeze.",
    "mfm1.mlp.2.": "skip_fusion.0.excite.",
    "mfm2.mlp.0.": "skip_fusion.1.squeeze.",
    "mfm2.mlp.2.": "skip_fusion.1.excite.",
    "patch_unembed.proj.0.": "head.",
    "d3_conv.": "guide_proj_full.",
    "d2_conv.": "guide_proj_half.",
    "d1_conv.": "guide_proj_quarter.",
    "ca.": "cross_scale.scale_attention.",
    "fuse_conv2.0.": "cross_scale.to_half.conv.",
    "fuse_conv3.0.": "cross_scale.to_quarter.conv.",
    "conv_d1.": "decoder_merge.0.",
    "conv_d2.": "decoder_merge.1.",
    "Unet1.outc.": "guide_unet.head.",
}


class OfficialConversionError(ValueError):
    """A state dict that claims to be official but has keys this conversion cannot place."""


@dataclass
class ConversionResult:
    """Converted state dict (our names) and the official keys that were dropped."""

    state_dict: dict[str, torch.Tensor]
    dropped: list[str] = field(default_factory=list)


def is_official_state_dict(state_dict: Mapping[str, Any], kind: Kind) -> bool:
    """True when the keys are those of the authors' networks (not already converted)."""
    marker = "patch_embed.proj.weight" if kind == "dehaze" else "DRDB_layer1.Dcov1.weight"
    return marker in state_dict


def _dense_block_key(rest: str) -> str:
    m = re.fullmatch(r"Dcov(\d+)\.(.+)", rest)
    if m:
        return f"layers.{int(m.group(1)) - 1}.{m.group(2)}"
    if rest.startswith("conv."):
        return "fuse." + rest[len("conv.") :]
    raise OfficialConversionError(f"unexpected dense-block parameter {rest!r}")


def _count_levels(keys: list[str]) -> int:
    return len({m.group(1) for k in keys if (m := re.match(r"conv(\d+)\.", k))})


def _depth_key(key: str, levels: int) -> str:
    m = re.match(r"DRDB_layer(\d+)\.(.+)", key)
    if m:
        n, rest = int(m.group(1)), _dense_block_key(m.group(2))
        if n <= levels:
            return f"encoder.{n - 1}.dense.{rest}"
        if n == levels + 1:
            return f"bottleneck.{rest}"
        return f"decoder.{n - levels - 2}.dense.{rest}"
    m = re.match(r"conv(\d+)\.(.+)", key)
    if m:
        return f"encoder.{int(m.group(1)) - 1}.down.{m.group(2)}"
    m = re.match(r"up(\d+)\.(.+)", key)
    if m:
        return f"decoder.{int(m.group(1)) - 1}.up.{m.group(2)}"
    if key.startswith("final_conv."):
        return "head." + key[len("final_conv.") :]
    raise OfficialConversionError(f"unexpected depth-network key {key!r}")


def _unet_key(rest: str) -> str:
    m = re.fullmatch(r"inc\.conv\.(\d)\.(.+)", rest)
    if m:
        return f"inc.{_DOUBLE_CONV[m.group(1)]}.{m.group(2)}"
    m = re.fullmatch(r"down(\d+)\.mpconv\.1\.conv\.(\d)\.(.+)", rest)
    if m:
        return f"down.{int(m.group(1)) - 1}.conv.{_DOUBLE_CONV[m.group(2)]}.{m.group(3)}"
    m = re.fullmatch(r"up(\d+)\.conv\.conv\.(\d)\.(.+)", rest)
    if m:
        return f"up.{int(m.group(1)) - 1}.conv.{_DOUBLE_CONV[m.group(2)]}.{m.group(3)}"
    raise OfficialConversionError(f"unexpected guide-UNet key 'Unet1.{rest}'")


def _dehaze_key(key: str, depth_levels: int) -> str | None:
    """Our name for an official dehazing-network key, or None to drop it."""
    top = key.split(".", 1)[0]
    if top in UNUSED_OFFICIAL_MODULES or key.endswith("relative_positions"):
        return None
    m = re.match(r"legm(\d)\.blocks\.(\d+)\.(.+)", key)
    if m:
        rest = m.group(3)
        for pattern, repl in _BLOCK_PARTS:
            if re.match(pattern, rest):
                return f"stages.{int(m.group(1)) - 1}.blocks.{m.group(2)}.{re.sub(pattern, repl, rest, count=1)}"
        raise OfficialConversionError(f"unexpected transformer-block key {key!r}")
    m = re.match(r"conv(\d)\.(.+)", key)
    if m:
        return f"stage_inputs.{int(m.group(1)) - 1}.{m.group(2)}"
    for prefix, ours in _DEHAZE_SIMPLE.items():
        if key.startswith(prefix):
            return ours + key[len(prefix) :]
    if key.startswith("Unet1."):
        return "guide_unet." + _unet_key(key[len("Unet1.") :])
    if key.startswith("dpn."):
        return "depth_prior." + _depth_key(key[len("dpn.") :], depth_levels)
    if key.startswith("drdb."):
        return "depth_refine." + _dense_block_key(key[len("drdb.") :])
    raise OfficialConversionError(f"unexpected key {key!r} in an official dehazing checkpoint")


def convert_official_state_dict(state_dict: Mapping[str, torch.Tensor], kind: Kind) -> ConversionResult:
    """Renames an official ``dehaze_net`` / ``depth_net`` state dict onto our modules.

    Floating-point tensors are returned as float32 (the authors' files may hold float16).
    Raises :class:`OfficialConversionError` for keys that belong to neither network.
    """
    keys = list(state_dict)
    result = ConversionResult(state_dict={})
    if kind == "dehaze":
        depth_levels = _count_levels([k[len("dpn.") :] for k in keys if k.startswith("dpn.")])
        rename = lambda k: _dehaze_key(k, depth_levels)  # noqa: E731
    else:
        depth_levels = _count_levels(keys)
        rename = lambda k: _depth_key(k, depth_levels)  # noqa: E731
    for key in keys:
        ours = rename(key)
        if ours is None:
            result.dropped.append(key)
            continue
        tensor = state_dict[key]
        result.state_dict[ours] = tensor.float() if tensor.is_floating_point() else tensor
    return result


def _shape(state_dict: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    return tuple(state_dict[key].shape)


def infer_official_config(state_dict: Mapping[str, torch.Tensor], kind: Kind) -> dict[str, Any]:
    """Constructor arguments of our network for an official state dict, from its shapes."""
    sd = state_dict
    if kind == "depth":
        return _infer_depth(sd, "")
    depths, attention, heads, ratios = [], [], [], []
    for stage in range(1, 6):
        blocks = sorted({int(m.group(1)) for k in sd if (m := re.match(rf"legm{stage}\.blocks\.(\d+)\.", k))})
        if not blocks:
            raise OfficialConversionError(f"official checkpoint has no blocks for stage legm{stage}")
        depths.append(len(blocks))
        attn = [b for b in blocks if f"legm{stage}.blocks.{b}.attn.QK.weight" in sd]
        attention.append(len(attn))
        heads.append(_shape(sd, f"legm{stage}.blocks.{attn[-1]}.attn.attn.meta.2.weight")[0] if attn else 1)
        dim = _shape(sd, f"legm{stage}.blocks.0.attn.V.weight")[0]
        ratios.append(_shape(sd, f"legm{stage}.blocks.0.mlp.mlp.0.weight")[0] / dim)
    widths = [_shape(sd, f"legm{s}.blocks.0.attn.V.weight")[0] for s in (1, 2, 3)]
    unet_levels = sorted({int(m.group(1)) for k in sd if (m := re.match(r"Unet1\.down(\d+)\.", k))})
    guide_widths = [_shape(sd, "Unet1.inc.conv.0.weight")[0]] + [
        _shape(sd, f"Unet1.down{i}.mpconv.1.conv.0.weight")[0] for i in unet_levels[:-1]
    ]
    config: dict[str, Any] = dict(
        in_channels=_shape(sd, "patch_embed.proj.weight")[1],
        widths=widths,
        depths=depths,
        attention_blocks=attention,
        num_heads=heads,
        mlp_ratios=ratios,
        conv_kernel=_shape(sd, "legm1.blocks.0.attn.conv.weight")[-1],
        fusion_hidden=_shape(sd, "ca.0.weight")[0],
        guide_widths=guide_widths,
        guide_channels=_shape(sd, "Unet1.outc.weight")[0],
        refine_growth=_shape(sd, "drdb.Dcov1.weight")[0],
        refine_layers=len([k for k in sd if re.fullmatch(r"drdb\.Dcov\d+\.weight", k)]),
    )
    rel = next((k for k in sd if k.endswith("relative_positions")), None)
    if rel is not None:
        config["window_size"] = round(_shape(sd, rel)[0] ** 0.5)
    meta0 = next((k for k in sd if k.endswith("attn.attn.meta.0.weight")), None)
    if meta0 is not None:
        config["position_mlp_hidden"] = _shape(sd, meta0)[0]
    depth = _infer_depth(sd, "dpn.")
    config.update(depth_widths=depth["widths"], depth_growth=depth["growth"], depth_dense_layers=depth["dense_layers"])
    return config


def _infer_depth(sd: Mapping[str, torch.Tensor], prefix: str) -> dict[str, Any]:
    levels = _count_levels([k[len(prefix) :] for k in sd if k.startswith(prefix)])
    return dict(
        in_channels=_shape(sd, f"{prefix}DRDB_layer1.Dcov1.weight")[1],
        widths=[_shape(sd, f"{prefix}conv{i}.weight")[0] for i in range(1, levels + 1)],
        growth=_shape(sd, f"{prefix}DRDB_layer1.Dcov1.weight")[0],
        dense_layers=len([k for k in sd if re.fullmatch(rf"{re.escape(prefix)}DRDB_layer1\.Dcov\d+\.weight", k)]),
    )
