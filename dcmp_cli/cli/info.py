"""`dcmp info`: which weights would be used, and what a checkpoint holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from dcmp_cli.cli.common import JsonOption, fail, out_console, print_json

#: Metadata keys shown in their own rows (not repeated under "metadata").
_SHOWN = {"kind", "preset", "format", "format_version", "model_kwargs"}


def _value(text: str) -> str:
    """Metadata values for people: numbers rounded, JSON lists/dicts compact."""
    try:
        value: Any = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return text
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(", ", ": "))
    return str(value)


def _defaults_report() -> dict[str, Any]:
    from dcmp_cli.core.weights import WEIGHTS_DIR_ENV, WEIGHTS_ENV, WeightsNotFound, find_default_weights, search_places

    report: dict[str, Any] = {"weights_dir_env": WEIGHTS_DIR_ENV}
    for kind in ("dehaze", "depth"):
        try:
            found = find_default_weights(kind)
            problem = None
        except WeightsNotFound as e:
            found, problem = None, str(e)
        report[kind] = {
            "env": WEIGHTS_ENV[kind],
            "found": str(found) if found else None,
            "problem": problem,
            "searched": [str(p) for p in search_places(kind)],
        }
    return report


def _render_defaults(report: dict[str, Any]) -> None:
    console = out_console()
    for kind, title in (("dehaze", "dehazing network"), ("depth", "depth network")):
        entry = report[kind]
        if entry["found"]:
            console.print(f"{title}: {entry['found']}")
        else:
            reason = entry["problem"] or "none found"
            console.print(f"{title}: {reason} (the weight-free default runs instead)")
        console.print(f"  looked for (in order): ${entry['env']}, then", soft_wrap=True)
        for place in entry["searched"]:
            console.print(f"    {place}", soft_wrap=True)
    console.print(f"${report['weights_dir_env']} adds a folder in front of ./weights.")


def info_cli(
    path: Annotated[
        Path | None,
        typer.Argument(
            metavar="[CHECKPOINT]",
            help="Checkpoint file (.pth, .pt or .safetensors). Without one: which "
            "default weights would be used, and where dcmp looks for them.",
            show_default=False,
        ),
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Say which weights dcmp would use, or what a checkpoint holds and whether it loads.

    Default weights come from $DCMP_WEIGHTS / $DCMP_DEPTH_WEIGHTS, else the first known
    file name found in $DCMP_WEIGHTS_DIR, ./weights and ~/.local/share/dcmp/weights.
    """
    if path is None:
        report = _defaults_report()
        print_json(report) if json_out else _render_defaults(report)
        return
    from dcmp_cli.core.checkpoint import CheckpointError, read_checkpoint
    from dcmp_cli.core.official import UNUSED_OFFICIAL_MODULES

    try:
        checkpoint = read_checkpoint(path)
        checkpoint.build("cpu")
    except CheckpointError as e:
        fail(str(e))
    dropped_modules = sorted(
        {k.split(".")[0] for k in checkpoint.dropped_keys if k.split(".")[0] in UNUSED_OFFICIAL_MODULES}
    )
    dropped_buffers = sum(k.endswith("relative_positions") for k in checkpoint.dropped_keys)
    metadata = {k: v for k, v in checkpoint.metadata.items() if k not in _SHOWN}
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
        "metadata": metadata,
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
    fmt = {"official": "authors' checkpoint (converted)", "state-dict": "bare state dict"}.get(checkpoint.source)
    if fmt is None:
        fmt = f"dcmp safetensors, format {checkpoint.metadata.get('format_version', '?')}"
    table.add_row("format", fmt)
    table.add_row("parameters", f"{checkpoint.num_parameters:,} in {len(checkpoint.state_dict)} tensors")
    table.add_row("loads", "yes, strict key and shape check passed")
    if checkpoint.source == "official":
        dropped = ", ".join(dropped_modules) or "none"
        table.add_row(
            "conversion",
            f"clean; dropped unused modules: {dropped}; {dropped_buffers} relative-position buffers (rebuilt)",
        )
    if checkpoint.preset == "custom":
        table.add_row("model_kwargs", json.dumps(checkpoint.model_kwargs))
    if metadata:
        table.add_row("metadata", "")
        for key in sorted(metadata):
            table.add_row(f"  {key}", _value(metadata[key]))
    out_console().print(table)
