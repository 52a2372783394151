"""Finding inputs (folders, globs, links, unreadable parts), keeping outputs apart from inputs, planning
outputs; and the depth-map file types dcmp accepts."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dcmp_cli.data import datasets, depth_io, synth
from dcmp_cli.data.files import (
    InputError,
    NoImagesError,
    OutputCollisionError,
    OutputIsInputError,
    OutputNaming,
    ShardError,
    collect_inputs,
    in_shard,
    parse_shard,
    plan_outputs,
)
from dcmp_cli.data.image_io import ImageWriteError
from dcmp_cli.data.synth import (
    NothingSynthesizedError,
    SynthConfig,
    SynthError,
    synthesize,
    write_manifest,
)

needs_permissions = pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")


def _image(path: Path, value: int = 128, size: tuple[int, int] = (24, 24)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), value, np.uint8)).save(path)
    return path


def _names(paths, root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in paths)


def _scandir_denying(monkeypatch, denied: Path) -> None:
    """os.scandir raises PermissionError for ``denied`` (as for a folder without read permission)."""
    real = os.scandir

    def scandir(path="."):
        if Path(path) == denied:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)


# ---------------------------------------------------------------------------- links


@pytest.fixture
def looped(tmp_path) -> Path:
    """in/a.png, in/sub/b.png, in/self -> ., in/sub/up -> .., in/sub/again -> ../sub."""
    root = tmp_path / "in"
    _image(root / "a.png")
    _image(root / "sub" / "b.png")
    (root / "self").symlink_to(".")
    (root / "sub" / "up").symlink_to("..")
    (root / "sub" / "again").symlink_to("../sub")
    return root


def test_recursive_folder_visits_each_real_folder_once(looped):
    inputs = collect_inputs(looped, recursive=True)
    assert _names(inputs.files, looped) == ["a.png", "sub/b.png"]
    assert inputs.problems == []


@pytest.mark.parametrize("pattern", ["**/*.png", "*/*.png", "**/b.png", "s*/**/*.png"])
def test_globs_follow_link_loops_once(looped, pattern):
    inputs = collect_inputs(str(looped / pattern))
    matches = {p.name for p in inputs.files}
    assert len(inputs.files) == len(matches), f"an image listed twice: {inputs.files}"
    assert matches <= {"a.png", "b.png"} and "b.png" in matches


def test_linked_folder_outside_input_is_followed(tmp_path):
    root = tmp_path / "in"
    _image(root / "a.png")
    _image(tmp_path / "elsewhere" / "c.png")
    (root / "more").symlink_to(tmp_path / "elsewhere")
    (root / "more_again").symlink_to(tmp_path / "elsewhere")
    inputs = collect_inputs(root, recursive=True)
    assert _names(inputs.files, root) == ["a.png", "more/c.png"]


def test_a_folder_reached_by_a_link_keeps_its_shallowest_path(tmp_path):
    root = tmp_path / "in"
    _image(root / "b" / "y" / "d.png")
    (root / "a" / "x").mkdir(parents=True)
    (root / "a" / "x" / "link").symlink_to("../../b/y")
    assert _names(collect_inputs(root, recursive=True).files, root) == ["b/y/d.png"]


def test_glob_matches_like_the_standard_library_on_a_plain_tree(tmp_path):
    root = tmp_path / "in"
    for rel in ("a.png", "b.jpg", "ab.png", "x/c.png", "x/y/d.png", "x/y/z/e.jpg", "w/f.png", ".hidden/g.png"):
        _image(root / rel)
    (root / "x" / ".h.png").write_bytes((root / "a.png").read_bytes())
    for pattern in ("**/*.png", "*.png", "*/*.png", "x/**/*.jpg", "[ab].*", "x/*/d.png", "**/y/*", "?.png"):
        expected = sorted(
            Path(p)
            for p in glob.glob(str(root / pattern), recursive=True)
            if Path(p).is_file() and not Path(p).name.startswith(".")
        )
        assert sorted(collect_inputs(str(root / pattern)).all_files) == expected, pattern
    with pytest.raises(InputError, match="no files match"):
        collect_inputs(str(root / "**" / "*.tif"))
    with pytest.raises(InputError, match="no files match"):
        collect_inputs(str(tmp_path / "missing" / "*.png"))


# ---------------------------------------------------------------------------- unreadable parts


def test_broken_and_looping_links_are_problems_not_silence(tmp_path):
    root = tmp_path / "in"
    _image(root / "a.png")
    (root / "gone.png").symlink_to(tmp_path / "nowhere.png")
    (root / "ping.png").symlink_to(root / "pong.png")
    (root / "pong.png").symlink_to(root / "ping.png")
    inputs = collect_inputs(root)
    assert _names(inputs.files, root) == ["a.png"]
    reasons = {p.name: r for p, r in inputs.problems}
    assert "broken symbolic link" in reasons["gone.png"]
    assert set(reasons) == {"gone.png", "ping.png", "pong.png"}


def test_unreadable_subfolder_is_a_problem_and_the_rest_is_found(tmp_path, monkeypatch):
    root = tmp_path / "in"
    _image(root / "a.png")
    _image(root / "locked" / "b.png")
    _image(root / "open" / "c.png")
    _scandir_denying(monkeypatch, root / "locked")
    inputs = collect_inputs(root, recursive=True)
    assert _names(inputs.files, root) == ["a.png", "open/c.png"]
    reason = "folder cannot be read (permission denied); its files were not looked at"
    assert inputs.problems == [(root / "locked", reason)]
    globbed = collect_inputs(str(root / "**" / "*.png"))
    assert [p for p, _ in globbed.problems] == [root / "locked"]


def test_unreadable_input_folder_is_one_typed_error(tmp_path, monkeypatch):
    root = tmp_path / "in"
    _image(root / "a.png")
    _scandir_denying(monkeypatch, root)
    with pytest.raises(InputError, match="cannot read folder .*: permission denied") as caught:
        collect_inputs(root)
    assert caught.value.path == root


@needs_permissions
def test_permissions_on_disk(tmp_path):
    root = tmp_path / "in"
    _image(root / "a.png")
    _image(root / "locked" / "b.png")
    _image(root / "listable" / "c.png")
    (root / "locked").chmod(0)
    (root / "listable").chmod(0o444)  # can be listed, not entered
    try:
        inputs = collect_inputs(root, recursive=True)
        assert "a.png" in _names(inputs.files, root)
        assert root / "locked" in [p for p, _ in inputs.problems]
        (root / "locked").chmod(0o755)
        (root / "listable").chmod(0o755)
        root.chmod(0)
        with pytest.raises(InputError, match="permission denied"):
            collect_inputs(root)
    finally:
        for folder in (root, root / "locked", root / "listable"):
            folder.chmod(0o755)


def test_input_file_that_cannot_be_opened_or_is_no_file(tmp_path, monkeypatch):
    image = _image(tmp_path / "a.png")
    real_open = open

    def deny(path, *args, **kwargs):
        if Path(path) == image:
            raise PermissionError(13, "Permission denied")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", deny)
    with pytest.raises(InputError, match="cannot read .*a.png: permission denied"):
        collect_inputs(image)
    monkeypatch.undo()
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="neither a regular file nor a folder"):
        collect_inputs(fifo)
    assert _names(collect_inputs(tmp_path).files, tmp_path) == ["a.png"]  # the pipe is not opened
    (tmp_path / "dangling.png").symlink_to(tmp_path / "missing.png")
    with pytest.raises(InputError, match="broken symbolic link"):
        collect_inputs(tmp_path / "dangling.png")


# ---------------------------------------------------------------------------- outputs are not inputs


def test_output_folder_inside_input_is_never_read(tmp_path):
    root = tmp_path / "in"
    _image(root / "a.png")
    _image(root / "day" / "b.png")
    _image(root / "out" / "a.png")  # results of an earlier run
    _image(root / "out" / "day" / "b.png")
    naming = OutputNaming(root / "out")
    inputs = collect_inputs(root, recursive=True, outputs=naming)
    assert _names(inputs.files, root) == ["a.png", "day/b.png"]
    globbed = collect_inputs(str(root / "**" / "*.png"), outputs=naming)
    assert _names(globbed.files, root) == ["a.png", "day/b.png"]
    also = collect_inputs(root, recursive=True, exclude=[root / "day"])
    assert _names(also.files, root) == ["a.png", "out/a.png", "out/day/b.png"]


@pytest.mark.parametrize("ext", [None, ".png"])
def test_in_place_run_sets_its_earlier_results_apart(tmp_path, ext):
    root = tmp_path / "photos"
    _image(root / "x.jpg")
    _image(root / "y.png")
    _image(root / "sub" / "z.png")
    naming = OutputNaming(root, ext=ext, suffix="_d")
    first = collect_inputs(root, recursive=True, outputs=naming)
    assert first.earlier_outputs == []
    for _, target in plan_outputs(first, naming):
        _image(target)
    out_ext = ext or ".jpg"
    _image(root / f"x_d_d{out_ext}")  # what an earlier, unaware run made of x_d
    second = collect_inputs(root, recursive=True, outputs=naming)
    assert _names(second.files, root) == ["sub/z.png", "x.jpg", "y.png"]
    earlier = ["sub/z_d.png", f"x_d{out_ext}", f"x_d_d{out_ext}", "y_d.png"]
    assert _names(second.earlier_outputs, root) == sorted(earlier)
    plan = plan_outputs(second, naming)
    assert all(target.exists() for _, target in plan)  # a re-run skips everything


def test_without_suffix_names_cannot_tell_results_and_the_plan_refuses(tmp_path):
    root = tmp_path / "photos"
    _image(root / "c.jpg")
    _image(root / "d.png")
    naming = OutputNaming(root, ext=".png")
    inputs = collect_inputs(root, outputs=naming)
    assert inputs.earlier_outputs == []
    with pytest.raises(OutputIsInputError) as caught:
        plan_outputs(inputs, naming)
    assert (caught.value.source, caught.value.target) == (root / "d.png", root / "d.png")
    assert "--" not in str(caught.value)


# ---------------------------------------------------------------------------- planning


def test_two_inputs_one_output_name_is_refused_before_any_work(tmp_path):
    root = tmp_path / "in"
    _image(root / "x.jpg")
    _image(root / "x.png")
    _image(root / "y.png")
    inputs = collect_inputs(root)
    with pytest.raises(OutputCollisionError) as caught:
        plan_outputs(inputs, OutputNaming(tmp_path / "out", ext=".png"))
    assert caught.value.sources == (root / "x.jpg", root / "x.png")
    assert caught.value.target == tmp_path / "out" / "x.png"
    assert "x.jpg" in str(caught.value) and "x.png" in str(caught.value) and "--" not in str(caught.value)
    assert not (tmp_path / "out").exists()
    assert len(plan_outputs(inputs, OutputNaming(tmp_path / "out"))) == 3  # extensions kept: no clash


def test_plan_checks_every_input_not_only_one_shard(tmp_path):
    """`dehaze same same --ext png --shard 1/2` once replaced c.png (another shard's input) by c.jpg's result."""
    root = tmp_path / "same"
    names = [f"c{i}" for i in range(40)]
    for name in names:
        _image(root / f"{name}.jpg")
    stem = next(n for n in names if not in_shard(root / f"{n}.jpg", root, 1, 2))
    other = next(n for n in names if in_shard(root / f"{n}.jpg", root, 1, 2))
    (root / f"{stem}.jpg").rename(root / f"{other}.png")  # other.png lives in shard 2, other.jpg in shard 1
    assert not in_shard(root / f"{other}.png", root, 1, 2)
    inputs = collect_inputs(root)
    with pytest.raises((OutputIsInputError, OutputCollisionError)):
        plan_outputs(inputs, OutputNaming(root, ext=".png"))


def test_output_equal_to_an_input_is_refused(tmp_path):
    image = _image(tmp_path / "a.png")
    single = collect_inputs(image)
    with pytest.raises(OutputIsInputError, match="which is an input file"):
        plan_outputs(single, OutputNaming(image))
    root = tmp_path / "in"
    _image(root / "b.png")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "b.png").symlink_to(root / "b.png")  # the output path leads to the input
    with pytest.raises(OutputIsInputError):
        plan_outputs(collect_inputs(root), OutputNaming(tmp_path / "out"))
    assert plan_outputs(collect_inputs(root), OutputNaming(tmp_path / "elsewhere")) == [
        (root / "b.png", tmp_path / "elsewhere" / "b.png")
    ]


def test_messages_name_no_command_line_flags(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "sub").mkdir()
    with pytest.raises(NoImagesError) as caught:
        collect_inputs(tmp_path / "empty")
    assert caught.value.recursive is False and "--" not in str(caught.value)
    for text, fragment in (("x", "shard must look like K/N"), ("4/3", "K must lie in 1..N"), ("0/2", "K must lie")):
        with pytest.raises(ShardError, match=fragment) as shard_error:
            parse_shard(text)
        assert "--" not in str(shard_error.value)
    assert parse_shard("2/5") == (2, 5)
    with pytest.raises(ImageWriteError) as depth_error:
        depth_io.encode_depth(np.zeros((4, 4), np.float32), ".bmp", (0.0, 1.0))
    assert "--" not in str(depth_error.value)


# ---------------------------------------------------------------------------- depth maps


def test_one_list_of_depth_extensions():
    assert datasets.DEPTH_EXTENSIONS is depth_io.DEPTH_EXTENSIONS
    assert synth.DEPTH_EXTENSIONS is depth_io.DEPTH_EXTENSIONS


def _clear_images(root: Path, names=("a", "b")) -> list[Path]:
    return [_image(root / f"{n}.png", 60 + 40 * i, (32, 40)) for i, n in enumerate(names)]


def test_jpeg_depth_maps_are_refused_with_the_reason(tmp_path):
    clear = _clear_images(tmp_path / "clear")
    depth = tmp_path / "depth"
    for name in ("a", "b"):
        _image(depth / f"{name}.jpg", 100, (32, 40))
    with pytest.raises(SynthError, match=r"2 depth map\(s\) .*a\.jpg.*JPEG is lossy and 8-bit") as caught:
        synthesize(clear, tmp_path / "out", SynthConfig(depth_dir=depth))
    assert "--" not in str(caught.value)
    assert not (tmp_path / "out").exists()
    np.save(depth / "a.npy", np.linspace(0, 1, 32 * 40, dtype=np.float32).reshape(32, 40))
    report = synthesize(clear, tmp_path / "out", SynthConfig(depth_dir=depth))
    assert [r.source for r in report.records] == [str(clear[0])]
    (failure,) = report.failures
    assert "b.jpg is not accepted: JPEG is lossy and 8-bit" in failure.reason


def test_no_manifest_when_nothing_was_made(tmp_path):
    bad = tmp_path / "clear" / "bad.png"
    bad.parent.mkdir()
    bad.write_bytes(b"not an image")
    with pytest.raises(NothingSynthesizedError) as caught:
        synthesize([bad], tmp_path / "out")
    assert len(caught.value.failures) == 1 and "bad.png" in str(caught.value)
    assert not (tmp_path / "out" / synth.MANIFEST_JSON).exists()
    empty = synth.SynthReport(tmp_path / "out", SynthConfig())
    with pytest.raises(NothingSynthesizedError):
        write_manifest(empty)
    assert not (tmp_path / "out" / synth.MANIFEST_CSV).exists()
