"""A depth teacher: a pretrained model that gives the clear crops' depth targets.

The authors took the targets from a monocular depth model run on the clear images
(RA-Depth's disparity, not published with their code). The config's ``depth_teacher``
plays that role with a file the user gives:

* a dcmp or authors' depth checkpoint (read by :func:`~dcmp_cli.core.checkpoint.read_checkpoint`,
  tensors only, so always safe to load; input in [-1, 1], output convention from its
  metadata: the authors' are disparity);
* an exported program (``torch.export.save``, ``.pt2``) or a TorchScript file
  (``torch.jit.save``) taking (B, 3, H, W) and returning a (B, 1, h, w) or (B, h, w)
  map; its input range and output convention are config values (``teacher_input``,
  ``teacher_output``). Export with dynamic batch, height and width
  (``torch.export.Dim.DYNAMIC``).

**Programs run code.** Loading an exported program unpickles whatever its archive marks
as pickled (weights, constants, opaque objects) with PyTorch's unrestricted unpickler,
and a TorchScript file is a program too: a crafted file runs arbitrary code as soon as
it is loaded, whatever its name (the format is recognised from the archive, not the
suffix). dcmp therefore loads these formats only with ``trust_code=True`` (config
``trust_teacher_code``) and refuses them, before reading anything, otherwise.

Targets are resized to the crop, turned into disparity (larger = nearer) and normalised
per sample between the 1st and 99th percentiles to [0, 1].
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dcmp_cli.core.checkpoint import PROGRAM_WORDS, CheckpointError, program_kind, read_checkpoint
from dcmp_cli.core.value_range import to_network_range

#: Percentiles of the per-sample normalisation.
PERCENTILES = (0.01, 0.99)


class TeacherError(ValueError):
    """The depth teacher cannot be loaded or run.

    ``needs_trust``: the file is a program (torch.export or TorchScript) and was refused
    because loading it was not trusted.
    """

    def __init__(self, message: str, needs_trust: bool = False) -> None:
        super().__init__(message)
        self.needs_trust = needs_trust


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

    def train(self, mode: bool = True) -> DepthTeacher:
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


def _first_line(error: Exception) -> str:
    """The first line of an error, unless it carries PyTorch's advice about unsafe loading."""
    text = str(error)
    first = text.splitlines()[0].strip() if text else ""
    if not first or "weights_only" in text:
        return type(error).__name__
    return first


def load_teacher(
    path: str | os.PathLike,
    device: torch.device,
    input_range: str = "network",
    output: str = "disparity",
    trust_code: bool = False,
) -> DepthTeacher:
    """Loads a depth-checkpoint or program teacher onto ``device`` (see the module docstring).

    ``trust_code``: allow exported and TorchScript programs, which can run arbitrary code
    when loaded; without it they are refused with a :class:`TeacherError` whose
    ``needs_trust`` is True, and nothing of the file is executed.
    """
    path = Path(path)
    if not path.is_file():
        raise TeacherError(f"depth teacher not found: {path}")
    kind = program_kind(path)
    if kind is not None:
        if not trust_code:
            raise TeacherError(
                f"refused to load the depth teacher {path}: it is {PROGRAM_WORDS[kind]}, which can run arbitrary "
                "code when loaded, and loading it was not trusted (trust_teacher_code); give a depth checkpoint, "
                "or trust the file only if you made it or trust who did",
                needs_trust=True,
            )
        try:
            if kind == "export":
                model = torch.export.load(str(path)).module().to(device)
            else:
                model = torch.jit.load(str(path), map_location=device)
        except Exception as e:  # noqa: BLE001 - every failure becomes a one-line error
            raise TeacherError(f"cannot load the depth teacher {path}: {_first_line(e)}") from None
        return DepthTeacher(model, input_range == "network", output == "disparity", str(path))
    try:
        checkpoint = read_checkpoint(path, kind="depth")
    except CheckpointError as e:
        raise TeacherError(f"depth teacher: {e}") from None
    return DepthTeacher(checkpoint.build(device), True, checkpoint.depth_convention == "disparity", str(path))
