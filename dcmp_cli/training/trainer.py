"""The dual-task training loop of DCMPNet (`dcmp train`).

:func:`prepare_run` resolves the config for a run folder (a new run, or ``--resume``);
:func:`train` runs it: both networks, one optimiser and one cosine schedule each, the
summed losses of :mod:`dcmp_cli.training.losses` back-propagated together, mixed
precision, validation under the evaluation protocol, atomic ``last``/``best``
checkpoints, and an exact resume. Progress leaves through :class:`TrainEvents`.

Run length: ``iters`` iterations, or ``epochs`` × (pairs // batch) iterations. The
cosine schedule (lr → lr·lr_min_ratio) is stepped per iteration by default; the
authors step it per epoch (``schedule_unit = "epoch"``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from dcmp_cli.core.checkpoint import save_checkpoint
from dcmp_cli.core.device import autocast, check_precision
from dcmp_cli.core.predictor import DehazePredictor
from dcmp_cli.core.value_range import to_network_range
from dcmp_cli.data.datasets import DatasetError, PairedDataset, discover_pairs
from dcmp_cli.metrics import score
from dcmp_cli.models.dehaze_net import SIZE_MULTIPLE, DehazeNet
from dcmp_cli.models.registry import create_model, get_preset
from dcmp_cli.training import distributed as D
from dcmp_cli.training.config import ConfigError, TrainConfig, config_from_dict
from dcmp_cli.training.data import (
    DataCheckError,
    EpochBatchSampler,
    TrainPairs,
    ValPairs,
    check_pairs,
    shard,
    worker_init,
)
from dcmp_cli.training.losses import ContrastiveLoss, LossTerms, LossWeights, dual_task_loss
from dcmp_cli.training.state import (
    MetricsLog,
    RunFolderError,
    RunPaths,
    capture_rng,
    load_state,
    restore_rng,
    save_state,
    write_json,
)
from dcmp_cli.training.teacher import DepthTeacher, load_teacher
from dcmp_cli.training.vgg import load_vgg19

#: Config keys that may differ from the saved run on --resume: where and how it runs, what is
#: logged and validated, where the data now lives; not the recipe.
RESUMABLE_CHANGES = frozenset({
    "data", "val_data", "num_workers", "data_check", "val_crop", "val_max_images", "depth_cache",
    "device", "precision", "deterministic", "nonfinite", "max_skipped_batches",
    "log_every", "val_every", "val_every_iters", "checkpoint_every_iters", "protocol", "tensorboard",
})
#: Config keys holding file or folder paths (stored absolute in config.json).
PATH_KEYS = frozenset({"data", "val_data", "depth_teacher", "vgg_weights"})
#: Metadata convention of the depth checkpoints written here (see the README's "Conventions").
DEPTH_CONVENTION = "disparity"


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; the message names the step and the loss."""


class StopSignal:
    """Set from a signal handler (or any thread) to end training after the current iteration."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


@contextmanager
def stop_on_signals(stop: StopSignal, on_first: Any = None) -> Iterator[StopSignal]:
    """SIGINT/SIGTERM set ``stop`` (training saves ``last`` and ends); a second SIGINT interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()
        if on_first is not None:
            on_first(signum)

    for s in previous:
        signal.signal(s, handler)
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class TrainEvents:
    """Progress callbacks (rank 0 only). Override what you need; all default to nothing."""

    def data_check(self, what: str, done: int, total: int) -> None: ...

    def started(self, info: "RunInfo") -> None: ...

    def progress(self, step: int, total: int, losses: Mapping[str, float] | None) -> None: ...

    def logged(self, row: Mapping[str, Any]) -> None: ...

    def validated(self, row: Mapping[str, Any]) -> None: ...

    def saved(self, kind: str, folder: Path) -> None: ...

    def note(self, message: str) -> None: ...


@dataclass(frozen=True)
class RunInfo:
    run_dir: Path
    start_step: int
    total_steps: int
    steps_per_epoch: int
    epochs: int
    train_pairs: int
    val_pairs: int
    device: str
    precision: str
    world_size: int
    depth_source: str
    contrastive: bool
    hazy: tuple[float, float] | None


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    step: int
    total_steps: int
    interrupted: bool
    best_psnr: float | None
    last_val: dict[str, Any] | None
    last_dir: Path
    best_dir: Path | None
    #: SHA-256 of both networks' weights and buffers in every process, in rank order.
    fingerprints: tuple[str, ...] = ()


