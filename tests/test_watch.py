"""Hot-folder mode (:func:`dcmp_cli.core.watch.watch_dehaze`): files arriving while it runs, settling,
the batch rules (skips, naming, no loops), stopping, and both ways of seeing changes."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dcmp_cli.core.batch import BatchEvents, ItemResult
from dcmp_cli.core.image_jobs import OutputOptions, dehaze_files
from dcmp_cli.core.image_model import Dehazer, ProgressFn, TemporalState
from dcmp_cli.core.prior_models import PriorDehazer
from dcmp_cli.core.temporal import GlobalsEMA
from dcmp_cli.core.watch import (
    Backend,
    WatchBackendError,
    WatchStarted,
    filesystem_type,
    watch_dehaze,
)
from dcmp_cli.data.files import InputError, OutputCollisionError, PlanError
from dcmp_cli.data.image_io import write_image
from dcmp_cli.prior import create_prior

SETTLE = 0.2
POLL = 0.05
DEFAULT_OPTIONS = OutputOptions()


class Invert(Dehazer):
    """A trivial dehazer: 1 − image, so each output is checkable pixel by pixel; counts its runs."""

    method = "invert"

    def __init__(self, during_run: Callable[[], None] | None = None) -> None:
        self.runs = 0
        self.during_run = during_run

    def run(
        self, images: torch.Tensor, *, progress: ProgressFn | None = None, temporal: TemporalState | None = None
    ) -> torch.Tensor:
        self.runs += 1
        if self.during_run is not None:
            self.during_run()
        return (1.0 - images).float().cpu()

    def temporal_state(self, smooth: float) -> GlobalsEMA:
        return GlobalsEMA(smooth)


class Recorder(BatchEvents):
    """Keeps every event; a scenario thread waits on it."""

    def __init__(self) -> None:
        self.finished: list[ItemResult] = []
        self.started: list[Path] = []
        self.totals: list[int] = []
        self.changed = threading.Condition()

    def batch_started(self, total: int) -> None:
        self.totals.append(total)

    def item_started(self, source: Path) -> None:
        self.started.append(source)

    def item_finished(self, result: ItemResult) -> None:
        with self.changed:
            self.finished.append(result)
            self.changed.notify_all()

    def of(self, name: str) -> list[ItemResult]:
        with self.changed:
            return [r for r in self.finished if r.input.name == name]

    def wait_for(self, name: str, count: int = 1, timeout: float = 6.0) -> list[ItemResult]:
        with self.changed:
            if not self.changed.wait_for(
                lambda: len([r for r in self.finished if r.input.name == name]) >= count, timeout
            ):
                raise AssertionError(f"no result for {name} in {timeout} s; got {[r.as_dict() for r in self.finished]}")
        return self.of(name)


def image(seed: int, size: tuple[int, int] = (24, 32)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def write_png(path: Path, seed: int, size: tuple[int, int] = (24, 32)) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = image(seed, size)
    Image.fromarray(rgb).save(path)
    return rgb


def png_bytes(seed: int, size: tuple[int, int] = (24, 32)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image(seed, size)).save(buffer, format="PNG")
    return buffer.getvalue()


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def rounds(n: int = 4) -> None:
    """Lets the watch look at its folder a few more times (to show that nothing more happens)."""
    time.sleep(SETTLE + n * POLL)


def run_watch(
    input: Path,
    output: Path,
    scenario: Callable[[Recorder], None] | None = None,
    *,
    dehazer: Dehazer | None = None,
    options: OutputOptions = DEFAULT_OPTIONS,
    backend: Backend = "poll",
    settle: float = SETTLE,
    **kwargs,
):
    """Runs the watch in this thread and ``scenario(recorder)`` in another once it is ready; the
    scenario's end (or a 10 s guard) sets stop. Returns (summary, recorder, WatchStarted)."""
    stop = threading.Event()
    recorder = Recorder()
    ready = threading.Event()
    started: list[WatchStarted] = []
    errors: list[BaseException] = []

    def on_ready(info: WatchStarted) -> None:
        started.append(info)
        ready.set()

    def script() -> None:
        try:
            if not ready.wait(10):
                raise AssertionError("the watch never became ready")
            if scenario is not None:
                scenario(recorder)
        except BaseException as error:  # noqa: BLE001 - handed to the test thread, raised there
            errors.append(error)
        finally:
            stop.set()

    thread = threading.Thread(target=script, daemon=True)
    guard = threading.Timer(10, stop.set)
    thread.start()
    guard.start()
    try:
        summary = watch_dehaze(
            input,
            output,
            dehazer or Invert(),
            options,
            events=recorder,
            stop=stop,
            on_ready=on_ready,
            poll_interval=POLL,
            settle=settle,
            backend=backend,
            **kwargs,
        )
    finally:
        stop.set()
        guard.cancel()
        thread.join(10)
    if errors:
        raise errors[0]
    return summary, recorder, started[0]


