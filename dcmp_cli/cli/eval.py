"""`dcmp eval`: PSNR/SSIM of dehazing models on benchmark datasets, under a named protocol."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import TaskID
from rich.table import Table

from dcmp_cli.choices import EvalMethod, Method, Precision, Protocol
from dcmp_cli.cli.common import (
    EXIT_FAILED_ITEMS,
    CompileOption,
    DeviceOption,
    JsonOption,
    LiveProgress,
    MaxDiskOption,
    MaxMemoryOption,
    PrecisionOption,
    TileOption,
    TileOverlapOption,
    announce_dehazer,
    err_console,
    fail,
    library_errors,
    make_progress,
    note,
    out_console,
    parse_tiling,
    print_json,
)
from dcmp_cli.events import EvalEvents

if TYPE_CHECKING:
    from dcmp_cli.core.evaluate import DatasetReport, EvalSet, ImageRow

#: Named datasets (kept here so `--help` needs no import of the library).
NAMED_DATASET_NAMES = ("sots-indoor", "sots-outdoor", "o-haze", "i-haze", "dense-haze", "nh-haze")
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
            f"{', '.join(NAMED_DATASET_NAMES)} (with --data-root). Repeat for several.",
            show_default=False,
        ),
    ],
    data_root: Annotated[
        Path | None, typer.Option("--data-root", help="Folder holding the unpacked releases, for named datasets.")
    ] = None,
    method: Annotated[
        list[EvalMethod] | None,
        typer.Option(
            "--method",
            "-m",
            help="Repeatable. layered: the weight-free default. dcp: the classic dark channel prior. dcmp: DCMPNet, "
            "one row per --weights (default weights if none). none: the hazy input itself (baseline). auto: dcmp if "
            "weights are found, else layered. "
            "Default: dcmp with --weights, else auto.",
            show_default=False,
        ),
    ] = None,
    weights: Annotated[
        list[Path] | None,
        typer.Option(
            "--weights", "-w", help="DCMPNet checkpoint; repeat to compare several (one row each).", show_default=False
        ),
    ] = None,
    outputs: Annotated[
        list[Path] | None,
        typer.Option(
            "--outputs",
            help="Folder of restored images made elsewhere (named like the hazy images): scored as one more row.",
            show_default=False,
        ),
    ] = None,
    protocol: Annotated[
        Protocol,
        typer.Option(
            "--protocol", help="dcmpnet (the DCMPNet authors' test script) or dehazeformer (valid-window SSIM)."
        ),
    ] = Protocol.DCMPNET,
    device: DeviceOption = "auto",
    precision: PrecisionOption = Precision.FP32,
    compile: CompileOption = False,
    tile: TileOption = "auto",
    tile_overlap: TileOverlapOption = 32,
    max_memory: MaxMemoryOption = None,
    max_disk: MaxDiskOption = None,
    limit: Annotated[
        int | None, typer.Option("--limit", help="Evaluate only the first N images of each dataset.", min=1)
    ] = None,
    no_reference: Annotated[
        bool,
        typer.Option(
            "--no-reference",
            help="Also report no-reference measures (dark-channel haze density, colourfulness, RMS contrast) of input "
            "and output; allows datasets without ground truth.",
        ),
    ] = False,
    csv: Annotated[Path | None, typer.Option("--csv", help="Write per-image rows to this CSV file.")] = None,
    save_dir: Annotated[
        Path | None,
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
    from dcmp_cli.core.evaluate import DataRootRequired, NotPairedError, eval_models, evaluate_datasets, open_eval_set
    from dcmp_cli.data.datasets import DatasetError
    from dcmp_cli.metrics import PROTOCOL_DESCRIPTIONS

    tiling = parse_tiling(tile, tile_overlap, max_memory, max_disk)
    try:
        eval_sets = [open_eval_set(d, data_root, limit=limit, unpaired=no_reference) for d in dataset]
    except DataRootRequired as e:
        fail(f"--dataset {e.dataset} needs --data-root DIR (the folder holding the unpacked release)")
    except NotPairedError as e:
        fail(f"{e.reason} (for hazy photos without ground truth use --no-reference)")
    except DatasetError as e:
        fail(str(e))
    with library_errors():
        try:
            models = eval_models(
                method or [],
                weights or [],
                outputs or [],
                device=device,
                precision=precision,
                compile=compile,
                on_notice=note,
                **tiling,
            )
        except DatasetError as e:
            fail(str(e))
    if not json_out and EvalMethod.AUTO in (method or [EvalMethod.AUTO]) and not weights:
        auto = next((m.model for m in models if m.model is not None and m.method != "none"), None)
        if auto is not None:
            announce_dehazer(Method.AUTO, auto)
    with RichEvalEvents(enabled=err_console().is_terminal and not json_out) as events:
        try:
            reports = evaluate_datasets(
                eval_sets,
                models,
                protocol.value,
                data_root=data_root,
                limit=limit,
                no_reference_measures=no_reference,
                save_dir=save_dir,
                csv_path=csv,
                events=events,
                on_dataset=None if json_out else (lambda eval_set: _describe(eval_set, limit)),
            )
        except DatasetError as e:
            fail(str(e))
    failed = [row for report in reports for row in report.rows if not row.ok]
    if json_out:
        print_json(
            {
                "command": "eval",
                "protocol": protocol.value,
                "protocol_description": PROTOCOL_DESCRIPTIONS[protocol.value],
                "no_reference": no_reference,
                "models": [m.as_dict() for m in models],
                "datasets": [r.as_dict() for r in reports],
            }
        )
    else:
        render_table(reports, protocol.value, no_reference)
        if csv is not None:
            note(f"per-image rows written to {csv}")
    if failed:
        raise typer.Exit(EXIT_FAILED_ITEMS)
