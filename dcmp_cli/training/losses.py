"""DCMPNet's two losses: dehazing and depth, with difference perception both ways.

All images here are in the network range [-1, 1] (as the authors train); depth maps and
targets are (B, 1, H, W) in [0, 1], larger = nearer (the published convention).

Dehazing loss (the dehazing network's)::

    w_restore · L1(out, clear)
  + w_depth_consistency · L1(D(out), target)          depth → dehazing (0.1)
  + w_contrastive · contrastive(out, clear, hazy)      VGG19, when weights are given
  + w_guide · Σ_s L1(guide_s(hazy), guide_s(clear))   ours, off by default (see below)

Depth loss (the depth network's)::

    w_depth · L1(D(out), target)
  + w_depth_weighted · L1(D(out)·W, target·W)          dehazing → depth

with ``W = Σ_c (softmax over all C·H·W entries of (out − clear)) + 1e-7`` per sample.
The trainer sums both and back-propagates once, as the authors do, so every term
reaches every network it depends on: the depth-consistency term trains the depth
network too, and the depth loss reaches the dehazer through ``D(out)`` and ``W``.

The authors' code also adds ``L1(UNet(clear)_s, UNet(hazy)_s)`` at three scales, with a
separately built UNet that no optimiser holds and that sees only the inputs: those
terms are constant with respect to both trained networks and change nothing but the
logged loss value, so they are left out. ``w_guide`` offers what they appear to aim at
with a gradient: the dehazer's own guide features of the hazy input are pulled towards
its (detached) guide features of the clear image.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from dcmp_cli.core.value_range import from_network_range
from dcmp_cli.models.dehaze_net import DehazeOutput
from dcmp_cli.training.vgg import VGG19Features

#: Added to the softmax weights, as the authors do.
WEIGHT_EPSILON = 1e-7
#: Layer weights of the contrastive regulariser, relu1_1 … relu5_1.
CONTRASTIVE_LAYER_WEIGHTS = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)
#: Keeps the contrastive ratio finite when the output equals the hazy input.
CONTRASTIVE_EPSILON = 1e-7


def difference_weight_map(output: torch.Tensor, target: torch.Tensor, mean_one: bool = False) -> torch.Tensor:
    """Difference-perception weights (B, 1, H, W) from (B, C, H, W) images.

    Per sample: softmax over all C·H·W entries of the signed difference ``output − target``,
    plus 1e-7, summed over channels (the published rule; computed in float32). Its
    mean is about 1/(H·W), so the weighted term is tiny next to the plain one; with
    ``mean_one`` the map is multiplied by H·W (mean about 1).
    """
    b, c, h, w = output.shape
    diff = (output - target).float().reshape(b, -1)
    weights = (F.softmax(diff, dim=1) + WEIGHT_EPSILON).reshape(b, c, h, w).sum(dim=1, keepdim=True)
    return weights * (h * w) if mean_one else weights


class ContrastiveLoss(nn.Module):
    """VGG19 contrastive regulariser: Σ_l w_l · L1(φ_l(out), φ_l(clear)) / (L1(φ_l(out), φ_l(hazy)) + ε).

    Positive (clear) and negative (hazy) features are detached. The authors pass relu5_1
    through three freshly initialised 1×1-conv MLPs that no optimiser holds (fixed
    random projections); this implementation compares relu5_1 features directly, as
    AECR-Net's original loss does.
    """

    def __init__(self, vgg: VGG19Features, layer_weights: tuple[float, ...] = CONTRASTIVE_LAYER_WEIGHTS) -> None:
        super().__init__()
        self.vgg = vgg
        self.layer_weights = layer_weights

    def forward(self, output: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
        """All (B, 3, H, W) in the network range (converted to [0, 1] if the extractor normalises)."""
        if self.vgg.imagenet_normalize:
            output, positive, negative = (from_network_range(x, clamp=False) for x in (output, positive, negative))
        with torch.no_grad():
            pos_features = self.vgg(positive)
            neg_features = self.vgg(negative)
        out_features = self.vgg(output)
        loss = output.new_zeros((), dtype=torch.float32)
        for weight, a, p, n in zip(self.layer_weights, out_features, pos_features, neg_features):
            d_ap = F.l1_loss(a.float(), p.float())
            d_an = F.l1_loss(a.float(), n.float())
            loss = loss + weight * d_ap / (d_an + CONTRASTIVE_EPSILON)
        return loss


@dataclass(frozen=True)
class LossWeights:
    """Weights of every term (see the module docstring); defaults are the published recipe."""

    restore: float = 1.0
    depth_consistency: float = 0.1
    contrastive: float = 1.0
    guide: float = 0.0
    depth: float = 1.0
    depth_weighted: float = 1.0
    weight_map_mean_one: bool = False


@dataclass
class LossTerms:
    """Both totals (scalar tensors with graphs) and every unweighted term (detached floats-to-be)."""

    dehaze: torch.Tensor
    depth: torch.Tensor
    parts: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def total(self) -> torch.Tensor:
        return self.dehaze + self.depth


def guide_consistency(hazy_guides: DehazeOutput, clear_guides: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Σ over the three scales of L1(guide(hazy), guide(clear).detach())."""
    ours = (hazy_guides.guide_quarter, hazy_guides.guide_half, hazy_guides.guide_full)
    return sum(F.l1_loss(a.float(), b.detach().float()) for a, b in zip(ours, clear_guides))  # type: ignore[return-value]


def dual_task_loss(
    output: DehazeOutput,
    depth_of_output: torch.Tensor,
    clear: torch.Tensor,
    hazy: torch.Tensor,
    depth_target: torch.Tensor,
    weights: LossWeights,
    contrastive: ContrastiveLoss | None = None,
    clear_guides: tuple[torch.Tensor, ...] | None = None,
) -> LossTerms:
    """Both losses for one batch.

    ``output``: the dehazer's output for ``hazy``; ``depth_of_output``: the depth network
    on ``output.image`` (B, 1, H, W); ``clear``/``hazy``: (B, 3, H, W) network range;
    ``depth_target``: (B, 1, H, W) in [0, 1]; ``clear_guides``: the dehazer's guide
    features of ``clear`` (only needed when ``weights.guide`` > 0).
    """
    out = output.image
    depth_pred = depth_of_output.float()
    target = depth_target.float()
    parts: dict[str, torch.Tensor] = {}
    parts["restore"] = F.l1_loss(out.float(), clear.float())
    parts["depth_consistency"] = F.l1_loss(depth_pred, target)
    dehaze = weights.restore * parts["restore"] + weights.depth_consistency * parts["depth_consistency"]
    if contrastive is not None and weights.contrastive > 0:
        parts["contrastive"] = contrastive(out, clear, hazy)
        dehaze = dehaze + weights.contrastive * parts["contrastive"]
    if weights.guide > 0:
        if clear_guides is None:
            raise ValueError("guide consistency needs the guide features of the clear images")
        parts["guide"] = guide_consistency(output, clear_guides)
        dehaze = dehaze + weights.guide * parts["guide"]
    w = difference_weight_map(out, clear, weights.weight_map_mean_one)
    parts["depth_weighted"] = F.l1_loss(depth_pred * w, target * w)
    depth = weights.depth * parts["depth_consistency"] + weights.depth_weighted * parts["depth_weighted"]
    return LossTerms(dehaze, depth, parts)
