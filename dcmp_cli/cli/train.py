"""`dcmp train`: DCMPNet's dual-task mutual-promotion training, resumable, on one or several devices."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from dcmp_cli.cli.common import EXIT_FAILED_ITEMS, JsonOption, err_console, fail, note, print_json
from dcmp_cli.training.events import RunInfo, TrainEvents


class RichTrainEvents(TrainEvents):
    """Progress bar with ETA and the latest losses; plain log lines when stderr is not a terminal.

    Its rich Progress is ``self.bar`` (``progress`` is one of the training events).
    """

    def __init__(self, enabled: bool) -> None:
        console = err_console()
        self.console = console
        self.live = enabled and console.is_terminal
        self.quiet = not enabled
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[losses]}"),
            console=console,
            disable=not self.live,
        )
        self.task: TaskID | None = None
        self.check: TaskID | None = None

    def __enter__(self) -> RichTrainEvents:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)  # type: ignore[arg-type]

    def _print(self, text: str) -> None:
        if not self.quiet:
            self.bar.console.print(text, soft_wrap=True, highlight=False)

    # TrainEvents
    def data_check(self, what: str, done: int, total: int) -> None:
        if not self.live:
            return
        if self.check is None:
            self.check = self.bar.add_task(f"checking {what} pairs", total=total, losses="")
        self.bar.update(self.check, completed=done, total=total, description=f"checking {what} pairs")
        if done == total:
            self.bar.remove_task(self.check)
            self.check = None

    def started(self, info: RunInfo) -> None:
        resumed = f", resuming at iteration {info.start_step}" if info.start_step else ""
        val = f", {info.val_pairs} validation pairs" if info.val_pairs else ", no validation (no --val-data)"
        self._print(
            f"training {info.total_steps} iterations ({info.epochs} epoch{'s' if info.epochs != 1 else ''} of "
            f"{info.steps_per_epoch}) on "
            f"{info.train_pairs} pairs{val}; {info.device}, {info.precision}"
            + (f", {info.world_size} processes" if info.world_size > 1 else "")
            + f"; depth targets: {info.depth_source}; contrastive: {'on' if info.contrastive else 'off'}{resumed}"
        )
        if info.hazy is not None:
            self._print(f"validation inputs (hazy) score PSNR {info.hazy[0]:.2f} dB, SSIM {info.hazy[1]:.4f}")
        self.task = self.bar.add_task("train", total=info.total_steps, completed=info.start_step, losses="")

    def progress(self, step: int, total: int, losses: Mapping[str, float] | None) -> None:
        if self.task is not None and self.live:
            text = f"dehaze {losses['dehaze']:.4f} depth {losses['depth']:.4f}" if losses else ""
            self.bar.update(self.task, completed=step, losses=text)

    def logged(self, row: Mapping[str, Any]) -> None:
        if not self.live:
            self._print(
                f"iteration {row['step']} epoch {row['epoch']:.2f}: loss dehaze {row['loss_dehaze']:.4f} depth "
                f"{row['loss_depth']:.4f}, lr {row['lr_dehaze']:.2e}, {row['images_per_s']:.2f} images/s"
            )

    def validated(self, row: Mapping[str, Any]) -> None:
        self._print(
            f"validation at iteration {row['step']}: PSNR {row['psnr']:.2f} dB, SSIM {row['ssim']:.4f} "
            f"({row['images']} images; hazy input {row['hazy_psnr']:.2f} dB; best {row['best_psnr']:.2f} dB)"
        )

    def saved(self, kind: str, folder: Path) -> None: ...

    def note(self, message: str) -> None:
        if not self.quiet:
            self.bar.console.print(f"[dim]note:[/] {message}", soft_wrap=True)


def _summary(result: Any) -> None:
    table = Table(title="dcmp train", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row(
        "iterations", f"{result.step} of {result.total_steps}" + (" (interrupted)" if result.interrupted else "")
    )
    if result.last_val:
        v = result.last_val
        table.add_row(
            "validation", f"PSNR {v['psnr']:.2f} dB, SSIM {v['ssim']:.4f} (hazy input {v['hazy_psnr']:.2f} dB)"
        )
    if result.best_psnr is not None:
        table.add_row("best", f"{result.best_psnr:.2f} dB in {result.best_dir}")
    table.add_row("last", str(result.last_dir))
    err_console().print(table)


def _result_json(result: Any) -> dict[str, Any]:
    return {
        "command": "train",
        "run_dir": str(result.run_dir),
        "step": result.step,
        "total_steps": result.total_steps,
        "interrupted": result.interrupted,
        "best_psnr": result.best_psnr,
        "last_val": result.last_val,
        "last": str(result.last_dir),
        "best": str(result.best_dir) if result.best_dir else None,
        "fingerprints": list(result.fingerprints),
    }


#: What to do about a config error, in options, by the config key at fault.
CONFIG_HINTS = {
    "data": "give --data DIR",
    "depth_teacher": "give --depth-teacher FILE",
    "batch_size": "choose --batch-size accordingly",
}
#: What to do about a run-folder problem, in options.
RUN_FOLDER_HINTS = {
    "exists": "--resume continues it; --out names another folder",
    "nothing_to_resume": "drop --resume to start one",
    "recipe_changed": "--out names another folder",
}


def _message(error: Exception) -> str:
    """A library error's message, with the option that sets the value at fault where there is one."""
    from dcmp_cli.training.config import ConfigError
    from dcmp_cli.training.run_folder import RunFolderError
    from dcmp_cli.training.teacher import TeacherError

    message = str(error)
    if isinstance(error, ConfigError) and error.key in CONFIG_HINTS:
        return f"{message}; {CONFIG_HINTS[error.key]}"
    if isinstance(error, RunFolderError) and error.problem in RUN_FOLDER_HINTS:
        return f"{message} ({RUN_FOLDER_HINTS[error.problem]})"
    if isinstance(error, TeacherError) and error.needs_trust:
        return f"{message}. To load it anyway, pass --trust-teacher-code"
    return message


