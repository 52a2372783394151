"""DCMPNet's losses: the published formulas, gradient flow to both networks, the VGG19 regulariser."""

from __future__ import annotations

import collections
import pathlib

import pytest
import torch
import torch.nn.functional as F

from dcmp_cli.models import create_model
from dcmp_cli.training.losses import (
    ContrastiveLoss,
    LossWeights,
    difference_weight_map,
    dual_task_loss,
)
from dcmp_cli.training.model import clear_guides
from dcmp_cli.training.vgg import VGG19Features, VGGWeightsError, load_vgg19

pytestmark = pytest.mark.usefixtures("one_thread")


def _images(seed: int = 0, b: int = 2, h: int = 16, w: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, h, w, generator=g) * 2 - 1, torch.rand(b, 3, h, w, generator=g) * 2 - 1


def test_difference_weight_map_is_the_published_softmax():
    out, gt = _images()
    weights = difference_weight_map(out, gt)
    b, c, h, w = out.shape
    assert weights.shape == (b, 1, h, w)
    manual = (F.softmax((out - gt).permute(0, 2, 3, 1).reshape(b, -1), dim=-1) + 1e-7).reshape(b, h, w, c)
    manual = manual.permute(0, 3, 1, 2).sum(dim=1, keepdim=True)
    torch.testing.assert_close(weights, manual)
    torch.testing.assert_close(weights.sum(dim=(1, 2, 3)), torch.full((b,), 1 + 1e-7 * c * h * w))
    # Where the output overshoots the ground truth most, the weight is largest.
    spike = gt.clone()
    spike[:, :, 5, 7] += 1.0
    spiked = difference_weight_map(spike, gt)
    assert all(int(spiked[i, 0].argmax()) == 5 * w + 7 for i in range(b))


def test_weight_map_mean_one_option():
    out, gt = _images()
    assert difference_weight_map(out, gt, mean_one=True).mean().item() == pytest.approx(1.0, rel=1e-3)


def _dehaze_output(image: torch.Tensor):
    from dcmp_cli.models.dehaze_net import DehazeOutput

    return DehazeOutput(image, image, image, image)


def test_dual_task_loss_matches_the_published_formula():
    out, gt = _images(1)
    hazy = gt * 0.5 + 0.4
    depth_pred = torch.rand(2, 1, 16, 20, generator=torch.Generator().manual_seed(2))
    target = torch.rand(2, 1, 16, 20, generator=torch.Generator().manual_seed(3))
    terms = dual_task_loss(_dehaze_output(out), depth_pred, gt, hazy, target, LossWeights())
    w = difference_weight_map(out, gt)
    plain = (depth_pred - target).abs().mean()
    assert terms.dehaze.item() == pytest.approx(((out - gt).abs().mean() + 0.1 * plain).item(), rel=1e-6)
    assert terms.depth.item() == pytest.approx((plain + (depth_pred * w - target * w).abs().mean()).item(), rel=1e-6)
    assert terms.total.item() == pytest.approx(terms.dehaze.item() + terms.depth.item())
    assert set(terms.parts) == {"restore", "depth_consistency", "depth_weighted"}
    custom = dual_task_loss(
        _dehaze_output(out),
        depth_pred,
        gt,
        hazy,
        target,
        LossWeights(restore=2.0, depth_consistency=0.0, depth=0.5, depth_weighted=0.0),
    )
    assert custom.dehaze.item() == pytest.approx(2 * (out - gt).abs().mean().item(), rel=1e-6)
    assert custom.depth.item() == pytest.approx(0.5 * plain.item(), rel=1e-6)


@pytest.fixture(scope="module")
def term_gradients():
    """One forward pass of both tiny networks; per loss term, the gradient mass reaching each network."""
    torch.manual_seed(0)
    dehaze, depth = create_model("dcmpnet-tiny", "dehaze"), create_model("dcmpnet-tiny", "depth")
    hazy, clear = _images(5, b=2, h=32, w=32)
    target = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(6))
    buffers = {k: v.clone() for k, v in dehaze.guide_unet.named_buffers()}
    guides = clear_guides(dehaze, clear)
    untouched = all(torch.equal(v, buffers[k]) for k, v in dehaze.guide_unet.named_buffers())
    out = dehaze(hazy)
    weights = LossWeights(guide=1.0, weight_map_mean_one=True)
    terms = dual_task_loss(out, depth(out.image), clear, hazy, target, weights, clear_guides=guides)
    groups = {
        "dehaze": list(dehaze.parameters()),
        "depth": list(depth.parameters()),
        "guide_unet": list(dehaze.guide_unet.parameters()),
    }
    mass = {}
    for name, value in terms.parts.items():
        for group, params in groups.items():
            grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
            mass[name, group] = sum(float(g.abs().sum()) for g in grads if g is not None)
    return mass, untouched, guides


