"""dcmp_cli.data.video: probing, streaming frames in and out, short files, audio, rotation, colour,
pixel aspect ratio, codec tags, atomicity."""

from __future__ import annotations

import ast
import re
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

import dcmp_cli.data.video as video_package
from dcmp_cli.data.image_io import quantize, write_image
from dcmp_cli.data.video.container import mp4_video_length
from dcmp_cli.data.video.decode import FrameRange, read_frames
from dcmp_cli.data.video.encode import EncodeOptions, open_video_writer
from dcmp_cli.data.video.errors import IncompleteVideoError, VideoError, VideoWriteError
from dcmp_cli.data.video.ffmpeg import ffmpeg_exe, video_encoders
from dcmp_cli.data.video.files import VIDEO_EXTENSIONS
from dcmp_cli.data.video.probe import (
    ColorInfo,
    exact_frame_rate,
    parse_color,
    probe_video,
)
from dcmp_cli.data.video.testclips import hazy_clip

from helpers import shared_path
from video_clips import (  # test_video_cli imports the first two from here
    audio_seconds,
    make_clip,
    truncate,
)

# --------------------------------------------------------------------------- probing


def test_probe_reads_size_exact_rate_count_and_audio(tmp_path):
    info = probe_video(make_clip(tmp_path / "a.mp4", frames=12, rate="30000/1001"))
    assert (info.width, info.height) == (64, 48)
    assert info.fps == Fraction(30000, 1001)
    assert info.frame_count == 12 and info.declared_frames == 12 and not info.truncated
    assert info.audio_codecs == ("aac",) and info.has_audio
    assert info.codec == "h264" and info.codec_tag == "avc1" and info.rotation == 0.0

    silent = probe_video(make_clip(tmp_path / "b.mkv", frames=5, rate="25", audio=False))
    assert silent.fps == 25 and silent.frame_count == 5 and not silent.has_audio
    assert silent.declared_frames == 5 and silent.declared_duration == pytest.approx(0.2) and not silent.truncated


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
    truncated = truncate(make_clip(tmp_path / "whole.mp4"), tmp_path / "truncated.mp4", 0.2)  # index last: lost
    audio_only = tmp_path / "tone.m4a"
    subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i", "sine", "-t", "0.3", str(audio_only)], check=True
    )
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


def test_mp4_index_length_counts_samples_and_the_edit_list(tmp_path):
    clip = make_clip(tmp_path / "c.mp4", frames=30, rate="30", audio=False)
    assert mp4_video_length(clip).frames == 30
    assert mp4_video_length(clip).seconds == pytest.approx(1.0)
    # Cut without re-encoding: every sample stays stored, the edit list hides the first 0.5 s.
    trimmed = tmp_path / "trimmed.mp4"
    subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-y", "-ss", "0.5", "-i", str(clip), "-c", "copy", str(trimmed)], check=True
    )
    index = mp4_video_length(trimmed)
    assert index.frames == 30 and index.seconds == pytest.approx(0.5, abs=0.04)
    assert mp4_video_length(tmp_path / "missing.mp4") is None
    (tmp_path / "junk.mp4").write_bytes(b"\x00\x00\x00\x10moov\x00\x00\x00\x08trak")  # malformed: no track inside
    assert mp4_video_length(tmp_path / "junk.mp4") is None


# --------------------------------------------------------------------------- reading


def test_read_frames_streams_every_frame_in_stored_orientation(tmp_path):
    info = probe_video(make_clip(tmp_path / "r.mp4", frames=9, size="64x48", rotation=90))
    reader = read_frames(info)
    assert reader.result is None  # nothing read yet
    frames = list(reader)
    assert len(frames) == 9
    assert all(f.shape == (48, 64, 3) and f.dtype == np.uint8 for f in frames)
    assert reader.result is not None and (reader.result.frames, reader.result.expected_frames) == (9, 9)
    assert not reader.result.short_read and reader.result.note is None
    assert len(list(read_frames(info, FrameRange(max_frames=4)))) == 4
    # 0.1 s .. 0.2 s at 29.97 fps: frames 3 to 5.
    part = list(read_frames(info, FrameRange(start=0.1, end=0.2)))
    assert len(part) == 3
    np.testing.assert_array_equal(part[0], frames[3])
    assert len(list(read_frames(info, FrameRange(fps=Fraction(15))))) == 5  # 9 frames at 29.97 ≈ 0.3 s


