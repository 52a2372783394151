"""Pieces every command shares: consoles, option types, library errors as exits, result rendering.

Nothing here imports torch: ``dcmp --help`` and usage errors stay fast. The commands
import the library inside their functions.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, TypedDict

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from dcmp_cli.choices import Method, Precision
from dcmp_cli.core.batch import BatchEvents, BatchSummary, ItemResult

if TYPE_CHECKING:
    from dcmp_cli.core.depth import DepthEstimator
    from dcmp_cli.core.image_model import ImageModel
    from dcmp_cli.models.registry import Kind

#: Exit codes: 0 all good; 1 some inputs failed; 2 unusable options, weights, device or input;
#: 130 interrupted (128 + SIGINT, as shells report it).
EXIT_FAILED_ITEMS = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
STREAM = "-"


@lru_cache(maxsize=1)
def err_console() -> Console:
    """Messages, progress and tables go to stderr; stdout is kept for --json and `-` output."""
    return Console(stderr=True, highlight=False)


@lru_cache(maxsize=1)
def out_console() -> Console:
    return Console(highlight=False, soft_wrap=True)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Prints ``error: message`` (one line) and exits with ``code``."""
    err_console().print(f"[bold red]error:[/] {message}", markup=True, soft_wrap=True)
    raise typer.Exit(code)


def note(message: str) -> None:
    """A one-line notice on stderr."""
    err_console().print(f"[dim]note:[/] {message}", markup=True, soft_wrap=True)


def print_json(data: object) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")
    sys.stdout.flush()


# ----------------------------------------------------------------------------- options

