"""One loader for every checkpoint format; unsafe or wrong files get one-line errors."""

from __future__ import annotations

import os
import pathlib

import numpy as np
import pytest
import torch

from dcmp_cli.core.checkpoint import (
    CheckpointError,
    UnsafeFileError,
    ValueRangeError,
    load_tensors_only,
    read_checkpoint,
    save_checkpoint,
)
from dcmp_cli.models import create_model, get_preset


def _tiny(kind="dehaze", seed=0):
    torch.manual_seed(seed)
    return create_model("dcmpnet-tiny", kind).eval()


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("kind", ["dehaze", "depth"])
def test_dcmp_safetensors_round_trip_with_metadata(tmp_path, kind):
    model = _tiny(kind)
    path = save_checkpoint(
        tmp_path / "m.safetensors",
        model,
        kind,
        get_preset("dcmpnet-tiny").kwargs(kind),
        trained_on="synthetic test pairs",
        extra={"steps": 12},
    )
    ckpt = read_checkpoint(path)
    assert (ckpt.kind, ckpt.preset, ckpt.source) == (kind, "dcmpnet-tiny", "dcmp")
    assert ckpt.metadata["trained_on"] == "synthetic test pairs"
    assert ckpt.metadata["steps"] == "12"
    assert ckpt.metadata["value_range"] == "[-1, 1]"
    assert _same_weights(ckpt.build(), model)
    assert not list(tmp_path.glob(".*tmp*")), "temporary file left behind"


def test_bare_state_dict_with_data_parallel_prefix(tmp_path):
    model = _tiny()
    path = tmp_path / "raw.pth"
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, path)
    ckpt = read_checkpoint(path, kind="dehaze")
    assert ckpt.source == "state-dict" and ckpt.preset == "dcmpnet-tiny"
    assert _same_weights(ckpt.build(), model)


def test_state_dict_inside_a_wrapper_entry(tmp_path):
    model = _tiny("depth")
    path = tmp_path / "wrapped.pt"
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, path)
    ckpt = read_checkpoint(path)
    assert ckpt.kind == "depth" and ckpt.metadata["epoch"] == "3"


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pth"
    torch.save({"dehaze_net": {"x": torch.zeros(1)}, "payload": Payload()}, path)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert "refused" in message and "system" in message and "\n" not in message
    assert not marker.exists()


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "PNG image, not a checkpoint"),
        (b"\xff\xd8\xff\xe0" + b"\0" * 64, "JPEG image, not a checkpoint"),
        (b"hello, I am a text file\n", "not a checkpoint"),
        (b"", "empty"),
    ],
)
def test_wrong_files_get_one_line_errors(tmp_path, content, expected):
    path = tmp_path / "weights.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_truncated_checkpoint(tmp_path):
    path = tmp_path / "t.pth"
    torch.save({"dehaze_net": _tiny().state_dict()}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_checkpoint(path)


def test_truncated_safetensors(tmp_path):
    path = save_checkpoint(tmp_path / "t.safetensors", _tiny(), "dehaze", get_preset("dcmpnet-tiny").kwargs("dehaze"))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointError, match="truncated|corrupt"):
        read_checkpoint(path)


def test_checkpoint_of_the_other_kind(tmp_path):
    path = tmp_path / "DIACMPN-depth-Indoor.pth"
    torch.save({"depth_net": _tiny("depth").state_dict()}, path)
    with pytest.raises(CheckpointError, match="holds a depth network, but this needs a dehazing checkpoint"):
        read_checkpoint(path, kind="dehaze")


def test_mismatched_state_dict_gives_a_short_report(tmp_path):
    state = _tiny().state_dict()
    state.pop("embed.weight")
    state["extra.layer.weight"] = torch.zeros(3)
    state["head.weight"] = torch.zeros(1, 2, 3, 3)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message and len(message) < 600
    assert "1 missing keys (embed.weight)" in message
    assert "unexpected keys (extra.layer.*" in message or "unexpected keys (extra.layer" in message
    assert "head.weight" in message


def test_missing_and_directory_paths(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "nope.pth")
    with pytest.raises(CheckpointError, match="directory"):
        read_checkpoint(tmp_path)


