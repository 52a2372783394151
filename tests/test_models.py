"""Network structure: presets, shapes, derived widths, global-statistics hooks."""

from __future__ import annotations

import pytest
import torch

from dcmp_cli.models import DehazeNet, DepthNet, create_model, list_presets
from dcmp_cli.models.global_stats import RecordStats, ReplayStats, global_statistics


@pytest.mark.parametrize(
    "preset, size",
    [
        ("dcmpnet-tiny", (32, 32)),
        ("dcmpnet-tiny", (37, 53)),
        ("dcmpnet-tiny", (61, 45)),
        ("dcmpnet", (37, 53)),
        pytest.param("dcmpnet", (32, 32), marks=pytest.mark.slow),
        pytest.param("dcmpnet", (61, 45), marks=pytest.mark.slow),
    ],
)
def test_dehaze_output_shapes(preset, size):
    torch.manual_seed(0)
    model = create_model(preset, "dehaze").eval()
    x = torch.rand(2, 3, *size) * 2 - 1
    with torch.no_grad():
        out = model(x)
    padded = [s + (-s) % 4 for s in size]
    widths = model.embed.out_channels, model.downsample[0].out_channels, model.downsample[1].out_channels
    assert out.image.shape == x.shape
    assert out.guide_full.shape == (2, widths[0], *padded)
    assert out.guide_half.shape == (2, widths[1], padded[0] // 2, padded[1] // 2)
    assert out.guide_quarter.shape == (2, widths[2], padded[0] // 4, padded[1] // 4)
    assert torch.isfinite(out.image).all()


@pytest.mark.parametrize("preset", ["dcmpnet", "dcmpnet-tiny"])
def test_depth_network_alone(preset):
    model = create_model(preset, "depth").eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 37, 53))
    assert out.shape == (1, 1, 37, 53)


def test_tiny_preset_has_the_same_structure():
    full = {type(m).__name__ for m in create_model("dcmpnet").modules()}
    tiny = {type(m).__name__ for m in create_model("dcmpnet-tiny").modules()}
    assert full == tiny
    tiny_model = create_model("dcmpnet-tiny")
    assert all(len(stage.blocks) == 1 for stage in tiny_model.stages)
    assert (
        sum(p.numel() for p in tiny_model.parameters())
        < sum(p.numel() for p in create_model("dcmpnet").parameters()) / 10
    )


def test_widths_are_derived_not_hard_coded():
    model = DehazeNet(
        widths=(8, 16, 32),
        depths=(2, 1, 2, 1, 1),
        attention_blocks=(1, 1, 2, 0, 1),
        num_heads=(2, 2, 4, 1, 1),
        guide_widths=(4, 8, 16),
        guide_channels=5,
        depth_widths=(4, 8),
        depth_growth=4,
        depth_dense_layers=2,
        refine_growth=4,
        refine_layers=2,
        fusion_hidden=8,
        position_mlp_hidden=16,
    ).eval()
    assert model.stage_inputs[0].in_channels == 8 + 8 + 1
    assert model.cross_scale.scale_attention[0].in_channels == 8 + 16 + 32
    with torch.no_grad():
        assert model(torch.rand(1, 3, 40, 44)).image.shape == (1, 3, 40, 44)
    depth = DepthNet(widths=(6, 12, 18), growth=4, dense_layers=2)
    assert depth(torch.rand(1, 3, 29, 31)).shape == (1, 1, 29, 31)


def test_registry_errors_name_the_choices():
    with pytest.raises(ValueError, match="dcmpnet-tiny"):
        create_model("dcmpnet-huge")
    with pytest.raises(ValueError, match="'dehaze' or 'depth'"):
        create_model("dcmpnet", "segmentation")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="depths needs 5 entries"):
        DehazeNet(depths=(1, 1, 1))
    with pytest.raises(ValueError, match="not divisible"):
        DehazeNet(widths=(24, 48, 96), num_heads=(5, 4, 6, 1, 1))
    assert {"dcmpnet", "dcmpnet-tiny"} <= set(list_presets())


def test_recorded_statistics_replay_to_the_same_output():
    torch.manual_seed(0)
    model = create_model("dcmpnet-tiny").eval()
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        plain = model(x).image
        with global_statistics(model, RecordStats()) as recorder:
            recorded = model(x).image
        with global_statistics(model, ReplayStats(recorder.values)):
            replayed = model(x).image
    assert torch.equal(plain, recorded)
    assert torch.allclose(plain, replayed, atol=1e-6)
    kinds = {key.rsplit(":", 1)[1] for key in recorder.values}
    assert kinds == {"mean_std", "mean_var", "mean"}
    # Nothing stays attached once the block ends.
    assert all("_stats_slot" not in m.__dict__ for m in model.modules())


def test_replayed_statistics_change_a_crop_towards_the_whole_image():
    """A crop run with the whole image's statistics differs from the crop run on its own."""
    torch.manual_seed(0)
    model = create_model("dcmpnet-tiny").eval()
    x = torch.rand(1, 3, 64, 128) * 2 - 1
    x[:, :, :, 64:] = x[:, :, :, 64:] * 0.2 + 0.7  # right half much brighter
    with torch.no_grad():
        with global_statistics(model, RecordStats()) as recorder:
            model(x)
        alone = model(x[:, :, :, :64]).image
        with global_statistics(model, ReplayStats(recorder.values)):
            with_whole_stats = model(x[:, :, :, :64]).image
    assert (alone - with_whole_stats).abs().max() > 1e-3


def test_replay_without_recording_names_the_missing_statistic():
    model = create_model("dcmpnet-tiny").eval()
    with pytest.raises(KeyError, match="no recorded statistic"):
        with torch.no_grad(), global_statistics(model, ReplayStats({})):
            model(torch.rand(1, 3, 32, 32))
