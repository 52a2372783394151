"""`dcmp --version/--help`, `dcmp dehaze|depth|info` end to end with real checkpoint files."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from dcmp_cli import __version__
from dcmp_cli.cli.app import app
from dcmp_cli.core.checkpoint import read_checkpoint
from dcmp_cli.data.image_io import read_image

from helpers import synthetic_hazy, write_png
from official_fixtures import official_state_dict

runner = CliRunner()


def test_version_and_help():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"dcmp {__version__}"
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("dehaze", "depth", "info"):
        assert command in result.output


def test_python_dash_m_runs_the_cli():
    proc = subprocess.run([sys.executable, "-m", "dcmp_cli", "--version"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and proc.stdout.strip() == f"dcmp {__version__}"


def _hazy_folder(root, sizes=((48, 64), (37, 51))):
    root.mkdir(parents=True, exist_ok=True)
    for i, (h, w) in enumerate(sizes):
        _, hazy, _ = synthetic_hazy(h, w, seed=i)
        write_png(root / f"img{i}.png", hazy)
    return root


def test_dehaze_folder_keeps_names_and_sizes(isolated, tiny_dehaze_ckpt):
    inputs = _hazy_folder(isolated / "in")
    result = runner.invoke(
        app,
        [
            "dehaze",
            str(inputs),
            str(isolated / "out"),
            "--weights",
            str(tiny_dehaze_ckpt),
            "--tile",
            "0",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    for name, shape in (("img0.png", (48, 64, 3)), ("img1.png", (37, 51, 3))):
        out = read_image(isolated / "out" / name)
        assert out.rgb.shape == shape
        assert not np.array_equal(out.rgb, read_image(inputs / name).rgb)


def test_dcmp_method_without_weights_says_how_to_get_them(isolated):
    inputs = _hazy_folder(isolated / "in")
    result = runner.invoke(app, ["dehaze", str(inputs), str(isolated / "out"), "--method", "dcmp", "--tile", "0"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "no dehazing weights found" in lines[0] and "--weights" in lines[0]
    assert not (isolated / "out").exists()


def test_auto_method_without_weights_uses_the_prior_and_says_so(isolated):
    inputs = _hazy_folder(isolated / "in")
    result = runner.invoke(app, ["dehaze", str(inputs), str(isolated / "out")])
    assert result.exit_code == 0, result.output
    notes = [line for line in result.output.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "layered dehazer" in notes[0] and "--method layered" in notes[0]
    assert sorted(p.name for p in (isolated / "out").iterdir()) == ["img0.png", "img1.png"]


def test_default_weights_from_environment_and_weights_dir(isolated, tiny_dehaze_ckpt, monkeypatch):
    inputs = _hazy_folder(isolated / "in", sizes=((32, 40),))
    monkeypatch.setenv("DCMP_WEIGHTS", str(tiny_dehaze_ckpt))
    assert runner.invoke(app, ["dehaze", str(inputs), str(isolated / "a"), "--tile", "0"]).exit_code == 0
    assert (isolated / "a" / "img0.png").is_file()
    monkeypatch.delenv("DCMP_WEIGHTS")
    (isolated / "weights").mkdir()
    (isolated / "weights" / "dcmpnet-dehaze.safetensors").write_bytes(tiny_dehaze_ckpt.read_bytes())
    assert runner.invoke(app, ["dehaze", str(inputs), str(isolated / "b"), "--tile", "0"]).exit_code == 0
    assert (isolated / "b" / "img0.png").is_file()
    monkeypatch.setenv("DCMP_WEIGHTS", str(isolated / "missing.pth"))
    result = runner.invoke(app, ["dehaze", str(inputs), str(isolated / "c"), "--tile", "0"])
    assert result.exit_code == 2 and "DCMP_WEIGHTS points to" in result.output


@pytest.mark.parametrize("bad", ["image", "truncated", "depth-kind"])
def test_unusable_weights_get_one_line_and_nonzero_exit(isolated, tiny_dehaze_ckpt, tiny_depth_ckpt, bad):
    inputs = _hazy_folder(isolated / "in", sizes=((32, 32),))
    if bad == "image":
        weights = write_png(isolated / "weights.png", np.zeros((8, 8, 3), np.float32))
    elif bad == "truncated":
        weights = isolated / "cut.safetensors"
        weights.write_bytes(tiny_dehaze_ckpt.read_bytes()[:5000])
    else:
        weights = tiny_depth_ckpt
    result = runner.invoke(
        app, ["dehaze", str(inputs), str(isolated / "out"), "--weights", str(weights), "--tile", "0"]
    )
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert "Traceback" not in result.output


def test_malicious_weights_do_not_execute_through_the_cli(isolated):
    import os

    marker = isolated / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    weights = isolated / "evil.pth"
    torch.save({"dehaze_net": Payload()}, weights)
    inputs = _hazy_folder(isolated / "in", sizes=((32, 32),))
    result = runner.invoke(
        app, ["dehaze", str(inputs), str(isolated / "out"), "--weights", str(weights), "--tile", "0"]
    )
    assert result.exit_code == 2 and "refused" in result.output
    assert not marker.exists()
    result = runner.invoke(app, ["info", str(weights)])
    assert result.exit_code == 2 and not marker.exists()


def test_official_checkpoint_gives_the_authors_image(isolated):
    """An authors'-format checkpoint through `dcmp dehaze --tile 0 --device cpu` writes, for odd-sized
    8-bit inputs, the image of the authors' pipeline: cv2 read, x·2−1, network, clamp, ·0.5+0.5, round."""
    official = official_state_dict("dehaze")
    # Saved as the authors' train.py saves it (optimizer state of a stepped Adam, epoch, best PSNR).
    param = torch.nn.Parameter(torch.zeros(4))
    optimizer = torch.optim.Adam([param], lr=1e-4)
    param.sum().backward()
    optimizer.step()
    weights = isolated / "DIACMPN-dehaze-Indoor.pth"
    torch.save(
        {
            "dehaze_net": official,
            "dehaze_optimizer": optimizer.state_dict(),
            "epoch_dehaze": 3,
            "dehaze_net_best_psnr": 31.25,
        },
        weights,
    )
    inputs = isolated / "in"
    inputs.mkdir()
    rng = np.random.default_rng(5)
    for name, (h, w) in {"odd_a.png": (45, 37), "odd_b.png": (33, 59)}.items():
        _, hazy, _ = synthetic_hazy(h, w, seed=int(rng.integers(100)))
        write_png(inputs / name, hazy)
    result = runner.invoke(
        app, ["dehaze", str(inputs), str(isolated / "out"), "--weights", str(weights), "--tile", "0", "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output

    model = read_checkpoint(weights, kind="dehaze").build()
    for name in ("odd_a.png", "odd_b.png"):
        bgr = cv2.imread(str(inputs / name))
        source = bgr[:, :, ::-1].astype("float32") / 255.0 * 2 - 1
        with torch.no_grad():
            out = model(torch.from_numpy(source.transpose(2, 0, 1).copy())[None])[0].clamp(-1, 1) * 0.5 + 0.5
        expected = np.round(out[0].numpy().transpose(1, 2, 0) * 255.0).astype(np.uint8)
        written = cv2.imread(str(isolated / "out" / name))[:, :, ::-1]
        assert written.shape == expected.shape
        assert np.abs(written.astype(int) - expected.astype(int)).max() <= 1


def test_depth_writes_16bit_maps(isolated, tiny_depth_ckpt):
    inputs = _hazy_folder(isolated / "in")
    result = runner.invoke(app, ["depth", str(inputs), str(isolated / "out"), "--weights", str(tiny_depth_ckpt)])
    assert result.exit_code == 0, result.output
    from PIL import Image

    for name, (h, w) in (("img0.png", (48, 64)), ("img1.png", (37, 51))):
        with Image.open(isolated / "out" / name) as im:
            assert im.mode.startswith("I;16") and im.size == (w, h)
            assert "dcmp:convention" in im.text
            pixels = np.asarray(im)
        assert pixels.min() == 0 and pixels.max() == 65535


def test_depth_refuses_a_dehazing_checkpoint(isolated, tiny_dehaze_ckpt):
    inputs = _hazy_folder(isolated / "in", sizes=((32, 32),))
    result = runner.invoke(app, ["depth", str(inputs), str(isolated / "out"), "--weights", str(tiny_dehaze_ckpt)])
    assert result.exit_code == 2 and "holds a dehazing network" in result.output


def test_info_describes_official_and_dcmp_checkpoints(isolated, tiny_dehaze_ckpt):
    official = isolated / "DIACMPN-dehaze-Indoor.pth"
    torch.save({"dehaze_net": official_state_dict("dehaze"), "epoch_dehaze": 5}, official)
    result = runner.invoke(app, ["info", str(official)])
    assert result.exit_code == 0, result.output
    assert "dehazing network, preset dcmpnet" in result.output
    assert "conv11" in result.output and "fuse_conv1" in result.output
    assert "epoch_dehaze" in result.output
    result = runner.invoke(app, ["info", str(tiny_dehaze_ckpt), "--json"])
    assert result.exit_code == 0
    import json

    report = json.loads(result.stdout)
    assert report["kind"] == "dehaze" and report["preset"] == "dcmpnet-tiny" and report["source"] == "dcmp"
    assert report["metadata"]["trained_on"].startswith("nothing")
    assert report["loads_strictly"] is True


def test_info_without_a_path_says_which_weights_would_be_used(isolated, tiny_dehaze_ckpt):
    result = runner.invoke(app, ["info"])
    assert result.exit_code == 0
    assert "dehazing network: none found" in result.output and "weights/DIACMPN-dehaze-Indoor.pth" in result.output
    (isolated / "weights").mkdir()
    target = isolated / "weights" / "dcmpnet-dehaze.safetensors"
    target.write_bytes(tiny_dehaze_ckpt.read_bytes())
    result = runner.invoke(app, ["info", "--json"])
    import json

    report = json.loads(result.stdout)
    assert report["dehaze"]["found"] == str(target.resolve()) or report["dehaze"]["found"].endswith(
        "weights/dcmpnet-dehaze.safetensors"
    )
    assert report["depth"]["found"] is None and report["depth"]["searched"]


def test_info_lists_each_metadata_key_once_with_rounded_numbers(isolated):
    official = isolated / "DIACMPN-dehaze-Indoor.pth"
    torch.save({"dehaze_net": official_state_dict("dehaze"), "max_psnr": 23.123456789}, official)
    result = runner.invoke(app, ["info", str(official)])
    assert "23.12" in result.output and "23.1234" not in result.output
    lines = [line.split()[0] for line in result.output.splitlines() if line.strip()]
    assert len(lines) == len(set(lines))