def test_official_container_with_optimizer_state(tmp_path):
    """Saved the way the authors' train.py saves it: net, optimizer, epoch, best PSNR."""
    model = _tiny("depth")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    model(torch.rand(1, 3, 32, 32)).mean().backward()
    optimizer.step()
    official = {}
    # Rename to the authors' depth-network keys by inverting our conversion on a tiny net.
    from dcmp_cli.core.official import convert_official_state_dict

    ours = model.state_dict()
    levels = 4
    names = {}
    for i in range(levels):
        names[f"encoder.{i}.dense."] = f"DRDB_layer{i + 1}."
        names[f"encoder.{i}.down."] = f"conv{i + 1}."
        names[f"decoder.{i}.up."] = f"up{i + 1}."
    names["bottleneck."] = f"DRDB_layer{levels + 1}."
    for i in range(levels - 1):
        names[f"decoder.{i}.dense."] = f"DRDB_layer{levels + 2 + i}."
    names["head."] = "final_conv."
    for key, value in ours.items():
        prefix = next(p for p in names if key.startswith(p))
        rest = key[len(prefix) :].replace("layers.", "Dcov").replace("fuse.", "conv.")
        if rest.startswith("Dcov"):
            index, tail = rest[len("Dcov") :].split(".", 1)
            rest = f"Dcov{int(index) + 1}.{tail}"
        official[names[prefix] + rest] = value
    assert convert_official_state_dict(official, "depth").state_dict.keys() == ours.keys()
    path = tmp_path / "DIACMPN-depth-Indoor.pth"
    torch.save({"depth_net": official, "depth_optimizer": optimizer.state_dict(), "epoch_depth": 7}, path)
    ckpt = read_checkpoint(path, kind="depth")
    assert ckpt.source == "official" and ckpt.preset == "dcmpnet-tiny"
    assert ckpt.metadata["epoch_depth"] == "7"
    assert _same_weights(ckpt.build(), model)


def test_float16_tensors_load_as_float32(tmp_path):
    model = _tiny()
    path = tmp_path / "half.pth"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}, path)
    built = read_checkpoint(path).build()
    assert all(p.dtype == torch.float32 for p in built.parameters())
    ref = model.state_dict()["embed.weight"].half().float()
    assert np.allclose(built.state_dict()["embed.weight"].numpy(), ref.numpy())


# --- value range -----------------------------------------------------------------------------------


def _with_metadata(path, **changes):
    """Rewrites a safetensors file with some metadata entries changed (None removes one)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        metadata = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    for key, value in changes.items():
        if value is None:
            metadata.pop(key, None)
        else:
            metadata[key] = value
    save_file(tensors, str(path), metadata=metadata)
    return path


def test_value_range_is_read_on_load(tmp_path):
    path = save_checkpoint(tmp_path / "m.safetensors", _tiny(), "dehaze", get_preset("dcmpnet-tiny").kwargs("dehaze"))
    assert read_checkpoint(_with_metadata(path, value_range="[-1,1]")).kind == "dehaze"  # spelling varies
    assert read_checkpoint(_with_metadata(path, value_range=None)).kind == "dehaze"  # not recorded: the networks' own
    for found in ("[0, 1]", "0..1"):
        with pytest.raises(ValueRangeError) as info:
            read_checkpoint(_with_metadata(path, value_range=found))
        assert info.value.found == found and isinstance(info.value, CheckpointError)
        message = str(info.value)
        assert f"in {found}" in message and "[-1, 1]" in message and "\n" not in message


# --- the one weights-only reader ---------------------------------------------------------------------


class _TouchOnUnpickle:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_load_tensors_only_reads_tensors_and_refuses_code(tmp_path):
    torch.save({"a": torch.arange(3), "meta": {"step": 2, "name": "x"}}, tmp_path / "plain.pt")
    loaded = load_tensors_only(tmp_path / "plain.pt")
    assert torch.equal(loaded["a"], torch.arange(3)) and loaded["meta"] == {"step": 2, "name": "x"}
    path = save_checkpoint(
        tmp_path / "m.safetensors", _tiny("depth"), "depth", get_preset("dcmpnet-tiny").kwargs("depth")
    )
    assert set(load_tensors_only(path)) == set(_tiny("depth").state_dict())

    marker = tmp_path / "ran"
    torch.save({"weights": torch.zeros(1), "payload": _TouchOnUnpickle(marker)}, tmp_path / "evil.pt")
    with pytest.raises(UnsafeFileError) as info:
        load_tensors_only(tmp_path / "evil.pt")
    message = str(info.value)
    assert "Python objects other than tensors" in message and "does not run code from files" in message
    assert "weights_only" not in message and "\n" not in message
    assert not marker.exists()


def test_torchscript_files_are_refused_unread(tmp_path):
    with pytest.warns(DeprecationWarning):  # PyTorch deprecates TorchScript
        torch.jit.script(torch.nn.Conv2d(3, 1, 1)).save(str(tmp_path / "program.pth"))
    for read in (load_tensors_only, read_checkpoint):
        with pytest.raises(UnsafeFileError, match="it is a TorchScript program") as info:
            read(tmp_path / "program.pth")
        assert "weights_only" not in str(info.value) and "\n" not in str(info.value)


def test_non_finite_weights_are_refused(tmp_path):
    from dcmp_cli.core.checkpoint import CheckpointError, read_checkpoint
    from dcmp_cli.models import create_model

    model = create_model("dcmpnet-tiny", "dehaze")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first].fill_(float("nan"))
    torch.save(state, tmp_path / "nan.pth")
    with pytest.raises(CheckpointError, match="non-finite weights.*diverged"):
        read_checkpoint(tmp_path / "nan.pth")
