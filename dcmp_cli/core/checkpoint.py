"""Reading and writing model checkpoints, safely.

One reader, :func:`read_checkpoint`, takes every format users bring:

* dcmp's own checkpoints: safetensors files whose metadata names the network kind,
  the preset, the constructor arguments and what the weights were trained on;
* the authors' files: ``DIACMPN-dehaze-*.pth`` (a dict with a ``dehaze_net`` state dict,
  maybe beside optimizer state) and ``DIACMPN-depth-*.pth`` (``depth_net``), converted
  by :func:`dcmp_cli.core.official.convert_official_state_dict`;
* bare state dicts (official or our names, in ``.pth`` or safetensors), also with the
  ``module.`` prefix of data-parallel training or ``_orig_mod.`` of ``torch.compile``.

PyTorch files are read by :func:`load_tensors_only`, the one reader of ``torch.save``
files in dcmp (checkpoints, training states, VGG19 weights): ``torch.load(weights_only=True)``,
so a pickle that would import or call anything but tensors and plain containers is
refused, and its code never runs. There is no unsafe fallback.

dcmp checkpoints record the value range their networks read and write
(:data:`~dcmp_cli.core.value_range.NETWORK_VALUE_RANGE`, ``[-1, 1]``); a checkpoint that
records another range is refused with :class:`ValueRangeError` (there is no conversion).
"""

from __future__ import annotations

import json
import os
import pickle
import re
import struct
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dcmp_cli import __version__
from dcmp_cli.atomic import atomic_output
from dcmp_cli.core.official import (
    OfficialConversionError,
    convert_official_state_dict,
    infer_official_config,
    is_official_state_dict,
)
from dcmp_cli.core.value_range import NETWORK_BOUNDS, NETWORK_VALUE_RANGE, parse_value_range
from dcmp_cli.models.registry import KINDS, Kind, build_model, full_kwargs, get_preset, list_presets, match_preset

CHECKPOINT_FORMAT = "dcmp-checkpoint"
FORMAT_VERSION = "1"
CUSTOM_PRESET = "custom"

