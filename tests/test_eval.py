"""`dcmp eval` and dcmp_cli.core.evaluate: layouts, named datasets, several models, CSV/JSON, no-reference."""

from __future__ import annotations

import csv
import json
import math
import shutil

import numpy as np
import pytest
from test_metrics import independent_psnr, independent_ssim
from typer.testing import CliRunner

from dcmp_cli.cli.app import app
from dcmp_cli.core.evaluate import CSV_COLUMNS, EvalModel, evaluate, open_eval_set
from dcmp_cli.data.datasets import NAMED_DATASETS, DatasetError
from dcmp_cli.data.image_io import image_to_tensor, read_image
from dcmp_cli.metrics import psnr, ssim

from helpers import shared_path, synthetic_hazy, write_png

runner = CliRunner()


def make_pairs(
    root, names=("a", "b", "c"), hazy_dir="hazy", clear_dir="GT", size=(40, 56), clear_name=None, ext=".png"
):
    """hazy_dir/NAME.ext + clear_dir/clear_name(NAME).ext from synthetic scenes; returns root."""
    for i, name in enumerate(names):
        clear, hazy, _ = synthetic_hazy(*size, seed=i)
        write_png((root / hazy_dir / name).with_suffix(ext), hazy)
        write_png((root / clear_dir / (clear_name(name) if clear_name else name)).with_suffix(ext), clear)
    return root


def run_json(args):
    result = runner.invoke(app, ["eval", *args, "--json"])
    return result, (json.loads(result.stdout) if result.stdout.strip().startswith("{") else None)


# --- core


def test_core_rows_and_means_match_the_metrics(tmp_path):
    root = make_pairs(tmp_path / "ds")
    eval_set = open_eval_set(str(root))
    assert eval_set.paired and eval_set.total == 3 and "same-name (3)" in eval_set.layout
    report = evaluate(eval_set, [EvalModel.hazy_input()], "dcmpnet")
    assert [r.name for r in report.rows] == ["a", "b", "c"]
    for row in report.rows:
        hazy = image_to_tensor(read_image(row.hazy).rgb)
        clear = image_to_tensor(read_image(row.clear).rgb)
        assert row.psnr == pytest.approx(psnr(hazy, clear), abs=1e-12)
        assert row.ssim == pytest.approx(ssim(hazy, clear), abs=1e-12)
        assert (row.width, row.height) == (56, 40) and row.ok
    (summary,) = report.models
    assert summary.images == 3 and summary.failed == 0
    assert summary.psnr == pytest.approx(np.mean([r.psnr for r in report.rows]), abs=1e-12)
    assert summary.ssim == pytest.approx(np.mean([r.ssim for r in report.rows]), abs=1e-12)


def test_core_limit_keeps_the_first_images(tmp_path):
    eval_set = open_eval_set(str(make_pairs(tmp_path / "ds")), limit=2)
    assert [i.name for i in eval_set.items] == ["a", "b"] and eval_set.total == 3
    with pytest.raises(DatasetError, match="at least 1"):
        open_eval_set(str(tmp_path / "ds"), limit=0)


# --- CLI: several models, JSON, CSV, saved images


