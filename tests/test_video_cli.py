"""`dcmp video` end to end: clips with and without audio, bad inputs, interruption, frame folders."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from dcmp_cli.cli.app import app
from dcmp_cli.data.image_io import read_image, write_image
from dcmp_cli.data.video.decode import read_frames
from dcmp_cli.data.video.encode import open_video_writer
from dcmp_cli.data.video.probe import probe_video
from dcmp_cli.data.video.testclips import hazy_clip

from helpers import interrupting_dehazer
from video_clips import audio_seconds, make_clip, truncate

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _no_default_weights(isolated):
    """Every test runs in an empty directory with no default weights anywhere."""
    return isolated


def all_files(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def run_json(*args: str):
    result = runner.invoke(app, ["video", *args, "--json"])
    return result, (json.loads(result.stdout) if result.stdout.strip().startswith("{") else None)


def test_clip_with_audio_keeps_count_rate_size_and_audio(tmp_path):
    source = make_clip(tmp_path / "in.mp4", frames=14, size="64x48", rate="30000/1001", audio=True)
    result, summary = run_json(str(source), str(tmp_path / "out.mp4"), "--method", "dcp")
    assert result.exit_code == 0, result.output
    out, src = probe_video(tmp_path / "out.mp4"), probe_video(source)
    assert (out.frame_count, out.fps, out.width, out.height) == (14, src.fps, 64, 48)
    assert out.audio_codecs == ("aac",)
    assert audio_seconds(tmp_path / "out.mp4") == pytest.approx(audio_seconds(source), abs=1e-9)
    video = summary["videos"][0]
    assert video["frames"] == 14 and video["fps"] == "30000/1001" and video["audio"] == "copied"
    assert video["frames_per_second"] > 0 and video["flicker"] is not None
    assert summary["method"] == "dcp" and summary["smooth"] == 0.8
    assert [name for name in all_files(tmp_path) if name.startswith(".")] == []  # no temporary files left


def test_clip_without_audio_and_into_a_folder(tmp_path):
    source = make_clip(tmp_path / "silent.mkv", frames=6, size="48x32", rate="25", audio=False)
    result = runner.invoke(app, ["video", str(source), str(tmp_path / "results"), "--method", "dcp"])
    assert result.exit_code == 0, result.output
    out = probe_video(tmp_path / "results" / "silent.mkv")
    assert (out.frame_count, out.fps, out.width, out.height, out.has_audio) == (6, 25, 48, 32, False)
    assert "frames/s" in result.output  # the closing speed report
    again = runner.invoke(app, ["video", str(source), str(tmp_path / "results"), "--method", "dcp"])
    assert again.exit_code == 0 and "skipped" in again.output


def test_rotation_is_kept(tmp_path):
    source = make_clip(tmp_path / "phone.mp4", frames=4, rotation=-90)
    result = runner.invoke(app, ["video", str(source), str(tmp_path / "out.mp4"), "--method", "dcp"])
    assert result.exit_code == 0, result.output
    out = probe_video(tmp_path / "out.mp4")
    assert out.rotation == -90.0 and (out.width, out.height) == (64, 48)


def test_corrupt_and_non_video_inputs_fail_clearly(tmp_path):
    whole = make_clip(tmp_path / "whole.mp4", frames=8)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(whole.read_bytes()[:1500])
    image = write_image(tmp_path / "photo.png", np.full((32, 32, 3), 0.4, np.float32))
    for bad, message in ((broken, "not a readable video"), (image, "use `dcmp dehaze`")):
        result = runner.invoke(app, ["video", str(bad), str(tmp_path / "out" / "x.mp4"), "--method", "dcp"])
        assert result.exit_code == 2, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]
        assert all_files(tmp_path / "out") == []


def test_folder_with_a_bad_video_processes_the_rest(tmp_path):
    folder = tmp_path / "clips"
    folder.mkdir()
    make_clip(folder / "good.mp4", frames=5)
    (folder / "bad.mov").write_bytes(b"\x00\x00\x00\x18ftypqt  garbage")
    (folder / "notes.txt").write_text("not a video")
    result, summary = run_json(str(folder), str(tmp_path / "out"), "--method", "dcp")
    assert result.exit_code == 1
    assert all_files(tmp_path / "out") == ["good.mp4"]
    status = {item["input"].split("/")[-1]: item["status"] for item in summary["items"]}
    assert status == {"bad.mov": "failed", "good.mp4": "done", "notes.txt": "ignored"}
    assert summary["counts"] == {"done": 1, "skipped": 0, "failed": 1, "ignored": 1}


def test_interrupted_run_leaves_no_partial_output(tmp_path, monkeypatch):
    source = make_clip(tmp_path / "in.mp4", frames=20, audio=True)
    monkeypatch.setattr("dcmp_cli.core.loading.load_dehazer", lambda *a, **k: interrupting_dehazer(at=8))
    result = runner.invoke(app, ["video", str(source), str(tmp_path / "out" / "result.mp4")])
    assert result.exit_code == 130
    assert "interrupted" in result.output
    assert all_files(tmp_path / "out") == []  # no output, no hidden temporary files


def test_sigint_to_a_real_process_leaves_no_partial_output(tmp_path):
    source = tmp_path / "long.mp4"
    subprocess.run(
        [
            sys.executable,
            "-c",
            (
                "import subprocess, sys\n"
                "from dcmp_cli.data.video.ffmpeg import ffmpeg_exe\n"
                "subprocess.run([ffmpeg_exe(), '-v', 'error', '-y', '-f', 'lavfi', "
                "'-i', 'testsrc=size=160x120:rate=30', "
                f"'-frames:v', '3000', '-c:v', 'libx264', '-preset', 'ultrafast', {str(source)!r}], check=True)"
            ),
        ],
        check=True,
    )
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dcmp_cli", "video", str(source), str(out / "long.mp4"), "--method", "dcp"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not any(n.startswith(".") for n in all_files(out)):
            time.sleep(0.05)
        assert any(n.startswith(".long.") for n in all_files(out)), "the run never started writing"
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr
    assert all_files(out) == []


def test_trim_options_and_resampling(tmp_path):
    source = make_clip(tmp_path / "in.mp4", frames=30, rate="30", audio=True)
    for args, frames in ((["--max-frames", "7"], 7), (["--start", "0.5", "--end", "0:00.8"], 9), (["--fps", "10"], 10)):
        target = tmp_path / f"out{frames}.mp4"
        result = runner.invoke(app, ["video", str(source), str(target), "--method", "dcp", *args])
        assert result.exit_code == 0, result.output
        info = probe_video(target)
        assert info.frame_count == frames, args
        assert info.has_audio
    assert probe_video(tmp_path / "out10.mp4").fps == 10
    assert audio_seconds(tmp_path / "out7.mp4") == pytest.approx(7 / 30, abs=0.03)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--smooth", "1"], "--smooth"),
        (["--start", "soon"], "--start"),
        (["--start", "2", "--end", "1"], "must come after"),
        (["--fps", "0"], "--fps"),
        (["--codec", "nope"], "unknown video encoder"),
        (["--ext", "webm"], "WebM holds"),
    ],
)
def test_unusable_options_exit_2(tmp_path, args, message):
    folder = tmp_path / "clips"
    folder.mkdir()
    make_clip(folder / "a.mp4", frames=2, audio=False)
    result = runner.invoke(app, ["video", str(folder), str(tmp_path / "out"), "--method", "dcp", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "out").exists()


def test_folder_of_frames_gives_a_folder_of_frames(tmp_path):
    frames_dir = tmp_path / "frames"
    frames = list(hazy_clip(10, 32, 48))
    for i, frame in enumerate(frames):
        write_image(frames_dir / f"frame{i}.png", frame)
    (frames_dir / "frame4.png").write_bytes(b"broken")
    result, summary = run_json(str(frames_dir), str(tmp_path / "dehazed"), "--method", "dcp")
    assert result.exit_code == 1  # one frame could not be read
    written = all_files(tmp_path / "dehazed")
    assert len(written) == 9 and "frame4.png" not in written
    assert read_image(tmp_path / "dehazed" / "frame9.png").rgb.shape == (32, 48, 3)
    assert summary["videos"][0]["frames"] == 9
    assert [item["input"].split("/")[-1] for item in summary["items"]] == ["frame4.png"]
    for args, message in ((["--start", "1"], "--max-frames"), ([], "OUTPUT is the input folder")):
        target = frames_dir if not args else tmp_path / "x"
        bad = runner.invoke(app, ["video", str(frames_dir), str(target), "--method", "dcp", *args])
        assert bad.exit_code == 2 and message in bad.output


def test_network_batches_give_the_same_video(tmp_path, tiny_dehaze_ckpt):
    source = tmp_path / "hazy.mp4"
    with open_video_writer(source, 48, 32, 24) as sink:
        for frame in hazy_clip(5, 32, 48):
            sink.write(np.round(frame * 255).astype(np.uint8))
    decoded = {}
    for batch in ("1", "3"):
        target = tmp_path / f"b{batch}.mp4"
        result = runner.invoke(
            app,
            [
                "video",
                str(source),
                str(target),
                "--method",
                "dcmp",
                "--weights",
                str(tiny_dehaze_ckpt),
                "--device",
                "cpu",
                "--batch",
                batch,
                "--smooth",
                "0.8",
            ],
        )
        assert result.exit_code == 0, result.output
        decoded[batch] = list(read_frames(probe_video(target)))
    assert len(decoded["1"]) == 5
    for a, b in zip(decoded["1"], decoded["3"]):
        assert np.abs(a.astype(int) - b).max() <= 1
    tiled = runner.invoke(
        app,
        [
            "video",
            str(source),
            str(tmp_path / "tiled.mp4"),
            "--method",
            "dcmp",
            "--weights",
            str(tiny_dehaze_ckpt),
            "--device",
            "cpu",
            "--tile",
            "32",
            "--batch",
            "2",
        ],
    )
    assert tiled.exit_code == 0, tiled.output
    info = probe_video(tmp_path / "tiled.mp4")
    assert (info.frame_count, info.width, info.height) == (5, 48, 32)


def test_truncated_video_keeps_the_readable_frames_says_so_and_exits_1(tmp_path):
    whole = make_clip(tmp_path / "whole.mp4", frames=60, rate="30", extra=("-movflags", "+faststart"))
    cut = truncate(whole, tmp_path / "cut.mp4")
    result = runner.invoke(app, ["video", str(cut), str(tmp_path / "out.mp4"), "--method", "dcp"])
    assert result.exit_code == 1, result.output
    assert "of 60 frames" in result.output and "truncated" in result.output
    written = probe_video(tmp_path / "out.mp4")
    assert 0 < written.frame_count < 45
    result, summary = run_json(str(cut), str(tmp_path / "again.mp4"), "--method", "dcp")
    assert result.exit_code == 1
    assert summary["videos"][0]["incomplete"] is True and summary["videos"][0]["expected_frames"] == 60
    assert summary["counts"]["failed"] == 1
