"""`dcmp depth`: prior depth without weights, the depth network after dehazing, previews, streams."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from dcmp_cli.cli.app import app
from dcmp_cli.data.depth_io import read_depth_png
from dcmp_cli.data.image_io import read_image, write_image

from helpers import synthetic_hazy

runner = CliRunner()


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra = np.argsort(np.argsort(a.ravel())).astype(float)
    rb = np.argsort(np.argsort(b.ravel())).astype(float)
    return float(np.corrcoef(ra, rb)[0, 1])


def test_prior_depth_without_weights_follows_the_haze(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "none"))
    monkeypatch.delenv("DCMP_DEPTH_WEIGHTS", raising=False)
    _, hazy, depth = synthetic_hazy(96, 128, seed=2, beta=2.0)
    write_image(tmp_path / "h.png", hazy)
    result = runner.invoke(app, ["depth", str(tmp_path / "h.png"), str(tmp_path / "d.png")])
    assert result.exit_code == 0, result.output
    assert "layered dehazer" in result.output
    estimate, text = read_depth_png(tmp_path / "d.png")
    assert estimate.shape == (96, 128) and estimate.min() == 0.0 and estimate.max() == 1.0
    assert "0 = nearest" in text["dcmp:convention"]
    # The synthetic scene's depth grows towards the top; the prior must see that order.
    assert _spearman(estimate, depth) > 0.8


def test_depth_network_runs_on_the_dehazed_image(tmp_path, tiny_depth_ckpt, tiny_dehaze_ckpt):
    write_image(tmp_path / "h.png", synthetic_hazy(48, 64)[1])
    result = runner.invoke(
        app,
        [
            "depth",
            str(tmp_path / "h.png"),
            str(tmp_path / "sbs.png"),
            "-w",
            str(tiny_depth_ckpt),
            "--dehaze-weights",
            str(tiny_dehaze_ckpt),
            "--side-by-side",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["method"] == "dcmp" and info["dehazed_by"]["method"] == "dcmp"
    with Image.open(tmp_path / "sbs.png") as im:
        assert im.size == (64 * 3, 48) and im.mode == "RGB"  # input | dehazed | depth preview


def test_input_is_clear_skips_dehazing_and_needs_weights(tmp_path, tiny_depth_ckpt, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "none"))
    write_image(tmp_path / "c.png", synthetic_hazy(48, 64)[0])
    ok = runner.invoke(
        app,
        [
            "depth",
            str(tmp_path / "c.png"),
            str(tmp_path / "sbs.png"),
            "-w",
            str(tiny_depth_ckpt),
            "--input-is-clear",
            "--side-by-side",
        ],
    )
    assert ok.exit_code == 0
    with Image.open(tmp_path / "sbs.png") as im:
        assert im.size == (64 * 2, 48)
    bad = runner.invoke(app, ["depth", str(tmp_path / "c.png"), str(tmp_path / "x.png"), "--input-is-clear"])
    assert bad.exit_code == 2 and "depth checkpoint" in bad.output


def test_depth_formats_and_colormaps(tmp_path):
    write_image(tmp_path / "h.png", synthetic_hazy(40, 50, seed=1)[1])
    npy = runner.invoke(app, ["depth", str(tmp_path / "h.png"), str(tmp_path / "d.npy"), "--method", "dcp"])
    assert npy.exit_code == 0
    array = np.load(tmp_path / "d.npy")
    assert array.dtype == np.float32 and array.shape == (40, 50) and array.min() == 0.0 and array.max() == 1.0
    preview = runner.invoke(
        app, ["depth", str(tmp_path / "h.png"), str(tmp_path / "p.jpg"), "--method", "dcp", "--colormap", "viridis"]
    )
    assert preview.exit_code == 0 and read_image(tmp_path / "p.jpg").rgb.shape == (40, 50, 3)
    unknown = runner.invoke(app, ["depth", str(tmp_path / "h.png"), str(tmp_path / "q.png"), "--colormap", "rainbowz"])
    assert unknown.exit_code == 2 and "Invalid value for '--colormap'" in unknown.output
    piped = runner.invoke(
        app, ["depth", "-", "-", "--method", "dcp", "--ext", "npy"], input=(tmp_path / "h.png").read_bytes()
    )
    assert piped.exit_code == 0 and piped.stdout_bytes.startswith(b"\x93NUMPY")