def _read(info, frame_range: FrameRange | None = None):
    reader = read_frames(info, frame_range or FrameRange())
    frames = sum(1 for _ in reader)
    assert reader.result is not None and reader.result.frames == frames
    return reader.result


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_truncated_file_is_a_short_read_for_the_ranges_it_cuts(tmp_path, suffix):
    extra = ("-movflags", "+faststart") if suffix == ".mp4" else ()
    whole = make_clip(tmp_path / f"whole{suffix}", frames=60, rate="30", extra=extra)
    info = probe_video(truncate(whole, tmp_path / f"half{suffix}"))
    assert info.truncated and info.declared_frames == 60 and info.frame_count < 45

    everything = _read(info)
    assert everything.short_read and everything.expected_frames == 60 and everything.frames < 45
    assert f"{everything.frames} of 60 frames" in everything.note and "truncated" in everything.note
    with pytest.raises(IncompleteVideoError, match="truncated") as caught:
        everything.raise_if_short()
    assert (caught.value.frames, caught.value.expected_frames) == (everything.frames, 60)

    # Selections inside the part that is there are complete; those reaching past it are short.
    for complete in (FrameRange(max_frames=10), FrameRange(start=0.1, end=0.5), FrameRange(end=0.4, fps=Fraction(10))):
        result = _read(info, complete)
        assert not result.short_read and result.note is None and result.frames == result.expected_frames, complete
        result.raise_if_short()  # nothing to raise
    for cut in (FrameRange(start=0.5), FrameRange(max_frames=55), FrameRange(fps=Fraction(10)), FrameRange(start=1.5)):
        result = _read(info, cut)
        assert result.short_read and result.frames < result.expected_frames - 2, cut


def test_real_clip_cut_at_half_its_bytes_is_a_short_read(tmp_path):
    clip = truncate(shared_path("data", "video", "dvp30_hazy_video.mp4"), tmp_path / "half.mp4")
    info = probe_video(clip)
    result = _read(info, FrameRange(start=1.5))
    assert info.truncated and info.declared_frames == 158
    assert result.short_read and result.frames == 20 and result.expected_frames == 113  # data ends at 65 frames


def test_complete_files_never_read_short(tmp_path):
    """No false alarms: trimmed selections, resampling, an edit list, a container without a length."""
    clip = make_clip(tmp_path / "c.mp4", frames=30, rate="30")
    trimmed = tmp_path / "trimmed.mp4"
    subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-y", "-ss", "0.5", "-i", str(clip), "-c", "copy", str(trimmed)], check=True
    )
    ranges = (
        FrameRange(),
        FrameRange(start=0.2, end=0.7),
        FrameRange(fps=Fraction(7)),
        FrameRange(start=0.8),
        FrameRange(start=5.0),
        FrameRange(max_frames=50),
        FrameRange(end=0.9, fps=Fraction(24000, 1001)),
    )
    for path in (clip, trimmed):
        info = probe_video(path)
        assert not info.truncated
        for frame_range in ranges:
            result = _read(info, frame_range)
            assert not result.short_read and abs(result.frames - result.expected_frames) <= 1, (path.name, frame_range)
    assert _read(probe_video(trimmed)).frames == 15  # the edit list shows the last 0.5 s

    # MPEG-TS declares no length: a cut one reads what is there, without a false alarm.
    stream = make_clip(tmp_path / "c.ts", frames=60, rate="30")
    info = probe_video(truncate(stream, tmp_path / "half.ts"))
    assert info.declared_frames is None and not info.truncated
    result = _read(info)
    assert not result.short_read and 0 < result.frames < 45


def test_decoding_that_breaks_off_keeps_the_frames_before(tmp_path, monkeypatch):
    import imageio_ffmpeg

    info = probe_video(make_clip(tmp_path / "c.mp4", frames=8, audio=False))
    real_read_frames = imageio_ffmpeg.read_frames

    def breaking_read_frames(*args, **kwargs):
        for i, item in enumerate(real_read_frames(*args, **kwargs)):
            if i == 6:  # the metadata, then 5 frames
                raise RuntimeError("Could not read frame 6:\nEnd of file reached before full frame could be read.")
            yield item

    monkeypatch.setattr(imageio_ffmpeg, "read_frames", breaking_read_frames)
    reader = read_frames(info)
    assert len(list(reader)) == 5
    assert reader.result.short_read and reader.result.expected_frames == 8
    assert reader.result.note == "decoding stopped after 5 of 8 frames (Could not read frame 6:): the file is damaged"


