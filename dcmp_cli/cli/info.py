"""`dcmp info`: what a checkpoint holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from dcmp_cli.cli.common import JsonOption, fail, out_console, print_json


def info_cli(
    path: Annotated[Path, typer.Argument(help="Checkpoint file (.pth, .pt or .safetensors).", show_default=False)],
    json_out: JsonOption = False,
) -> None:
    """Say what a checkpoint holds: network kind, preset, parameters, metadata, conversion.

    Checks that the weights load into the network with strict key checking. Default
    weights are looked up in $DCMP_WEIGHTS / $DCMP_DEPTH_WEIGHTS, then
    $DCMP_WEIGHTS_DIR, ./weights and ~/.local/share/dcmp/weights.
    """
    from dcmp_cli.core.checkpoint import CheckpointError, read_checkpoint
    from dcmp_cli.core.official import UNUSED_OFFICIAL_MODULES

    try:
        checkpoint = read_checkpoint(path)
        checkpoint.build("cpu")
    except CheckpointError as e:
        fail(str(e))
    dropped_modules = sorted({k.split(".")[0] for k in checkpoint.dropped_keys if k.split(".")[0] in UNUSED_OFFICIAL_MODULES})
    dropped_buffers = sum(k.endswith("relative_positions") for k in checkpoint.dropped_keys)
    report = {
        "path": str(path),
        "kind": checkpoint.kind,
        "preset": checkpoint.preset,
        "source": checkpoint.source,
        "parameters": checkpoint.num_parameters,
        "tensors": len(checkpoint.state_dict),
        "loads_strictly": True,
        "dropped_official_modules": dropped_modules,
        "dropped_relative_position_buffers": dropped_buffers,
        "metadata": {k: v for k, v in checkpoint.metadata.items() if k != "model_kwargs"},
        "model_kwargs": checkpoint.model_kwargs,
    }
    if json_out:
        print_json(report)
        return
    kind = "dehazing network" if checkpoint.kind == "dehaze" else "depth network"
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("file", str(path))
    table.add_row("holds", f"{kind}, preset {checkpoint.preset}")
    table.add_row("format", {"official": "authors' checkpoint (converted)", "dcmp": "dcmp safetensors",
                             "state-dict": "bare state dict"}[checkpoint.source])
    table.add_row("parameters", f"{checkpoint.num_parameters:,} in {len(checkpoint.state_dict)} tensors")
    table.add_row("loads", "yes, strict key and shape check passed")
    if checkpoint.source == "official":
        dropped = ", ".join(dropped_modules) or "none"
        table.add_row("conversion", f"clean; dropped unused modules: {dropped}; "
                      f"{dropped_buffers} relative-position buffers (rebuilt)")
    for key, value in report["metadata"].items():
        table.add_row(key, value)
    if checkpoint.preset == "custom":
        table.add_row("model_kwargs", json.dumps(checkpoint.model_kwargs))
    out_console().print(table)
