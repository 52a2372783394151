"""The `dcmp` Typer application: one sub-command per module."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from typing import Annotated

import typer
from typer.core import TyperCommand

from dcmp_cli import __version__
from dcmp_cli.cli.common import EXIT_INTERRUPTED, EXIT_USAGE, err_console
from dcmp_cli.cli.dehaze import dehaze_cli
from dcmp_cli.cli.depth import depth_cli
from dcmp_cli.cli.eval import eval_cli
from dcmp_cli.cli.info import info_cli
from dcmp_cli.cli.synth import synth_cli
from dcmp_cli.cli.train import train_cli
from dcmp_cli.cli.video import video_cli

app = typer.Typer(
    name="dcmp",
    help="Dehaze photos and videos with DCMPNet (CVPR 2024), evaluate and train dehazing models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
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
        int | None,
        typer.Option("--threads", help="CPU threads for the networks (default: PyTorch's, one per core).", min=1),
    ] = None,
) -> None:
    """Dehaze photos and videos with DCMPNet (CVPR 2024), evaluate and train dehazing models."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


class _Command(TyperCommand):
    """Usage lines name positional arguments plainly: ``dcmp dehaze [OPTIONS] INPUT OUTPUT``."""

    def collect_usage_pieces(self, ctx: typer.Context) -> list[str]:  # type: ignore[override]
        return [p[1:-1] if p.startswith("{") and p.endswith("}") else p for p in super().collect_usage_pieces(ctx)]


#: Command -> (function, one line for `dcmp --help`), in workflow order.
COMMANDS: dict[str, tuple[Callable[..., None], str]] = {
    "dehaze": (dehaze_cli, "Dehaze images: DCMPNet, or the weight-free default without weights."),
    "depth": (depth_cli, "Relative depth maps of hazy (or clear) images."),
    "video": (video_cli, "Dehaze videos or folders of frames, without flicker."),
    "eval": (eval_cli, "PSNR/SSIM of dehazing models on paired datasets (paper protocols)."),
    "synth": (synth_cli, "Make a paired hazy/clear dataset with the scattering model."),
    "train": (train_cli, "Train DCMPNet's dehazing and depth networks together."),
    "info": (info_cli, "Which weights would be used, or what a checkpoint holds."),
}
for _name, (_function, _short) in COMMANDS.items():
    app.command(_name, cls=_Command, short_help=_short)(_function)

#: Global options, which go before the command name.
GLOBAL_OPTIONS = ("--threads", "--version", "-V")
#: Commands whose INPUT and OUTPUT are positional (``-i``/``-o`` are habits from other tools).
_POSITIONAL_IO = ("dehaze", "depth", "video")


def misplaced_option_hint(argv: list[str]) -> str | None:
    """A one-line hint for options used where dcmp does not take them, else None."""
    command = next((i for i, a in enumerate(argv) if a in COMMANDS), None)
    if command is None:
        return None
    after = argv[command + 1 :]
    for option in ("--threads",):
        if any(a == option or a.startswith(option + "=") for a in after):
            return f"{option} is a global option: put it before the command, e.g. dcmp {option} 4 {argv[command]} …"
    if argv[command] in _POSITIONAL_IO:
        for alias in ("-i", "--input", "-o", "--output"):
            if alias in after:
                return (
                    f"INPUT and OUTPUT are positional arguments, without {alias}: "
                    f"dcmp {argv[command]} INPUT OUTPUT [OPTIONS]"
                )
    return None


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM (batch schedulers, `kill`) unwinds like Ctrl-C, so temporary files are removed."""
    raise KeyboardInterrupt


def main() -> None:
    hint = misplaced_option_hint(sys.argv[1:])
    if hint is not None:
        err_console().print(f"[bold red]error:[/] {hint}", soft_wrap=True)
        raise SystemExit(EXIT_USAGE)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        app(standalone_mode=True)
    except KeyboardInterrupt:  # anything not handled by a command: the shell's convention
        raise SystemExit(EXIT_INTERRUPTED) from None