def test_every_video_extension_reads_and_writes(tmp_path):
    """Containers ffmpeg handles are not refused for their file name (.ts, .m4v, .3gp, .flv...)."""
    # Noise, not flat frames: a few hundred bytes of MPEG-TS are too little for ffmpeg to recognise.
    frames = list(np.random.default_rng(0).integers(0, 256, (3, 48, 64, 3), dtype=np.uint8))
    for suffix in (".m4v", ".3gp", ".flv", ".ts", ".mts", ".m2ts"):  # the ones imageio's plugin refused
        assert suffix in VIDEO_EXTENSIONS
        target = tmp_path / f"clip{suffix}"
        with open_video_writer(target, 64, 48, Fraction(25)) as sink:
            for frame in frames:
                sink.write(frame)
        assert len(list(read_frames(probe_video(target)))) == 3, suffix


# --------------------------------------------------------------------------- writing


def _smooth_frames(count: int, height: int, width: int) -> list[np.ndarray]:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    return [
        quantize(np.stack([0.2 + 0.6 * xx / width, 0.3 + 0.4 * yy / height, np.full_like(xx, 0.1 + 0.05 * i)], 2), 8)
        for i in range(count)
    ]


def test_writer_keeps_rate_count_audio_rotation_and_colour(tmp_path):
    source = make_clip(
        tmp_path / "src.mp4",
        frames=10,
        rotation=90,
        extra=(
            "-vf",
            ("scale=out_color_matrix=bt709,setparams=colorspace=bt709:color_primaries=bt709:color_trc=bt709:range=tv"),
        ),
    )
    info = probe_video(source)
    assert info.color == ColorInfo("tv", "bt709", "bt709", "bt709")
    frames = _smooth_frames(10, info.height, info.width)
    target = tmp_path / "out" / "result.mp4"
    with open_video_writer(target, info.width, info.height, info.fps, EncodeOptions(crf=0), info) as sink:
        for frame in frames:
            sink.write(frame)
    assert sink.result.frames == 10 and sink.result.audio == "copied" and sink.result.notes == []
    out = probe_video(target)
    assert (out.width, out.height, out.fps, out.frame_count) == (info.width, info.height, info.fps, 10)
    assert out.rotation == 90.0
    assert out.audio_codecs == ("aac",)
    assert out.color == info.color
    assert out.sample_aspect == info.sample_aspect == 1
    assert abs(audio_seconds(target) - audio_seconds(source)) < 1e-6  # copied unchanged
    decoded = list(read_frames(out))
    error = np.mean([np.abs(a.astype(float) - b).mean() for a, b in zip(decoded, frames)])
    assert error < 2.0  # 8-bit levels: 4:2:0 chroma on smooth content, same matrix both ways
    assert sorted(p.name for p in target.parent.iterdir()) == ["result.mp4"]


def test_writer_trims_audio_with_the_video(tmp_path):
    source = make_clip(tmp_path / "src.mp4", frames=30, rate="30")
    info = probe_video(source)
    target = tmp_path / "cut.mp4"
    with open_video_writer(
        target, info.width, info.height, info.fps, EncodeOptions(), info, audio_start=0.3, trim_audio=True
    ) as sink:
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


@pytest.mark.parametrize(
    "suffix, codec, sar",
    [
        (".mp4", "libx264", Fraction(148, 195)),  # 65×37 shown at 4:3
        (".mp4", "libx264", Fraction(3856, 2889)),  # a 963×964 video shown at 4:3, as reported
        (".mov", "libx264", Fraction(148, 195)),
        (".mkv", "libx264", Fraction(148, 195)),
        (".mkv", "vp9", Fraction(148, 195)),
    ],
)
def test_writer_keeps_a_non_square_pixel_aspect_ratio_exactly(tmp_path, suffix, codec, sar):
    # Terms above 100, setsar's default bound, which used to round 148:195 to 63:83 and 3856:2889 to 4:3.
    source = make_clip(
        tmp_path / "src.mp4",
        frames=3,
        size="65x37",
        audio=False,
        extra=("-vf", f"setsar={sar.numerator}/{sar.denominator}:max=10000"),
    )
    info = probe_video(source)
    assert info.sample_aspect == sar
    target = tmp_path / f"out{suffix}"
    with open_video_writer(target, 65, 37, info.fps, EncodeOptions(codec=codec), info) as sink:
        for frame in read_frames(info):
            sink.write(frame)
    out = probe_video(target)
    assert (out.width, out.height, out.sample_aspect) == (65, 37, sar)
    assert not any("aspect" in note for note in sink.result.notes)


