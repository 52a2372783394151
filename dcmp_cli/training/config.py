"""Every hyper-parameter of `dcmp train`, with the published recipe as defaults.

A config file (TOML, JSON, or YAML when PyYAML is installed) sets any of the fields of
:class:`TrainConfig`, either flat (``lr_dehaze = 2e-4``) or grouped in the sections the
resolved config is written with (``[optim] lr_dehaze = 2e-4``). Unknown keys are errors.
Precedence: defaults < config file < overrides (command-line options, or the mapping a
Python caller gives): :func:`resolve_train_config` merges them the way `dcmp train` does.
The resolved config is saved as ``config.json`` in the run folder; resuming reads it back.

Defaults follow the authors' ``train.py`` and ``configs/indoor/DIACMPN-dehaze-Indoor.json``
(the authors' recipe): batch 8 of 256×256 crops (edge decay 0.1, flips and 90° rotations), Adam
at 1e-4 for each network, cosine decay to 1e-6, 600 epochs, fp16 autocast on CUDA, the
loss weights of their code. Where we depart from it, the field's help says so.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import tomllib

from dcmp_cli.models.registry import list_presets

SECTIONS = ("model", "data", "depth", "loss", "optim", "run", "log")
CONFIG_SUFFIXES = {".toml", ".json", ".yaml", ".yml"}


class ConfigError(ValueError):
    """A config file or value is unusable; the message names the key and what is allowed.

    ``key``: the config key at fault, when there is one.
    """

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


def _f(default: Any, section: str, help: str, choices: tuple[str, ...] | None = None, minimum: float | None = None):
    """A config field: its default, the section it is written in, its help, allowed values or minimum."""
    return field(default=default, metadata={"section": section, "help": help, "choices": choices, "minimum": minimum})


@dataclass(frozen=True)
class TrainConfig:
    """The training recipe. Field help strings are the reference documentation."""

    # --- model
    preset: str = _f("dcmpnet", "model", "Model preset for both networks (dcmpnet, dcmpnet-tiny).")

    # --- data
    data: str = _f("", "data", "Training dataset folder (hazy/ + GT/ [+ depth/], the layouts `dcmp eval` reads).")
    val_data: str = _f("", "data", "Validation dataset folder; empty: no validation and no best/ checkpoint.")
    patch_size: int = _f(256, "data", "Side of the random square training crops.", minimum=16)
    edge_decay: float = _f(
        0.1, "data", "Extra probability of crops touching the image border (the authors' edge_decay).", minimum=0
    )
    only_h_flip: bool = _f(
        False, "data", "Horizontal flips only (no 90° rotations), as the authors advise for outdoor data."
    )
    num_workers: int = _f(
        4, "data", "Data-loading worker processes per training process (0: load in the main process).", minimum=0
    )
    data_check: str = _f(
        "decode",
        "data",
        "Check every pair before training: decode (read all images) or header (sizes only, faster).",
        ("decode", "header"),
    )
    val_crop: int = _f(
        0, "data", "Validate on centre crops of this side (0: whole images, as the authors' test).", minimum=0
    )
    val_max_images: int = _f(0, "data", "Validate on at most this many pairs (0: all).", minimum=0)

    # --- depth targets
    depth_source: str = _f(
        "auto",
        "depth",
        "Depth target of the clear image: auto (the dataset's depth/ folder if present, else the pair-derived "
        "estimate; a depth_teacher wins), folder, pair, or teacher.",
        ("auto", "folder", "pair", "teacher"),
    )
    depth_folder_convention: str = _f(
        "depth",
        "depth",
        "What the dataset's depth/ maps hold: depth (larger = farther, as `dcmp synth` writes) or "
        "disparity (larger = nearer).",
        ("depth", "disparity"),
    )
    depth_teacher: str = _f(
        "",
        "depth",
        "Depth teacher run on the clear crops: a dcmp/authors' depth checkpoint, or a torch.export .pt2 or "
        "TorchScript program (these need trust_teacher_code).",
    )
    trust_teacher_code: bool = _f(
        False,
        "depth",
        "Load a depth teacher that is a program (torch.export .pt2, TorchScript): such a file can run "
        "arbitrary code on this machine when loaded. Only for files you trust; depth checkpoints never need it.",
    )
    teacher_input: str = _f(
        "network",
        "depth",
        "Exported/TorchScript teacher input range: network ([-1, 1]) or unit ([0, 1]).",
        ("network", "unit"),
    )
    teacher_output: str = _f(
        "disparity",
        "depth",
        "Exported/TorchScript teacher output: disparity (larger = nearer) or depth.",
        ("disparity", "depth"),
    )
    depth_cache: bool = _f(True, "depth", "Cache pair-derived depth maps in RUN_DIR/cache (computed once per pair).")

    # --- loss
    w_restore: float = _f(1.0, "loss", "L1(dehazed, clear), network range [-1, 1].", minimum=0)
    w_depth_consistency: float = _f(
        0.1,
        "loss",
        "Dehazing loss: L1(depth_net(dehazed), depth target). Both networks receive its gradient.",
        minimum=0,
    )
    w_depth: float = _f(1.0, "loss", "Depth loss: L1(depth_net(dehazed), depth target).", minimum=0)
    w_depth_weighted: float = _f(
        1.0, "loss", "Depth loss: the same L1 with both maps times the difference-perception weight map.", minimum=0
    )
    weight_map_mean_one: bool = _f(
        False,
        "loss",
        "Rescale the difference-perception weight map to mean 1 (published: softmax over C·H·W, mean ≈ 1/(H·W)).",
    )
    w_contrastive: float = _f(
        1.0, "loss", "VGG19 contrastive regulariser (needs vgg_weights; off without them).", minimum=0
    )
    vgg_weights: str = _f(
        "", "loss", "VGG19 weights file (torchvision's vgg19-dcbb9e9d.pth keys features.N.*); nothing downloads."
    )
    vgg_imagenet_normalize: bool = _f(
        False,
        "loss",
        "Feed VGG19 ImageNet-normalised [0, 1] images (the authors feed the [-1, 1] tensors as they are).",
    )
    w_guide: float = _f(
        0.0,
        "loss",
        "Guide consistency: L1 between the dehazer's guide features of the hazy and (detached) clear "
        "image. Our gradient-carrying stand-in for the published UNet terms, which carry no gradient.",
        minimum=0,
    )

    # --- optimisation
    optimizer: str = _f("adam", "optim", "adam or adamw, one per network.", ("adam", "adamw"))
    lr_dehaze: float = _f(1e-4, "optim", "Learning rate of the dehazing network.", minimum=0)
    lr_depth: float = _f(1e-4, "optim", "Learning rate of the depth network.", minimum=0)
    weight_decay: float = _f(0.0, "optim", "Weight decay of both optimisers.", minimum=0)
    lr_min_ratio: float = _f(
        0.01, "optim", "Cosine schedule floor as a fraction of the learning rate (authors: 1e-2).", minimum=0
    )
    schedule_unit: str = _f(
        "iteration",
        "optim",
        "Step the cosine schedule every iteration (smooth, works with iters) or every epoch (the authors).",
        ("iteration", "epoch"),
    )
    grad_clip: float = _f(0.0, "optim", "Clip each network's gradient norm to this (0: off, as published).", minimum=0)
    batch_size: int = _f(8, "optim", "Global batch size (split evenly over the training processes).", minimum=1)
    epochs: int = _f(600, "optim", "Training epochs (ignored when iters > 0).", minimum=1)
    iters: int = _f(0, "optim", "Training iterations; > 0 overrides epochs.", minimum=0)

    # --- run
    device: str = _f(
        "auto", "run", "auto, cpu, cuda, cuda:N or mps (under torchrun each process takes cuda:LOCAL_RANK)."
    )
    precision: str = _f(
        "auto",
        "run",
        "auto (fp16 autocast + grad scaling on CUDA, fp32 elsewhere), fp32, fp16 or bf16.",
        ("auto", "fp32", "fp16", "bf16"),
    )
    seed: int = _f(0, "run", "Seed of initialisation, data order and augmentation.", minimum=0)
    deterministic: bool = _f(
        False, "run", "Deterministic algorithms (slower on GPU; CPU runs are deterministic anyway)."
    )
    sync_batchnorm: bool = _f(True, "run", "Synchronise the guide UNet's batch norms across GPUs in multi-GPU runs.")
    nonfinite: str = _f(
        "stop",
        "run",
        "On a NaN/inf loss: stop (error naming the step and loss) or skip the batch (at most "
        "max_skipped_batches in a run).",
        ("stop", "skip"),
    )
    max_skipped_batches: int = _f(100, "run", "With nonfinite = skip: stop after this many skipped batches.", minimum=1)

    # --- logging and checkpoints
    log_every: int = _f(50, "log", "Write a metrics row every this many iterations.", minimum=1)
    val_every: int = _f(1, "log", "Validate every this many epochs (0: only at the end).", minimum=0)
    val_every_iters: int = _f(0, "log", "Also validate every this many iterations (0: off).", minimum=0)
    checkpoint_every_iters: int = _f(
        0, "log", "Also write last/ every this many iterations (0: at epoch ends and at the end).", minimum=0
    )
    protocol: str = _f(
        "dcmpnet", "log", "Validation PSNR/SSIM protocol (see `dcmp eval`).", ("dcmpnet", "dehazeformer")
    )
    tensorboard: bool = _f(True, "log", "Write TensorBoard logs to RUN_DIR/tensorboard when tensorboard is installed.")

    def __post_init__(self) -> None:
        """Checks every value (a ConfigError names the key); numbers given as ints become floats where needed."""
        for key, value in _check_values(asdict(self)).items():
            if value is not getattr(self, key):
                object.__setattr__(self, key, value)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The config grouped by section (what ``config.json`` holds)."""
        flat = asdict(self)
        return {s: {f.name: flat[f.name] for f in fields(self) if f.metadata["section"] == s} for s in SECTIONS}

    def flat(self) -> dict[str, Any]:
        """Every field by name (no sections)."""
        return asdict(self)

    def with_values(self, **values: Any) -> TrainConfig:
        """A copy with ``values`` replaced (validated)."""
        return replace(self, **_check_values(values))