def test_several_models_give_one_table_and_valid_json(isolated, tiny_dehaze_ckpt):
    root = make_pairs(isolated / "ds")
    other = shutil.copy(tiny_dehaze_ckpt, isolated / "other.safetensors")
    result, data = run_json(
        [
            "-D",
            str(root),
            "--method",
            "none",
            "--method",
            "dcp",
            "--weights",
            str(tiny_dehaze_ckpt),
            "--weights",
            str(other),
            "--device",
            "cpu",
        ]
    )
    assert result.exit_code == 0, result.output
    labels = [m["label"] for m in data["models"]]
    assert labels == ["hazy input", "dcp", "tiny-dehaze", "other"]
    assert [m["method"] for m in data["models"]] == ["none", "dcp", "dcmp", "dcmp"]
    (dataset,) = data["datasets"]
    assert dataset["evaluated"] == 3 and dataset["protocol"] == data["protocol"] == "dcmpnet"
    assert [m["label"] for m in dataset["means"]] == labels
    assert len(dataset["rows"]) == 3 * 4 and set(dataset["rows"][0]) == set(CSV_COLUMNS)
    for means in dataset["means"]:
        rows = [r for r in dataset["rows"] if r["model"] == means["label"]]
        assert means["images"] == 3 and means["failed"] == 0
        assert means["psnr"] == pytest.approx(np.mean([r["psnr"] for r in rows]), abs=1e-5)
        assert 0 < means["ssim"] <= 1 and math.isfinite(means["psnr"])
    by_label = {m["label"]: m for m in dataset["means"]}
    assert by_label["dcp"]["psnr"] > by_label["hazy input"]["psnr"]  # the prior does dehaze


def test_method_auto_and_dcmp_without_weights(isolated):
    root = make_pairs(isolated / "ds", names=("a",))
    result = runner.invoke(app, ["eval", "-D", str(root)])
    assert result.exit_code == 0, result.output
    assert "using the layered dehazer" in result.stderr and "layered" in result.stdout
    result = runner.invoke(app, ["eval", "-D", str(root), "-m", "dcmp"])
    assert result.exit_code == 2 and "no dehazing weights found" in result.output
    result = runner.invoke(app, ["eval", "-D", str(root), "-m", "magic"])
    assert result.exit_code == 2 and "Invalid value for '--method'" in result.output
    result = runner.invoke(app, ["eval", "-D", str(root), "-w", str(isolated / "missing.pth")])
    assert result.exit_code == 2 and "missing.pth" in result.output