def test_webm_that_cannot_store_the_pixel_aspect_ratio_says_so(tmp_path):
    source = make_clip(
        tmp_path / "src.mp4", frames=2, size="65x37", audio=False, extra=("-vf", "setsar=148/195:max=1000")
    )
    info = probe_video(source)
    with open_video_writer(tmp_path / "out.webm", 65, 37, info.fps, EncodeOptions(codec="vp9"), info) as sink:
        for frame in read_frames(info):
            sink.write(frame)
    written = probe_video(tmp_path / "out.webm").sample_aspect
    assert written != Fraction(148, 195)  # WebM keeps a whole-pixel display width (49 of 65)
    assert any(
        "148:195 exactly" in note and f"{written.numerator}:{written.denominator}" in note for note in sink.result.notes
    )


def test_hevc_in_mp4_and_mov_is_tagged_hvc1(tmp_path):
    if "libx265" not in video_encoders():
        pytest.skip("the bundled ffmpeg has no libx265")
    frames = _smooth_frames(3, 48, 64)
    for suffix, tag in ((".mp4", "hvc1"), (".mov", "hvc1"), (".mkv", None)):
        target = tmp_path / f"h{suffix}"
        with open_video_writer(target, 64, 48, Fraction(25), EncodeOptions(codec="hevc")) as sink:
            for frame in frames:
                sink.write(frame)
        info = probe_video(target)
        assert (info.codec, info.codec_tag, info.frame_count) == ("hevc", tag, 3)


def test_writer_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out" / "broken.mp4"
    with pytest.raises(KeyboardInterrupt), open_video_writer(target, 64, 48, Fraction(25)) as sink:
        for frame in _smooth_frames(3, 48, 64):
            sink.write(frame)
        raise KeyboardInterrupt
    assert list(target.parent.iterdir()) == []
    with (
        pytest.raises(ValueError, match="expected a 64×48 uint8 RGB frame"),
        open_video_writer(target, 64, 48, Fraction(25)) as sink,
    ):
        sink.write(np.zeros((48, 65, 3), np.uint8))
    assert list(target.parent.iterdir()) == []


def test_writer_refuses_unknown_encoders_and_empty_videos(tmp_path):
    with (
        pytest.raises(VideoWriteError, match="unknown video encoder"),
        open_video_writer(tmp_path / "x.mp4", 64, 48, Fraction(25), EncodeOptions(codec="nope")),
    ):
        pass
    with pytest.raises(VideoWriteError, match="no frames"), open_video_writer(tmp_path / "y.mp4", 64, 48, Fraction(25)):
        pass
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- the package


def test_messages_never_name_command_line_flags():
    """Only dcmp_cli/cli turns errors into flag names: no string here says --something."""
    offenders = []
    for module in sorted(Path(video_package.__file__).parent.glob("*.py")):
        tree = ast.parse(module.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and ast.get_docstring(node)
        }
        for node in ast.walk(tree):
            is_text = isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
            if is_text and re.search(r"--[a-z]", node.value):
                offenders.append(f"{module.name}:{node.lineno}: {node.value!r}")
    assert offenders == []


def test_hazy_clip_varies_its_haze_and_is_reproducible():
    a = list(hazy_clip(12, 48, 64, seed=3))
    b = list(hazy_clip(12, 48, 64, seed=3))
    assert len(a) == 12 and all(f.shape == (48, 64, 3) and f.dtype == np.float32 for f in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert all(0.0 <= f.min() and f.max() <= 1.0 for f in a)
    top_brightness = [float(f[:8].mean()) for f in a]  # the far rows follow the haze level
    assert max(top_brightness) - min(top_brightness) > 0.02
