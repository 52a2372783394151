"""`dcmp dehaze` on real-world folders: formats, bad files, resuming, streams, shards, interruption."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from dcmp_cli.cli.app import app
from dcmp_cli.data.image_io import read_image, write_image

from helpers import synthetic_hazy

runner = CliRunner()


def _hazy(h, w, seed=0):
    return synthetic_hazy(h, w, seed=seed)[1]


def _mixed_folder(root: Path) -> dict[str, str]:
    """Writes one file of each kind; returns name -> what must happen ('ok' or a reason fragment)."""
    root.mkdir(parents=True)
    rgb = _hazy(40, 56)
    cv2.imwrite(str(root / "deep16.png"), np.round(rgb[:, :, ::-1] * 65535).astype(np.uint16))
    rgba = np.dstack(
        [np.round(rgb * 255).astype(np.uint8), np.linspace(0, 255, 56, dtype=np.uint8)[None].repeat(40, 0)]
    )
    Image.fromarray(rgba).save(root / "alpha.png")
    Image.fromarray(np.round(rgb.mean(2) * 255).astype(np.uint8)).save(root / "grey.png")
    grey16 = np.round(rgb.mean(2) * 65535).astype(np.uint16)
    cv2.imwrite(str(root / "grey16.tif"), grey16)
    Image.fromarray(np.round(rgb * 255).astype(np.uint8)).convert("P", palette=Image.ADAPTIVE).save(
        root / "palette.png"
    )
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when displayed
    Image.fromarray(np.round(rgb * 255).astype(np.uint8)).save(root / "rotated.jpg", exif=exif, quality=95)
    Image.fromarray(np.round(rgb * 255).astype(np.uint8)).save(root / "photo.webp", quality=90)
    Image.fromarray(np.round(rgb * 255).astype(np.uint8)).save(root / "bitmap.bmp")
    good = (root / "alpha.png").read_bytes()
    (root / "corrupt.png").write_bytes(good[: len(good) // 2])
    (root / "fake.jpg").write_text("this is not a JPEG")
    (root / "notes.txt").write_text("shooting notes")
    Image.fromarray(np.zeros((7, 5, 3), np.uint8)).save(root / "tiny.png")
    return {
        "deep16.png": "ok",
        "alpha.png": "ok",
        "grey.png": "ok",
        "grey16.tif": "ok",
        "palette.png": "ok",
        "rotated.jpg": "ok",
        "photo.webp": "ok",
        "bitmap.bmp": "ok",
        "corrupt.png": "corrupt or truncated",
        "fake.jpg": "not an image",
        "tiny.png": "too small",
    }


def test_mixed_folder_keeps_form_and_reports_bad_files(tmp_path):
    expected = _mixed_folder(tmp_path / "in")
    before = {p.name: p.read_bytes() for p in (tmp_path / "in").iterdir()}
    result = runner.invoke(app, ["dehaze", str(tmp_path / "in"), str(tmp_path / "out"), "--method", "dcp", "--json"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    rows = {Path(r["input"]).name: r for r in report["files"]}
    assert rows["notes.txt"]["status"] == "ignored"
    for name, want in expected.items():
        if want == "ok":
            assert rows[name]["status"] == "done", rows[name]
        else:
            assert rows[name]["status"] == "failed" and want in rows[name]["reason"], rows[name]
    assert report["counts"] == {"done": 8, "skipped": 0, "failed": 3, "ignored": 1}

    out = tmp_path / "out"
    deep = cv2.imread(str(out / "deep16.png"), cv2.IMREAD_UNCHANGED)
    assert deep.dtype == np.uint16 and deep.shape == (40, 56, 3)
    with Image.open(out / "alpha.png") as im:
        assert im.mode == "RGBA" and im.size == (56, 40)
        assert np.array_equal(np.asarray(im)[:, :, 3], np.asarray(Image.open(tmp_path / "in" / "alpha.png"))[:, :, 3])
    with Image.open(out / "grey.png") as im:
        assert im.mode == "L" and im.size == (56, 40)
    grey16 = cv2.imread(str(out / "grey16.tif"), cv2.IMREAD_UNCHANGED)
    assert grey16.dtype == np.uint16 and grey16.shape == (40, 56)
    with Image.open(out / "rotated.jpg") as im:
        assert im.size == (40, 56)  # the displayed orientation
    for name, size in (("palette.png", (56, 40)), ("photo.webp", (56, 40)), ("bitmap.bmp", (56, 40))):
        with Image.open(out / name) as im:
            assert im.size == size and im.mode == "RGB"
    produced = sorted(p.name for p in out.iterdir())
    assert produced == sorted(n for n, w in expected.items() if w == "ok")  # no partial or temporary files
    assert {p.name: p.read_bytes() for p in (tmp_path / "in").iterdir()} == before


def test_summary_names_the_bad_files(tmp_path):
    _mixed_folder(tmp_path / "in")
    result = runner.invoke(app, ["dehaze", str(tmp_path / "in"), str(tmp_path / "out"), "--method", "dcp"])
    assert result.exit_code == 1
    for name in ("corrupt.png", "fake.jpg", "tiny.png", "notes.txt"):
        assert name in result.output


def test_rerun_skips_done_outputs_and_overwrite_redoes_them(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        write_image(src / f"{i}.png", _hazy(32, 48, seed=i))
    args = ["dehaze", str(src), str(tmp_path / "out"), "--method", "dcp", "--json"]
    assert json.loads(runner.invoke(app, args).stdout)["counts"]["done"] == 3
    (tmp_path / "out" / "1.png").unlink()
    counts = json.loads(runner.invoke(app, args).stdout)["counts"]
    assert counts["done"] == 1 and counts["skipped"] == 2
    counts = json.loads(runner.invoke(app, [*args, "--overwrite"]).stdout)["counts"]
    assert counts["done"] == 3


def test_output_into_the_input_folder_never_overwrites_inputs(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    write_image(src / "a.png", _hazy(32, 32))
    original = (src / "a.png").read_bytes()
    result = runner.invoke(app, ["dehaze", str(src), str(src), "--method", "dcp", "--overwrite"])
    assert result.exit_code == 2 and "which is an input file" in result.output
    assert (src / "a.png").read_bytes() == original
    ok = runner.invoke(app, ["dehaze", str(src), str(src), "--method", "dcp", "--suffix", "_dehazed"])
    assert ok.exit_code == 0 and (src / "a_dehazed.png").is_file()
    again = runner.invoke(app, ["dehaze", str(src), str(src), "--method", "dcp", "--suffix", "_dehazed", "--json"])
    assert again.exit_code == 0, again.output  # an in-place re-run resumes: its own outputs are not inputs
    summary = json.loads(again.stdout)
    assert summary["counts"] == {"done": 0, "skipped": 1, "failed": 0, "ignored": 0}
    assert sorted(p.name for p in src.iterdir()) == ["a.png", "a_dehazed.png"]


def test_no_shard_may_overwrite_an_input_of_another_shard(tmp_path):
    src = tmp_path / "same"
    src.mkdir()
    write_image(src / "c.png", _hazy(32, 32))
    write_image(src / "c.jpg", _hazy(32, 32, seed=1))
    original = (src / "c.png").read_bytes()
    for k in (1, 2):
        result = runner.invoke(
            app, ["dehaze", str(src), str(src), "--ext", "png", "--overwrite", "--shard", f"{k}/2", "--method", "dcp"]
        )
        assert result.exit_code == 2, result.output
    assert (src / "c.png").read_bytes() == original


def test_two_inputs_with_one_output_name_are_refused_before_any_work(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    write_image(src / "x.jpg", _hazy(32, 32))
    write_image(src / "x.png", _hazy(32, 32, seed=1))
    result = runner.invoke(app, ["dehaze", str(src), str(tmp_path / "out"), "--ext", "png", "--method", "dcp"])
    assert result.exit_code == 2 and "x.jpg" in result.output and "x.png" in result.output
    assert not (tmp_path / "out").exists()
    depth = runner.invoke(app, ["depth", str(src), str(tmp_path / "depth"), "--method", "dcp"])
    assert depth.exit_code == 2 and "x.jpg" in depth.output and not (tmp_path / "depth").exists()


def test_output_folder_inside_the_input_folder_is_never_read_back(tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    write_image(src / "a.png", _hazy(32, 32))
    write_image(src / "sub" / "b.png", _hazy(32, 32, seed=1))
    for _ in range(2):
        result = runner.invoke(app, ["dehaze", str(src), str(src / "out"), "-r", "--method", "dcp"])
        assert result.exit_code == 0, result.output
    produced = sorted(p.relative_to(src / "out").as_posix() for p in (src / "out").rglob("*") if p.is_file())
    assert produced == ["a.png", "sub/b.png"]


def test_recursive_mirrors_subfolders_and_globs_work(tmp_path):
    src = tmp_path / "in"
    (src / "day" / "noon").mkdir(parents=True)
    write_image(src / "top.png", _hazy(32, 32))
    write_image(src / "day" / "noon" / "deep.jpg", _hazy(32, 40))
    flat = runner.invoke(app, ["dehaze", str(src), str(tmp_path / "flat"), "--method", "dcp"])
    assert flat.exit_code == 0 and sorted(p.name for p in (tmp_path / "flat").rglob("*.*")) == ["top.png"]
    deep = runner.invoke(
        app, ["dehaze", str(src), str(tmp_path / "deep"), "--method", "dcp", "-r", "--ext", "png", "--suffix", "_x"]
    )
    assert deep.exit_code == 0
    assert (tmp_path / "deep" / "day" / "noon" / "deep_x.png").is_file() and (tmp_path / "deep" / "top_x.png").is_file()
    globbed = runner.invoke(app, ["dehaze", str(src / "**" / "*.jpg"), str(tmp_path / "glob"), "--method", "dcp"])
    assert globbed.exit_code == 0 and (tmp_path / "glob" / "deep.jpg").is_file()


def test_shards_partition_the_inputs(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(12):
        write_image(src / f"img{i:02d}.png", _hazy(16, 16, seed=i))
    seen = []
    for k in (1, 2, 3):
        result = runner.invoke(
            app, ["dehaze", str(src), str(tmp_path / "out"), "--method", "dcp", "--shard", f"{k}/3", "--json"]
        )
        assert result.exit_code == 0
        seen.append({Path(r["input"]).name for r in json.loads(result.stdout)["files"]})
    assert set().union(*seen) == {f"img{i:02d}.png" for i in range(12)}
    assert sum(len(s) for s in seen) == 12
    bad = runner.invoke(app, ["dehaze", str(src), str(tmp_path / "x"), "--method", "dcp", "--shard", "4/3"])
    assert bad.exit_code == 2 and "K must lie in 1..N" in bad.output


def test_stdin_to_stdout(tmp_path):
    write_image(tmp_path / "a.png", _hazy(36, 44))
    result = runner.invoke(app, ["dehaze", "-", "-", "--method", "dcp"], input=(tmp_path / "a.png").read_bytes())
    assert result.exit_code == 0
    decoded = cv2.imdecode(np.frombuffer(result.stdout_bytes, np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded.shape == (36, 44, 3)
    to_file = runner.invoke(
        app, ["dehaze", "-", str(tmp_path / "b.jpg"), "--method", "dcp"], input=(tmp_path / "a.png").read_bytes()
    )
    assert to_file.exit_code == 0 and read_image(tmp_path / "b.jpg").rgb.shape == (36, 44, 3)
    garbage = runner.invoke(app, ["dehaze", "-", "-", "--method", "dcp"], input=b"not an image")
    assert garbage.exit_code == 2 and "stdin: not an image" in garbage.output


def test_side_by_side_and_bit_depth(tmp_path):
    write_image(tmp_path / "a.png", _hazy(30, 40))
    result = runner.invoke(
        app,
        [
            "dehaze",
            str(tmp_path / "a.png"),
            str(tmp_path / "b.png"),
            "--method",
            "dcp",
            "--side-by-side",
            "--bit-depth",
            "16",
        ],
    )
    assert result.exit_code == 0
    out = cv2.imread(str(tmp_path / "b.png"), cv2.IMREAD_UNCHANGED)
    assert out.shape == (30, 80, 3) and out.dtype == np.uint16


def _slow_batch(root: Path, count: int) -> None:
    root.mkdir()
    for i in range(count):
        write_image(root / f"img{i:03d}.png", _hazy(160, 200, seed=i))


@pytest.mark.parametrize("sig", [signal.SIGTERM, pytest.param(signal.SIGKILL, marks=pytest.mark.slow)])
def test_killed_batch_leaves_no_partial_files_and_resumes(tmp_path, tiny_dehaze_ckpt, sig):
    src, out = tmp_path / "in", tmp_path / "out"
    _slow_batch(src, 40)
    cmd = [
        sys.executable,
        "-m",
        "dcmp_cli",
        "--threads",
        "1",
        "dehaze",
        str(src),
        str(out),
        "-w",
        str(tiny_dehaze_ckpt),
        "--device",
        "cpu",
        "--tile",
        "0",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (out.is_dir() and len(list(out.glob("*.png"))) >= 2):
        time.sleep(0.05)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    done_before = sorted(p.name for p in out.glob("*.png"))
    assert 2 <= len(done_before) < 40, "the batch was not interrupted mid-way"
    for name in done_before:
        assert read_image(out / name).rgb.shape == (160, 200, 3)  # complete files only
    if sig == signal.SIGTERM:
        assert not [p for p in out.iterdir() if p.name.startswith(".")], "temporary files left after SIGTERM"
    result = subprocess.run([*cmd, "--json"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    rows = {Path(r["input"]).name: r["status"] for r in json.loads(result.stdout)["files"]}
    assert all(rows[name] == "skipped" for name in done_before)
    assert sum(status == "done" for status in rows.values()) == 40 - len(done_before)
    assert sorted(p.name for p in out.iterdir()) == [f"img{i:03d}.png" for i in range(40)]  # no stale temporaries
