"""The dual-task training loop of DCMPNet (`dcmp train`): :func:`train`.

A run is put together from one module per job:

* :mod:`~dcmp_cli.training.config`: the recipe (:class:`TrainConfig`) and how options merge;
* :mod:`~dcmp_cli.training.run_folder`: the run folder's layout and the rules for a new run
  or a resumed one; :mod:`~dcmp_cli.training.atomic_folder`: ``last/`` and ``best/`` written
  as units; :mod:`~dcmp_cli.training.state`: the training state and RNG states;
* :mod:`~dcmp_cli.training.data`: checked pairs, crops, resumable sampling;
* :mod:`~dcmp_cli.training.model`: :class:`DualTaskModel`, both networks with their
  optimisers, cosine schedules, gradient scaler and losses, one ``step`` per batch;
* :mod:`~dcmp_cli.training.validation`: scores under the evaluation protocol;
* :mod:`~dcmp_cli.signals`: Ctrl-C saves ``last/`` and stops;
* :mod:`~dcmp_cli.training.metrics_log`, :mod:`~dcmp_cli.training.events`: what the run reports.

Run length: ``iters`` iterations, or ``epochs`` × (pairs // batch) iterations. The
cosine schedule (lr → lr·lr_min_ratio) is stepped per iteration by default; the
authors step it per epoch (``schedule_unit = "epoch"``).
"""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch
from torch.utils.data import DataLoader