def fingerprint(*models: nn.Module) -> str:
    """SHA-256 over the raw bytes of every tensor in the models' state dicts."""
    digest = hashlib.sha256()
    for model in models:
        for name, tensor in model.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# --- config of a run folder ------------------------------------------------------------------


def prepare_run(run_dir: str | os.PathLike, config: TrainConfig, resume: bool, given: Mapping[str, Any]) -> TrainConfig:
    """The config to train with in ``run_dir``.

    A new run needs a folder without a run in it. With ``resume`` the saved config is
    used; ``given`` (the values set on the command line or in a config file) may change
    only :data:`RESUMABLE_CHANGES`.
    """
    paths = RunPaths(Path(run_dir))
    if not resume:
        if paths.holds_run():
            raise RunFolderError(
                f"{paths.root} already holds a training run; pass --resume to continue it, or choose another --out"
            )
        # Absolute paths, so that --resume works from any working directory.
        return config.with_values(**{k: str(Path(getattr(config, k)).expanduser().resolve())
                                     for k in PATH_KEYS if getattr(config, k)})
    if not paths.config.is_file():
        raise RunFolderError(f"nothing to resume in {paths.root}: no config.json (start a run there without --resume)")
    try:
        saved = config_from_dict(json.loads(paths.config.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, ConfigError) as e:
        raise RunFolderError(f"{paths.config} is unreadable: {e}") from None
    def same(key: str, value: Any) -> bool:
        if key in PATH_KEYS and value:
            return getattr(saved, key) == str(Path(value).expanduser().resolve())
        return getattr(saved, key) == value

    conflicts = [
        f"{k} ({getattr(saved, k)!r} in the run, {v!r} given)"
        for k, v in given.items()
        if k not in RESUMABLE_CHANGES and v is not None and not same(k, v)
    ]
    if conflicts:
        raise RunFolderError(
            "--resume continues the saved recipe; these differ from it: " + "; ".join(conflicts)
            + ". Start a new run (another --out) to change them"
        )
    changes = {k: v for k, v in given.items() if k in RESUMABLE_CHANGES and v is not None}
    changes.update({k: str(Path(v).expanduser().resolve()) for k, v in changes.items() if k in PATH_KEYS and v})
    return saved.with_values(**changes)


# --- the loop ------------------------------------------------------------------------------------


def _resolve_precision(config: TrainConfig, device: torch.device) -> str:
    precision = config.precision
    if precision == "auto":
        precision = "fp16" if device.type == "cuda" else "fp32"
    return check_precision(precision, device)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _depth_mode(config: TrainConfig, dataset: PairedDataset) -> str:
    """'folder', 'pair' or 'teacher' for this config and dataset."""
    source = config.depth_source
    if source == "teacher" and not config.depth_teacher:
        raise ConfigError("depth_source = teacher needs --depth-teacher FILE")
    if source == "folder" and dataset.depth_dir is None:
        raise DatasetError(f"depth_source = folder, but {dataset.root} has no depth/ folder")
    if source == "auto":
        if config.depth_teacher:
            return "teacher"
        return "folder" if dataset.depth_dir is not None else "pair"
    return source


def _check_dataset(
    dataset: PairedDataset, patch_size: int, mode: str, require_depth: bool, ctx: D.DistContext, events: TrainEvents,
    what: str, workers: int,
) -> None:
    """Every process checks its share; one error lists every problem found."""
    indices = shard(len(dataset.pairs), ctx.rank, ctx.world_size)
    progress = (lambda done, total: events.data_check(what, done, total)) if ctx.is_main else None
    problems = check_pairs(dataset, patch_size, mode, indices, progress, workers, require_depth)
    merged = list(dict.fromkeys(p for part in D.all_gather(problems, ctx) for p in part))
    if merged:
        raise DataCheckError(dataset.root, merged, len(dataset.pairs) + len(dataset.unmatched))


class _Window:
    """Averages of the logged quantities over the iterations since the last log row."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0
        self.start = time.perf_counter()

    def add(self, values: Mapping[str, float]) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += 1

    def means(self) -> dict[str, float]:
        return {k: v / max(1, self.count) for k, v in self.sums.items()}


def _pad_like_dehazer(x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[2:]
    pad_h, pad_w = (-h) % SIZE_MULTIPLE, (-w) % SIZE_MULTIPLE
    return F.pad(x, (0, pad_w, 0, pad_h), mode="reflect") if pad_h or pad_w else x


def clear_guides(model: DehazeNet, clear: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The dehazer's projected guide features of the clear images (B, C_s, H_s, W_s) at 1/4, 1/2 and full size.

    No gradient; the guide UNet's batch norms use the batch's statistics but update copies
    of their running statistics, so the model's own buffers are left as they are.
    """
    unet = model.guide_unet
    state = {**dict(unet.named_parameters()), **{k: b.clone() for k, b in unet.named_buffers()}}
    with torch.no_grad():
        g_quarter, g_half, g_full = torch.func.functional_call(unet, state, (_pad_like_dehazer(clear),))
        return model.guide_proj_quarter(g_quarter), model.guide_proj_half(g_half), model.guide_proj_full(g_full)


class Trainer:
    """One training run in one process (one of several under torchrun)."""

    def __init__(self, config: TrainConfig, run_dir: Path, resume: bool, events: TrainEvents, stop: StopSignal,
                 ctx: D.DistContext) -> None:
        self.config = config
        self.paths = RunPaths(Path(run_dir))
        self.resume = resume
        self.ctx = ctx
        self.events = events if ctx.is_main else TrainEvents()
        self.stop = stop
        self.device = ctx.device
        self.precision = _resolve_precision(config, self.device)
        self.metrics = MetricsLog(self.paths.metrics)
        self.tb: Any = None
        self.best_psnr: float | None = None
        self.skipped = 0
        self.step = 0
        self.last_val: dict[str, Any] | None = None
        self.saved_step = -1
        self.validated_step = -1

    # --- set-up -----------------------------------------------------------------------------

    def setup(self) -> None:
        c = self.config
        if not c.data:
            raise ConfigError("no training data: pass --data DIR (or set data in the config file)")
        if c.batch_size % self.ctx.world_size:
            raise ConfigError(
                f"batch size {c.batch_size} is the global batch and must divide evenly over the "
                f"{self.ctx.world_size} training processes"
            )
        if c.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        _seed_everything(c.seed)
        # The networks first, right after seeding: their initialisation depends on the seed alone.
        preset = get_preset(c.preset)
        self.model_kwargs = {"dehaze": preset.kwargs("dehaze"), "depth": preset.kwargs("depth")}
        dehaze = create_model(c.preset, "dehaze").to(self.device).train()
        depth = create_model(c.preset, "depth").to(self.device).train()
        self.dehaze = D.wrap(dehaze, self.ctx, c.sync_batchnorm)
        self.depth = D.wrap(depth, self.ctx, c.sync_batchnorm)

        # Then every file the run needs, cheapest checks first, before any long data check.
        self.train_set = discover_pairs(c.data)
        self.val_set = discover_pairs(c.val_data) if c.val_data else None
        self.depth_mode = _depth_mode(c, self.train_set)
        self.weights = LossWeights(c.w_restore, c.w_depth_consistency, c.w_contrastive, c.w_guide, c.w_depth,
                                   c.w_depth_weighted, c.weight_map_mean_one)
        self.contrastive: ContrastiveLoss | None = None
        if c.w_contrastive > 0:
            if c.vgg_weights:
                self.contrastive = ContrastiveLoss(load_vgg19(c.vgg_weights, c.vgg_imagenet_normalize).to(self.device))
            else:
                self.events.note("contrastive regulariser off: no --vgg-weights given (nothing is downloaded)")
        self.teacher: DepthTeacher | None = None
        if self.depth_mode == "teacher":
            self.teacher = load_teacher(c.depth_teacher, self.device, c.teacher_input, c.teacher_output)

        _check_dataset(self.train_set, c.patch_size, c.data_check, self.depth_mode == "folder", self.ctx, self.events,
                       "train", max(1, c.num_workers))
        if self.val_set is not None:
            _check_dataset(self.val_set, 1, c.data_check, False, self.ctx, self.events, "val", max(1, c.num_workers))
            pairs = self.val_set.pairs[: c.val_max_images] if c.val_max_images else self.val_set.pairs
            self.val_pairs = ValPairs(pairs, c.val_crop)

        try:
            self.sampler = EpochBatchSampler(len(self.train_set.pairs), c.batch_size, c.seed, self.ctx.rank,
                                             self.ctx.world_size)
        except ValueError as e:
            raise DatasetError(f"{self.train_set.root}: {e}; lower --batch-size") from None
        self.steps_per_epoch = self.sampler.batches_per_epoch
        self.total_steps = c.iters if c.iters > 0 else c.epochs * self.steps_per_epoch
        self.total_epochs = math.ceil(self.total_steps / self.steps_per_epoch)

        cache = self.paths.depth_cache if c.depth_cache and self.depth_mode == "pair" else None
        dataset = TrainPairs(
            self.train_set.pairs, c.patch_size, c.seed, c.edge_decay, c.only_h_flip,
            "none" if self.depth_mode == "teacher" else self.depth_mode, c.depth_folder_convention, cache,
        )
        self.loader = DataLoader(
            dataset,
            batch_sampler=self.sampler,
            num_workers=c.num_workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=c.num_workers > 0,
            worker_init_fn=worker_init,
        )

        adam = torch.optim.AdamW if c.optimizer == "adamw" else torch.optim.Adam
        self.opt_dehaze = adam(self.dehaze.parameters(), lr=c.lr_dehaze, weight_decay=c.weight_decay)
        self.opt_depth = adam(self.depth.parameters(), lr=c.lr_depth, weight_decay=c.weight_decay)
        horizon = self.total_steps if c.schedule_unit == "iteration" else self.total_epochs
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR
        self.sched_dehaze = cosine(self.opt_dehaze, T_max=horizon, eta_min=c.lr_dehaze * c.lr_min_ratio)
        self.sched_depth = cosine(self.opt_depth, T_max=horizon, eta_min=c.lr_depth * c.lr_min_ratio)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

        if self.resume:
            self._load_state()
        if self.ctx.is_main:
            self.paths.root.mkdir(parents=True, exist_ok=True)
            write_json(self.paths.config, c.to_dict())
            if self.resume:
                self.metrics.truncate_after(self.step)
            self._open_tensorboard()
        D.barrier(self.ctx)

    def _open_tensorboard(self) -> None:
        if not self.config.tensorboard:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self.events.note("TensorBoard is not installed: metrics go to metrics.jsonl only")
            return
        self.tb = SummaryWriter(log_dir=str(self.paths.tensorboard), purge_step=self.step + 1 if self.resume else None)

    # --- state ------------------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "preset": self.config.preset,
            "pairs": len(self.train_set.pairs),
            "best_psnr": self.best_psnr,
            "skipped": self.skipped,
            "last_val": json.dumps(self.last_val),
            "dehaze": D.unwrap(self.dehaze).state_dict(),
            "depth": D.unwrap(self.depth).state_dict(),
            "optim_dehaze": self.opt_dehaze.state_dict(),
            "optim_depth": self.opt_depth.state_dict(),
            "sched_dehaze": self.sched_dehaze.state_dict(),
            "sched_depth": self.sched_depth.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": capture_rng(self.device),
            "config": json.dumps(self.config.to_dict()),
        }

    def _load_state(self) -> None:
        state = load_state(self.paths.state)
        pairs = len(self.train_set.pairs)
        if state["preset"] != self.config.preset:
            raise RunFolderError(f"{self.paths.state} holds preset {state['preset']}, the config says {self.config.preset}")
        if state["pairs"] != pairs:
            raise RunFolderError(
                f"the training set now has {pairs} pairs; the run started with {state['pairs']}, so its data order "
                "cannot be continued. Restore the dataset or start a new run"
            )
        D.unwrap(self.dehaze).load_state_dict(state["dehaze"])
        D.unwrap(self.depth).load_state_dict(state["depth"])
        self.opt_dehaze.load_state_dict(state["optim_dehaze"])
        self.opt_depth.load_state_dict(state["optim_depth"])
        self.sched_dehaze.load_state_dict(state["sched_dehaze"])
        self.sched_depth.load_state_dict(state["sched_depth"])
        if self.scaler.is_enabled() and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        restore_rng(state["rng"], self.device)
        self.step = int(state["step"])
        self.best_psnr = state["best_psnr"]
        self.skipped = int(state["skipped"])
        self.last_val = json.loads(state["last_val"])
        self.saved_step = self.validated_step = self.step
        if self.step >= self.total_steps:
            self.events.note(f"the run had already finished ({self.step} of {self.total_steps} iterations)")

    def _trained_on(self) -> str:
        return f"{self.train_set.root.resolve()} ({len(self.train_set.pairs)} pairs)"

    def _export(self, folder: Path, extra: Mapping[str, Any]) -> None:
        c = self.config
        common = {"trainer": "dcmp train", "step": self.step, "epoch": round(self.step / self.steps_per_epoch, 4), **extra}
        save_checkpoint(self.paths.network(folder, c.preset, "dehaze"), D.unwrap(self.dehaze), "dehaze",
                        self.model_kwargs["dehaze"], c.preset, self._trained_on(), common)
        save_checkpoint(self.paths.network(folder, c.preset, "depth"), D.unwrap(self.depth), "depth",
                        self.model_kwargs["depth"], c.preset, self._trained_on(),
                        {**common, "depth_convention": DEPTH_CONVENTION})

    def save_last(self) -> None:
        """Writes last/ (both networks, then the full state) on rank 0; all processes wait for it."""
        if self.saved_step == self.step:
            return
        D.broadcast_buffers(D.unwrap(self.dehaze), self.ctx)
        if self.ctx.is_main:
            self._export(self.paths.last, {})
            save_state(self.paths.state, self._state())
            self.events.saved("last", self.paths.last)
        self.saved_step = self.step
        D.barrier(self.ctx)

    # --- validation -------------------------------------------------------------------------

    def hazy_scores(self) -> tuple[float, float] | None:
        """Mean (PSNR, SSIM) of the hazy validation inputs against their ground truth: the starting point."""
        if self.val_set is None:
            return None
        indices = shard(len(self.val_pairs), self.ctx.rank, self.ctx.world_size)
        total = torch.zeros(3, dtype=torch.float64)
        for i in indices:
            sample = self.val_pairs[i]
            scores = score(sample["hazy"], sample["clear"], self.config.protocol)  # type: ignore[arg-type]
            total += torch.tensor([scores.psnr, scores.ssim, 1.0], dtype=torch.float64)
        D.all_reduce_sum(total, self.ctx)
        return float(total[0] / total[2]), float(total[1] / total[2])

    def validate(self, hazy: tuple[float, float] | None) -> dict[str, Any] | None:
        if self.val_set is None or self.validated_step == self.step:
            return None
        model = D.unwrap(self.dehaze)
        # The training network itself, in eval mode; fast=False leaves its layers as they are.
        predictor = DehazePredictor(model, self.device, self.precision, fast=False)
        indices = shard(len(self.val_pairs), self.ctx.rank, self.ctx.world_size)
        total = torch.zeros(3, dtype=torch.float64)
        start = time.perf_counter()
        try:
            for i in indices:
                sample = self.val_pairs[i]
                restored = predictor(sample["hazy"].unsqueeze(0))
                scores = score(restored, sample["clear"].unsqueeze(0), self.config.protocol)  # type: ignore[arg-type]
                total += torch.tensor([scores.psnr, scores.ssim, 1.0], dtype=torch.float64)
        finally:
            model.train()
        D.all_reduce_sum(total, self.ctx)
        count = int(total[2])
        row = {
            "type": "val",
            "step": self.step,
            "epoch": round(self.step / self.steps_per_epoch, 4),
            "psnr": float(total[0] / count),
            "ssim": float(total[1] / count),
            "hazy_psnr": hazy[0] if hazy else None,
            "hazy_ssim": hazy[1] if hazy else None,
            "images": count,
            "protocol": self.config.protocol,
            "seconds": round(time.perf_counter() - start, 2),
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
            D.broadcast_buffers(model, self.ctx)
            if self.ctx.is_main:
                self._export(self.paths.best, {"val_psnr": row["psnr"], "val_ssim": row["ssim"], "protocol": row["protocol"]})
                write_json(self.paths.best / "best.json", row)
                self.events.saved("best", self.paths.best)
            D.barrier(self.ctx)
        return row

    # --- one iteration ----------------------------------------------------------------------

    def _losses(self, batch: Mapping[str, torch.Tensor]) -> LossTerms:
        hazy01 = batch["hazy"].to(self.device, non_blocking=True)
        clear01 = batch["clear"].to(self.device, non_blocking=True)
        hazy, clear = to_network_range(hazy01), to_network_range(clear01)
        if self.teacher is not None:
            target = self.teacher(clear01)
        else:
            target = batch["depth"].to(self.device, non_blocking=True)
        with autocast(self.device, self.precision):  # type: ignore[arg-type]
            output = self.dehaze(hazy)
            depth_of_output = self.depth(output.image)
            guides = clear_guides(D.unwrap(self.dehaze), clear) if self.weights.guide > 0 else None
            return dual_task_loss(output, depth_of_output, clear, hazy, target, self.weights, self.contrastive, guides)

    def _check_finite(self, terms: LossTerms, epoch: int) -> bool:
        """Shares losses and the stop request across processes; False if this batch must be skipped."""
        flags = torch.stack([
            terms.dehaze.detach().float(), terms.depth.detach().float(),
            torch.tensor(float(self.stop.is_set()), device=self.device),
        ])
        D.all_reduce_sum(flags, self.ctx)
        self._global = (flags / self.ctx.world_size).tolist()
        self._stop_requested = flags[2].item() > 0
        bad = [name for name, value in (("dehazing", self._global[0]), ("depth", self._global[1]))
               if not math.isfinite(value)]
        if not bad:
            return True
        step = self.step + 1
        detail = ", ".join(f"{k}={v.item():.4g}" for k, v in terms.parts.items())
        message = (
            f"non-finite {' and '.join(bad)} loss at iteration {step} (epoch {epoch + 1}); terms on this process: "
            f"{detail}"
        )
        if self.config.nonfinite == "stop" or self.skipped >= self.config.max_skipped_batches:
            saved = f"last/ holds iteration {self.saved_step}" if self.saved_step > 0 else "no checkpoint was written"
            raise NonFiniteLossError(
                f"{message}. Stopped without saving this step ({saved}). Lower the learning rate, train in fp32/bf16, "
                "check the data, or set nonfinite = \"skip\""
            )
        self.skipped += 1
        if self.ctx.is_main:
            self.metrics.append({"type": "note", "step": step, "message": f"skipped batch: {message}"})
        self.events.note(f"skipped batch: {message}")
        return False

    def _optimise(self, terms: LossTerms) -> None:
        self.opt_dehaze.zero_grad(set_to_none=True)
        self.opt_depth.zero_grad(set_to_none=True)
        self.scaler.scale(terms.total).backward()
        if self.config.grad_clip > 0:
            for opt, model in ((self.opt_dehaze, self.dehaze), (self.opt_depth, self.depth)):
                self.scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(model.parameters(), self.config.grad_clip)
        self.scaler.step(self.opt_dehaze)
        self.scaler.step(self.opt_depth)
        self.scaler.update()

    def _batches(self) -> Iterator[tuple[int, Mapping[str, torch.Tensor]]]:
        start_epoch, start_batch = divmod(self.step, self.steps_per_epoch)
        for epoch in range(start_epoch, self.total_epochs):
            self.sampler.set_epoch(epoch, start_batch if epoch == start_epoch else 0)
            for batch in self.loader:
                yield epoch, batch

    def _log(self, window: _Window) -> None:
        means = window.means()
        seconds = time.perf_counter() - window.start
        row = {
            "type": "train",
            "step": self.step,
            "epoch": round(self.step / self.steps_per_epoch, 4),
            **{k: round(v, 6) for k, v in means.items()},
            "lr_dehaze": self.opt_dehaze.param_groups[0]["lr"],
            "lr_depth": self.opt_depth.param_groups[0]["lr"],
            "images_per_s": round(window.count * self.config.batch_size / max(seconds, 1e-9), 3),
            "skipped": self.skipped,
        }
        if self.ctx.is_main:
            self.metrics.append(row)
            if self.tb is not None:
                for key in ("loss_dehaze", "loss_depth", "lr_dehaze", "lr_depth", "images_per_s"):
                    self.tb.add_scalar(f"train/{key}", row[key], self.step)
            self.events.logged(row)

    def run(self) -> TrainResult:
        c = self.config
        hazy = self.hazy_scores()
        self.events.started(RunInfo(
            self.paths.root, self.step, self.total_steps, self.steps_per_epoch, self.total_epochs,
            len(self.train_set.pairs), len(self.val_pairs) if self.val_set else 0, str(self.device), self.precision,
            self.ctx.world_size, self.depth_mode, self.contrastive is not None, hazy,
        ))
        interrupted = False
        window = _Window()
        self._stop_requested = False
        if self.step < self.total_steps:
            for epoch, batch in self._batches():
                terms = self._losses(batch)
                if self._check_finite(terms, epoch):
                    self._optimise(terms)
                    parts = torch.stack([v.detach().float() for v in terms.parts.values()]).tolist()
                    window.add({"loss_dehaze": self._global[0], "loss_depth": self._global[1],
                                **dict(zip(terms.parts, parts))})
                self.step += 1
                if c.schedule_unit == "iteration":
                    self.sched_dehaze.step()
                    self.sched_depth.step()
                self.events.progress(self.step, self.total_steps, {"dehaze": self._global[0], "depth": self._global[1]})
                if self.step % c.log_every == 0 or self.step == self.total_steps:
                    if window.count:
                        self._log(window)
                    window = _Window()
                if self.step % self.steps_per_epoch == 0:
                    if c.schedule_unit == "epoch":
                        self.sched_dehaze.step()
                        self.sched_depth.step()
                    if c.val_every and (self.step // self.steps_per_epoch) % c.val_every == 0:
                        self.validate(hazy)
                    self.save_last()
                if c.val_every_iters and self.step % c.val_every_iters == 0:
                    self.validate(hazy)
                if c.checkpoint_every_iters and self.step % c.checkpoint_every_iters == 0:
                    self.save_last()
                # Under torchrun the processes agree on stopping through the all-reduce above;
                # alone, a request that came during this iteration is honoured now.
                stop_now = self._stop_requested or (not self.ctx.distributed and self.stop.is_set())
                if stop_now and self.step < self.total_steps:
                    interrupted = True
                    break
                if self.step >= self.total_steps:
                    break
        if not interrupted:
            self.validate(hazy)
        self.save_last()
        if self.tb is not None:
            self.tb.close()
        prints = tuple(D.all_gather(fingerprint(D.unwrap(self.dehaze), D.unwrap(self.depth)), self.ctx))
        if len(set(prints)) > 1:
            self.events.note(f"the {len(prints)} processes ended with different weights; last/ holds rank 0's")
        return TrainResult(
            self.paths.root, self.step, self.total_steps, interrupted, self.best_psnr, self.last_val, self.paths.last,
            self.paths.best if self.best_psnr is not None else None, prints,
        )


def train(
    config: TrainConfig,
    run_dir: str | os.PathLike,
    resume: bool = False,
    events: TrainEvents | None = None,
    stop: StopSignal | None = None,
) -> TrainResult:
    """Trains (or, with ``resume``, continues) a run in ``run_dir``; see the module docstring.

    Under ``torchrun`` every process calls this; rank 0 writes the run folder.
    Raises ConfigError, DatasetError (DataCheckError), DeviceError, RunFolderError,
    NonFiniteLossError, VGGWeightsError or TeacherError with one-line messages.
    """
    ctx = D.setup(config.device)
    deterministic = torch.are_deterministic_algorithms_enabled()
    deterministic_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    benchmark = torch.backends.cudnn.benchmark
    try:
        trainer = Trainer(config, Path(run_dir), resume, events or TrainEvents(), stop or StopSignal(), ctx)
        trainer.setup()
        return trainer.run()
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=deterministic_warn)
        torch.backends.cudnn.benchmark = benchmark
        D.teardown(ctx)


__all__ = [
    "NonFiniteLossError",
    "RunInfo",
    "StopSignal",
    "TrainEvents",
    "TrainResult",
    "Trainer",
    "prepare_run",
    "stop_on_signals",
    "train",
]
