"""A depth teacher: a pretrained model that gives the clear crops' depth targets.

The authors took the targets from a monocular depth model run on the clear images
(RA-Depth's disparity, not published with their code). ``--depth-teacher`` plays that
role with a file the user gives:

* a dcmp or authors' depth checkpoint (read by :func:`~dcmp_cli.core.checkpoint.read_checkpoint`,
  input in [-1, 1], output convention from its metadata: the authors' are disparity);
* an exported program (``torch.export.save``, ``.pt2``) or a TorchScript file
  (``torch.jit.save``) taking (B, 3, H, W) and returning a (B, 1, h, w) or (B, h, w)
  map; its input range and output convention are config values (``teacher_input``,
  ``teacher_output``). Both formats hold a graph and tensors, not pickled Python code.
  Export with dynamic batch, height and width (``torch.export.Dim.DYNAMIC``).

Targets are resized to the crop, turned into disparity (larger = nearer) and normalised
per sample between the 1st and 99th percentiles to [0, 1].
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dcmp_cli.core.checkpoint import CheckpointError, read_checkpoint
from dcmp_cli.core.value_range import to_network_range

#: Percentiles of the per-sample normalisation.
PERCENTILES = (0.01, 0.99)


class TeacherError(ValueError):
    """The depth teacher cannot be loaded or run."""


def _archive_kind(path: Path) -> str | None:
    """'export' (torch.export), 'torchscript', or None for anything else."""
    try:
        with zipfile.ZipFile(path) as archive:
            parts = [name.split("/", 2) for name in archive.namelist()]
    except (zipfile.BadZipFile, OSError):
        return None
    if any(p[1:2] == ["archive_format"] for p in parts):
        return "export"
    if any(p[1:2] == ["code"] for p in parts):
        return "torchscript"
    return None


def normalise_per_sample(maps: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) -> the same, each sample mapped from its [p1, p99] to [0, 1] (clamped)."""
    flat = maps.flatten(1).float()
    q = torch.quantile(flat, torch.tensor(PERCENTILES, device=flat.device), dim=1)  # (2, B)
    lo, hi = q[0].view(-1, 1, 1, 1), q[1].view(-1, 1, 1, 1)
    return ((maps.float() - lo) / (hi - lo).clamp_min(1e-8)).clamp(0.0, 1.0)


class DepthTeacher(nn.Module):
    """Frozen teacher: clear images (B, 3, H, W) in [0, 1] -> targets (B, 1, H, W) in [0, 1], larger = nearer."""

    def __init__(self, model: nn.Module, network_input: bool, disparity_output: bool, source: str) -> None:
        super().__init__()
        self.model = model
        if not isinstance(model, torch.fx.GraphModule):  # exported programs have no train/eval modes
            model.eval()
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        self.network_input = network_input
        self.disparity_output = disparity_output
        self.source = source

    def train(self, mode: bool = True) -> "DepthTeacher":
        """Stays frozen; the wrapped model's mode is set once, at construction."""
        self.training = False
        return self

    @torch.no_grad()
    def forward(self, clear: torch.Tensor) -> torch.Tensor:
        x = to_network_range(clear) if self.network_input else clear
        out = self.model(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        if isinstance(out, dict):
            out = next(iter(out.values()))
        if not isinstance(out, torch.Tensor):
            raise TeacherError(f"depth teacher {self.source} returned {type(out).__name__}, not a tensor")
        if out.ndim == 3:
            out = out.unsqueeze(1)
        if out.ndim != 4 or out.shape[1] != 1:
            raise TeacherError(f"depth teacher {self.source} returned shape {tuple(out.shape)}; expected (B, 1, H, W)")
        out = out.float()
        if out.shape[2:] != clear.shape[2:]:
            out = F.interpolate(out, size=clear.shape[2:], mode="bilinear", align_corners=False)
        target = normalise_per_sample(out)
        return target if self.disparity_output else 1.0 - target


def load_teacher(
    path: str | os.PathLike, device: torch.device, input_range: str = "network", output: str = "disparity"
) -> DepthTeacher:
    """Loads a TorchScript or checkpoint teacher onto ``device`` (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise TeacherError(f"depth teacher not found: {path}")
    kind = _archive_kind(path)
    if kind is not None:
        try:
            if kind == "export":
                model = torch.export.load(str(path)).module().to(device)
            else:
                model = torch.jit.load(str(path), map_location=device)
        except Exception as e:  # noqa: BLE001
            raise TeacherError(f"cannot load the depth teacher {path}: {str(e).splitlines()[0]}") from None
        return DepthTeacher(model, input_range == "network", output == "disparity", str(path))
    try:
        checkpoint = read_checkpoint(path, kind="depth")
    except CheckpointError as e:
        raise TeacherError(f"depth teacher: {e}") from None
    return DepthTeacher(checkpoint.build(device), True, checkpoint.depth_convention == "disparity", str(path))