_OFFICIAL_ENTRIES: dict[str, Kind] = {"dehaze_net": "dehaze", "depth_net": "depth"}
_WRAPPER_ENTRIES = ("state_dict", "model", "params_ema", "params", "net")
_PREFIXES = ("module.", "_orig_mod.")
_KIND_WORDS = {"dehaze": "dehazing network", "depth": "depth network"}
_IMAGE_SIGNATURES = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"BM": "a BMP image",
    b"II*\x00": "a TIFF image",
    b"MM\x00*": "a TIFF image",
}


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message says why and what to do, in one line."""


class UnsafeFileError(CheckpointError):
    """The file holds Python objects other than tensors (or is a program): dcmp will not run its code.

    ``path``: the file; ``found``: what was found (a pickled global's name, or "a TorchScript program").
    """

    def __init__(self, path: Path, found: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.found = found


class ValueRangeError(CheckpointError):
    """A dcmp checkpoint records a value range other than the networks' [-1, 1] (``found``)."""

    def __init__(self, path: Path, found: str) -> None:
        super().__init__(
            f"{path} records networks that read and write images in {found}, but DCMPNet networks work in "
            f"{NETWORK_VALUE_RANGE} and dcmp does not convert between ranges; use a checkpoint saved for "
            f"{NETWORK_VALUE_RANGE} networks"
        )
        self.path = path
        self.found = found


@dataclass
class Checkpoint:
    """A network's weights in this project's names, with what is known about them."""

    kind: Kind
    preset: str
    model_kwargs: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    source: str
    metadata: dict[str, str] = field(default_factory=dict)
    dropped_keys: list[str] = field(default_factory=list)
    path: Path | None = None

    @property
    def num_parameters(self) -> int:
        """Scalars in the stored tensors (buffers such as batch-norm statistics included)."""
        return sum(t.numel() for t in self.state_dict.values() if t.is_floating_point())

    @property
    def depth_convention(self) -> str:
        """'disparity' (larger = nearer; the published weights) or 'depth' (larger = farther)."""
        return self.metadata.get("depth_convention", "disparity")

    def build(self, device: torch.device | str = "cpu") -> nn.Module:
        """The network with these weights loaded (strict), in eval mode, on ``device``."""
        model = build_model(self.kind, self.model_kwargs)
        check_state_dict(model, self.state_dict, self.describe())
        model.load_state_dict(self.state_dict, strict=True)
        return model.to(device).eval()

    def describe(self) -> str:
        name = self.path.name if self.path else "checkpoint"
        return f"{name} ({self.source}, {self.preset} {_KIND_WORDS[self.kind]})"


def _key_groups(keys: list[str], limit: int = 3) -> str:
    """'a.b.*, c.* and 5 more' for a list of keys, grouped by their first two components."""
    groups: dict[str, int] = {}
    for key in keys:
        prefix = ".".join(key.split(".")[:2])
        groups[prefix] = groups.get(prefix, 0) + 1
    shown = [f"{p}.*" if n > 1 else p for p, n in list(groups.items())[:limit]]
    more = len(groups) - limit
    return ", ".join(shown) + (f" and {more} more groups" if more > 0 else "")


def check_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], what: str) -> None:
    """Raises a one-line :class:`CheckpointError` when keys or shapes do not match ``model``."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [
        f"{k} {_shape_text(state_dict[k])} vs {_shape_text(expected[k])}"
        for k in expected
        if k in state_dict and state_dict[k].shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys ({_key_groups(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({_key_groups(unexpected)})")
    if shapes:
        problems.append(
            f"{len(shapes)} shape mismatches (checkpoint vs model: {'; '.join(shapes[:2])}"
            + (f"; and {len(shapes) - 2} more" if len(shapes) > 2 else "")
            + ")"
        )
    if problems:
        raise CheckpointError(f"{what} does not fit the network: " + ", ".join(problems))


def _shape_text(t: torch.Tensor) -> str:
    return "x".join(str(s) for s in t.shape) or "scalar"


def _sniff(path: Path) -> str:
    """'safetensors', 'torch-zip', 'torch-legacy', or raises for anything else."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(16)
    except IsADirectoryError:
        raise CheckpointError(f"{path} is a directory, not a checkpoint file") from None
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint not found: {path}") from None
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror or e}") from None
    if size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): the download or copy did not finish")
    if head.startswith(b"PK\x03\x04"):
        return "torch-zip"
    if len(head) >= 9:
        (header_len,) = struct.unpack("<Q", head[:8])
        if head[8:9] == b"{" and 8 + header_len <= size:
            return "safetensors"
        if head[8:9] == b"{":
            raise CheckpointError(f"{path} is a truncated safetensors file (header larger than the file)")
    if head.startswith(b"\x80") and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "torch-legacy"
    for signature, what in _IMAGE_SIGNATURES.items():
        if head.startswith(signature):
            raise CheckpointError(f"{path} is {what}, not a checkpoint")
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        raise CheckpointError(f"{path} is a WebP image, not a checkpoint")
    raise CheckpointError(f"{path} is not a checkpoint (neither a PyTorch file nor safetensors)")


#: The name of the global a refused pickle wanted, as PyTorch's weights-only unpickler reports it.
_REFUSED_GLOBAL = re.compile(r"[Uu]nsupported (?:global|GLOBAL):? ?(?:GLOBAL )?([\w.]+)")


def _load_error(path: Path, error: Exception) -> CheckpointError:
    """One line of our own for a failed ``torch.load``; never PyTorch's text about unsafe loading."""
    text = str(error)
    if "TorchScript" in text:
        return UnsafeFileError(
            path,
            "a TorchScript program",
            f"refused to load {path}: it is a TorchScript program, not a file of tensors, and dcmp does not run "
            "code from files",
        )
    if "Weights only load failed" in text or isinstance(error, pickle.UnpicklingError):
        match = _REFUSED_GLOBAL.search(text)
        found = match.group(1) if match else "unknown objects"
        return UnsafeFileError(
            path,
            found,
            f"refused to load {path}: it holds pickled Python objects other than tensors ({found}), and dcmp does "
            "not run code from files. Re-save the weights as a plain state dict or as safetensors in a trusted "
            "environment",
        )
    if "central directory" in text or "zip archive" in text or isinstance(error, EOFError):
        return CheckpointError(f"{path} is truncated or corrupt: the file is incomplete")
    first = text.splitlines()[0].strip() if text else ""
    detail = type(error).__name__ + (f": {first}" if first and "weights_only" not in text and len(first) < 200 else "")
    return CheckpointError(f"cannot read {path} as a PyTorch file ({detail})")


#: What each kind of program archive is called in messages.
PROGRAM_WORDS = {"export": "an exported program (torch.export)", "torchscript": "a TorchScript program"}