@pytest.fixture(params=["poll", "events"])
def backend(request) -> Backend:
    if request.param == "events":
        pytest.importorskip("watchfiles")
    return request.param


def by_name(results: list[ItemResult]) -> dict[str, list[str]]:
    table: dict[str, list[str]] = {}
    for r in results:
        table.setdefault(r.input.name, []).append(r.status)
    return table


# ----------------------------------------------------------------------------- arrivals


def test_existing_files_then_arrivals(tmp_path, backend):
    src, out = tmp_path / "in", tmp_path / "out"
    write_png(src / "a.png", 1)
    b = write_png(src / "b.png", 2)
    out.mkdir()
    (out / "a.png").write_bytes(b"an earlier result")
    arrived: dict[str, np.ndarray] = {}

    def scenario(rec: Recorder) -> None:
        rec.wait_for("b.png")
        arrived["c"] = write_png(src / "c.png", 3)
        rec.wait_for("c.png")

    summary, rec, started = run_watch(src, out, scenario, backend=backend)
    assert started.backend == backend and started.fallback is None
    assert by_name(summary.results) == {"a.png": ["skipped"], "b.png": ["done"], "c.png": ["done"]}
    assert rec.totals == [2]  # the images found at start; arrivals come as items
    assert (out / "a.png").read_bytes() == b"an earlier result"
    assert np.array_equal(pixels(out / "b.png"), 255 - b)
    assert np.array_equal(pixels(out / "c.png"), 255 - arrived["c"])
    assert summary.ok and [r.input.name for r in rec.finished] == [r.input.name for r in summary.results]