from dcmp_cli.core.device import Precision, check_precision
from dcmp_cli.data.datasets import DatasetError, PairedDataset, discover_pairs
from dcmp_cli.metrics import Protocol
from dcmp_cli.signals import StopSignal, stop_on_signals
from dcmp_cli.training import distributed as D
from dcmp_cli.training.atomic_folder import write_folder_atomic
from dcmp_cli.training.config import ConfigError, ResolvedConfig, TrainConfig
from dcmp_cli.training.data import (
    DataCheckError,
    EpochBatchSampler,
    TrainPairs,
    ValPairs,
    check_pairs,
    shard,
    worker_init,
)
from dcmp_cli.training.events import RunInfo, TrainEvents, TrainResult
from dcmp_cli.training.losses import ContrastiveLoss
from dcmp_cli.training.metrics_log import LossWindow, MetricsLog
from dcmp_cli.training.model import DualTaskModel, StepResult, create_networks
from dcmp_cli.training.run_folder import STATE_NAME, RunFolderError, RunPaths, prepare_run, write_json
from dcmp_cli.training.state import capture_rng, load_state, restore_rng, save_state
from dcmp_cli.training.teacher import DepthTeacher, load_teacher
from dcmp_cli.training.validation import hazy_scores, network_scores
from dcmp_cli.training.vgg import load_vgg19


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; the message names the step and the loss."""


def train(
    config: TrainConfig | ResolvedConfig | None,
    out: str | os.PathLike,
    resume: bool = False,
    events: TrainEvents | None = None,
    stop: StopSignal | None = None,
) -> TrainResult:
    """Trains a new run in the folder ``out``, or with ``resume`` continues the run there exactly.

    ``config``: the recipe. A :class:`TrainConfig` counts as given in full; a
    :class:`ResolvedConfig` (from :func:`~dcmp_cli.training.config.resolve_train_config`,
    as `dcmp train` makes it) carries which values the user set. When resuming, the
    saved recipe is kept and the config may change only where and how the run goes on
    (device, data location, logging; see ``RESUMABLE_CHANGES``); ``None`` resumes with
    the saved config as it is. ``events`` receives progress (rank 0 only); setting
    ``stop`` (for example from :func:`stop_on_signals`) ends the run after the current
    iteration with ``last/`` saved and ``interrupted`` set in the result.

    Under ``torchrun`` every process calls this; rank 0 writes the run folder.
    Raises ConfigError, DatasetError (DataCheckError), DeviceError, RunFolderError,
    NonFiniteLossError, VGGWeightsError or TeacherError with one-line messages.

    Example::

        from dcmp_cli.training import TrainConfig, train

        config = TrainConfig(data="pairs", val_data="val", preset="dcmpnet-tiny", iters=200, device="cpu")
        result = train(config, "runs/tiny")             # a new run in runs/tiny
        print(result.step, result.best_psnr, result.last_dir)
        train(config, "runs/tiny", resume=True)          # continue it after an interruption
    """
    if isinstance(config, ResolvedConfig):
        config = prepare_run(out, config.config, resume, config.given)
    else:
        config = prepare_run(out, config, resume)
    ctx = D.setup(config.device)
    deterministic = torch.are_deterministic_algorithms_enabled()
    deterministic_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    benchmark = torch.backends.cudnn.benchmark
    try:
        run = _Run(config, RunPaths(Path(out)), resume, events or TrainEvents(), stop or StopSignal(), ctx)
        return run.loop()
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=deterministic_warn)
        torch.backends.cudnn.benchmark = benchmark
        D.teardown(ctx)


# --- set-up --------------------------------------------------------------------------------------


def _resolve_precision(config: TrainConfig, device: torch.device) -> Precision:
    precision = config.precision
    if precision == "auto":
        precision = "fp16" if device.type == "cuda" else "fp32"
    return check_precision(precision, device)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


DepthMode = Literal["folder", "pair", "teacher"]


def _depth_mode(config: TrainConfig, dataset: PairedDataset) -> DepthMode:
    """'folder', 'pair' or 'teacher' for this config and dataset."""
    source = config.depth_source
    if source == "teacher" and not config.depth_teacher:
        raise ConfigError("depth_source = teacher needs a depth teacher file (depth_teacher)", "depth_teacher")
    if source == "folder" and dataset.depth_dir is None:
        raise DatasetError(f"depth_source = folder, but {dataset.root} has no depth/ folder")
    if source == "auto":
        if config.depth_teacher:
            return "teacher"
        return "folder" if dataset.depth_dir is not None else "pair"
    return cast(DepthMode, source)  # the config only admits auto, folder, pair and teacher


def _check_dataset(
    dataset: PairedDataset,
    patch_size: int,
    mode: str,
    require_depth: bool,
    ctx: D.DistContext,
    events: TrainEvents,
    what: str,
    workers: int,
) -> None:
    """Every process checks its share; one error lists every problem found."""
    indices = shard(len(dataset.pairs), ctx.rank, ctx.world_size)
    progress = (lambda done, total: events.data_check(what, done, total)) if ctx.is_main else None
    problems = check_pairs(dataset, patch_size, mode, indices, progress, workers, require_depth)
    merged = list(dict.fromkeys(p for part in D.all_gather(problems, ctx) for p in part))
    if merged:
        raise DataCheckError(dataset.root, merged, len(dataset.pairs) + len(dataset.unmatched))


class _Run:
    """One training run in one process (one of several under torchrun): set-up, bookkeeping, the loop."""

    def __init__(
        self,
        config: TrainConfig,
        paths: RunPaths,
        resume: bool,
        events: TrainEvents,
        stop: StopSignal,
        ctx: D.DistContext,
    ) -> None:
        c = self.config = config
        self.paths = paths
        self.resume = resume
        self.ctx = ctx
        self.events = events if ctx.is_main else TrainEvents()
        self.stop = stop
        self.device = ctx.device
        self.precision = _resolve_precision(config, self.device)
        self.metrics = MetricsLog(paths.metrics)
        self.tb: Any = None
        self.step = 0
        self.best_psnr: float | None = None
        self.skipped = 0
        self.last_val: dict[str, Any] | None = None
        self.saved_step = self.validated_step = -1

        if not c.data:
            raise ConfigError("no training data: the config names no dataset folder (data)", "data")
        if c.batch_size % ctx.world_size:
            raise ConfigError(
                f"batch size {c.batch_size} is the global batch and must divide evenly over the "
                f"{ctx.world_size} training processes",
                "batch_size",
            )
        if ctx.is_main:
            paths.recover()  # a checkpoint write cut short by a killed process
        D.barrier(ctx)
        if c.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        _seed_everything(c.seed)
        # The networks first, right after seeding: their initialisation depends on the seed alone.
        dehaze, depth = create_networks(c.preset, self.device)

        # Then every file the run needs, cheapest checks first, before any long data check.
        self.train_set = discover_pairs(c.data)
        val_set = discover_pairs(c.val_data) if c.val_data else None
        self.depth_mode = _depth_mode(c, self.train_set)
        contrastive: ContrastiveLoss | None = None
        if c.w_contrastive > 0:
            if c.vgg_weights:
                contrastive = ContrastiveLoss(load_vgg19(c.vgg_weights, c.vgg_imagenet_normalize).to(self.device))
            else:
                self.events.note(
                    "contrastive regulariser off: no VGG19 weights given (vgg_weights); nothing is downloaded"
                )
        teacher: DepthTeacher | None = None
        if self.depth_mode == "teacher":
            teacher = load_teacher(
                c.depth_teacher, self.device, c.teacher_input, c.teacher_output, trust_code=c.trust_teacher_code
            )

        workers = max(1, c.num_workers)
        _check_dataset(
            self.train_set, c.patch_size, c.data_check, self.depth_mode == "folder", ctx, self.events, "train", workers
        )
        self.val_pairs: ValPairs | None = None
        if val_set is not None:
            _check_dataset(val_set, 1, c.data_check, False, ctx, self.events, "val", workers)
            self.val_pairs = ValPairs(
                val_set.pairs[: c.val_max_images] if c.val_max_images else val_set.pairs, c.val_crop
            )

        try:
            self.sampler = EpochBatchSampler(len(self.train_set.pairs), c.batch_size, c.seed, ctx.rank, ctx.world_size)
        except ValueError as e:
            raise DatasetError(f"{self.train_set.root}: {e}; lower the batch size") from None
        self.steps_per_epoch = self.sampler.batches_per_epoch
        self.total_steps = c.iters if c.iters > 0 else c.epochs * self.steps_per_epoch
        self.total_epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        cache = paths.depth_cache if c.depth_cache and self.depth_mode == "pair" else None
        dataset = TrainPairs(
            self.train_set.pairs,
            c.patch_size,
            c.seed,
            c.edge_decay,
            c.only_h_flip,
            "none" if self.depth_mode == "teacher" else self.depth_mode,
            c.depth_folder_convention,
            cache,
        )
        self.loader = DataLoader(
            dataset,
            batch_sampler=self.sampler,
            num_workers=c.num_workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=c.num_workers > 0,
            worker_init_fn=worker_init,
        )
        horizon = self.total_steps if c.schedule_unit == "iteration" else self.total_epochs
        self.model = DualTaskModel(dehaze, depth, c, ctx, self.precision, horizon, contrastive, teacher)

        if resume:
            self._restore(load_state(paths.state))
        if ctx.is_main:
            paths.root.mkdir(parents=True, exist_ok=True)
            write_json(paths.config, c.to_dict())
            if resume:
                self.metrics.truncate_after(self.step)
            self._open_tensorboard()
        D.barrier(ctx)

    def _open_tensorboard(self) -> None:
        if not self.config.tensorboard:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self.events.note("TensorBoard is not installed: metrics go to metrics.jsonl only")
            return
        self.tb = SummaryWriter(log_dir=str(self.paths.tensorboard), purge_step=self.step + 1 if self.resume else None)

    # --- state and checkpoints ----------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "preset": self.config.preset,
            "pairs": len(self.train_set.pairs),
            "best_psnr": self.best_psnr,
            "skipped": self.skipped,
            "last_val": json.dumps(self.last_val),
            **self.model.state_dict(),
            "rng": capture_rng(self.device),
            "config": json.dumps(self.config.to_dict()),
        }

    def _restore(self, state: Mapping[str, Any]) -> None:
        pairs = len(self.train_set.pairs)
        if state["preset"] != self.config.preset:
            raise RunFolderError(
                f"{self.paths.state} holds preset {state['preset']}, the config says {self.config.preset}", "state"
            )
        if state["pairs"] != pairs:
            raise RunFolderError(
                f"the training set now has {pairs} pairs; the run started with {state['pairs']}, so its data order "
                "cannot be continued. Restore the dataset or start a new run",
                "state",
            )
        self.model.load_state_dict(state)
        restore_rng(state["rng"], self.device)
        self.step = int(state["step"])
        self.best_psnr = state["best_psnr"]
        self.skipped = int(state["skipped"])
        self.last_val = json.loads(state["last_val"])
        self.saved_step = self.validated_step = self.step
        if self.step >= self.total_steps:
            self.events.note(f"the run had already finished ({self.step} of {self.total_steps} iterations)")

    def _write_unit(self, folder: Path, extra: Mapping[str, Any], with_state: bool, best: dict | None = None) -> None:
        """Both networks (+ the training state, + best.json) into ``folder``, replaced as one unit."""
        epoch = round(self.step / self.steps_per_epoch, 4)
        common = {"trainer": "dcmp train", "step": self.step, "epoch": epoch, **extra}
        trained_on = f"{self.train_set.root.resolve()} ({len(self.train_set.pairs)} pairs)"

        def write(unit: Path) -> None:
            self.model.export(unit, trained_on, common)
            if with_state:
                save_state(unit / STATE_NAME, self._state())
            if best is not None:
                write_json(unit / "best.json", best)

        write_folder_atomic(folder, write)

    def save_last(self) -> None:
        """Writes last/ (both networks and the full state, as one unit) on rank 0; all processes wait for it."""
        if self.saved_step == self.step:
            return
        self.model.broadcast_buffers()
        if self.ctx.is_main:
            self._write_unit(self.paths.last, {}, with_state=True)
            self.events.saved("last", self.paths.last)
        self.saved_step = self.step
        D.barrier(self.ctx)

    # --- validation and logging -----------------------------------------------------------------

    def hazy_scores(self) -> tuple[float, float] | None:
        if self.val_pairs is None:
            return None
        scores = hazy_scores(self.val_pairs, cast(Protocol, self.config.protocol), self.ctx)
        return scores.psnr, scores.ssim

    def validate(self, hazy: tuple[float, float] | None) -> dict[str, Any] | None:
        if self.val_pairs is None or self.validated_step == self.step:
            return None
        scores = network_scores(
            self.model.dehaze_net,
            self.val_pairs,
            cast(Protocol, self.config.protocol),
            self.ctx,
            self.device,
            self.precision,
        )
        row: dict[str, Any] = {
            "type": "val",
            "step": self.step,
            "epoch": round(self.step / self.steps_per_epoch, 4),
            "psnr": scores.psnr,
            "ssim": scores.ssim,
            "hazy_psnr": hazy[0] if hazy else None,
            "hazy_ssim": hazy[1] if hazy else None,
            "images": scores.images,
            "protocol": self.config.protocol,
            "seconds": round(scores.seconds, 2),
        }
        self.validated_step = self.step
        self.last_val = row
        improved = self.best_psnr is None or row["psnr"] > self.best_psnr
        if improved:
            self.best_psnr = row["psnr"]
        row["best_psnr"] = self.best_psnr
        if self.ctx.is_main:
            self.metrics.append(row)
            if self.tb is not None:
                self.tb.add_scalar("val/psnr", row["psnr"], self.step)
                self.tb.add_scalar("val/ssim", row["ssim"], self.step)
            self.events.validated(row)
        if improved:
            self.model.broadcast_buffers()
            if self.ctx.is_main:
                extra = {"val_psnr": row["psnr"], "val_ssim": row["ssim"], "protocol": row["protocol"]}
                self._write_unit(self.paths.best, extra, with_state=False, best=row)
                self.events.saved("best", self.paths.best)
            D.barrier(self.ctx)
        return row

    def log(self, window: LossWindow) -> None:
        lr_dehaze, lr_depth = self.model.learning_rates
        row = {
            "type": "train",
            "step": self.step,
            "epoch": round(self.step / self.steps_per_epoch, 4),
            **{k: round(v, 6) for k, v in window.means().items()},
            "lr_dehaze": lr_dehaze,
            "lr_depth": lr_depth,
            "images_per_s": round(window.count * self.config.batch_size / max(window.seconds(), 1e-9), 3),
            "skipped": self.skipped,
        }
        if self.ctx.is_main:
            self.metrics.append(row)
            if self.tb is not None:
                for key in ("loss_dehaze", "loss_depth", "lr_dehaze", "lr_depth", "images_per_s"):
                    self.tb.add_scalar(f"train/{key}", row[key], self.step)
            self.events.logged(row)

    def skip_or_stop(self, result: StepResult, epoch: int) -> None:
        """A non-finite loss: skip the batch (noted) or raise :class:`NonFiniteLossError`, as the config says."""
        losses = (("dehazing", result.dehaze), ("depth", result.depth))
        bad = [name for name, value in losses if not math.isfinite(value)]
        step = self.step + 1
        detail = ", ".join(f"{k}={v:.4g}" for k, v in result.parts.items())
        message = (
            f"non-finite {' and '.join(bad)} loss at iteration {step} (epoch {epoch + 1}); terms on this process: "
            f"{detail}"
        )
        if self.config.nonfinite == "stop" or self.skipped >= self.config.max_skipped_batches:
            saved = f"last/ holds iteration {self.saved_step}" if self.saved_step > 0 else "no checkpoint was written"
            raise NonFiniteLossError(
                f"{message}. Stopped without saving this step ({saved}). Lower the learning rate, train in fp32/bf16, "
                'check the data, or set nonfinite = "skip"'
            )
        self.skipped += 1
        if self.ctx.is_main:
            self.metrics.append({"type": "note", "step": step, "message": f"skipped batch: {message}"})
        self.events.note(f"skipped batch: {message}")

    def batches(self) -> Iterator[tuple[int, Mapping[str, torch.Tensor]]]:
        """(epoch, batch) from the current step to the end of the run."""
        start_epoch, start_batch = divmod(self.step, self.steps_per_epoch)
        for epoch in range(start_epoch, self.total_epochs):
            self.sampler.set_epoch(epoch, start_batch if epoch == start_epoch else 0)
            for batch in self.loader:
                yield epoch, batch

    # --- the loop ---------------------------------------------------------------------------------

    def loop(self) -> TrainResult:
        c = self.config
        hazy = self.hazy_scores()
        self.events.started(
            RunInfo(
                self.paths.root,
                self.step,
                self.total_steps,
                self.steps_per_epoch,
                self.total_epochs,
                len(self.train_set.pairs),
                len(self.val_pairs) if self.val_pairs else 0,
                str(self.device),
                self.precision,
                self.ctx.world_size,
                self.depth_mode,
                self.model.contrastive is not None,
                hazy,
            )
        )
        interrupted = False
        window = LossWindow()
        if self.step < self.total_steps:
            for epoch, batch in self.batches():
                result = self.model.step(batch, self.stop)
                if result.finite:
                    window.add({"loss_dehaze": result.dehaze, "loss_depth": result.depth, **result.parts})
                else:
                    self.skip_or_stop(result, epoch)
                self.step += 1
                self.model.iteration_done()
                self.events.progress(self.step, self.total_steps, {"dehaze": result.dehaze, "depth": result.depth})
                if self.step % c.log_every == 0 or self.step == self.total_steps:
                    if window.count:
                        self.log(window)
                    window = LossWindow()
                if self.step % self.steps_per_epoch == 0:
                    self.model.epoch_done()
                    if c.val_every and (self.step // self.steps_per_epoch) % c.val_every == 0:
                        self.validate(hazy)
                    self.save_last()
                if c.val_every_iters and self.step % c.val_every_iters == 0:
                    self.validate(hazy)
                if c.checkpoint_every_iters and self.step % c.checkpoint_every_iters == 0:
                    self.save_last()
                # Under torchrun the processes agree on stopping through the step's reduction;
                # alone, a request that came during this iteration is honoured now.
                if (result.stop or (not self.ctx.distributed and self.stop.is_set())) and self.step < self.total_steps:
                    interrupted = True
                    break
                if self.step >= self.total_steps:
                    break
        if not interrupted:
            self.validate(hazy)
        self.save_last()
        if self.tb is not None:
            self.tb.close()
        prints = tuple(D.all_gather(self.model.fingerprint(), self.ctx))
        if len(set(prints)) > 1:
            self.events.note(f"the {len(prints)} processes ended with different weights; last/ holds rank 0's")
        return TrainResult(
            self.paths.root,
            self.step,
            self.total_steps,
            interrupted,
            self.best_psnr,
            self.last_val,
            self.paths.last,
            self.paths.best if self.best_psnr is not None else None,
            prints,
        )


__all__ = [
    "NonFiniteLossError",
    "RunInfo",
    "StopSignal",
    "TrainEvents",
    "TrainResult",
    "stop_on_signals",
    "train",
]