def program_kind(path: str | os.PathLike) -> str | None:
    """'export' (a ``torch.export`` archive), 'torchscript', or None for any other file.

    Recognised from the zip's entries, not the file name. Both are programs: loading
    them with PyTorch can run code, so :func:`load_tensors_only` refuses them unread.
    """
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


def _load_torch(path: Path) -> Any:
    kind = program_kind(path)
    if kind is not None:
        raise UnsafeFileError(
            path,
            PROGRAM_WORDS[kind],
            f"refused to load {path}: it is {PROGRAM_WORDS[kind]}, not a file of tensors, and dcmp does not run "
            "code from files",
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - every failure becomes a one-line CheckpointError
        raise _load_error(path, e) from None


def load_tensors_only(path: str | os.PathLike) -> Any:
    """What a ``torch.save`` or safetensors file holds, read without running any code from it.

    ``torch.save`` files are read with ``torch.load(weights_only=True)`` onto the CPU:
    tensors, dicts, lists, tuples, numbers and strings come back; anything else is
    refused before it is built. Safetensors files give their dict of tensors.
    Raises :class:`UnsafeFileError` for pickled Python objects other than tensors (or a
    TorchScript program), :class:`CheckpointError` for missing, empty, truncated or
    foreign files; one line each.
    """
    path = Path(path)
    if _sniff(path) == "safetensors":
        return _read_safetensors(path)[0]
    return _load_torch(path)


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{path} is a corrupt or truncated safetensors file ({e})") from None
    return tensors, metadata


def _strip_prefixes(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(state_dict)
    for prefix in _PREFIXES:
        if out and all(k.startswith(prefix) for k in out):
            out = {k[len(prefix) :]: v for k, v in out.items()}
    return out


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _scalar_metadata(container: Mapping[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in container.items() if isinstance(v, (int, float, str, bool))}


def _guess_kind(state_dict: Mapping[str, torch.Tensor]) -> Kind | None:
    if is_official_state_dict(state_dict, "dehaze") or "stages.0.blocks.0.mixer.value.weight" in state_dict:
        return "dehaze"
    if is_official_state_dict(state_dict, "depth") or "encoder.0.dense.layers.0.weight" in state_dict:
        return "depth"
    return None


def _mismatch_count(expected: Mapping[str, torch.Tensor], state_dict: Mapping[str, torch.Tensor]) -> int:
    return len(expected.keys() ^ state_dict.keys()) + sum(
        expected[k].shape != state_dict[k].shape for k in expected.keys() & state_dict.keys()
    )


def _closest_preset(kind: Kind, state_dict: Mapping[str, torch.Tensor]) -> tuple[str, int]:
    """The registered preset whose network is closest to these keys and shapes, and how far."""
    scores = [
        (_mismatch_count(build_model(kind, get_preset(name).kwargs(kind)).state_dict(), state_dict), name)
        for name in list_presets()
    ]
    distance, name = min(scores)
    return name, distance


def read_checkpoint(path: str | os.PathLike, kind: Kind | None = None) -> Checkpoint:
    """Reads any supported checkpoint. ``kind``, if given, is the network the caller needs.

    Raises :class:`CheckpointError` (one line) for unreadable, unsafe or unsuitable files,
    and for weights that are not all finite (a diverged training run).
    """
    checkpoint = _read_checkpoint(Path(path), kind)
    bad = [
        key
        for key, tensor in checkpoint.state_dict.items()
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]
    if bad:
        raise CheckpointError(
            f"{path} holds non-finite weights (NaN or infinity) in {len(bad)} tensor(s), e.g. {bad[0]}: the training "
            "that wrote it diverged; use an earlier checkpoint"
        )
    return checkpoint


def _read_checkpoint(path: Path, kind: Kind | None) -> Checkpoint:
    fmt = _sniff(path)
    metadata: dict[str, str] = {}
    state: Mapping[str, torch.Tensor] | None
    container_kind: Kind | None
    if fmt == "safetensors":
        state, metadata = _read_safetensors(path)
        if metadata.get("format") == CHECKPOINT_FORMAT:
            return _from_dcmp(path, state, metadata, kind)
        container_kind = None
    else:
        obj = _load_torch(path)
        if not isinstance(obj, Mapping):
            raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict or checkpoint dict")
        container_kind, state = None, None
        present = [entry for entry in _OFFICIAL_ENTRIES if _is_tensor_dict(obj.get(entry))]
        if kind is not None and len(present) > 1:
            present = [e for e in present if _OFFICIAL_ENTRIES[e] == kind]
        if present:
            container_kind = _OFFICIAL_ENTRIES[present[0]]
            state = obj[present[0]]
            metadata = _scalar_metadata(obj)
        elif _is_tensor_dict(obj):
            state = obj
        else:
            for entry in _WRAPPER_ENTRIES:
                if _is_tensor_dict(obj.get(entry)):
                    state, metadata = obj[entry], _scalar_metadata(obj)
                    break
        if state is None:
            entries = ", ".join(list(map(str, obj))[:6]) or "nothing"
            raise CheckpointError(
                f"{path} holds no network weights (entries: {entries}); expected a 'dehaze_net' or "
                "'depth_net' entry, a state dict, or a dcmp safetensors checkpoint"
            )
    assert state is not None
    tensors = _strip_prefixes(state)
    found = container_kind or _guess_kind(tensors)
    if found is None:
        raise CheckpointError(
            f"{path} holds weights of an unknown network (first keys: {', '.join(list(tensors)[:3])}); "
            "expected DCMPNet's dehazing or depth network"
        )
    _check_kind(path, found, kind)
    if is_official_state_dict(tensors, found):
        try:
            model_kwargs = full_kwargs(found, infer_official_config(tensors, found))
            converted = convert_official_state_dict(tensors, found)
        except (OfficialConversionError, KeyError, ValueError) as e:
            raise CheckpointError(
                f"{path} looks like an official DCMPNet checkpoint but does not convert: {e}"
            ) from None
        preset = match_preset(found, model_kwargs) or CUSTOM_PRESET
        return Checkpoint(
            found, preset, model_kwargs, converted.state_dict, "official", metadata, converted.dropped, path
        )
    preset, distance = _closest_preset(found, tensors)
    if distance:
        check_state_dict(build_model(found, get_preset(preset).kwargs(found)), tensors, f"{path.name} (state dict)")
    floats = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    kwargs = full_kwargs(found, get_preset(preset).kwargs(found))
    return Checkpoint(found, preset, kwargs, floats, "state-dict", metadata, [], path)


def _check_kind(path: Path, found: Kind, wanted: Kind | None) -> None:
    if wanted is not None and found != wanted:
        hint = (
            "a dehazing checkpoint such as DIACMPN-dehaze-Indoor.pth"
            if wanted == "dehaze"
            else ("a depth checkpoint such as DIACMPN-depth-Indoor.pth")
        )
        raise CheckpointError(f"{path} holds a {_KIND_WORDS[found]}, but this needs {hint}")


def _from_dcmp(path: Path, state: dict[str, torch.Tensor], metadata: dict[str, str], kind: Kind | None) -> Checkpoint:
    found = metadata.get("kind")
    if found not in KINDS:
        raise CheckpointError(f"{path}: dcmp checkpoint metadata has no valid 'kind' (got {found!r})")
    _check_kind(path, found, kind)
    value_range = metadata.get("value_range")
    if value_range is not None and parse_value_range(value_range) != NETWORK_BOUNDS:
        raise ValueRangeError(path, value_range)
    try:
        kwargs = full_kwargs(found, json.loads(metadata.get("model_kwargs", "{}")))
    except (json.JSONDecodeError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable model arguments in the checkpoint metadata ({e})") from None
    preset = metadata.get("preset", CUSTOM_PRESET)
    return Checkpoint(found, preset, kwargs, state, "dcmp", metadata, [], path)


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    kind: Kind,
    model_kwargs: Mapping[str, Any],
    preset: str | None = None,
    trained_on: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Writes ``model``'s weights as a dcmp safetensors checkpoint, atomically.

    ``model_kwargs`` are the arguments the network was built with; ``trained_on`` says
    what data it saw; ``extra`` values are stored as JSON strings.
    """
    from safetensors.torch import save_file

    path = Path(path)
    kwargs = full_kwargs(kind, dict(model_kwargs))
    metadata = {
        "format": CHECKPOINT_FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "preset": preset or match_preset(kind, kwargs) or CUSTOM_PRESET,
        "model_kwargs": json.dumps(kwargs),
        "value_range": NETWORK_VALUE_RANGE,
        "dcmp_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if trained_on:
        metadata["trained_on"] = trained_on
    for key, value in (extra or {}).items():
        metadata[key] = value if isinstance(value, str) else json.dumps(value)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_output(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path
