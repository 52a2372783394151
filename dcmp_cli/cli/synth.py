"""`dcmp synth`: make a paired hazy/clear dataset from clear images (and depth maps)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from dcmp_cli.choices import DepthKind
from dcmp_cli.cli.common import EXIT_FAILED_ITEMS, JsonOption, LiveProgress, err_console, fail, note, print_json
from dcmp_cli.events import SynthEvents


def parse_range(text: str, option: str) -> tuple[float, float]:
    """'LOW,HIGH' or a single value -> (low, high)."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        fail(f"{option} must be LOW,HIGH or one number (e.g. {option} 0.6,1.8), got {text!r}")
    if len(values) == 1:
        values *= 2
    if len(values) != 2:
        fail(f"{option} must be LOW,HIGH or one number, got {text!r}")
    return values[0], values[1]


class RichSynthEvents(LiveProgress, SynthEvents):
    def __init__(self, enabled: bool) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console(),
            disable=not enabled,
        )
        self.task: TaskID | None = None

    def started(self, total: int) -> None:
        self.task = self.progress.add_task("synth", total=total)

    def image_finished(self, source: Path, written: int, error: str | None) -> None:
        if self.task is not None:
            self.progress.advance(self.task)
        if error:
            self.progress.console.print(f"[red]failed[/] {error}", soft_wrap=True, markup=True)


def synth_cli(
    clear: Annotated[
        str, typer.Argument(metavar="CLEAR", help="Folder (or glob) of clear images.", show_default=False)
    ],
    output: Annotated[
        Path,
        typer.Argument(
            metavar="OUTPUT",
            help="Dataset folder to create: hazy/, GT/, depth/, manifest.csv/json.",
            show_default=False,
        ),
    ],
    depth: Annotated[
        Path | None,
        typer.Option(
            "--depth",
            help="Folder of depth maps named like the clear images (.png/.tif/.npy). "
            "Default: a stand-in vertical-gradient depth (top far, bottom near).",
        ),
    ] = None,
    depth_kind: Annotated[
        DepthKind,
        typer.Option(
            "--depth-kind", help="How --depth maps read: depth (larger = farther) or disparity (larger = nearer)."
        ),
    ] = DepthKind.DEPTH,
    beta: Annotated[
        str,
        typer.Option(
            "--beta", help="Scattering coefficient range LOW,HIGH (or one value), on depth normalised to [0, 1]."
        ),
    ] = "0.6,1.8",
    airlight: Annotated[
        str, typer.Option("--airlight", help="Grey airlight range LOW,HIGH (or one value) in (0, 1].")
    ] = "0.7,1.0",
    per_image: Annotated[int, typer.Option("--per-image", "-k", help="Hazy versions per clear image.", min=1)] = 1,
    seed: Annotated[
        int, typer.Option("--seed", help="Random seed; an image's β and A depend on it and the image's name only.")
    ] = 0,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Write into an OUTPUT that already holds a dataset.")
    ] = False,
    json_out: JsonOption = False,
) -> None:
    """Synthesise hazy images with the scattering model I = J·t + A·(1 − t), t = exp(−β·d).

    Writes OUTPUT/GT/NAME.png, OUTPUT/hazy/NAME_K.png, OUTPUT/depth/NAME.png and manifest.csv/json.

    The manifest holds each hazy image's β and A; `dcmp eval` and training read the folder as it is.
    """
    from dcmp_cli.data.files import InputError
    from dcmp_cli.data.synth import SynthError, synthesize_dataset

    beta_range, airlight_range = parse_range(beta, "--beta"), parse_range(airlight, "--airlight")
    if depth is None and not json_out:
        note("no --depth: using a stand-in depth (vertical gradient, top far, bottom near), not the scenes' depth")
    start = time.perf_counter()
    with RichSynthEvents(enabled=err_console().is_terminal and not json_out) as events:
        try:
            report, (csv_path, json_path) = synthesize_dataset(
                clear,
                output,
                depth=depth,
                depth_kind=depth_kind,
                beta=beta_range,
                airlight=airlight_range,
                per_image=per_image,
                seed=seed,
                overwrite=overwrite,
                events=events,
            )
        except SynthError as e:
            fail(f"--{e.option}: {e}" if e.option else str(e))
        except InputError as e:
            fail(str(e))
    seconds = time.perf_counter() - start
    if json_out:
        print_json(
            {
                "command": "synth",
                "output": str(output),
                "manifest": [str(csv_path), str(json_path)],
                "seconds": round(seconds, 3),
                **report.as_dict(),
            }
        )
    else:
        table = Table(title="dcmp synth", header_style="bold")
        for column in ("clear", "hazy", "failed", "depth", "β", "A", "seconds"):
            table.add_column(column, justify="right")
        table.add_row(
            str(report.clear_images),
            str(len(report.records)),
            str(len(report.failures)),
            "given" if depth else "stand-in",
            f"{beta_range[0]:g}–{beta_range[1]:g}",
            f"{airlight_range[0]:g}–{airlight_range[1]:g}",
            f"{seconds:.1f}",
        )
        err_console().print(table)
        note(f"manifest: {csv_path}, {json_path}")
    if report.stale:
        note(
            f"{len(report.stale)} older file(s) in {output / 'hazy'} are not from this run "
            f"(e.g. {report.stale[0].name}); delete them or they will be read as pairs"
        )
    if report.failures:
        raise typer.Exit(EXIT_FAILED_ITEMS)