def _names() -> dict[str, Any]:
    return {f.name: f for f in fields(TrainConfig)}


def _unknown(key: str) -> ConfigError:
    close = difflib.get_close_matches(key, list(_names()), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else "; see configs/dcmpnet.toml for every key"
    return ConfigError(f"unknown config key {key!r}{hint}", key)


def _check_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """Type-checks and range-checks values by field; returns them coerced (int -> float, …)."""
    known = _names()
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise _unknown(key)
        f = known[key]
        kind = type(f.default)
        if kind is bool:
            if not isinstance(value, bool):
                raise ConfigError(f"config key {key!r} must be true or false, got {value!r}", key)
        elif kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"config key {key!r} must be an integer, got {value!r}", key)
        elif kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"config key {key!r} must be a number, got {value!r}", key)
            value = float(value)
        elif kind is str:
            if isinstance(value, os.PathLike):
                value = os.fspath(value)
            if not isinstance(value, str):
                raise ConfigError(f"config key {key!r} must be a string, got {value!r}", key)
        choices, minimum = f.metadata["choices"], f.metadata["minimum"]
        if key == "preset":
            choices = tuple(list_presets())
        if choices and value not in choices:
            raise ConfigError(f"config key {key!r} must be one of {', '.join(choices)}; got {value!r}", key)
        if minimum is not None and value < minimum:
            raise ConfigError(f"config key {key!r} must be ≥ {minimum:g}, got {value!r}", key)
        out[key] = value
    return out


