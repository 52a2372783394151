"""`dcmp synth` and dcmp_cli.data.synth: the scattering model, seeding, depth handling, and that
eval/training read what it writes."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from dcmp_cli.cli.app import app
from dcmp_cli.data.datasets import discover_pairs, load_pair
from dcmp_cli.data.depth_io import read_depth_png
from dcmp_cli.data.haze import add_haze, vertical_gradient_depth
from dcmp_cli.data.image_io import read_image, write_image
from dcmp_cli.data.synth import (
    STAND_IN,
    SynthConfig,
    SynthError,
    draw_parameters,
    read_manifest,
    synthesize,
)

from helpers import synthetic_hazy, write_png

runner = CliRunner()
SIZE = (36, 48)


def clear_folder(root, names=("alpha", "beta_2", "c")):
    for i, name in enumerate(names):
        write_png(root / f"{name}.png", synthetic_hazy(*SIZE, seed=i)[0])
    return root


def synth(*args):
    return runner.invoke(app, ["synth", *map(str, args)])


def test_hazy_images_follow_the_scattering_model_with_given_depth(tmp_path):
    clear = clear_folder(tmp_path / "clear")
    (tmp_path / "depth").mkdir()
    rng = np.random.default_rng(0)
    raw = {}
    for name in ("alpha", "beta_2", "c"):
        raw[name] = rng.uniform(2.0, 30.0, SIZE).astype(np.float32)  # metres, say
        np.save(tmp_path / "depth" / f"{name}.npy", raw[name])
    result = synth(clear, tmp_path / "out", "--depth", tmp_path / "depth", "--per-image", 2, "--seed", 7)
    assert result.exit_code == 0, result.output
    manifest = read_manifest(tmp_path / "out")
    assert manifest["hazy_images"] == 6 and manifest["clear_images"] == 3 and manifest["seed"] == 7
    for record in manifest["images"]:
        name = record["clear"][len("GT/") : -len(".png")]
        assert record["hazy"] == f"hazy/{name}_{record['k']}.png" and record["depth_source"] == "given"
        assert record["depth_file"] == str(tmp_path / "depth" / f"{name}.npy")
        gt = read_image(tmp_path / "out" / record["clear"]).rgb
        assert np.array_equal(gt, read_image(clear / f"{name}.png").rgb)
        d = (raw[name] - raw[name].min()) / (raw[name].max() - raw[name].min())
        written, _ = read_depth_png(tmp_path / "out" / record["depth"])
        assert np.abs(written - d).max() <= 1 / 65535
        expected = add_haze(gt, d, record["beta"], record["airlight"])
        hazy = read_image(tmp_path / "out" / record["hazy"]).rgb
        assert np.abs(hazy - expected).max() <= 0.51 / 255  # 8-bit rounding only


def test_ranges_seed_and_per_image_draws(tmp_path):
    clear = clear_folder(tmp_path / "clear")
    assert (
        synth(clear, tmp_path / "a", "--beta", "1.0,1.5", "--airlight", "0.8,0.9", "-k", 3, "--seed", 1).exit_code == 0
    )
    assert (
        synth(clear, tmp_path / "b", "--beta", "1.0,1.5", "--airlight", "0.8,0.9", "-k", 3, "--seed", 1).exit_code == 0
    )
    assert (
        synth(clear, tmp_path / "c", "--beta", "1.0,1.5", "--airlight", "0.8,0.9", "-k", 3, "--seed", 2).exit_code == 0
    )
    a, b, c = (read_manifest(tmp_path / x)["images"] for x in "abc")
    assert len(a) == 9 and a == b
    assert [(r["beta"], r["airlight"]) for r in a] != [(r["beta"], r["airlight"]) for r in c]
    assert all(1.0 <= r["beta"] <= 1.5 and 0.8 <= r["airlight"] <= 0.9 for r in a + c)
    assert len({r["beta"] for r in a}) == 9  # drawn, not repeated
    # an image's draws depend on the seed and its name only, not on the other files
    alone = clear_folder(tmp_path / "alone", names=("c",))
    assert (
        synth(alone, tmp_path / "d", "--beta", "1.0,1.5", "--airlight", "0.8,0.9", "-k", 3, "--seed", 1).exit_code == 0
    )
    d = read_manifest(tmp_path / "d")["images"]
    assert [(r["beta"], r["airlight"]) for r in d] == [
        (r["beta"], r["airlight"]) for r in a if r["clear"] == "GT/c.png"
    ]
    # one value fixes it
    assert synth(alone, tmp_path / "e", "--beta", "1.2", "--airlight", "1").exit_code == 0
    (record,) = read_manifest(tmp_path / "e")["images"]
    assert (record["beta"], record["airlight"]) == (1.2, 1.0)


def test_stand_in_depth_without_depth_maps(tmp_path):
    clear = clear_folder(tmp_path / "clear", names=("x",))
    result = synth(clear, tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "stand-in depth" in result.output and "vertical gradient" in result.output
    (record,) = read_manifest(tmp_path / "out")["images"]
    assert record["depth_source"] == STAND_IN == "stand-in: vertical gradient" and record["depth_file"] == ""
    assert 0.6 <= record["beta"] <= 1.8 and 0.7 <= record["airlight"] <= 1.0  # the defaults
    depth, text = read_depth_png(tmp_path / "out" / "depth" / "x.png")
    assert np.abs(depth - vertical_gradient_depth(*SIZE)).max() <= 1 / 65535
    assert "0 = nearest" in text["dcmp:convention"]
    with open(tmp_path / "out" / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows == [{k: str(v) for k, v in record.items()}]


def test_disparity_maps_are_flipped_and_resized(tmp_path):
    clear = clear_folder(tmp_path / "clear", names=("x",))
    disparity = np.tile(np.linspace(0, 1, SIZE[1] * 2, dtype=np.float32), (SIZE[0] * 2, 1))  # twice the size
    write_image(tmp_path / "disp" / "x.png", np.repeat(disparity[:, :, None], 3, axis=2), bit_depth=16)
    result = synth(clear, tmp_path / "out", "--depth", tmp_path / "disp", "--depth-kind", "disparity")
    assert result.exit_code == 0, result.output
    depth, _ = read_depth_png(tmp_path / "out" / "depth" / "x.png")
    assert depth.shape == SIZE
    assert depth[:, 0].min() > 0.98 and depth[:, -1].max() < 0.02  # larger disparity = nearer = smaller depth
    assert np.all(np.diff(depth[0]) <= 1e-4)


def test_missing_or_bad_depth_maps_are_reported_by_name(tmp_path):
    clear = clear_folder(tmp_path / "clear")
    (tmp_path / "depth").mkdir()
    np.save(tmp_path / "depth" / "alpha.npy", np.ones(SIZE, np.float32))
    np.save(tmp_path / "depth" / "c.npy", np.ones((SIZE[0], SIZE[0]), np.float32))  # square: wrong aspect
    result = synth(clear, tmp_path / "out", "--depth", tmp_path / "depth", "--json")
    assert result.exit_code == 1
    failed = {f["source"].rsplit("/", 1)[-1]: f["reason"] for f in json.loads(result.stdout)["failed"]}
    assert set(failed) == {"beta_2.png", "c.png"}
    assert "no depth map for beta_2.png" in failed["beta_2.png"]
    assert "c.npy" in failed["c.png"] and "aspect" in failed["c.png"]
    assert [r["clear"] for r in read_manifest(tmp_path / "out")["images"]] == ["GT/alpha.png"]


def test_outputs_never_overwrite_inputs_or_an_existing_dataset(tmp_path):
    clear = clear_folder(tmp_path / "ds" / "GT")
    before = (clear / "c.png").read_bytes()
    result = synth(clear, tmp_path / "ds")
    assert result.exit_code == 2 and "holds input files" in result.output
    assert (clear / "c.png").read_bytes() == before
    assert synth(clear, tmp_path / "out").exit_code == 0
    result = synth(clear, tmp_path / "out")
    assert result.exit_code == 2 and "--overwrite" in result.output
    assert synth(clear, tmp_path / "out", "--overwrite", "-k", "2").exit_code == 0
    assert len(read_manifest(tmp_path / "out")["images"]) == 6


def test_bad_options_exit_2(tmp_path):
    clear = clear_folder(tmp_path / "clear", names=("x",))
    for args, message in (
        (("--beta", "0.6-1.8"), "--beta must be LOW,HIGH"),
        (("--beta", "2,1"), "low ≤ high"),
        (("--airlight", "0.5,1.2"), "≤ 1"),
        (("--depth", tmp_path / "nowhere"), "depth folder not found"),
        (("--depth-kind", "inverse"), "--depth-kind"),
    ):
        result = synth(clear, tmp_path / "out", *args)
        assert result.exit_code == 2 and message in result.output, (args, result.output)
    assert not (tmp_path / "out").exists()


def test_name_clashes_are_refused(tmp_path):
    clear = clear_folder(tmp_path / "clear", names=("a", "a_1"))
    with pytest.raises(SynthError, match="hazy name a_1 would equal the clear image a_1.png"):
        synthesize(sorted(clear.iterdir()), tmp_path / "out")


def test_sixteen_bit_clear_images_stay_sixteen_bit(tmp_path):
    write_image(tmp_path / "clear" / "x.png", synthetic_hazy(*SIZE)[0], bit_depth=16)
    assert synth(tmp_path / "clear", tmp_path / "out").exit_code == 0
    assert read_image(tmp_path / "out" / "GT" / "x.png").bit_depth == 16
    assert read_image(tmp_path / "out" / "hazy" / "x_1.png").bit_depth == 16


def test_draw_parameters_are_rounded_and_reproducible():
    config = SynthConfig(per_image=4, seed=3)
    draws = draw_parameters(config, "img")
    assert draws == draw_parameters(config, "img") and draws != draw_parameters(config, "img2")
    assert all(round(b, 6) == b and round(a, 6) == a for b, a in draws)


def test_eval_and_training_read_what_synth_writes(tmp_path):
    clear = clear_folder(tmp_path / "clear")
    assert synth(clear, tmp_path / "ds", "-k", 2).exit_code == 0
    dataset = discover_pairs(tmp_path / "ds")
    assert len(dataset.pairs) == 6 and not dataset.unmatched
    assert dataset.depth_dir == tmp_path / "ds" / "depth"
    for pair in dataset.pairs:
        stem = pair.clear.stem
        assert pair.hazy.stem.rsplit("_", 1)[0] == stem and pair.depth == tmp_path / "ds" / "depth" / f"{stem}.png"
        hazy, gt, depth = load_pair(pair)
        assert hazy.shape == gt.shape == (*SIZE, 3) and depth.shape == SIZE
        assert depth.min() == 0.0 and depth.max() == 1.0
    result = runner.invoke(app, ["eval", "-D", str(tmp_path / "ds"), "-m", "dcp", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert len(data["datasets"][0]["rows"]) == 6 and data["datasets"][0]["means"][0]["psnr"] > 10
