"""dcmp_cli.data.video_io: probing, streaming frames in and out, audio, rotation, colour, atomicity."""

from __future__ import annotations

import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from dcmp_cli.data.image_io import quantize, write_image
from dcmp_cli.data.video_io import (
    ColorInfo,
    EncodeOptions,
    FrameRange,
    VideoError,
    VideoWriteError,
    exact_frame_rate,
    ffmpeg_exe,
    hazy_clip,
    open_video_writer,
    parse_color,
    probe_video,
    read_frames,
)


def make_clip(
    path: Path,
    frames: int = 12,
    size: str = "64x48",
    rate: str = "30000/1001",
    audio: bool = True,
    rotation: int | None = None,
    extra: tuple[str, ...] = (),
) -> Path:
    """A test-pattern clip made with the bundled ffmpeg (a sine tone as audio)."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc=size={size}:rate={rate}"]
    if audio:
        cmd += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
    cmd += ["-frames:v", str(frames), "-c:v", "libx264", "-pix_fmt", "yuv444p" if "x" in size and any(
        int(v) % 2 for v in size.split("x")) else "yuv420p", *extra]
    if audio:
        cmd += ["-c:a", "aac", "-shortest"]
    cmd.append(str(path))
    subprocess.run(cmd, check=True)
    if rotation is not None:
        rotated = path.with_name("rot-" + path.name)
        subprocess.run([ffmpeg_exe(), "-hide_banner", "-v", "error", "-y", "-display_rotation", str(rotation), "-i",
                        str(path), "-c", "copy", str(rotated)], check=True)
        rotated.replace(path)
    return path


def audio_seconds(path: Path) -> float:
    """Total duration of the first audio stream's packets."""
    out = subprocess.run([ffmpeg_exe(), "-hide_banner", "-v", "error", "-i", str(path), "-map", "0:a:0", "-c", "copy",
                          "-f", "framecrc", "-"], capture_output=True, text=True, check=True).stdout
    tb = next(Fraction(line.split(":", 1)[1].strip()) for line in out.splitlines() if line.startswith("#tb"))
    return float(sum(int(line.split(",")[3]) for line in out.splitlines() if line.startswith("0,")) * tb)


def test_probe_reads_size_exact_rate_count_and_audio(tmp_path):
    info = probe_video(make_clip(tmp_path / "a.mp4", frames=12, rate="30000/1001"))
    assert (info.width, info.height) == (64, 48)
    assert info.fps == Fraction(30000, 1001)
    assert info.frame_count == 12
    assert info.audio_codecs == ("aac",) and info.has_audio
    assert info.codec == "h264" and info.rotation == 0.0

    silent = probe_video(make_clip(tmp_path / "b.mkv", frames=5, rate="25", audio=False))
    assert silent.fps == 25 and silent.frame_count == 5 and not silent.has_audio


def test_probe_reads_rotation(tmp_path):
    info = probe_video(make_clip(tmp_path / "r.mp4", frames=3, rotation=90))
    assert info.rotation == 90.0
    assert (info.width, info.height) == (64, 48)  # the stored size


@pytest.mark.parametrize(
    "printed, tb, durations, expected",
    [
        (29.97, Fraction(1, 30000), [1001] * 20, Fraction(30000, 1001)),
        (29.97, Fraction(1, 1000), [33, 34, 33, 34, 33, 33, 34], Fraction(30000, 1001)),  # mkv: ms time base
        (25.0, Fraction(1, 12800), [512] * 10, Fraction(25)),
        (23.98, None, [], Fraction(24000, 1001)),
        (59.94, None, [], Fraction(60000, 1001)),
        (12.5, None, [], Fraction(25, 2)),
        (30.0, Fraction(1, 90000), [3000] * 5 + [6000], Fraction(30)),
    ],
)
def test_exact_frame_rate(printed, tb, durations, expected):
    assert exact_frame_rate(printed, tb, durations) == expected


def test_exact_frame_rate_without_any_rate_fails():
    with pytest.raises(VideoError, match="no frame rate"):
        exact_frame_rate(0.0, None, [])


@pytest.mark.parametrize(
    "text, name, color",
    [
        ("yuv420p(tv, bt709, progressive)", "yuv420p", ColorInfo("tv", "bt709", "bt709", "bt709")),
        ("yuv420p(tv, unknown/bt709/bt709, progressive)", "yuv420p", ColorInfo("tv", None, "bt709", "bt709")),
        ("yuvj420p(pc, bt470bg/unknown/unknown)", "yuvj420p", ColorInfo("pc", "bt470bg", None, None)),
        ("yuv420p(progressive)", "yuv420p", ColorInfo()),
        ("yuv444p", "yuv444p", ColorInfo()),
    ],
)
def test_parse_color(text, name, color):
    assert parse_color(text) == (name, color)