def test_table_csv_and_save_dir(isolated):
    root = make_pairs(isolated / "ds")
    result = runner.invoke(
        app,
        [
            "eval",
            "-D",
            str(root),
            "-m",
            "none",
            "-m",
            "dcp",
            "--csv",
            str(isolated / "rows.csv"),
            "--save-dir",
            str(isolated / "saved"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "dcmp eval · ds · protocol dcmpnet" in result.stdout
    assert "hazy input" in result.stdout and "dcp" in result.stdout and "PSNR" in result.stdout
    assert "3 pairs in" in result.stderr and "same-name" in result.stderr
    with open(isolated / "rows.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and list(rows[0]) == CSV_COLUMNS
    assert all(float(r["psnr"]) > 5 and r["error"] == "" for r in rows)
    for folder in ("hazy-input", "dcp"):
        for name in ("a", "b", "c"):
            assert read_image(isolated / "saved" / folder / f"{name}.png").rgb.shape == (40, 56, 3)


def test_single_model_saves_into_save_dir_itself(isolated):
    root = make_pairs(isolated / "ds", names=("a",))
    result = runner.invoke(app, ["eval", "-D", str(root), "-m", "dcp", "--save-dir", str(isolated / "saved")])
    assert result.exit_code == 0, result.output
    assert (isolated / "saved" / "a.png").is_file()


def test_save_dir_never_overwrites_dataset_images(isolated):
    root = make_pairs(isolated / "ds")
    before = (root / "hazy" / "a.png").read_bytes()
    result = runner.invoke(app, ["eval", "-D", str(root), "-m", "dcp", "--save-dir", str(root / "hazy")])
    assert result.exit_code == 2 and "would overwrite" in result.output
    assert (root / "hazy" / "a.png").read_bytes() == before


def test_limit_and_protocol(isolated):
    root = make_pairs(isolated / "ds")
    _, dcmpnet = run_json(["-D", str(root), "-m", "none", "--limit", "2"])
    _, dehazeformer = run_json(["-D", str(root), "-m", "none", "--limit", "2", "--protocol", "dehazeformer"])
    assert dcmpnet["datasets"][0]["evaluated"] == 2 and dcmpnet["datasets"][0]["found"] == 3
    a, b = dcmpnet["datasets"][0]["rows"], dehazeformer["datasets"][0]["rows"]
    assert [r["psnr"] for r in a] == [r["psnr"] for r in b]  # PSNR is the same under both
    assert all(x["ssim"] != y["ssim"] for x, y in zip(a, b))
    result = runner.invoke(app, ["eval", "-D", str(root), "--protocol", "psnr"])
    assert result.exit_code == 2 and "--protocol" in result.output


# --- layouts and naming rules


def _bordered(clear: np.ndarray, border: int = 10) -> np.ndarray:
    h, w, _ = clear.shape
    out = np.ones((h + 2 * border, w + 2 * border, 3), np.float32)
    out[border:-border, border:-border] = clear
    return out


def test_original_reside_names_and_the_sots_border(isolated):
    root = isolated / "sots"
    for scene, seed in (("1400", 0), ("1401", 1)):
        clear, _, _ = synthetic_hazy(46, 62, seed=seed)
        write_png(root / "gt" / f"{scene}.png", _bordered(clear))  # 82×66 around the 62×46 hazy images
        for k, beta in ((1, 0.8), (2, 1.6)):
            _, hazy, _ = synthetic_hazy(46, 62, seed=seed, beta=beta)
            write_png(root / "hazy" / f"{scene}_{k}.png", hazy)
    result, data = run_json(["-D", str(root), "-m", "none"])
    assert result.exit_code == 0, result.output
    dataset = data["datasets"][0]
    assert dataset["layout"] == "hazy/ + gt/, matched by reside (4)"
    for row in dataset["rows"]:
        hazy = read_image(row["hazy"]).rgb
        clear = read_image(row["clear"]).rgb[10:-10, 10:-10]
        assert row["clear"].endswith(f"{row['image'].split('_')[0]}.png")
        assert row["psnr"] == pytest.approx(psnr(image_to_tensor(hazy), image_to_tensor(clear)), abs=1e-5)


def test_mismatched_pair_is_reported_by_name_and_the_rest_is_scored(isolated):
    root = make_pairs(isolated / "ds")
    clear, _, _ = synthetic_hazy(50, 56)
    write_png(root / "GT" / "b.png", clear)  # 56×50 beside a 56×40 hazy image
    result = runner.invoke(app, ["eval", "-D", str(root), "-m", "dcp"])
    assert result.exit_code == 1
    assert "size mismatch" in result.stderr and str(root / "hazy" / "b.png") in result.stderr
    assert str(root / "GT" / "b.png") in result.stderr
    result, data = run_json(["-D", str(root), "-m", "dcp"])
    assert result.exit_code == 1
    rows = {r["image"]: r for r in data["datasets"][0]["rows"]}
    assert rows["b"]["psnr"] is None and "b.png" in rows["b"]["error"]
    assert rows["a"]["psnr"] > 0 and rows["c"]["error"] is None
    assert data["datasets"][0]["means"][0]["failed"] == 1 and data["datasets"][0]["means"][0]["images"] == 2


@pytest.mark.parametrize(
    ("name", "folder", "hazy_dir", "clear_dir", "hazy_stem", "clear_stem", "rule"),
    [
        ("sots-indoor", "SOTS/indoor", "hazy", "gt", "{i}_1", "{i}", "reside"),
        ("sots-indoor", "SOTS/indoor/nyuhaze500", "hazy", "gt", "{i}_3", "{i}", "reside"),
        ("sots-outdoor", "SOTS/outdoor", "hazy", "gt", "{i}_0.8_0.2", "{i}", "reside"),
        ("o-haze", "# O-HAZY NTIRE 2018", "hazy", "GT", "{i}_outdoor_hazy", "{i}_outdoor_GT", "hazy-token"),
        ("i-haze", "I-HAZE", "hazy", "GT", "{i}_indoor_hazy", "{i}_indoor_GT", "hazy-token"),
        ("dense-haze", "Dense_Haze_NTIRE19", "hazy", "GT", "{i}_hazy", "{i}_GT", "hazy-token"),
        ("nh-haze", "NH-HAZE", ".", ".", "{i}_hazy", "{i}_GT", "hazy-token"),
        ("sots-indoor", "RESIDE-IN/test", "hazy", "GT", "{i}", "{i}", "same-name"),
    ],
)
def test_named_datasets(isolated, name, folder, hazy_dir, clear_dir, hazy_stem, clear_stem, rule):
    root = isolated / "data" / folder
    for i, scene in enumerate(("01", "02")):
        clear, hazy, _ = synthetic_hazy(36, 48, seed=i)
        write_png(root / hazy_dir / f"{hazy_stem.format(i=scene)}.png", hazy)
        write_png(root / clear_dir / f"{clear_stem.format(i=scene)}.png", clear)
    result, data = run_json(["-D", name, "--data-root", str(isolated / "data"), "-m", "none"])
    assert result.exit_code == 0, result.output
    dataset = data["datasets"][0]
    assert dataset["name"] == name and dataset["label"] == name
    assert dataset["root"] == str(root) and f"{rule} (2)" in dataset["layout"]
    assert dataset["evaluated"] == 2
    result = runner.invoke(app, ["eval", "-D", name, "--data-root", str(isolated / "data"), "-m", "none"])
    assert f"has {NAMED_DATASETS[name].release_pairs} test pairs; found 2" in result.stderr


def test_named_dataset_not_found_says_which_folders_were_tried(isolated):
    (isolated / "data" / "SOTS" / "indoor").mkdir(parents=True)
    result = runner.invoke(app, ["eval", "-D", "sots-indoor", "--data-root", str(isolated / "data")])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "tried SOTS/indoor/nyuhaze500/, SOTS/indoor/" in lines[0] and "1400_1.png" in lines[0]
    result = runner.invoke(app, ["eval", "-D", "o-haze"])
    assert result.exit_code == 2 and "needs --data-root" in result.output
    result = runner.invoke(app, ["eval", "-D", str(isolated / "nowhere")])
    assert result.exit_code == 2 and "neither a folder nor a named dataset" in result.output


# --- no reference


def test_folder_without_ground_truth_needs_no_reference(isolated):
    for i in range(2):
        write_png(isolated / "real" / f"photo{i}.png", synthetic_hazy(40, 56, seed=i, beta=1.6)[1])
    result = runner.invoke(app, ["eval", "-D", str(isolated / "real"), "-m", "dcp"])
    assert result.exit_code == 2 and "--no-reference" in result.output
    result, data = run_json(["-D", str(isolated / "real"), "-m", "none", "-m", "dcp", "--no-reference"])
    assert result.exit_code == 0, result.output
    dataset = data["datasets"][0]
    assert dataset["clear_dir"] is None and dataset["layout"].startswith("unpaired")
    assert all(r["psnr"] is None and r["haze_in"] > 0 for r in dataset["rows"])
    means = {m["label"]: m for m in dataset["means"]}
    assert means["hazy input"]["no_reference_output"] == means["hazy input"]["no_reference_input"]
    dcp_in, dcp_out = means["dcp"]["no_reference_input"], means["dcp"]["no_reference_output"]
    assert dcp_out["haze"] < dcp_in["haze"] and dcp_out["colourfulness"] > dcp_in["colourfulness"]
    assert dcp_out["contrast"] > dcp_in["contrast"]
    result = runner.invoke(app, ["eval", "-D", str(isolated / "real"), "-m", "dcp", "--no-reference"])
    assert result.exit_code == 0 and "haze ↓" in result.stdout and "Hasler" in result.stdout


def test_no_reference_on_paired_data_reports_both(isolated):
    root = make_pairs(isolated / "ds", names=("a",))
    _, data = run_json(["-D", str(root), "-m", "dcp", "--no-reference"])
    (row,) = data["datasets"][0]["rows"]
    assert row["psnr"] > 0 and row["haze_out"] < row["haze_in"]


def test_real_hazy_photos_no_reference():
    real = shared_path("data", "real")
    result, data = run_json(["-D", str(real), "-m", "dcp", "--no-reference"])
    assert result.exit_code == 0, result.output
    (means,) = data["datasets"][0]["means"]
    assert means["images"] == 3
    assert means["no_reference_output"]["haze"] < means["no_reference_input"]["haze"]


# --- outputs made elsewhere, and the real SOTS figures


def test_given_outputs_agree_with_an_independent_computation(isolated):
    sample = shared_path("data", "sots_indoor_sample")
    result = runner.invoke(
        app, ["eval", "-D", str(sample), "-m", "dcp", "--limit", "3", "--save-dir", str(isolated / "out")]
    )
    assert result.exit_code == 0, result.output
    for protocol in ("dcmpnet", "dehazeformer"):
        result, data = run_json(
            ["-D", str(sample), "--outputs", str(isolated / "out"), "--limit", "3", "--protocol", protocol]
        )
        assert result.exit_code == 0, result.output
        assert data["models"][0] == {
            "label": "out",
            "method": "outputs",
            "weights": None,
            "outputs": str(isolated / "out"),
        }
        rows = data["datasets"][0]["rows"]
        assert len(rows) == 3
        for row in rows:
            out = image_to_tensor(read_image(row["output"]).rgb)
            gt = image_to_tensor(read_image(row["clear"]).rgb)
            assert abs(row["psnr"] - independent_psnr(out, gt)) <= 0.01
            assert abs(row["ssim"] - independent_ssim(out, gt, protocol)) <= 0.001


def test_missing_given_output_names_the_image(isolated):
    root = make_pairs(isolated / "ds")
    (isolated / "outs").mkdir()
    write_png(isolated / "outs" / "a.png", synthetic_hazy(40, 56)[0])
    result, data = run_json(["-D", str(root), "--outputs", str(isolated / "outs")])
    assert result.exit_code == 1
    rows = {r["image"]: r for r in data["datasets"][0]["rows"]}
    assert rows["a"]["psnr"] == 100.0  # the clear image itself
    assert "no output for b.png" in rows["b"]["error"]


def test_dark_channel_prior_on_real_sots_pairs_is_in_the_published_range():
    sample = shared_path("data", "sots_indoor_sample")
    result, data = run_json(["-D", str(sample), "-m", "none", "-m", "dcp"])
    assert result.exit_code == 0, result.output
    means = {m["label"]: m for m in data["datasets"][0]["means"]}
    assert means["dcp"]["images"] == 10
    assert 18.0 <= means["dcp"]["psnr"] <= 23.0 and 0.80 <= means["dcp"]["ssim"] <= 0.92
    assert 10.0 <= means["hazy input"]["psnr"] <= 13.5  # hazy SOTS-indoor inputs score about 12 dB


def test_tiled_evaluation_uses_the_tile_options(isolated, tiny_dehaze_ckpt):
    root = make_pairs(isolated / "ds", names=("a",), size=(96, 130))
    whole, whole_json = run_json(["--dataset", str(root), "-w", str(tiny_dehaze_ckpt), "--tile", "0"])
    tiled, tiled_json = run_json(
        ["--dataset", str(root), "-w", str(tiny_dehaze_ckpt), "--tile", "64", "--tile-overlap", "16"]
    )
    assert whole.exit_code == 0 and tiled.exit_code == 0, tiled.output
    a = whole_json["datasets"][0]["means"][0]["psnr"]
    b = tiled_json["datasets"][0]["means"][0]["psnr"]
    assert math.isfinite(a) and math.isfinite(b) and abs(a - b) < 3.0
    bad = runner.invoke(app, ["eval", "--dataset", str(root), "-w", str(tiny_dehaze_ckpt), "--tile", "8"])
    assert bad.exit_code == 2 and "at least 32" in bad.output
