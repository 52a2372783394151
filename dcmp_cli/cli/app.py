"""The `dcmp` Typer application: one sub-command per module."""

from __future__ import annotations

import signal
from typing import Annotated, Optional

import typer

from dcmp_cli import __version__
from dcmp_cli.cli.dehaze import dehaze_cli
from dcmp_cli.cli.depth import depth_cli
from dcmp_cli.cli.eval import eval_cli
from dcmp_cli.cli.info import info_cli
from dcmp_cli.cli.video import video_cli
from dcmp_cli.cli.synth import synth_cli
from dcmp_cli.cli.train import train_cli

app = typer.Typer(
    name="dcmp",
    help="Dehaze photos and videos with DCMPNet (CVPR 2024), evaluate and train dehazing models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dcmp {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", "-V", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    threads: Annotated[
        Optional[int],
        typer.Option("--threads", help="CPU threads for the networks (default: PyTorch's, one per core).", min=1),
    ] = None,
) -> None:
    """Dehaze photos and videos with DCMPNet (CVPR 2024), evaluate and train dehazing models."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


app.command("dehaze")(dehaze_cli)
app.command("depth")(depth_cli)
app.command("video")(video_cli)
app.command("eval")(eval_cli)
app.command("synth")(synth_cli)
app.command("train")(train_cli)
app.command("info")(info_cli)


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM (batch schedulers, `kill`) unwinds like Ctrl-C, so temporary files are removed."""
    raise KeyboardInterrupt


def main() -> None:
    signal.signal(signal.SIGTERM, _terminate)
    app()
