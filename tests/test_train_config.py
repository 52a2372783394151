"""`dcmp train` configuration: published defaults, file formats, validation, overrides."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dcmp_cli.training.config import (
    ConfigError,
    TrainConfig,
    build_config,
    config_from_dict,
    parse_assignment,
    read_config_file,
    resolve_train_config,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_defaults_are_the_published_recipe():
    c = TrainConfig()
    assert (c.preset, c.batch_size, c.patch_size, c.epochs) == ("dcmpnet", 8, 256, 600)
    assert (c.optimizer, c.lr_dehaze, c.lr_depth, c.lr_min_ratio) == ("adam", 1e-4, 1e-4, 0.01)
    assert (c.edge_decay, c.only_h_flip) == (0.1, False)
    assert (c.w_restore, c.w_depth_consistency, c.w_depth, c.w_depth_weighted, c.w_contrastive) == (1, 0.1, 1, 1, 1)
    assert c.w_guide == 0.0  # the published UNet terms carry no gradient: off
    assert c.precision == "auto"


def test_shipped_config_files():
    assert build_config(CONFIGS / "dcmpnet.toml") == TrainConfig()
    assert set(read_config_file(CONFIGS / "dcmpnet.toml")) == set(TrainConfig().flat())  # documents every key
    tiny = build_config(CONFIGS / "tiny-cpu.toml")
    assert tiny.preset == "dcmpnet-tiny" and tiny.device == "cpu"


def test_sections_and_flat_keys_and_formats(tmp_path):
    (tmp_path / "a.toml").write_text("[optim]\nlr_dehaze = 2e-4\nbatch_size = 4\n[data]\npatch_size = 64\n")
    (tmp_path / "b.json").write_text(json.dumps({"lr_dehaze": 2e-4, "batch_size": 4, "patch_size": 64}))
    a, b = build_config(tmp_path / "a.toml"), build_config(tmp_path / "b.json")
    assert a == b and a.lr_dehaze == 2e-4 and a.batch_size == 4 and a.patch_size == 64
    # Command-line values win over the file; None means "not given".
    c = build_config(tmp_path / "a.toml", {"batch_size": 2, "patch_size": None})
    assert c.batch_size == 2 and c.patch_size == 64
    # The resolved config round-trips through config.json.
    assert config_from_dict(json.loads(json.dumps(c.to_dict()))) == c


@pytest.mark.parametrize(
    "text,message",
    [
        ("lr_dehazee = 1e-4", "did you mean 'lr_dehaze'"),
        ("batch_size = 2.5", "must be an integer"),
        ("batch_size = 0", "must be ≥ 1"),
        ('precision = "fp64"', "must be one of auto, fp32, fp16, bf16"),
        ('preset = "huge"', "must be one of dcmpnet"),
        ("[optimiser]\nlr_dehaze = 1", "unknown config section"),
        ("lr = ", "not valid TOML"),
    ],
)
def test_bad_config_files_name_the_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        read_config_file(path)


def test_yaml_without_pyyaml_or_unknown_suffix(tmp_path):
    (tmp_path / "c.ini").write_text("x")
    with pytest.raises(ConfigError, match=".toml, .json or .yaml"):
        read_config_file(tmp_path / "c.ini")
    with pytest.raises(ConfigError, match="not found"):
        read_config_file(tmp_path / "missing.toml")
    try:
        import yaml  # noqa: F401
    except ImportError:
        (tmp_path / "c.yaml").write_text("batch_size: 2\n")
        with pytest.raises(ConfigError, match="PyYAML"):
            read_config_file(tmp_path / "c.yaml")


def test_set_assignments():
    assert parse_assignment("w_depth_weighted=2") == ("w_depth_weighted", 2)
    assert parse_assignment("loss.w_guide = 0.5") == ("w_guide", 0.5)
    assert parse_assignment("nonfinite=skip") == ("nonfinite", "skip")
    assert parse_assignment("deterministic=true") == ("deterministic", True)
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_assignment("w_guide")
    with pytest.raises(ConfigError, match="unknown section"):
        parse_assignment("nope.w_guide=1")


def test_resolve_train_config_merges_like_the_command(tmp_path):
    """File < overrides < KEY=VALUE assignments; ``given`` holds what the user set, not the defaults."""
    (tmp_path / "c.toml").write_text("[optim]\nbatch_size = 4\niters = 50\n[data]\npatch_size = 64\n")
    resolved = resolve_train_config(
        tmp_path / "c.toml",
        {"data": tmp_path / "pairs", "batch_size": 2, "seed": None},
        ["loss.w_guide=0.5", "batch_size=6"],
    )
    c = resolved.config
    assert (c.batch_size, c.patch_size, c.iters, c.w_guide, c.data) == (6, 64, 50, 0.5, str(tmp_path / "pairs"))
    assert dict(resolved.given) == {
        "batch_size": 6,
        "iters": 50,
        "patch_size": 64,
        "data": str(tmp_path / "pairs"),
        "w_guide": 0.5,
    }
    # A given epochs count wins over the file's iters; both given is an error naming the key.
    assert resolve_train_config(tmp_path / "c.toml", {"epochs": 3}).config.iters == 0
    with pytest.raises(ConfigError, match="epochs or iters, not both") as info:
        resolve_train_config(None, {"epochs": 3, "iters": 10})
    assert info.value.key == "iters"
    with pytest.raises(ConfigError, match="did you mean 'w_guide'") as info:
        resolve_train_config(None, {}, ["w_giude=1"])
    assert info.value.key == "w_giude"


def test_a_config_built_in_python_is_checked():
    with pytest.raises(ConfigError, match="must be ≥ 1") as info:
        TrainConfig(batch_size=0)
    assert info.value.key == "batch_size"
    assert TrainConfig(lr_dehaze=1).lr_dehaze == 1.0 and isinstance(TrainConfig(lr_dehaze=1).lr_dehaze, float)
    assert TrainConfig(data=Path("pairs")).data == "pairs"


def test_the_python_entry_points_are_importable_from_the_package():
    import dcmp_cli.training as training
    from dcmp_cli.training import config, trainer

    assert training.train is trainer.train and training.TrainConfig is config.TrainConfig
    assert training.resolve_train_config is resolve_train_config
    with pytest.raises(AttributeError):
        training.no_such_name  # noqa: B018 - the attribute access is the test