DeviceOption = Annotated[
    str,
    typer.Option(
        "--device",
        "-d",
        metavar="DEVICE",
        help="Where the network runs: auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps.",
    ),
]
PrecisionOption = Annotated[
    Precision,
    typer.Option(
        "--precision", help="fp32, or fp16 / bf16 mixed precision (GPU; bf16 also on CPU). Global statistics stay fp32."
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print a machine-readable JSON summary on stdout.")]
MethodOption = Annotated[
    Method,
    typer.Option(
        "--method",
        "-m",
        help="dcmp (DCMPNet, needs weights); layered (the weight-free default: dark channel prior with noise-free "
        "recovery); dcp (the classic dark channel prior); auto: dcmp when weights are found, else layered.",
    ),
]
TileOption = Annotated[
    str,
    typer.Option(
        "--tile",
        metavar="N|auto",
        help="Tile size in pixels (a multiple of 32), 0 for the whole image in one pass, or auto: the whole image when "
        "it fits the memory budget, else the largest tile that does.",
    ),
]
TileOverlapOption = Annotated[
    int, typer.Option("--tile-overlap", metavar="PIXELS", help="Pixels neighbouring tiles share; blended.", min=0)
]
MaxMemoryOption = Annotated[
    str | None,
    typer.Option(
        "--max-memory",
        metavar="SIZE",
        help="Memory budget of the network's passes (tiles, statistics pass and, on the CPU, the features tiles "
        "reuse), e.g. 2G or 800M. Default: 80% of free GPU memory, or up to 2 GiB of RAM on the CPU. The image itself "
        "comes on top, about 45 MB of RAM per megapixel. Weight-free methods work in row strips and ignore it.",
        show_default=False,
    ),
]
MaxDiskOption = Annotated[
    str | None,
    typer.Option(
        "--max-disk",
        metavar="SIZE",
        help="Scratch disk for the features tiles reuse on the CPU once --max-memory is spent, in a temporary file "
        "in TMPDIR deleted after each image, e.g. 20G; 0 for none (those tiles recompute them). Default: up to half "
        "the free space there; none on a RAM disk (tmpfs) or a GPU.",
        show_default=False,
    ),
]
CompileOption = Annotated[
    bool, typer.Option("--compile", help="Compile the network with torch.compile (slow start, faster on long runs).")
]
RecursiveOption = Annotated[bool, typer.Option("--recursive", "-r", help="Descend into sub-folders of INPUT.")]
OverwriteOption = Annotated[
    bool, typer.Option("--overwrite", help="Redo outputs that already exist (default: skip them).")
]
ForceOption = Annotated[bool, typer.Option("--force", help="Write image data to stdout even when it is a terminal.")]
ShardOption = Annotated[
    str | None,
    typer.Option(
        "--shard",
        metavar="K/N",
        help="K/N: process only shard K of N (by a hash of each path), for N parallel jobs.",
        show_default=False,
    ),
]


def weights_option(kind_word: str, env: str) -> object:
    return typer.Option(
        "--weights",
        "-w",
        help=f"{kind_word} checkpoint: the authors' .pth, a state dict, or a dcmp .safetensors. "
        f"Default: ${env}, then ./weights and ~/.local/share/dcmp/weights (see `dcmp info`).",
        show_default=False,
    )


# ----------------------------------------------------------------------------- library errors


def missing_weights_message(kind: Kind) -> str:
    """How to get weights for ``kind``, with the flags and places to use."""
    from dcmp_cli.core.weights import DEFAULT_FILE_NAMES, WEIGHTS_ENV

    what = "dehazing" if kind == "dehaze" else "depth"
    names = " or ".join(DEFAULT_FILE_NAMES[kind][:2])
    return (
        f"no {what} weights found: pass --weights FILE, set ${WEIGHTS_ENV[kind]}, or put {names} into ./weights "
        "(authors' checkpoints: github.com/zhoushen1/DCMPNet; or train your own with `dcmp train`)"
    )


@contextmanager
def library_errors() -> Iterator[None]:
    """Turns the library's typed setup errors into one-line exits with code 2, naming flags where they help."""
    from dcmp_cli.core.checkpoint import CheckpointError
    from dcmp_cli.core.device import DeviceError
    from dcmp_cli.core.loading import MethodError, WeightsRequired
    from dcmp_cli.core.tiling import TileRequestError
    from dcmp_cli.core.weights import WeightsNotFound
    from dcmp_cli.data.files import InputError, NoImagesError, PlanError, ShardError

    try:
        yield
    except NoImagesError as e:
        if e.recursive:
            fail(str(e))
        from dcmp_cli.data.image_io import IMAGE_EXTENSIONS

        fail(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {e.path}; add --recursive to look in sub-folders")
    except ShardError as e:
        fail(f"--shard: {e}")
    except PlanError as e:
        fail(str(e))
    except TileRequestError as e:
        fail(f"--tile / --tile-overlap: {e}")
    except WeightsRequired as e:
        fail(missing_weights_message(e.kind))
    except DeviceError as e:
        fail(f"--{e.option} {e.value}: {e.problem}")
    except (CheckpointError, WeightsNotFound, MethodError, InputError) as e:
        fail(str(e))


class TilingOptions(TypedDict):
    """The loaders' tiling keywords (see :func:`dcmp_cli.core.loading.load_dehazer`)."""

    tile: int | None
    tile_overlap: int
    max_memory: int | None
    max_disk: int | None


def parse_tiling(tile: str, overlap: int, max_memory: str | None, max_disk: str | None = None) -> TilingOptions:
    """--tile/--tile-overlap/--max-memory/--max-disk as keyword arguments of the loaders (exits on bad values)."""
    from dcmp_cli.sizes import parse_size

    text = tile.strip().lower()
    if text != "auto" and not text.isdigit():
        fail(f"--tile must be auto, 0 or a size in pixels, got {tile!r}")

    def size_of(option: str, value: str | None) -> int | None:
        try:
            return parse_size(value) if value else None
        except ValueError as e:
            fail(f"{option}: {e}")

    size = None if text == "auto" else int(text)
    return {
        "tile": size,
        "tile_overlap": overlap,
        "max_memory": size_of("--max-memory", max_memory),
        "max_disk": size_of("--max-disk", max_disk),
    }


def announce_dehazer(requested: Method, dehazer: ImageModel) -> None:
    """One line saying what ``--method auto`` chose."""
    if requested != Method.AUTO:
        return
    if dehazer.weights is None:
        note(
            f"no DCMPNet weights found: using the {dehazer.title}, which needs none (--method {dehazer.method}); "
            "pass --weights or see weights/README.md for DCMPNet"
        )
    else:
        note(f"using DCMPNet weights {dehazer.weights} on {dehazer.device}")


def chosen(model: ImageModel | DepthEstimator) -> dict[str, object]:
    """{'method': ..., 'weights': ...} of a loaded model, for --json summaries."""
    weights = model.weights
    return {"method": model.method, "weights": str(weights) if weights is not None else None}


# ----------------------------------------------------------------------------- progress


def make_progress(enabled: bool) -> Progress:
    """The progress display every command uses, on stderr: a spinner (work goes on even while
    one large image is computed), counts, elapsed time and an ETA from every finished item
    (however slow each one is)."""
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console(),
        disable=not enabled,
        speed_estimate_period=24 * 3600,
    )


class LiveProgress:
    """Base of the rich renderers: a context manager around ``self.progress`` (a rich Progress)."""

    progress: Progress

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)  # type: ignore[arg-type]


class RichBatchEvents(LiveProgress, BatchEvents):
    """Renders batch progress with rich: one bar for the batch, one for tiles of the current image.

    Silent when stderr is not a terminal (batch jobs, pipes).
    """

    def __init__(self, label: str, enabled: bool | None = None, growing: bool = False) -> None:
        self.enabled = err_console().is_terminal if enabled is None else enabled
        self.growing = growing  # a watched folder: items keep arriving after the start
        self.progress = make_progress(self.enabled)
        self.label = label
        self.batch: TaskID | None = None
        self.tiles: TaskID | None = None

    def batch_started(self, total: int) -> None:
        self.batch = self.progress.add_task(self.label, total=total)

    def item_started(self, source: Path) -> None:
        if self.tiles is not None:
            self.progress.remove_task(self.tiles)
            self.tiles = None
        if self.batch is not None:
            task = next(t for t in self.progress.tasks if t.id == self.batch)
            total = task.total + 1 if self.growing and task.total is not None and task.completed >= task.total else None
            self.progress.update(self.batch, description=f"{self.label} {source.name}", total=total)

    def item_progress(self, done: int, total: int) -> None:
        if total <= 1:
            return
        if self.tiles is None:
            self.tiles = self.progress.add_task("  tiles", total=total)
        self.progress.update(self.tiles, completed=done, total=total)

    def item_finished(self, result: ItemResult) -> None:
        if self.batch is not None:
            self.progress.advance(self.batch)
        if result.status == "failed" and self.enabled:  # the summary lists failures again at the end
            self.progress.console.print(f"[red]failed[/] {result.input}: {result.reason}", soft_wrap=True)


def render_summary(summary: BatchSummary, title: str) -> None:
    """A table of counts, then one line per failed or ignored input, on stderr."""
    console = err_console()
    table = Table(title=title, show_header=True, header_style="bold")
    for column in ("done", "skipped", "failed", "ignored", "seconds"):
        table.add_column(column, justify="right")
    table.add_row(
        *(str(summary.count(s)) for s in ("done", "skipped", "failed", "ignored")),
        f"{summary.wall_seconds:.1f}",
    )
    console.print(table)
    skipped = summary.count("skipped")
    if skipped:
        console.print(f"[yellow]skipped[/] {skipped}: output exists (--overwrite redoes it)", soft_wrap=True)
    for result in summary.failed:
        console.print(f"[red]failed[/] {result.input}: {result.reason}", soft_wrap=True)
    for result in summary.results:
        for line in result.notes:
            console.print(f"[yellow]note[/] {result.input}: {line}", soft_wrap=True)
    ignored = [r.input.name for r in summary.results if r.status == "ignored"]
    if ignored:
        shown = ", ".join(ignored[:5]) + (f" and {len(ignored) - 5} more" if len(ignored) > 5 else "")
        console.print(f"[yellow]ignored[/] {len(ignored)} non-image file(s): {shown}", soft_wrap=True)


def summary_json(summary: BatchSummary, **extra: object) -> dict:
    counts = {s: summary.count(s) for s in ("done", "skipped", "failed", "ignored")}
    return {
        **extra,
        "counts": counts,
        "wall_seconds": round(summary.wall_seconds, 3),
        "files": [r.as_dict() for r in summary.results],
    }


def finish_batch(summary: BatchSummary, title: str, json_out: bool, single: bool, **extra: object) -> None:
    """Reports a finished batch (table or JSON, the output's path for a single input) and exits 1
    when an item failed."""
    if json_out:
        print_json(summary_json(summary, command=title.split()[-1], **extra))
    else:
        render_summary(summary, title)
        done = [r for r in summary.results if r.status == "done"]
        if single and done:
            err_console().print(f"wrote {done[0].output}", soft_wrap=True)
    if not summary.ok:
        raise typer.Exit(EXIT_FAILED_ITEMS)


@contextmanager
def interruptible() -> Iterator[None]:
    """Ctrl-C or SIGTERM during a batch: say what was done and what is left, exit 130."""
    from dcmp_cli.core.batch import BatchInterrupted

    try:
        yield
    except BatchInterrupted as e:
        err_console().print(
            f"interrupted: {e.summary.count('done')} done, {e.remaining} left; re-run the same command to finish",
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None


def _stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def check_stdout(output: str, force: bool) -> None:
    """Refuses to write image bytes to a terminal (they would garble it) unless forced."""
    if output == STREAM and _stdout_is_terminal() and not force:
        fail("refusing to write image data to a terminal; redirect stdout (> file.png), pipe it, or pass --force")


def run_stream(input: str, output: str, encode, default_ext: str) -> None:
    """One image through stdin and/or stdout: ``encode(decoded_image, ext) -> bytes``.

    The output format is the output file's extension, else ``default_ext``.
    """
    from dcmp_cli.atomic import write_bytes_atomic
    from dcmp_cli.data.image_io import ImageReadError, decode_image

    if input == STREAM:
        data = sys.stdin.buffer.read()
    elif Path(input).is_file():
        data = Path(input).read_bytes()
    else:
        fail(f"with - as OUTPUT, INPUT must be one image file; {input} is not a file")
    ext = Path(output).suffix.lower() if output != STREAM and Path(output).suffix else default_ext
    try:
        encoded = encode(decode_image(data), ext)
    except (ImageReadError, ValueError) as e:
        fail(f"{'stdin' if input == STREAM else input}: {e}")
    if output == STREAM:
        sys.stdout.buffer.write(encoded)
        sys.stdout.buffer.flush()
    else:
        write_bytes_atomic(Path(output), encoded)
