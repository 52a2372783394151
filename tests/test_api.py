"""The Python API: every command one call away, results equal to what the CLI writes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import dcmp_cli
from dcmp_cli.choices import DEFAULT_PRIOR, PRIOR_METHODS, EvalMethod, Method
from dcmp_cli.cli.app import app
from dcmp_cli.data.image_io import quantize, read_image, write_image
from dcmp_cli.prior import PRIORS

from helpers import synthetic_hazy

runner = CliRunner()


def _photo(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    return quantize(synthetic_hazy(h, w, seed=seed)[1], 8)


def test_import_and_help_do_not_import_torch():
    code = (
        "import sys, dcmp_cli\n"
        "assert 'torch' not in sys.modules\n"
        "from typer.testing import CliRunner\n"
        "from dcmp_cli.cli.app import app\n"
        "r = CliRunner().invoke(app, ['dehaze', '--help'])\n"
        "assert r.exit_code == 0\n"
        "r = CliRunner().invoke(app, ['dehaze', 'a', 'b', '--method', 'magic'])\n"
        "assert r.exit_code == 2\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_choices_name_every_prior():
    assert set(PRIOR_METHODS) == set(PRIORS) and DEFAULT_PRIOR in PRIORS
    assert {m.value for m in Method} == {"auto", "dcmp", *PRIORS}
    assert {m.value for m in EvalMethod} == {"auto", "dcmp", "none", *PRIORS}


def test_top_level_names_resolve():
    for name in dcmp_cli.__all__:
        assert getattr(dcmp_cli, name) is not None
    with pytest.raises(AttributeError):
        dcmp_cli.no_such_thing  # noqa: B018 - the attribute access is the test


@pytest.mark.parametrize("weights", [False, True])
def test_dehazer_returns_what_the_cli_writes(isolated, tiny_dehaze_ckpt, weights):
    pixels = _photo()
    write_image(isolated / "in.png", pixels.astype(np.float32) / 255.0)
    extra = ["-w", str(tiny_dehaze_ckpt)] if weights else []
    result = runner.invoke(app, ["dehaze", str(isolated / "in.png"), str(isolated / "out.png"), *extra])
    assert result.exit_code == 0, result.output
    written = np.asarray(Image.open(isolated / "out.png"))
    dehazer = dcmp_cli.load_dehazer(weights=tiny_dehaze_ckpt if weights else None)
    assert dehazer.method == ("dcmp" if weights else DEFAULT_PRIOR)
    assert np.array_equal(dehazer(pixels), written)
    assert np.array_equal(np.asarray(dehazer(Image.fromarray(pixels))), written)


def test_image_kinds_come_back_in_their_form(isolated):
    dehazer = dcmp_cli.load_dehazer("dcp")
    pixels = _photo()
    grey = Image.fromarray(pixels).convert("L")
    assert dehazer(grey).mode == "L" and dehazer(grey).size == grey.size
    rgba = Image.fromarray(np.dstack([pixels, np.full(pixels.shape[:2], 77, np.uint8)]))
    out = dehazer(rgba)
    assert out.mode == "RGBA" and np.all(np.asarray(out)[..., 3] == 77)
    sixteen = pixels.astype(np.uint16) * 257
    assert dehazer(sixteen).dtype == np.uint16
    floats = pixels.astype(np.float32) / 255
    restored = dehazer(floats)
    assert restored.dtype == np.float32 and 0 <= restored.min() and restored.max() <= 1
    np.testing.assert_allclose(dehazer(floats[..., :1])[..., 0], dehazer(floats[..., 0]), atol=0)
    batch = torch.from_numpy(floats.transpose(2, 0, 1)).unsqueeze(0).repeat(2, 1, 1, 1).double()
    out = dehazer(batch)
    assert out.shape == batch.shape and out.dtype == torch.float64
    assert dehazer(batch[0]).shape == batch[0].shape
    with pytest.raises(TypeError, match="PIL image, a NumPy array or a torch tensor"):
        dehazer([1, 2, 3])  # type: ignore[arg-type]


def test_depth_estimator_returns_what_the_cli_writes(isolated):
    write_image(isolated / "in.png", synthetic_hazy(48, 64, seed=1, beta=2.0)[1])
    result = runner.invoke(app, ["depth", str(isolated / "in.png"), str(isolated / "d.png")])
    assert result.exit_code == 0, result.output
    written = np.asarray(Image.open(isolated / "d.png"))
    estimator = dcmp_cli.load_depth_estimator()
    image = read_image(isolated / "in.png").rgb
    assert np.array_equal(np.asarray(estimator(Image.open(isolated / "in.png"))), written)
    depth = estimator(image)
    assert depth.dtype == np.float32 and depth.shape == (48, 64) and depth.min() == 0 and depth.max() == 1


def test_dehaze_files_is_the_command(isolated):
    for i in range(2):
        write_image(isolated / "in" / f"p{i}.jpg", _photo(seed=i).astype(np.float32) / 255)
    runner.invoke(app, ["dehaze", str(isolated / "in"), str(isolated / "cli"), "--ext", "png"])
    summary = dcmp_cli.dehaze_files(isolated / "in", isolated / "py", ext="png")
    assert summary.ok and summary.count("done") == 2
    for i in range(2):
        assert (isolated / "py" / f"p{i}.png").read_bytes() == (isolated / "cli" / f"p{i}.png").read_bytes()


def test_the_other_commands_are_one_call_each(isolated):
    """The README's Python section, call by call, on small generated data."""
    from dcmp_cli.data.video.encode import open_video_writer
    from dcmp_cli.data.video.probe import probe_video
    from dcmp_cli.data.video.testclips import hazy_clip

    # dcmp synth clear/ my_set/ -k 2
    for i in range(2):
        write_image(isolated / "clear" / f"c{i}.png", synthetic_hazy(40, 48, seed=i)[0])
    report, (csv_path, json_path) = dcmp_cli.synthesize_dataset(isolated / "clear", isolated / "set", per_image=2)
    assert len(report.records) == 4 and csv_path.is_file() and json_path.is_file()

    # dcmp eval -D set -m none -m layered
    rows = dcmp_cli.eval_models(["none", "layered"])
    (dataset,) = dcmp_cli.evaluate_datasets([isolated / "set"], rows)
    assert [m.model.label for m in dataset.models] == ["hazy input", "layered"]
    assert dataset.models[1].psnr > dataset.models[0].psnr

    # dcmp video clip.mp4 clear.mp4
    from fractions import Fraction

    from dcmp_cli.data.video.encode import EncodeOptions

    frames = list(hazy_clip(6, 32, 48))
    with open_video_writer(isolated / "clip.mp4", 48, 32, Fraction(25), EncodeOptions()) as sink:
        for frame in frames:
            sink.write(quantize(frame, 8))
    summary, reports = dcmp_cli.dehaze_videos(isolated / "clip.mp4", isolated / "clear.mp4")
    assert summary.ok and reports[0].frames == 6 and probe_video(isolated / "clear.mp4").frame_count == 6

    # dcmp train --config configs/tiny-cpu.toml --data set --out run --iters 2
    config = dcmp_cli.resolve_train_config(
        Path(__file__).resolve().parents[1] / "configs" / "tiny-cpu.toml",
        {"data": str(isolated / "set"), "iters": 2, "patch_size": 32, "batch_size": 2, "num_workers": 0},
    )
    result = dcmp_cli.train(config, isolated / "run")
    assert result.step == 2
    (weights,) = result.last_dir.glob("*-dehaze.safetensors")
    assert dcmp_cli.load_dehazer(weights=weights).method == "dcmp"
