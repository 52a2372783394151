"""Our networks, loaded through the official-checkpoint conversion, reproduce the authors' outputs."""

from __future__ import annotations

import pytest
import torch

from dcmp_cli.core.checkpoint import read_checkpoint
from dcmp_cli.core.official import (
    UNUSED_OFFICIAL_MODULES,
    convert_official_state_dict,
    infer_official_config,
)
from dcmp_cli.models import build_model, match_preset

from official_fixtures import official_state_dict, read_keys

TOL = 1e-4


@pytest.fixture(scope="module")
def official_dehaze():
    return official_state_dict("dehaze")


@pytest.fixture(scope="module")
def official_depth():
    return official_state_dict("depth")


def _load(kind, state):
    config = infer_official_config(state, kind)
    model = build_model(kind, config).eval()
    model.load_state_dict(convert_official_state_dict(state, kind).state_dict, strict=True)
    return model


@pytest.mark.parametrize("case", ["a", "b"])
def test_dehaze_network_matches_official(official_dehaze, reference_npz, case):
    model = _load("dehaze", official_dehaze)
    with torch.no_grad():
        out = model(torch.from_numpy(reference_npz[f"input_{case}"]))
    for name, tensor in zip(("dehaze", "guide1", "guide2", "guide3"), out):
        expected = torch.from_numpy(reference_npz[f"{name}_{case}"])
        assert tensor.shape == expected.shape, name
        assert (tensor - expected).abs().max().item() <= TOL, name


@pytest.mark.parametrize("case", ["a", "b"])
def test_depth_network_matches_official(official_depth, reference_npz, case):
    model = _load("depth", official_depth)
    with torch.no_grad():
        out = model(torch.from_numpy(reference_npz[f"input_{case}"]))
    expected = torch.from_numpy(reference_npz[f"depth_{case}"])
    assert out.shape == expected.shape
    assert (out - expected).abs().max().item() <= TOL


def test_official_config_is_the_dcmpnet_preset(official_dehaze, official_depth):
    assert match_preset("dehaze", infer_official_config(official_dehaze, "dehaze")) == "dcmpnet"
    assert match_preset("depth", infer_official_config(official_depth, "depth")) == "dcmpnet"


def test_conversion_drops_exactly_the_unused_parameters(official_dehaze):
    result = convert_official_state_dict(official_dehaze, "dehaze")
    dropped_modules = {k.split(".")[0] for k in result.dropped if not k.endswith("relative_positions")}
    assert dropped_modules == set(UNUSED_OFFICIAL_MODULES)
    n_relative = sum(k.endswith("relative_positions") for k, _, _ in read_keys("dehaze"))
    n_unused = sum(k.split(".")[0] in UNUSED_OFFICIAL_MODULES for k, _, _ in read_keys("dehaze"))
    assert len(result.dropped) == n_relative + n_unused
    assert len(result.state_dict) == len(official_dehaze) - len(result.dropped)


def test_official_file_loads_through_read_checkpoint(tmp_path, official_dehaze, reference_npz):
    path = tmp_path / "DIACMPN-dehaze-Indoor.pth"
    torch.save({"dehaze_net": {k: v.half() if v.is_floating_point() else v for k, v in official_dehaze.items()}}, path)
    ckpt = read_checkpoint(path, kind="dehaze")
    assert ckpt.source == "official" and ckpt.preset == "dcmpnet"
    model = ckpt.build()
    with torch.no_grad():
        out = model(torch.from_numpy(reference_npz["input_a"])).image
    # float16 storage costs precision; the network must still be the authors' network.
    assert (out - torch.from_numpy(reference_npz["dehaze_a"])).abs().max() < 0.05