def test_files_found_at_start_go_in_name_order(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    names = ["f.png", "b.png", "e.png", "a.png", "d.png", "c.png"]
    for seed, name in enumerate(names):
        write_png(src / name, 40 + seed, (16, 16))
    summary, _, _ = run_watch(src, out, lambda rec: rec.wait_for("f.png"))
    assert [(r.input.name, r.status) for r in summary.results] == [(name, "done") for name in sorted(names)]


def test_slow_write_is_processed_once_when_complete(tmp_path, backend):
    """A JPEG written in chunks over longer than ``settle`` (pauses shorter than it): never read half-written."""
    src, out, reference = tmp_path / "in", tmp_path / "out", tmp_path / "reference"
    src.mkdir()
    buffer = io.BytesIO()
    Image.fromarray(image(7, (64, 64))).save(buffer, format="JPEG", quality=90)
    data = buffer.getvalue()
    settle, pause, chunks = 0.4, 0.1, 6
    assert pause * chunks > settle

    def scenario(rec: Recorder) -> None:
        with open(src / "slow.jpg", "wb") as f:
            for i in range(chunks):
                f.write(data[i * len(data) // chunks : (i + 1) * len(data) // chunks])
                f.flush()
                time.sleep(pause)
        rec.wait_for("slow.jpg")
        time.sleep(settle + 4 * POLL)

    dehazer = PriorDehazer(create_prior("dcp"))
    summary, _, _ = run_watch(src, out, scenario, dehazer=dehazer, backend=backend, settle=settle)
    assert [(r.input.name, r.status) for r in summary.results] == [("slow.jpg", "done")]
    (reference / "in").mkdir(parents=True)
    (reference / "in" / "slow.jpg").write_bytes(data)
    assert dehaze_files(reference / "in", reference / "out", dehazer).ok
    assert (out / "slow.jpg").read_bytes() == (reference / "out" / "slow.jpg").read_bytes()


def test_non_image_corrupt_tiny_and_temporary_files(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()

    def scenario(rec: Recorder) -> None:
        (src / "notes.txt").write_text("shooting notes")
        (src / "corrupt.png").write_bytes(png_bytes(4)[:150])
        write_png(src / "tiny.png", 5, (8, 8))
        (src / "download.jpg.part").write_bytes(png_bytes(6))
        (src / ".hidden.png").write_bytes(png_bytes(6))
        (src / "copy.png~").write_bytes(png_bytes(6))
        rec.wait_for("notes.txt")
        rec.wait_for("corrupt.png")
        rec.wait_for("tiny.png")
        write_png(src / "good.png", 8)  # the watch goes on after failures
        rec.wait_for("good.png")
        rounds()

    summary, _, _ = run_watch(src, out, scenario)
    assert by_name(summary.results) == {
        "notes.txt": ["ignored"],
        "corrupt.png": ["failed"],
        "tiny.png": ["failed"],
        "good.png": ["done"],
    }
    reasons = {r.input.name: r.reason for r in summary.results}
    assert "corrupt or truncated" in reasons["corrupt.png"]
    assert "too small" in reasons["tiny.png"]
    assert reasons["notes.txt"] == "not an image file"
    assert sorted(p.name for p in out.iterdir()) == ["good.png"]


def test_file_growing_again_while_read_is_not_reported(tmp_path, monkeypatch):
    """A writer that resumes while the settled file is being read: the read is discarded, not a failure."""
    from dcmp_cli.core import watch

    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    data = png_bytes(31)
    real_read = watch.read_image
    resumed: list[Path] = []

    def read_while_writer_resumes(path):
        try:
            return real_read(path)
        finally:
            if not resumed:  # the rest of the file arrives during the first read
                resumed.append(path)
                with open(path, "ab") as f:
                    f.write(data[len(data) // 2 :])

    monkeypatch.setattr(watch, "read_image", read_while_writer_resumes)

    def scenario(rec: Recorder) -> None:
        (src / "resumed.png").write_bytes(data[: len(data) // 2])
        rec.wait_for("resumed.png")
        rounds()

    summary, _, _ = run_watch(src, out, scenario)
    assert resumed == [src / "resumed.png"]
    assert by_name(summary.results) == {"resumed.png": ["done"]}
    assert np.array_equal(pixels(out / "resumed.png"), 255 - image(31))


def test_changed_file_after_failure_is_looked_at_again(tmp_path):
    """A corrupt file reported once is taken again when it changes (e.g. completed by a slow writer)."""
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()

    def scenario(rec: Recorder) -> None:
        (src / "late.png").write_bytes(png_bytes(9)[:100])
        rec.wait_for("late.png")
        rounds()
        (src / "late.png").write_bytes(png_bytes(9))
        rec.wait_for("late.png", 2)

    summary, _, _ = run_watch(src, out, scenario)
    assert by_name(summary.results) == {"late.png": ["failed", "done"]}
    assert np.array_equal(pixels(out / "late.png"), 255 - image(9))


def test_recursive_watch_takes_new_sub_folders(tmp_path, backend):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    album = tmp_path / "staging" / "album"
    write_png(album / "z.png", 11)

    def scenario(rec: Recorder) -> None:
        write_png(src / "sub" / "deeper" / "x.png", 10)
        rec.wait_for("x.png")
        os.rename(album, src / "album")  # a folder moved in: no event names its files
        rec.wait_for("z.png")

    summary, _, _ = run_watch(src, out, scenario, backend=backend, recursive=True)
    assert sorted((r.input.relative_to(src).as_posix(), r.status) for r in summary.results) == [
        ("album/z.png", "done"),
        ("sub/deeper/x.png", "done"),
    ]
    assert np.array_equal(pixels(out / "sub" / "deeper" / "x.png"), 255 - image(10))
    assert np.array_equal(pixels(out / "album" / "z.png"), 255 - image(11))


def test_without_recursive_sub_folders_are_not_watched(tmp_path, backend):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()

    def scenario(rec: Recorder) -> None:
        write_png(src / "sub" / "y.png", 12)
        write_png(src / "top.png", 13)
        rec.wait_for("top.png")
        rounds()

    summary, _, _ = run_watch(src, out, scenario, backend=backend)
    assert by_name(summary.results) == {"top.png": ["done"]}
    assert not (out / "sub").exists()


# ----------------------------------------------------------------------------- no loops


def test_output_inside_input_does_not_loop(tmp_path, backend):
    src = tmp_path / "in"
    out = src / "out"
    write_png(src / "a.png", 14)
    write_png(src / "old.png", 32)
    write_png(out / "old.png", 33)  # an earlier run's result

    def scenario(rec: Recorder) -> None:
        rec.wait_for("a.png")
        write_png(src / "b.png", 15)
        rec.wait_for("b.png")
        write_png(out / "old.png", 34)  # files changed or dropped in OUTPUT are never inputs
        write_png(out / "dropped.png", 35)
        rounds(6)

    summary, _, _ = run_watch(src, out, scenario, backend=backend, recursive=True)
    assert sorted((r.input.relative_to(src).as_posix(), r.status) for r in summary.results) == [
        ("a.png", "done"),
        ("b.png", "done"),
        ("old.png", "skipped"),
    ]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["a.png", "b.png", "dropped.png", "old.png"]


def test_in_place_with_suffix_does_not_loop(tmp_path, backend):
    src = tmp_path / "in"
    write_png(src / "a.png", 16)
    write_png(src / "old.png", 17)
    (src / "old_d.png").write_bytes(png_bytes(18))  # an earlier in-place result: not an input

    def scenario(rec: Recorder) -> None:
        rec.wait_for("a.png")
        write_png(src / "b.png", 19)
        rec.wait_for("b.png")
        rounds(6)

    summary, _, _ = run_watch(src, src, scenario, backend=backend, options=OutputOptions(suffix="_d"))
    assert by_name(summary.results) == {"a.png": ["done"], "b.png": ["done"], "old.png": ["skipped"]}
    assert sorted(p.name for p in src.iterdir()) == ["a.png", "a_d.png", "b.png", "b_d.png", "old.png", "old_d.png"]
    assert np.array_equal(pixels(src / "b_d.png"), 255 - image(19))


def test_in_place_format_change_does_not_take_its_results(tmp_path):
    """In place without a suffix, x.jpg → x.png: the PNG this watch wrote is not an input."""
    src = tmp_path / "in"
    src.mkdir()

    def scenario(rec: Recorder) -> None:
        Image.fromarray(image(20)).save(src / "x.jpg", quality=95)
        rec.wait_for("x.jpg")
        rounds(6)

    summary, _, _ = run_watch(src, src, scenario, options=OutputOptions(ext=".png"))
    assert [(r.input.name, r.status) for r in summary.results] == [("x.jpg", "done")]
    assert sorted(p.name for p in src.iterdir()) == ["x.jpg", "x.png"]


def test_arrival_that_would_replace_or_share_an_output_fails_alone(tmp_path):
    """What a batch plan refuses is, for a file arriving later, a failed item; the watch goes on."""
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()

    def scenario(rec: Recorder) -> None:
        write_png(src / "x.png", 21)
        rec.wait_for("x.png")
        Image.fromarray(image(22)).save(src / "x.jpg", quality=95)  # would also be written to out/x.png
        rec.wait_for("x.jpg")
        write_png(src / "y.png", 23)
        rec.wait_for("y.png")

    summary, _, _ = run_watch(src, out, scenario, options=OutputOptions(ext=".png"))
    assert by_name(summary.results) == {"x.png": ["done"], "x.jpg": ["failed"], "y.png": ["done"]}
    assert "would all be written to" in next(r.reason for r in summary.results if r.input.name == "x.jpg")
    assert np.array_equal(pixels(out / "x.png"), 255 - image(21))


# ----------------------------------------------------------------------------- changes, stopping


@pytest.mark.parametrize("overwrite", [False, True])
def test_file_modified_after_processing(tmp_path, overwrite):
    src, out = tmp_path / "in", tmp_path / "out"
    write_png(src / "a.png", 24)

    def scenario(rec: Recorder) -> None:
        rec.wait_for("a.png")
        write_png(src / "a.png", 25)
        rec.wait_for("a.png", 2)
        rounds()

    summary, _, _ = run_watch(src, out, scenario, overwrite=overwrite)
    assert by_name(summary.results) == {"a.png": ["done", "done" if overwrite else "skipped"]}
    assert np.array_equal(pixels(out / "a.png"), 255 - image(25 if overwrite else 24))


def test_stop_finishes_the_item_in_flight(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    first = write_png(src / "a.png", 26)
    write_png(src / "b.png", 27)
    stop = threading.Event()

    def stop_now() -> None:  # as if Ctrl-C came while the model works on a.png
        stop.set()
        time.sleep(0.2)

    dehazer = Invert(during_run=stop_now)
    summary = watch_dehaze(src, out, dehazer, stop=stop, poll_interval=POLL, settle=SETTLE, backend="poll")
    assert [(r.input.name, r.status) for r in summary.results] == [("a.png", "done")]
    assert dehazer.runs == 1
    assert sorted(p.name for p in out.iterdir()) == ["a.png"]  # complete, no temporary file left
    assert np.array_equal(pixels(out / "a.png"), 255 - first)


def test_a_signal_handler_setting_stop_ends_the_wait(tmp_path, backend):
    """The CLI's SIGINT/SIGTERM handler sets ``stop``; the watch notices while it waits."""
    src = tmp_path / "in"
    src.mkdir()
    stop = threading.Event()
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: stop.set())
    guard = threading.Timer(10, stop.set)
    guard.start()
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        summary = watch_dehaze(
            src, tmp_path / "out", Invert(), stop=stop, poll_interval=0.5, settle=SETTLE, backend=backend
        )
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        guard.cancel()
    assert stop.is_set() and summary.results == []


def test_watched_folder_removed_is_an_error(tmp_path, backend):
    src = tmp_path / "in"
    src.mkdir()

    def scenario(rec: Recorder) -> None:
        shutil.rmtree(src)
        time.sleep(1.0)  # the watch raises meanwhile

    with pytest.raises(InputError, match="no longer exists"):
        run_watch(src, tmp_path / "out", scenario, backend=backend)


# ----------------------------------------------------------------------------- set-up


def test_refuses_what_a_batch_refuses_before_any_work(tmp_path):
    stop = threading.Event()
    stop.set()  # were a refusal missing, the call would return instead of waiting
    src = tmp_path / "in"
    write_png(src / "x.png", 28)
    Image.fromarray(image(29)).save(src / "x.jpg")
    with pytest.raises(InputError, match="not found"):
        watch_dehaze(tmp_path / "missing", tmp_path / "out", Invert(), stop=stop)
    with pytest.raises(InputError, match="not a folder"):
        watch_dehaze(src / "x.png", tmp_path / "out", Invert(), stop=stop)
    with pytest.raises(PlanError, match="add a suffix"):
        watch_dehaze(src, src, Invert(), stop=stop)
    with pytest.raises(OutputCollisionError):
        watch_dehaze(src, tmp_path / "out", Invert(), OutputOptions(ext="png"), stop=stop)
    with pytest.raises(ValueError, match="backend"):
        watch_dehaze(src, tmp_path / "out", Invert(), stop=stop, backend="inotify")  # type: ignore[arg-type]  # wrong on purpose
    with pytest.raises(ValueError, match="poll_interval"):
        watch_dehaze(src, tmp_path / "out", Invert(), stop=stop, poll_interval=0)
    assert not (tmp_path / "out").exists()


def test_auto_polls_without_watchfiles(tmp_path, monkeypatch):
    src, out = tmp_path / "in", tmp_path / "out"
    write_png(src / "a.png", 30)
    monkeypatch.setitem(sys.modules, "watchfiles", None)  # import watchfiles now fails
    summary, _, started = run_watch(src, out, lambda rec: rec.wait_for("a.png"), backend="auto")
    assert started.backend == "poll" and "watchfiles" in (started.fallback or "")
    assert by_name(summary.results) == {"a.png": ["done"]}
    with pytest.raises(WatchBackendError, match="watchfiles package is not installed"):
        watch_dehaze(src, out, Invert(), backend="events", stop=threading.Event())


def test_auto_polls_on_network_file_systems(tmp_path, monkeypatch):
    from dcmp_cli.core import watch

    src = tmp_path / "in"
    src.mkdir()
    monkeypatch.setattr(watch, "network_filesystem", lambda path: "nfs4")
    _, _, started = run_watch(src, tmp_path / "out", backend="auto")
    assert started.backend == "poll" and "network file system (nfs4)" in (started.fallback or "")


def test_auto_uses_file_events_when_it_can(tmp_path):
    pytest.importorskip("watchfiles")
    src = tmp_path / "in"
    src.mkdir()
    _, _, started = run_watch(src, tmp_path / "out", backend="auto")
    assert started == WatchStarted(src, "events", None)


def test_filesystem_type_from_mountinfo():
    mountinfo = (
        "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
        "40 22 0:35 / /mnt/photo\\040share rw,relatime shared:20 - nfs4 server:/photos rw,vers=4.2\n"
        "41 22 0:36 / /mnt/scans rw - cifs //nas/scans rw\n"
        "42 41 0:37 / /mnt/scans/local rw master:3 - tmpfs tmpfs rw\n"
    )
    assert filesystem_type("/home/me/in", mountinfo) == "ext4"
    assert filesystem_type("/mnt/photo share/in", mountinfo) == "nfs4"
    assert filesystem_type("/mnt/photo sharefolder", mountinfo) == "ext4"
    assert filesystem_type("/mnt/scans/2024", mountinfo) == "cifs"
    assert filesystem_type("/mnt/scans/local/x", mountinfo) == "tmpfs"
    assert filesystem_type("/x", "") is None


def test_cli_watch_processes_arrivals_and_stops_on_sigint(tmp_path):
    import signal
    import subprocess
    import sys

    inbox, outbox = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    write_image(inbox / "first.png", np.full((24, 32, 3), 0.6, np.float32))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dcmp_cli",
            "dehaze",
            str(inbox),
            str(outbox),
            "--watch",
            "--method",
            "dcp",
            "--settle",
            "0.2",
            "--watch-backend",
            "poll",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (outbox / "first.png").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        write_image(inbox / "second.png", np.full((24, 32, 3), 0.7, np.float32))
        while not (outbox / "second.png").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    summary = json.loads(out)
    assert summary["counts"]["done"] == 2
    assert sorted(p.name for p in outbox.iterdir()) == ["first.png", "second.png"]