def test_probe_rejects_what_is_not_a_video(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all")
    clip = make_clip(tmp_path / "whole.mp4")
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(clip.read_bytes()[:2000])
    audio_only = tmp_path / "tone.m4a"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i", "sine", "-t", "0.3", str(audio_only)], check=True)
    image = write_image(tmp_path / "still.png", np.full((20, 20, 3), 0.5, np.float32))
    cases = {
        text: "not a readable video",
        truncated: "not a readable video",
        audio_only: "no video stream",
        image: "still image",
        tmp_path: "is a directory",
        tmp_path / "missing.mp4": "file not found",
    }
    for path, message in cases.items():
        with pytest.raises(VideoError, match=message):
            probe_video(path)


def test_read_frames_streams_every_frame_in_stored_orientation(tmp_path):
    info = probe_video(make_clip(tmp_path / "r.mp4", frames=9, size="64x48", rotation=90))
    frames = list(read_frames(info))
    assert len(frames) == 9
    assert all(f.shape == (48, 64, 3) and f.dtype == np.uint8 for f in frames)
    assert len(list(read_frames(info, FrameRange(max_frames=4)))) == 4
    # 0.1 s .. 0.2 s at 29.97 fps: frames 3 to 5.
    part = list(read_frames(info, FrameRange(start=0.1, end=0.2)))
    assert len(part) == 3
    np.testing.assert_array_equal(part[0], frames[3])
    assert len(list(read_frames(info, FrameRange(fps=Fraction(15))))) == 5  # 9 frames at 29.97 ≈ 0.3 s


def _smooth_frames(count: int, height: int, width: int) -> list[np.ndarray]:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    return [
        quantize(np.stack([0.2 + 0.6 * xx / width, 0.3 + 0.4 * yy / height, np.full_like(xx, 0.1 + 0.05 * i)], 2), 8)
        for i in range(count)
    ]


def test_writer_keeps_rate_count_audio_rotation_and_colour(tmp_path):
    source = make_clip(tmp_path / "src.mp4", frames=10, rotation=90,
                       extra=("-vf", "scale=out_color_matrix=bt709,setparams=colorspace=bt709:color_primaries=bt709"
                                     ":color_trc=bt709:range=tv"))
    info = probe_video(source)
    assert info.color == ColorInfo("tv", "bt709", "bt709", "bt709")
    frames = _smooth_frames(10, info.height, info.width)
    target = tmp_path / "out" / "result.mp4"
    with open_video_writer(target, info.width, info.height, info.fps, EncodeOptions(crf=0), info) as sink:
        for frame in frames:
            sink.write(frame)
    assert sink.result.frames == 10 and sink.result.audio == "copied"
    out = probe_video(target)
    assert (out.width, out.height, out.fps, out.frame_count) == (info.width, info.height, info.fps, 10)
    assert out.rotation == 90.0
    assert out.audio_codecs == ("aac",)
    assert out.color == info.color
    assert abs(audio_seconds(target) - audio_seconds(source)) < 1e-6  # copied unchanged
    decoded = list(read_frames(out))
    error = np.mean([np.abs(a.astype(float) - b).mean() for a, b in zip(decoded, frames)])
    assert error < 2.0  # 8-bit levels: 4:2:0 chroma on smooth content, same matrix both ways
    assert sorted(p.name for p in target.parent.iterdir()) == ["result.mp4"]


def test_writer_trims_audio_with_the_video(tmp_path):
    source = make_clip(tmp_path / "src.mp4", frames=30, rate="30")
    info = probe_video(source)
    target = tmp_path / "cut.mp4"
    with open_video_writer(target, info.width, info.height, info.fps, EncodeOptions(), info,
                           audio_start=0.3, trim_audio=True) as sink:
        for frame in _smooth_frames(12, info.height, info.width):
            sink.write(frame)
    assert probe_video(target).frame_count == 12
    assert audio_seconds(target) == pytest.approx(12 / 30, abs=0.03)  # cut at audio packets (~21 ms)


def test_writer_keeps_odd_sizes_exactly(tmp_path):
    frames = _smooth_frames(4, 37, 65)
    for codec, pix_fmt in (("libx264", "yuv444p"), ("vp9", "yuv420p")):
        target = tmp_path / f"odd-{codec}.{'webm' if codec == 'vp9' else 'mp4'}"
        with open_video_writer(target, 65, 37, Fraction(24), EncodeOptions(codec=codec)) as sink:
            for frame in frames:
                sink.write(frame)
        info = probe_video(target)
        assert (info.width, info.height, info.frame_count, info.pix_fmt) == (65, 37, 4, pix_fmt)
        assert bool(sink.result.notes) == (codec == "libx264")


def test_writer_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out" / "broken.mp4"
    with pytest.raises(KeyboardInterrupt):
        with open_video_writer(target, 64, 48, Fraction(25)) as sink:
            for frame in _smooth_frames(3, 48, 64):
                sink.write(frame)
            raise KeyboardInterrupt
    assert list(target.parent.iterdir()) == []
    with pytest.raises(ValueError, match="expected a 64×48 uint8 RGB frame"):
        with open_video_writer(target, 64, 48, Fraction(25)) as sink:
            sink.write(np.zeros((48, 65, 3), np.uint8))
    assert list(target.parent.iterdir()) == []


def test_writer_refuses_unknown_encoders_and_empty_videos(tmp_path):
    with pytest.raises(VideoWriteError, match="unknown video encoder"):
        with open_video_writer(tmp_path / "x.mp4", 64, 48, Fraction(25), EncodeOptions(codec="nope")):
            pass
    with pytest.raises(VideoWriteError, match="no frames"):
        with open_video_writer(tmp_path / "y.mp4", 64, 48, Fraction(25)):
            pass
    assert list(tmp_path.iterdir()) == []


def test_hazy_clip_varies_its_haze_and_is_reproducible():
    a = list(hazy_clip(12, 48, 64, seed=3))
    b = list(hazy_clip(12, 48, 64, seed=3))
    assert len(a) == 12 and all(f.shape == (48, 64, 3) and f.dtype == np.float32 for f in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert all(0.0 <= f.min() and f.max() <= 1.0 for f in a)
    top_brightness = [float(f[:8].mean()) for f in a]  # the far rows follow the haze level
    assert max(top_brightness) - min(top_brightness) > 0.02
