"""DCMPNet's two networks trained as one model: :class:`DualTaskModel`.

It holds the dehazing and the depth network (wrapped for multi-process training), one
optimiser and one cosine schedule each, the gradient scaler of fp16 training, the loss
weights and the optional contrastive regulariser and depth teacher. :meth:`DualTaskModel.step`
runs one iteration on a batch: both losses of :mod:`dcmp_cli.training.losses`, summed and
back-propagated once, both optimisers stepped. :meth:`~DualTaskModel.state_dict` and
:meth:`~DualTaskModel.load_state_dict` carry everything an exact resume needs of it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dcmp_cli.core.checkpoint import save_checkpoint
from dcmp_cli.core.device import Precision, autocast
from dcmp_cli.core.value_range import to_network_range
from dcmp_cli.models.dehaze_net import SIZE_MULTIPLE, DehazeNet
from dcmp_cli.models.registry import create_model, get_preset
from dcmp_cli.signals import StopSignal
from dcmp_cli.training import distributed as D
from dcmp_cli.training.config import TrainConfig
from dcmp_cli.training.losses import ContrastiveLoss, LossTerms, LossWeights, dual_task_loss
from dcmp_cli.training.run_folder import RunPaths
from dcmp_cli.training.teacher import DepthTeacher

#: Metadata convention of the depth checkpoints written here (see the README's "Conventions").
DEPTH_CONVENTION = "disparity"


def fingerprint(*models: nn.Module) -> str:
    """SHA-256 over the raw bytes of every tensor in the models' state dicts."""
    digest = hashlib.sha256()
    for model in models:
        for name, tensor in model.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _pad_like_dehazer(x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[2:]
    pad_h, pad_w = (-h) % SIZE_MULTIPLE, (-w) % SIZE_MULTIPLE
    return F.pad(x, (0, pad_w, 0, pad_h), mode="reflect") if pad_h or pad_w else x


def clear_guides(model: DehazeNet, clear: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The dehazer's projected guide features of the clear images (B, C_s, H_s, W_s) at 1/4, 1/2 and full size.

    ``clear``: (B, 3, H, W) in the network range [-1, 1]. No gradient; the guide UNet's
    batch norms use the batch's statistics but update copies of their running
    statistics, so the model's own buffers are left as they are.
    """
    unet = model.guide_unet
    state = {**dict(unet.named_parameters()), **{k: b.clone() for k, b in unet.named_buffers()}}
    with torch.no_grad():
        g_quarter, g_half, g_full = torch.func.functional_call(unet, state, (_pad_like_dehazer(clear),))
        return model.guide_proj_quarter(g_quarter), model.guide_proj_half(g_half), model.guide_proj_full(g_full)


def create_networks(preset: str, device: torch.device) -> tuple[nn.Module, nn.Module]:
    """The (dehazing, depth) networks of ``preset``, freshly initialised from the global RNG, on ``device``."""
    dehaze = create_model(preset, "dehaze").to(device).train()
    depth = create_model(preset, "depth").to(device).train()
    return dehaze, depth


@dataclass(frozen=True)
class StepResult:
    """One iteration: the losses (means over processes), this process's loss terms, and what follows."""

    #: Both losses were finite everywhere, and the networks were updated.
    finite: bool
    dehaze: float
    depth: float
    #: Unweighted loss terms on this process (restore, depth_consistency, …).
    parts: dict[str, float]
    #: Some process asked to stop (a signal came during the iteration).
    stop: bool


class DualTaskModel:
    """Both networks, their optimisers, schedules and losses; one :meth:`step` per batch.

    ``dehaze``/``depth``: the networks (from :func:`create_networks`), on ``ctx.device``;
    ``precision``: fp32, fp16 or bf16 (fp16 scales the gradients); ``horizon``: the
    length of the cosine schedules in their unit (``config.schedule_unit``).
    """

    def __init__(
        self,
        dehaze: nn.Module,
        depth: nn.Module,
        config: TrainConfig,
        ctx: D.DistContext,
        precision: Precision,
        horizon: int,
        contrastive: ContrastiveLoss | None = None,
        teacher: DepthTeacher | None = None,
    ) -> None:
        c = config
        self.ctx = ctx
        self.device = ctx.device
        self.precision = precision
        self.preset = c.preset
        preset = get_preset(c.preset)
        self.model_kwargs = {"dehaze": preset.kwargs("dehaze"), "depth": preset.kwargs("depth")}
        self.dehaze = D.wrap(dehaze, ctx, c.sync_batchnorm)
        self.depth = D.wrap(depth, ctx, c.sync_batchnorm)
        self.weights = LossWeights(
            c.w_restore,
            c.w_depth_consistency,
            c.w_contrastive,
            c.w_guide,
            c.w_depth,
            c.w_depth_weighted,
            c.weight_map_mean_one,
        )
        self.contrastive = contrastive
        self.teacher = teacher
        self.grad_clip = c.grad_clip
        self.schedule_unit = c.schedule_unit
        adam = torch.optim.AdamW if c.optimizer == "adamw" else torch.optim.Adam
        self.opt_dehaze = adam(self.dehaze.parameters(), lr=c.lr_dehaze, weight_decay=c.weight_decay)
        self.opt_depth = adam(self.depth.parameters(), lr=c.lr_depth, weight_decay=c.weight_decay)
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR
        self.sched_dehaze = cosine(self.opt_dehaze, T_max=horizon, eta_min=c.lr_dehaze * c.lr_min_ratio)
        self.sched_depth = cosine(self.opt_depth, T_max=horizon, eta_min=c.lr_depth * c.lr_min_ratio)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=precision == "fp16")

    # --- the networks -------------------------------------------------------------------------

    @property
    def dehaze_net(self) -> nn.Module:
        """The dehazing network itself (not its multi-process wrapper)."""
        return D.unwrap(self.dehaze)

    @property
    def depth_net(self) -> nn.Module:
        return D.unwrap(self.depth)

    def fingerprint(self) -> str:
        return fingerprint(self.dehaze_net, self.depth_net)

    def broadcast_buffers(self) -> None:
        """Rank 0's batch-norm statistics everywhere (before saving or validating)."""
        D.broadcast_buffers(self.dehaze_net, self.ctx)

    def export(self, folder: Path, trained_on: str, extra: Mapping[str, Any]) -> None:
        """Writes both networks into ``folder`` as dcmp checkpoints (``RunPaths.network`` names)."""
        save_checkpoint(
            RunPaths.network(folder, self.preset, "dehaze"),
            self.dehaze_net,
            "dehaze",
            self.model_kwargs["dehaze"],
            self.preset,
            trained_on,
            extra,
        )
        save_checkpoint(
            RunPaths.network(folder, self.preset, "depth"),
            self.depth_net,
            "depth",
            self.model_kwargs["depth"],
            self.preset,
            trained_on,
            {**extra, "depth_convention": DEPTH_CONVENTION},
        )

    # --- one iteration ------------------------------------------------------------------------

    def losses(self, batch: Mapping[str, torch.Tensor]) -> LossTerms:
        """Both losses of a batch.

        ``hazy``/``clear``: (B, 3, H, W) in [0, 1]; ``depth``: (B, 1, H, W) targets in [0, 1],
        larger = nearer (not needed with a teacher, which computes them from ``clear``).
        """
        hazy01 = batch["hazy"].to(self.device, non_blocking=True)
        clear01 = batch["clear"].to(self.device, non_blocking=True)
        hazy, clear = to_network_range(hazy01), to_network_range(clear01)
        if self.teacher is not None:
            target = self.teacher(clear01)
        else:
            target = batch["depth"].to(self.device, non_blocking=True)
        with autocast(self.device, self.precision):
            output = self.dehaze(hazy)
            depth_of_output = self.depth(output.image)
            guides = clear_guides(self.dehaze_net, clear) if self.weights.guide > 0 else None  # type: ignore[arg-type]
            return dual_task_loss(output, depth_of_output, clear, hazy, target, self.weights, self.contrastive, guides)

    def step(self, batch: Mapping[str, torch.Tensor], stop: StopSignal | None = None) -> StepResult:
        """Losses of ``batch``; when they are finite on every process, one update of both networks.

        The losses and the stop request (read after the forward pass) are shared across
        processes in one reduction, so that all of them skip, stop or go on together.
        """
        terms = self.losses(batch)
        requested = stop is not None and stop.is_set()
        flags = torch.stack(
            [
                terms.dehaze.detach().float(),
                terms.depth.detach().float(),
                torch.tensor(float(requested), device=self.device),
            ]
        )
        D.all_reduce_sum(flags, self.ctx)
        dehaze, depth, stops = (flags / self.ctx.world_size).tolist()
        parts = dict(
            zip(terms.parts, torch.stack([v.detach().float() for v in terms.parts.values()]).tolist(), strict=True)
        )
        finite = math.isfinite(dehaze) and math.isfinite(depth)
        if finite:
            self._optimise(terms)
        return StepResult(finite, dehaze, depth, parts, stops > 0)

    def _optimise(self, terms: LossTerms) -> None:
        self.opt_dehaze.zero_grad(set_to_none=True)
        self.opt_depth.zero_grad(set_to_none=True)
        self.scaler.scale(terms.total).backward()
        if self.grad_clip > 0:
            for opt, model in ((self.opt_dehaze, self.dehaze), (self.opt_depth, self.depth)):
                self.scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(model.parameters(), self.grad_clip)
        self.scaler.step(self.opt_dehaze)
        self.scaler.step(self.opt_depth)
        self.scaler.update()

    def iteration_done(self) -> None:
        """Steps the schedules when they count iterations."""
        if self.schedule_unit == "iteration":
            self.sched_dehaze.step()
            self.sched_depth.step()

    def epoch_done(self) -> None:
        """Steps the schedules when they count epochs (the authors' choice)."""
        if self.schedule_unit == "epoch":
            self.sched_dehaze.step()
            self.sched_depth.step()

    @property
    def learning_rates(self) -> tuple[float, float]:
        """Current (dehazing, depth) learning rates."""
        return self.opt_dehaze.param_groups[0]["lr"], self.opt_depth.param_groups[0]["lr"]

    # --- state ----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Weights, optimiser, schedule and scaler states.

        Keys ``dehaze``, ``depth``, ``optim_dehaze``, ``optim_depth``, ``sched_dehaze``,
        ``sched_depth``, ``scaler``: the layout of the training state file.
        """
        return {
            "dehaze": self.dehaze_net.state_dict(),
            "depth": self.depth_net.state_dict(),
            "optim_dehaze": self.opt_dehaze.state_dict(),
            "optim_depth": self.opt_depth.state_dict(),
            "sched_dehaze": self.sched_dehaze.state_dict(),
            "sched_depth": self.sched_depth.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores what :meth:`state_dict` gave (extra keys are ignored)."""
        self.dehaze_net.load_state_dict(state["dehaze"])
        self.depth_net.load_state_dict(state["depth"])
        self.opt_dehaze.load_state_dict(state["optim_dehaze"])
        self.opt_depth.load_state_dict(state["optim_depth"])
        self.sched_dehaze.load_state_dict(state["sched_dehaze"])
        self.sched_depth.load_state_dict(state["sched_depth"])
        if self.scaler.is_enabled() and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
