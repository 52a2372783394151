"""`dcmp eval`: PSNR/SSIM of dehazing models on benchmark datasets, under a named protocol."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import TaskID
from rich.table import Table

from dcmp_cli.cli.common import (
    LiveProgress,
    CompileOption,
    EXIT_FAILED_ITEMS,
    DeviceOption,
    JsonOption,
    MaxMemoryOption,
    PrecisionOption,
    TileOption,
    TileOverlapOption,
    err_console,
    fail,
    make_progress,
    note,
    out_console,
    print_json,
    select_dehazer,
    tile_settings,
)
from dcmp_cli.core.evaluate import (
    DatasetReport,
    EvalEvents,
    EvalModel,
    EvalSet,
    ImageRow,
    check_save_dirs,
    evaluate,
    open_eval_set,
    write_csv,
)
from dcmp_cli.data.datasets import NAMED_DATASETS, DatasetError
from dcmp_cli.metrics import PROTOCOL_DESCRIPTIONS, PROTOCOLS

EVAL_METHODS = ("auto", "dcmp", "dcp", "none")
NOREF_HEADERS = {"haze": "haze ↓", "colourfulness": "colour ↑", "contrast": "contrast ↑"}


class RichEvalEvents(LiveProgress, EvalEvents):
    """One progress bar per dataset on stderr (only on a terminal); failed images as they happen."""

    def __init__(self, enabled: bool) -> None:
        self.progress = make_progress(enabled)
        self.task: TaskID | None = None


    def dataset_started(self, eval_set: EvalSet, steps: int) -> None:
        self.task = self.progress.add_task(f"eval {eval_set.label}", total=steps)

    def row_finished(self, row: ImageRow) -> None:
        if self.task is not None:
            self.progress.advance(self.task)
        if row.error:
            self.progress.console.print(f"[red]failed[/] {row.model}: {row.error}", soft_wrap=True, markup=True)


def _unique(label: str, taken: set[str], path: Path | None = None) -> str:
    if label in taken and path is not None:
        label = f"{path.parent.name}/{label}"
    base, n = label, 2
    while label in taken:
        label, n = f"{base} #{n}", n + 1
    taken.add(label)
    return label


def build_models(
    methods: list[str],
    weights: list[Path],
    outputs: list[Path],
    device: str,
    precision: str,
    quiet: bool,
    tiling=None,
    compile: bool = False,
) -> list[EvalModel]:
    """The rows of the comparison, from --method / --weights / --outputs (see eval_cli's help)."""
    for method in methods:
        if method not in EVAL_METHODS:
            fail(f"unknown --method {method!r}; choose {', '.join(EVAL_METHODS)}")
    if not methods and not weights and not outputs:
        methods = ["auto"]
    if weights:  # --weights always means DCMPNet rows, one per file
        methods = ["dcmp" if m == "auto" else m for m in methods]
        methods = methods if "dcmp" in methods else [*methods, "dcmp"]
    models: list[EvalModel] = []
    taken: set[str] = set()
    seen: set[tuple[str, str | None]] = set()  # (method, weights): each model once

    def add(model, chosen: dict) -> None:
        key = (chosen["method"], chosen["weights"])
        if key in seen:
            return
        seen.add(key)
        if chosen["method"] == "dcp":
            models.append(EvalModel(_unique("dcp", taken), "dcp", model))
        else:
            path = Path(chosen["weights"])
            models.append(EvalModel(_unique(path.stem, taken, path), "dcmp", model, weights=str(path)))

    for method in dict.fromkeys(methods):
        if method == "none":
            models.append(EvalModel.hazy_input(_unique("hazy input", taken)))
        elif method in ("dcp", "auto"):
            add(*select_dehazer(method, None, device, precision, quiet=quiet, tiling=tiling, compile=compile))
        else:
            for path in weights or [None]:
                add(*select_dehazer("dcmp", path, device, precision, quiet=quiet, tiling=tiling, compile=compile))
    for folder in outputs:
        try:
            models.append(EvalModel.from_outputs(folder, _unique(folder.name, taken, folder)))
        except DatasetError as e:
            fail(str(e))
    return models


def _folder_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-") or "model"


def save_dirs_for(save_dir: Path | None, dataset: str, models: list[EvalModel], n_datasets: int) -> dict[str, Path]:
    """SAVE_DIR[/DATASET][/MODEL]: sub-folders only where there is more than one."""
    if save_dir is None:
        return {}
    base = save_dir / _folder_name(dataset) if n_datasets > 1 else save_dir
    runnable = [m for m in models if m.outputs is None]
    if len(runnable) == 1:
        return {runnable[0].label: base}
    return {m.label: base / _folder_name(m.label) for m in runnable}


def _fmt(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def render_table(reports: list[DatasetReport], protocol: str, no_reference: bool) -> None:
    """The comparison table (one row per dataset and model) on stdout."""
    paired = any(r.eval_set.paired for r in reports)
    any_failed = any(r.failed for r in reports)
    caption = (
        "haze: mean dark channel (lower = clearer) · colour: Hasler–Süsstrunk colourfulness · "
        "contrast: RMS luma contrast; input → output"
        if no_reference
        else None
    )
    several = len(reports) > 1
    where = "" if several else f" · {reports[0].eval_set.label}"
    title = f"dcmp eval{where} · protocol {protocol}"
    table = Table(title=title, caption=caption, header_style="bold", min_width=len(title) + 4)
    if several:
        table.add_column("dataset", no_wrap=True)
    table.add_column("model", no_wrap=True)
    table.add_column("images", justify="right")
    if any_failed:
        table.add_column("failed", justify="right")
    if paired:
        table.add_column("PSNR", justify="right")
        table.add_column("SSIM", justify="right")
    if no_reference:
        for header in NOREF_HEADERS.values():
            table.add_column(header, justify="right", no_wrap=True)
    table.add_column("s/img", justify="right")
    for report in reports:
        for summary in report.models:
            cells = [report.eval_set.label] if several else []
            cells += [summary.model.label, str(summary.images)]
            if any_failed:
                cells.append(str(summary.failed))
            if paired:
                cells += [_fmt(summary.psnr, 2), _fmt(summary.ssim, 4)]
            if no_reference:
                for measure in NOREF_HEADERS:
                    before = summary.noref_input.get(measure) if summary.noref_input else None
                    after = summary.noref_output.get(measure) if summary.noref_output else None
                    digits = 1 if measure == "colourfulness" else 3
                    cells.append(f"{_fmt(before, digits)}→{_fmt(after, digits)}")
            cells.append(_fmt(summary.seconds_per_image, 3))
            table.add_row(*cells)
    console = out_console()
    if not console.is_terminal:  # pipes and logs get the whole table, not columns squeezed to 80 characters
        console = Console(file=console.file, highlight=False, width=max(console.width, 160))
    console.print(table)


def _describe(eval_set: EvalSet, limit: int | None) -> None:
    what = "pairs" if eval_set.paired else "images"
    note(f"{eval_set.label}: {eval_set.total} {what} in {eval_set.root} ({eval_set.layout})")
    named = eval_set.named
    if named is not None and eval_set.total != named.release_pairs:
        extra = f"; {named.note}" if named.note else ""
        note(f"{named.title} has {named.release_pairs} test pairs; found {eval_set.total}{extra}")
    if eval_set.unmatched:
        shown = ", ".join(p.name for p in eval_set.unmatched[:3]) + (" …" if len(eval_set.unmatched) > 3 else "")
        note(f"{len(eval_set.unmatched)} hazy image(s) without a clear image, not evaluated: {shown}")
    if limit is not None and len(eval_set.items) < eval_set.total:
        first = f"the first {len(eval_set.items)} of {eval_set.total} {what}"
        note(f"--limit {limit}: evaluating {first} (not a full benchmark)")


def eval_cli(
    dataset: Annotated[
        list[str],
        typer.Option(
            "--dataset",
            "-D",
            help="Dataset folder (hazy/ + GT/ or clear/, RESIDE, O-HAZE, NH-HAZE layouts, detected) or a name: "
            f"{', '.join(NAMED_DATASETS)} (with --data-root). Repeat for several.",
            show_default=False,
        ),
    ],
    data_root: Annotated[
        Optional[Path], typer.Option("--data-root", help="Folder holding the unpacked releases, for named datasets.")
    ] = None,
    method: Annotated[
        Optional[list[str]],
        typer.Option(
            "--method",
            "-m",
            help="Repeatable. dcp: dark channel prior. dcmp: DCMPNet, one row per --weights (default weights if "
            "none). none: the hazy input itself (baseline). auto: dcmp if weights are found, else dcp. "
            "Default: dcmp with --weights, else auto.",
            show_default=False,
        ),
    ] = None,
    weights: Annotated[
        Optional[list[Path]],
        typer.Option(
            "--weights", "-w", help="DCMPNet checkpoint; repeat to compare several (one row each).", show_default=False
        ),
    ] = None,
    outputs: Annotated[
        Optional[list[Path]],
        typer.Option(
            "--outputs",
            help="Folder of restored images made elsewhere (named like the hazy images): scored as one more row.",
            show_default=False,
        ),
    ] = None,
    protocol: Annotated[
        str,
        typer.Option(
            "--protocol", help="dcmpnet (the DCMPNet authors' test script) or dehazeformer (valid-window SSIM)."
        ),
    ] = "dcmpnet",
    device: DeviceOption = "auto",
    precision: PrecisionOption = "fp32",
    compile: CompileOption = False,
    tile: TileOption = "auto",
    tile_overlap: TileOverlapOption = 32,
    max_memory: MaxMemoryOption = None,
    limit: Annotated[
        Optional[int], typer.Option("--limit", help="Evaluate only the first N images of each dataset.", min=1)
    ] = None,
    no_reference: Annotated[
        bool,
        typer.Option(
            "--no-reference",
            help="Also report no-reference measures (dark-channel haze density, colourfulness, RMS contrast) of input "
            "and output; allows datasets without ground truth.",
        ),
    ] = False,
    csv: Annotated[Optional[Path], typer.Option("--csv", help="Write per-image rows to this CSV file.")] = None,
    save_dir: Annotated[
        Optional[Path],
        typer.Option(
            "--save-dir", help="Write restored images here (PNG; sub-folders per dataset/model when several)."
        ),
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Benchmark dehazing models: mean PSNR/SSIM (and per-image rows) on paired datasets.

    Metrics use the float outputs clamped to [0, 1], as the DCMPNet authors' test script does.

    Each --method, --weights and --outputs is one row of a single comparison table.
    """
    if protocol not in PROTOCOLS:
        fail(f"unknown --protocol {protocol!r}; choose {' or '.join(PROTOCOLS)}")
    try:
        eval_sets = [open_eval_set(d, data_root, limit=limit, unpaired=no_reference) for d in dataset]
    except DatasetError as e:
        fail(str(e))
    tiling = tile_settings(tile, tile_overlap, max_memory)
    models = build_models(
        method or [], weights or [], outputs or [], device, precision, quiet=json_out, tiling=tiling, compile=compile
    )
    save_plan = {s.label: save_dirs_for(save_dir, s.label, models, len(eval_sets)) for s in eval_sets}
    if len(save_plan) != len(eval_sets):
        fail("two --dataset values have the same name; rename or link one of the folders")
    try:
        for eval_set in eval_sets:
            check_save_dirs(eval_set, save_plan[eval_set.label])
    except DatasetError as e:
        fail(str(e))
    reports: list[DatasetReport] = []
    with RichEvalEvents(enabled=err_console().is_terminal and not json_out) as events:
        for eval_set in eval_sets:
            if not json_out:
                _describe(eval_set, limit)
            reports.append(
                evaluate(
                    eval_set,
                    models,
                    protocol,  # type: ignore[arg-type]
                    no_reference_measures=no_reference,
                    save_dirs=save_plan[eval_set.label],
                    events=events,
                )
            )
    rows = [row for report in reports for row in report.rows]
    if csv is not None:
        write_csv(csv, rows)
    failed = [row for row in rows if not row.ok]
    if json_out:
        print_json(
            {
                "command": "eval",
                "protocol": protocol,
                "protocol_description": PROTOCOL_DESCRIPTIONS[protocol],  # type: ignore[index]
                "no_reference": no_reference,
                "models": [m.as_dict() for m in models],
                "datasets": [r.as_dict() for r in reports],
            }
        )
    else:
        render_table(reports, protocol, no_reference)
        if csv is not None:
            note(f"per-image rows written to {csv}")
    if failed:
        raise typer.Exit(EXIT_FAILED_ITEMS)