def test_each_term_reaches_the_networks_it_should(term_gradients):
    mass, _, _ = term_gradients
    assert mass["restore", "dehaze"] > 0 and mass["restore", "depth"] == 0
    # depth -> dehazing: the consistency term trains both networks (summed losses, one backward).
    assert mass["depth_consistency", "dehaze"] > 0 and mass["depth_consistency", "depth"] > 0
    # dehazing -> depth: the weighted term trains the depth net and reaches the dehazer through D(out) and W.
    assert mass["depth_weighted", "dehaze"] > 0 and mass["depth_weighted", "depth"] > 0
    assert mass["guide", "guide_unet"] > 0 and mass["guide", "depth"] == 0


def test_clear_guides_are_detached_and_keep_batch_norm_statistics(term_gradients):
    _, untouched, guides = term_gradients
    assert untouched
    assert all(not g.requires_grad for g in guides)
    out, gt = _images()
    with pytest.raises(ValueError, match="guide features"):
        dual_task_loss(
            _dehaze_output(out), torch.zeros(2, 1, 16, 20), gt, out, torch.zeros(2, 1, 16, 20), LossWeights(guide=1.0)
        )


# --- VGG19 ------------------------------------------------------------------------------------------------


class _NotATensor:
    """A pickled Python object: loading tensors only must refuse it."""


class _TouchOnUnpickle:
    """Unpickling this creates ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    """A torchvision-style VGG19 state dict (random weights): features.N.* plus classifier entries."""
    torch.manual_seed(0)
    features = VGG19Features().features.state_dict()
    state = collections.OrderedDict((f"features.{k}", torch.randn_like(v) * 0.05) for k, v in features.items())
    state["features.30.weight"] = torch.zeros(512, 512, 3, 3)  # beyond relu5_1: ignored
    state["classifier.6.weight"] = torch.zeros(1000, 8)
    path = tmp_path_factory.mktemp("vgg") / "vgg19-test.pth"
    torch.save(state, path)
    return path, state


def test_vgg19_loads_torchvision_keys_and_taps_five_levels(vgg_file):
    path, state = vgg_file
    vgg = load_vgg19(path)
    assert torch.equal(vgg.features[28].weight, state["features.28.weight"])
    assert all(not p.requires_grad for p in vgg.parameters())
    outputs = vgg(torch.rand(1, 3, 32, 32))
    assert [tuple(o.shape[1:]) for o in outputs] == [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4), (512, 2, 2)]
    vgg.train()
    assert not vgg.training


def test_vgg19_weight_errors(vgg_file, tmp_path):
    path, state = vgg_file
    partial = {k: v for k, v in state.items() if k != "features.10.weight"}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(VGGWeightsError, match=r"features\.10\.weight"):
        load_vgg19(tmp_path / "partial.pth")
    wrong = dict(state, **{"features.0.weight": torch.zeros(64, 1, 3, 3)})
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(VGGWeightsError, match="not VGG19's"):
        load_vgg19(tmp_path / "wrong.pth")
    torch.save({"weights": _NotATensor()}, tmp_path / "pickle.pth")
    with pytest.raises(VGGWeightsError, match="Python objects other than tensors"):
        load_vgg19(tmp_path / "pickle.pth")
    with pytest.raises(VGGWeightsError, match="not found"):
        load_vgg19(tmp_path / "missing.pth")


def test_contrastive_loss_values_and_gradient(vgg_file):
    path, _ = vgg_file
    loss = ContrastiveLoss(load_vgg19(path))
    hazy, clear = _images(9, b=1, h=32, w=32)
    assert loss(clear, clear, hazy).item() == pytest.approx(0.0, abs=1e-6)  # output = positive
    near_clear, middle, near_hazy = (loss(f * hazy + (1 - f) * clear, clear, hazy).item() for f in (0.1, 0.5, 0.9))
    assert 0 < near_clear < middle < near_hazy  # closer to the clear image, lower loss
    between = (0.5 * hazy + 0.5 * clear).requires_grad_(True)
    value = loss(between, clear, hazy)
    value.backward()
    assert between.grad is not None and between.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.vgg.parameters())


def test_vgg19_weights_with_code_are_refused_without_running(vgg_file, tmp_path):
    _, state = vgg_file
    marker = tmp_path / "ran"
    torch.save({**state, "payload": _TouchOnUnpickle(marker)}, tmp_path / "vgg19-evil.pth")
    with pytest.raises(VGGWeightsError) as info:
        load_vgg19(tmp_path / "vgg19-evil.pth")
    message = str(info.value)
    assert "refused" in message and "does not run code from files" in message
    assert "weights_only" not in message and "\n" not in message
    assert not marker.exists()


def test_contrastive_loss_maps_to_unit_range_without_clamping(vgg_file):
    """With ImageNet normalisation the features see [0, 1] images: (x + 1) / 2, values outside [-1, 1] kept."""
    path, _ = vgg_file
    vgg = load_vgg19(path, imagenet_normalize=True)
    seen = []
    vgg.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    out = torch.full((1, 3, 16, 16), 1.5)
    clear, hazy = torch.zeros(1, 3, 16, 16), torch.full((1, 3, 16, 16), -1.0)
    ContrastiveLoss(vgg)(out, clear, hazy)
    assert sorted(float(x.mean()) for x in seen) == [0.0, 0.5, 1.25]