def train_cli(
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="Run folder: config, metrics, last/ and best/ checkpoints.", show_default=False
        ),
    ],
    data: Annotated[
        Path | None,
        typer.Option(
            "--data", help="Training pairs: hazy/ + GT/ [+ depth/] (the layouts `dcmp eval` reads).", show_default=False
        ),
    ] = None,
    val_data: Annotated[
        Path | None,
        typer.Option(
            "--val-data", help="Validation pairs, scored every epoch under the evaluation protocol.", show_default=False
        ),
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(
            "--preset", help="dcmpnet (published) or dcmpnet-tiny (CPU try-outs). Default: dcmpnet.", show_default=False
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="TOML / JSON / YAML file with any hyper-parameter (see configs/dcmpnet.toml).",
            show_default=False,
        ),
    ] = None,
    epochs: Annotated[
        int | None,
        typer.Option(
            "--epochs", help="Training epochs (default 600, the published recipe).", min=1, show_default=False
        ),
    ] = None,
    iters: Annotated[
        int | None, typer.Option("--iters", help="Training iterations instead of epochs.", min=1, show_default=False)
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option("--batch-size", "-b", help="Global batch size (default 8).", min=1, show_default=False),
    ] = None,
    patch_size: Annotated[
        int | None,
        typer.Option("--patch-size", help="Training crop side (default 256).", min=16, show_default=False),
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option("--lr", help="Learning rate of both networks (default 1e-4).", min=0, show_default=False),
    ] = None,
    device: Annotated[
        str | None,
        typer.Option(
            "--device",
            "-d",
            metavar="DEVICE",
            help="auto, cpu, cuda, cuda:N or mps (default auto; under torchrun cuda:LOCAL_RANK).",
            show_default=False,
        ),
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option("--precision", help="auto (fp16 on CUDA, else fp32), fp32, fp16 or bf16.", show_default=False),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out exactly from its last/ checkpoint.")
    ] = False,
    depth_teacher: Annotated[
        Path | None,
        typer.Option(
            "--depth-teacher",
            help="Depth targets from this model instead of depth/ or the pair-derived estimate: a depth checkpoint, "
            "or a torch.export .pt2 / TorchScript program (needs --trust-teacher-code).",
            show_default=False,
        ),
    ] = None,
    trust_teacher_code: Annotated[
        bool,
        typer.Option(
            "--trust-teacher-code",
            help="Allow a --depth-teacher that is a program (torch.export .pt2, TorchScript). Loading such a file can "
            "run arbitrary code on this machine: only for files you made or whose source you trust.",
        ),
    ] = False,
    vgg_weights: Annotated[
        Path | None,
        typer.Option(
            "--vgg-weights",
            help="VGG19 weights (torchvision's vgg19-dcbb9e9d.pth) for the contrastive regulariser; off without.",
            show_default=False,
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", help="Data-loading processes (default 4).", min=0, show_default=False)
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Random seed (default 0).", min=0, show_default=False)
    ] = None,
    set_values: Annotated[
        list[str] | None,
        typer.Option("--set", help="Any config value, e.g. --set w_depth_weighted=2 (repeatable).", show_default=False),
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Train DCMPNet's dehazing and depth networks together (difference perception both ways).

    Writes config.json, metrics.jsonl, last/ and best/ into --out; the checkpoints work as --weights.

    Ctrl-C saves last/ and stops; --resume continues exactly.

    Several GPUs or machines: torchrun --nproc_per_node N -m dcmp_cli train ...
    """
    from dcmp_cli.core.checkpoint import CheckpointError
    from dcmp_cli.core.device import DeviceError
    from dcmp_cli.data.datasets import DatasetError
    from dcmp_cli.signals import StopSignal, stop_on_signals
    from dcmp_cli.training.config import ConfigError, resolve_train_config
    from dcmp_cli.training.run_folder import RunFolderError
    from dcmp_cli.training.teacher import TeacherError
    from dcmp_cli.training.trainer import NonFiniteLossError, train
    from dcmp_cli.training.vgg import VGGWeightsError

    rank = int(os.environ.get("RANK", "0"))  # set by torchrun; only rank 0 prints and writes
    main = rank == 0
    options: dict[str, Any] = {
        "data": data,
        "val_data": val_data,
        "preset": preset,
        "epochs": epochs,
        "iters": iters,
        "batch_size": batch_size,
        "patch_size": patch_size,
        "lr_dehaze": lr,
        "lr_depth": lr,
        "device": device,
        "precision": precision,
        "depth_teacher": depth_teacher,
        "trust_teacher_code": True if trust_teacher_code else None,
        "vgg_weights": vgg_weights,
        "num_workers": workers,
        "seed": seed,
    }
    if epochs is not None and iters is not None:
        fail("give --epochs or --iters, not both")
    try:
        resolved = resolve_train_config(config, options, set_values or [])
    except ConfigError as e:
        fail(_message(e))

    stop = StopSignal()
    with (
        RichTrainEvents(enabled=main and not json_out) as events,
        stop_on_signals(
            stop,
            lambda signum: events.note("stopping after this iteration (saving last/); press Ctrl-C again to abort"),
        ),
    ):
        try:
            result = train(resolved, out, resume, events, stop)
        except (
            ConfigError,
            DatasetError,
            DeviceError,
            RunFolderError,
            VGGWeightsError,
            TeacherError,
            CheckpointError,
        ) as e:
            fail(_message(e) if main else f"[rank {rank}] {_message(e)}")
        except NonFiniteLossError as e:
            fail(str(e) if main else f"[rank {rank}] {e}", EXIT_FAILED_ITEMS)
    if not main:
        return
    if json_out:
        print_json(_result_json(result))
    else:
        _summary(result)
    if result.interrupted:
        note(f"interrupted at iteration {result.step}; continue with: dcmp train --out {out} --resume")
        raise typer.Exit(130)