def flatten(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """Accepts flat keys and one level of sections (any section name that holds a table)."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, Mapping):
            if key not in SECTIONS:
                raise ConfigError(f"unknown config section [{key}]; sections are {', '.join(SECTIONS)}")
            for inner, inner_value in value.items():
                if inner in flat:
                    raise ConfigError(f"config key {inner!r} is given twice", inner)
                flat[inner] = inner_value
        else:
            if key in flat:
                raise ConfigError(f"config key {key!r} is given twice", key)
            flat[key] = value
    return flat


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Reads a TOML / JSON / YAML config file into flat, validated values."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in CONFIG_SUFFIXES:
        raise ConfigError(f"{path}: config files are .toml, .json or .yaml, not {suffix or 'extension-less'}")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
    try:
        if suffix == ".toml":
            data = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            try:
                import yaml
            except ImportError:
                raise ConfigError(
                    f"{path}: YAML configs need PyYAML (pip install pyyaml); or use TOML or JSON"
                ) from None
            data = yaml.safe_load(text) or {}
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path} is not valid {suffix[1:].upper()}: {e}") from None
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - a YAML parser error
        raise ConfigError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path} must hold a table of keys, not {type(data).__name__}")
    try:
        return _check_values(flatten(data))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}", e.key) from None


def parse_assignment(text: str) -> tuple[str, Any]:
    """``key=value`` (``section.key=value`` also accepted) with a TOML value; bare words are strings."""
    if "=" not in text:
        raise ConfigError(f"{text!r} is not an assignment: expected KEY=VALUE, e.g. w_depth_weighted=2")
    key, raw = (part.strip() for part in text.split("=", 1))
    if "." in key:
        section, key = key.split(".", 1)
        if section not in SECTIONS:
            raise ConfigError(f"{text!r}: unknown section {section!r}; sections are {', '.join(SECTIONS)}")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def build_config(file: str | os.PathLike | None = None, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """Defaults < ``file`` < ``overrides`` (None values ignored); see :func:`resolve_train_config`."""
    return resolve_train_config(file, overrides or {}).config


@dataclass(frozen=True)
class ResolvedConfig:
    """A config and the values its user set (config file and overrides; not the defaults).

    ``given`` matters when resuming: the saved run's recipe is kept, and only the given
    values are checked against it (see :func:`dcmp_cli.training.run_folder.prepare_run`).
    """

    config: TrainConfig
    given: Mapping[str, Any]


def resolve_train_config(
    config_file: str | os.PathLike | None,
    overrides: Mapping[str, Any],
    assignments: Iterable[str] = (),
) -> ResolvedConfig:
    """Merges defaults < ``config_file`` < ``overrides`` < ``assignments``, as `dcmp train` does.

    ``overrides``: config keys to values (None: not given; ``os.PathLike`` values become
    strings). ``assignments``: ``"key=value"`` strings with TOML values (see
    :func:`parse_assignment`). Give ``epochs`` or ``iters``, not both (a given ``epochs``
    clears an ``iters`` from the config file). Raises :class:`ConfigError`.

    Example::

        resolved = resolve_train_config("configs/tiny-cpu.toml", {"data": "pairs", "iters": 100})
        train(resolved, "runs/tiny")
    """
    values = {k: v for k, v in overrides.items() if v is not None}
    for assignment in assignments:
        key, value = parse_assignment(assignment)
        values[key] = value
    if values.get("epochs") is not None and values.get("iters"):
        raise ConfigError("give epochs or iters, not both (iters > 0 overrides epochs)", "iters")
    if "epochs" in values:
        values.setdefault("iters", 0)
    given = {**(read_config_file(config_file) if config_file is not None else {}), **_check_values(values)}
    return ResolvedConfig(TrainConfig(**given), given)


def config_from_dict(data: Mapping[str, Any]) -> TrainConfig:
    """Rebuilds a config from :meth:`TrainConfig.to_dict` output (``config.json``)."""
    return TrainConfig(**_check_values(flatten(data)))
