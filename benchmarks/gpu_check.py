"""One prepared check of every CUDA code path of dcmp, run by ``benchmarks/gpu_check.sh`` (see docs/gpu.md).

Steps, in order of value (each with its own time limit; a failed step does not stop the others):

* ``env``: GPU, driver, torch/CUDA/cuDNN/NCCL versions, ffmpeg; ``python -m dcmp_cli --help`` works;
* ``pytest``: ``pytest -m cuda`` (tests/test_cuda.py);
* ``inference``: ``benchmarks/inference.py`` at 512², 1024², 2048² in fp32/fp16/bf16: MP/s, peak memory,
  PSNR of fp16/bf16 against fp32;
* ``dehaze``: ``dcmp dehaze`` whole, with forced tiles, with a small ``--max-memory`` (auto tiles), and under a
  real allocator cap (``torch.cuda.set_per_process_memory_fraction``) that forces the out-of-memory retry,
  compared with a run at the tile size the retry settled on;
* ``video``: ``dcmp video`` with ``--batch 4`` and ``--batch 1``: decoded frames compared, frames/s
  (a folder of frames when no ffmpeg is available);
* ``train``: ``dcmp synth`` of a small dataset, then ``dcmp train`` on the full preset: fp16 AMP (deterministic)
  straight, the same interrupted by SIGINT and resumed (weights fingerprints compared), bf16;
* ``torchrun``: a 1-process ``torchrun -m dcmp_cli train`` run;
* ``compile``: ``benchmarks/inference.py --compile`` at 1024² (last: the slowest to start).

Writes at most 8 files into ``--out`` (the device tool brings back no more): ``summary.txt``,
``results.json`` and one log per step group (pytest, inference (+compile), dehaze, video, train,
torchrun). Intermediate files go to ``--work`` (a temporary folder by default).

``--smoke`` runs the same steps on the CPU with the tiny preset and tiny sizes: the plumbing check to run
before spending device time. ``--capped-cli CAP ARGS...`` (used by the dehaze step) runs ``dcmp ARGS`` with
the CUDA allocator capped at CAP bytes (e.g. 3G).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS_NAME = "dcmpnet-sots-briefly-trained.pth"
VIDEO_NAME = "dvp30_hazy_video.mp4"
ASSET_DIRS = (ROOT / ".gpu-assets", ROOT.parent / "shared" / "weights", ROOT.parent / "shared" / "data" / "video")
STEPS = ("env", "pytest", "inference", "dehaze", "video", "train", "torchrun", "compile")
#: Seconds each step may take on the GPU (the whole run also stops at --budget).
GPU_LIMITS = {
    "env": 45,
    "pytest": 150,
    "inference": 120,
    "dehaze": 90,
    "video": 75,
    "train": 150,
    "torchrun": 60,
    "compile": 120,
}
SMOKE_LIMITS = {
    "env": 60,
    "pytest": 60,
    "inference": 120,
    "dehaze": 120,
    "video": 120,
    "train": 180,
    "torchrun": 90,
    "compile": 150,
}
#: Reduced-precision and tiled outputs must stay this close to their fp32 / whole-image references.
MIN_PRECISION_PSNR = 45.0
MIN_SAME_RESULT_PSNR = 45.0


@dataclass(frozen=True)
class Settings:
    """What the steps run on: the GPU at realistic sizes, or the CPU with the tiny preset (smoke)."""

    smoke: bool
    device: str
    preset: str
    image_side: int
    forced_tile: int
    small_budget: str
    oom_cap: str
    inference_sizes: tuple[int, ...]
    compile_size: int
    precisions: tuple[str, ...]
    train_precisions: tuple[str, str]
    clear_images: int
    clear_side: int
    per_image: int
    patch: int
    batch: int
    iters: int
    stop_after: int
    log_every: int
    torchrun_iters: int
    clip: tuple[int, int, int]
    video_frames: int

    @staticmethod
    def for_mode(smoke: bool) -> Settings:
        if smoke:
            return Settings(
                True,
                "cpu",
                "dcmpnet-tiny",
                192,
                64,
                "8M",
                "none",
                (64, 128),
                64,
                ("fp32", "bf16"),
                ("fp32", "bf16"),
                8,
                64,
                1,
                32,
                2,
                8,
                4,
                1,
                3,
                (8, 96, 128),
                8,
            )
        return Settings(
            False,
            "cuda",
            "dcmpnet",
            2048,
            512,
            "256M",
            "3G",
            (512, 1024, 2048),
            1024,
            ("fp32", "fp16", "bf16"),
            ("fp16", "bf16"),
            100,
            160,
            2,
            128,
            4,
            100,
            50,
            10,
            20,
            (32, 360, 640),
            32,
        )


@dataclass
class StepResult:
    status: str = "PASS"
    seconds: float = 0.0
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def fail(self, note: str) -> None:
        self.status = "FAIL" if self.status != "TIMEOUT" else self.status
        self.notes.append(note)


class Timeout(Exception):
    """A command ran past its step's time limit."""


class Check:
    """Runs the steps: commands with time limits, logs, figures, the summary."""

    def __init__(self, out: Path, work: Path, settings: Settings, budget: float, python: str) -> None:
        self.out, self.work, self.s = out, work, settings
        self.python = python
        self.start = time.monotonic()
        self.budget = budget
        self.step_deadline = math.inf
        self.log: Path | None = None
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "PYTHONUNBUFFERED": "1",
        }
        self.env.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS for the resume check
        if settings.smoke:
            self.env.setdefault("OMP_NUM_THREADS", "1")  # tiny networks on small shared CPUs: one thread is fastest
        self.results: dict[str, StepResult] = {}
        self.info: dict[str, Any] = {}
        self.weights = Path("missing")
        self.real_weights = False

    # --- running commands -------------------------------------------------------------------------

    def network_args(self) -> list[str]:
        """inference.py options for the network: the smoke preset, the real weights, or the full preset at random."""
        if self.s.smoke:
            return ["--preset", self.s.preset]
        return ["--weights", str(self.weights)] if self.real_weights else ["--preset", "dcmpnet"]

    def remaining(self) -> float:
        return min(self.step_deadline, self.start + self.budget) - time.monotonic()

    def write_log(self, text: str) -> None:
        assert self.log is not None
        with self.log.open("a") as f:
            f.write(text)

    def run(
        self, args: list[str], *, env: dict[str, str] | None = None, check: bool = True
    ) -> subprocess.CompletedProcess:
        """Runs a command within the step's time left; its output goes to the step's log (and is returned)."""
        limit = self.remaining()
        if limit < 3:
            raise Timeout(f"no time left for: {shlex.join(args[:6])} …")
        self.write_log(f"\n$ {shlex.join(args)}\n")
        started = time.monotonic()
        # A session of its own, so that a timeout ends the whole tree (torchrun workers, data loaders, pytest's
        # subprocesses), not just the command, and nothing left running disturbs the next step on the GPU.
        child = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env or self.env,
            cwd=ROOT,
            start_new_session=True,
        )
        try:
            stdout, stderr = child.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            stdout, stderr = child.communicate()
            self.write_log(_text(stdout) + _text(stderr) + f"\n[timed out after {limit:.0f} s]\n")
            raise Timeout(f"timed out after {limit:.0f} s: {shlex.join(args[:8])} …") from None
        proc = subprocess.CompletedProcess(args, child.returncode, stdout, stderr)
        self.write_log(stdout + stderr + f"[exit {proc.returncode} after {time.monotonic() - started:.1f} s]\n")
        if check and proc.returncode != 0:
            raise CommandFailed(args, proc)
        return proc

    def dcmp(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run([self.python, "-m", "dcmp_cli", *args], check=check)

    def python_code(self, code: str, *args: str) -> subprocess.CompletedProcess:
        return self.run([self.python, "-c", code, *args])

    # --- steps ----------------------------------------------------------------------------------

    def step(self, name: str, log: str, body: Callable[[StepResult], None], limit: float) -> None:
        result = StepResult()
        self.results[name] = result
        self.log = self.out / log
        left = self.start + self.budget - time.monotonic()
        if left < 10:
            result.status = "SKIP"
            result.notes.append("out of time (the run's --budget was spent)")
            return
        self.step_deadline = time.monotonic() + min(limit, left)
        self.write_log(f"\n===== step {name} (limit {min(limit, left):.0f} s) =====\n")
        started = time.monotonic()
        try:
            body(result)
        except Timeout as e:
            result.status = "TIMEOUT"
            result.notes.append(str(e))
        except CommandFailed as e:
            result.fail(str(e))
        except Exception as e:  # noqa: BLE001 - the check reports a broken step and goes on with the next
            result.fail(f"{type(e).__name__}: {e}")
        result.seconds = time.monotonic() - started
        self.step_deadline = math.inf
        print(
            f"[{time.monotonic() - self.start:6.0f} s] {name}: {result.status} ({result.seconds:.0f} s)"
            + (f" — {result.notes[0][:200]}" if result.notes else ""),
            flush=True,
        )

    def summary(self) -> str:
        s = self.info
        lines = [
            f"dcmp GPU check, {s.get('date', '?')} ({'CPU smoke run, tiny preset' if self.s.smoke else 'GPU run'})",
            (
                f"machine: {s.get('gpu', 'no GPU')}; driver {s.get('driver', '?')}; torch {s.get('torch', '?')}, "
                f"CUDA {s.get('cuda', '-')}, cuDNN {s.get('cudnn', '-')}, NCCL {s.get('nccl', '-')}, "
                f"Python {s.get('python', '?')}"
            ),
            f"weights: {s.get('weights', '?')}; ffmpeg: {s.get('ffmpeg') or 'none'}",
            "",
            f"{'step':<10} {'status':<8} {'seconds':>7}  figures / notes",
        ]
        for name, r in self.results.items():
            figures = "; ".join(f"{k} {_show(v)}" for k, v in r.figures.items())
            lines.append(f"{name:<10} {r.status:<8} {r.seconds:7.1f}  {figures}")
            lines += [f"{'':<28}note: {note}" for note in r.notes]
        total = time.monotonic() - self.start
        lines += [
            "",
            f"total {total:.0f} s (budget {self.budget:.0f} s); "
            + ", ".join(
                f"{k} {sum(r.status == k for r in self.results.values())}" for k in ("PASS", "FAIL", "TIMEOUT", "SKIP")
            ),
        ]
        return "\n".join(lines) + "\n"


class CommandFailed(Exception):
    def __init__(self, args: list[str], proc: subprocess.CompletedProcess) -> None:
        tail = [line for line in (proc.stderr or proc.stdout).strip().splitlines() if line.strip()][-1:] or [""]
        super().__init__(f"exit {proc.returncode}: {shlex.join(args[:6])} …: {tail[0][:300]}")
        self.proc = proc


def _text(value: str | bytes | None) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _show(value: Any) -> str:
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.4g}"
    return str(value)


def find_asset(name: str) -> Path | None:
    """A file carried in .gpu-assets/ or present in ../shared, or None."""
    for folder in ASSET_DIRS:
        if (folder / name).is_file():
            return folder / name
    return None


def read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def last_json(text: str) -> Any:
    """The JSON document a ``--json`` command printed on stdout."""
    return json.loads(text[text.index("{") :])


# --- the steps -----------------------------------------------------------------------------------------------------

ENV_CODE = r"""
import json, platform, shutil, subprocess, torch
info = {"torch": torch.__version__, "python": platform.python_version(), "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available()}
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    info.update(gpu=f"{torch.cuda.get_device_name(0)} ({p.total_memory / 2**30:.1f} GiB, sm_{p.major}{p.minor})",
                cudnn=torch.backends.cudnn.version(), bf16=torch.cuda.is_bf16_supported(),
                tf32_matmul=torch.backends.cuda.matmul.allow_tf32, tf32_cudnn=torch.backends.cudnn.allow_tf32)
    try:
        v = torch.cuda.nccl.version()
        info["nccl"] = ".".join(map(str, v)) if isinstance(v, tuple) else str(v)
    except Exception as e:
        info["nccl"] = f"unavailable ({e})"
if shutil.which("nvidia-smi"):
    q = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                       capture_output=True, text=True)
    info["driver"] = q.stdout.strip()
try:
    import imageio_ffmpeg
    info["ffmpeg"] = f"{imageio_ffmpeg.get_ffmpeg_exe()} (imageio-ffmpeg {imageio_ffmpeg.__version__})"
except Exception as e:
    info["ffmpeg"] = None
    info["ffmpeg_problem"] = f"{type(e).__name__}: {e}"
print(json.dumps(info))
"""


def step_env(c: Check, r: StepResult) -> None:
    import datetime

    c.info["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    info = json.loads(c.python_code(ENV_CODE).stdout.strip().splitlines()[-1])
    c.info.update(info)
    if shutil.which("nvidia-smi"):
        c.run(["nvidia-smi"], check=False)
    c.dcmp("--help")
    r.figures.update({k: info.get(k) for k in ("gpu", "torch", "cuda", "cudnn", "nccl") if info.get(k) is not None})
    if not c.s.smoke and not info["cuda_available"]:
        r.fail("torch sees no CUDA GPU")
    if info.get("ffmpeg") is None:
        r.notes.append(
            f"no ffmpeg ({info.get('ffmpeg_problem')}): the video step uses a folder of frames; carry the "
            "imageio-ffmpeg wheel in .whl/ to check video files (docs/gpu.md)"
        )


def step_pytest(c: Check, r: StepResult) -> None:
    proc = c.run(
        [c.python, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", "tests/test_cuda.py"], check=False
    )
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", proc.stdout)}
    r.figures.update(counts)
    failed = re.findall(r"^(?:FAILED|ERROR) tests/test_cuda.py::(\S+)", proc.stdout, re.MULTILINE)
    if proc.returncode != 0:
        r.fail(f"pytest exit {proc.returncode}; failed: {', '.join(failed) or 'see pytest.log'}")
    if not c.s.smoke and counts.get("skipped"):
        r.notes.append(f"{counts['skipped']} skipped (no weights carried? see pytest.log)")


def _inference_rows(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text())["results"] if path.is_file() else []


def _inference_figures(rows: list[dict[str, Any]], r: StepResult, real_weights: bool) -> None:
    for row in rows:
        side = row["size"][1]
        key = f"{side}² {row['path']} {row['precision']}" + (f" tile{row['tile']}" if row.get("tile") else "")
        if "error" in row:
            r.fail(f"{key}: {row['error']}")
            continue
        text = f"{row['megapixels_per_s']:.2f} MP/s, {((row['peak_bytes'] or 0) / 2**20):.0f} MiB"
        quality = row.get("psnr_vs_reference")
        if quality is not None:
            text += f", {quality:.1f} dB" if not math.isinf(quality) else ", exact"
            if real_weights and row["precision"] != "fp32" and quality < MIN_PRECISION_PSNR:
                r.fail(f"{key}: PSNR {quality:.1f} dB against fp32, below {MIN_PRECISION_PSNR} dB")
        r.figures[key] = text


def step_inference(c: Check, r: StepResult) -> None:
    target = c.work / "inference.json"
    args = [
        c.python,
        "benchmarks/inference.py",
        "--device",
        c.s.device,
        "--sizes",
        *map(str, c.s.inference_sizes),
        "--precisions",
        *c.s.precisions,
        "--repeats",
        "2",
        "--json",
        str(target),
    ]
    args += c.network_args()
    try:
        proc = c.run(args, check=False)
    finally:  # inference.py rewrites its JSON after every case: keep what a timeout left
        c.info["inference"] = json.loads(target.read_text()) if target.is_file() else None
        _inference_figures(_inference_rows(target), r, c.real_weights)
    if proc.returncode != 0 and r.status == "PASS":
        r.fail(f"inference.py exit {proc.returncode}")


def step_compile(c: Check, r: StepResult) -> None:
    target = c.work / "inference-compile.json"
    args = [
        c.python,
        "benchmarks/inference.py",
        "--device",
        c.s.device,
        "--sizes",
        str(c.s.compile_size),
        "--precisions",
        *c.s.precisions[:2],
        "--repeats",
        "2",
        "--compile",
        "all",
        "--json",
        str(target),
    ]
    args += c.network_args()
    env = c.env
    if c.s.smoke:  # inductor's C++ build takes many minutes on small CPUs: check the plumbing only
        env = {**c.env, "TORCH_COMPILE_DISABLE": "1"}
        r.notes.append("smoke run: torch.compile disabled (TORCH_COMPILE_DISABLE=1), compiled rows run eagerly")
    try:
        proc = c.run(args, env=env, check=False)
    finally:  # what compiled before a timeout still counts
        rows = [row for row in _inference_rows(target) if row["path"] in ("compiled", "fast")]
        c.info["inference_compile"] = json.loads(target.read_text()) if target.is_file() else None
        for row in rows:
            if row["path"] == "compiled" and "error" not in row:
                r.figures[f"compiled {row['precision']} first call"] = f"{row['first_call_s']:.1f} s"
        _inference_figures(rows, r, c.real_weights)
    if proc.returncode != 0 and r.status == "PASS":
        r.fail(f"inference.py --compile exit {proc.returncode}")


MAKE_IMAGE = r"""
import sys
import numpy as np
from dcmp_cli.data.haze import add_haze
from dcmp_cli.data.image_io import write_image
from dcmp_cli.data.video.testclips import textured_scene
side = int(sys.argv[2])
clear = textured_scene(side, side, seed=3)
depth = np.repeat(np.linspace(1.0, 0.0, side, dtype=np.float32)[:, None], side, axis=1)
write_image(sys.argv[1], add_haze(clear, depth, 1.3, 0.88))
"""

MAKE_CHECKPOINT = r"""
import sys, torch
from dcmp_cli.core.checkpoint import save_checkpoint
from dcmp_cli.models import create_model, get_preset
torch.manual_seed(0)
preset = sys.argv[2]
save_checkpoint(sys.argv[1], create_model(preset, "dehaze"), "dehaze", get_preset(preset).kwargs("dehaze"), preset,
                "nothing (random weights for the GPU check)")
"""


def step_dehaze(c: Check, r: StepResult) -> None:
    image = c.work / "hazy.png"
    c.python_code(MAKE_IMAGE, str(image), str(c.s.image_side))
    common = ["--weights", str(c.weights), "--device", c.s.device, "--overwrite", "--json"]

    def dehaze(name: str, *options: str, capped: str | None = None) -> tuple[np.ndarray, subprocess.CompletedProcess]:
        target = c.work / f"{name}.png"
        args = ["dehaze", str(image), str(target), *common, *options]
        if capped is None:
            proc = c.dcmp(*args)
        else:
            proc = c.run([c.python, str(Path(__file__)), "--capped-cli", capped, *args])
        seconds = last_json(proc.stdout)["files"][0]["seconds"]
        r.figures[f"{name} s"] = seconds
        return read_rgb(target), proc

    whole, _ = dehaze("whole", "--tile", "0")
    for name, options in (
        (f"tile{c.s.forced_tile}", ("--tile", str(c.s.forced_tile))),
        (f"max-memory {c.s.small_budget}", ("--max-memory", c.s.small_budget)),
    ):
        try:
            output, _ = dehaze(name, *options)
        except CommandFailed as e:  # reported; the other runs go on
            r.fail(str(e))
            continue
        quality = psnr(output, whole)
        r.figures[f"{name} vs whole dB"] = quality
        if c.real_weights and quality < 40.0:
            r.fail(f"{name}: {quality:.1f} dB against the whole-image output (tiling with shared statistics: ≥ 40 dB)")
    capped, proc = dehaze("oom-retry", "--tile", "0", capped=c.s.oom_cap)
    tiles = [int(t) for t in re.findall(r"retrying with (\d+)-pixel tiles", proc.stderr)]
    r.figures["oom retries"] = " → ".join(map(str, tiles)) if tiles else "none"
    if not tiles:
        if c.s.smoke:
            r.notes.append("no allocator cap on the CPU: the out-of-memory retry is checked on the GPU only")
        else:
            r.fail(f"no out-of-memory retry under a {c.s.oom_cap} cap (the whole image fitted?)")
        return
    reference, _ = dehaze(f"tile{tiles[-1]}", "--tile", str(tiles[-1]))
    quality = psnr(capped, reference)
    r.figures["oom-retry vs same tiles dB"] = quality
    if quality < MIN_SAME_RESULT_PSNR:
        r.fail(f"the retried output differs from a run with {tiles[-1]}-pixel tiles: {quality:.1f} dB")


MAKE_CLIP = r"""
import sys
import imageio_ffmpeg
import numpy as np
from dcmp_cli.data.video.testclips import hazy_clip
frames, height, width = map(int, sys.argv[2:5])
writer = imageio_ffmpeg.write_frames(sys.argv[1], (width, height), fps=25, codec="libx264", quality=None,
                                     output_params=["-crf", "12"], macro_block_size=1)
writer.send(None)
for frame in hazy_clip(frames, height, width, seed=5):
    writer.send(np.ascontiguousarray((frame * 255).round().astype(np.uint8)))
writer.close()
"""

MAKE_FRAMES = r"""
import sys
from pathlib import Path
from dcmp_cli.data.image_io import write_image
from dcmp_cli.data.video.testclips import hazy_clip
frames, height, width = map(int, sys.argv[2:5])
for i, frame in enumerate(hazy_clip(frames, height, width, seed=5)):
    write_image(Path(sys.argv[1]) / f"frame{i:04d}.png", frame)
"""

COMPARE_VIDEOS = r"""
import json, math, sys
import imageio_ffmpeg
import numpy as np
def frames(path):
    reader = imageio_ffmpeg.read_frames(path)
    meta = next(reader)
    h, w = meta["size"][1], meta["size"][0]
    return [np.frombuffer(f, np.uint8).reshape(h, w, 3).astype(np.float64) / 255 for f in reader]
a, b = frames(sys.argv[1]), frames(sys.argv[2])
scores = [math.inf if not np.any(x != y) else 10 * math.log10(1 / np.mean((x - y) ** 2)) for x, y in zip(a, b)]
print(json.dumps({"frames": [len(a), len(b)], "min_psnr": min(scores),
                  "max_abs_levels": max(float(np.abs(x - y).max()) * 255 for x, y in zip(a, b))}))
"""


def step_video(c: Check, r: StepResult) -> None:
    frames, height, width = c.s.clip
    use_files = bool(c.info.get("ffmpeg")) and not os.environ.get("GPU_CHECK_NO_FFMPEG")
    if use_files:
        source = None if c.s.smoke else find_asset(VIDEO_NAME)
        if source is None:
            source = c.work / "clip.mp4"
            c.python_code(MAKE_CLIP, str(source), str(frames), str(height), str(width))
        r.figures["input"] = source.name
        outputs = {b: c.work / f"video-batch{b}.mp4" for b in (4, 1)}
    else:
        r.notes.append("no ffmpeg: dehazing a folder of frames instead of a video file")
        source = c.work / "frames"
        source.mkdir(exist_ok=True)
        c.python_code(MAKE_FRAMES, str(source), str(frames), str(height), str(width))
        r.figures["input"] = f"{frames} frames {width}×{height}"
        outputs = {b: c.work / f"frames-batch{b}" for b in (4, 1)}
    for batch, target in outputs.items():
        proc = c.dcmp(
            "video",
            str(source),
            str(target),
            "--weights",
            str(c.weights),
            "--device",
            c.s.device,
            "--batch",
            str(batch),
            "--max-frames",
            str(c.s.video_frames),
            "--crf",
            "0",
            "--overwrite",
            "--json",
        )
        report = last_json(proc.stdout)
        video = report["videos"][0]
        r.figures[f"batch {report['batch']} frames/s"] = video["frames"] / max(video["seconds"], 1e-9)
        if report["batch"] != batch:
            r.fail(f"asked for --batch {batch}, the run used {report['batch']}")
    if use_files:
        compared = json.loads(c.python_code(COMPARE_VIDEOS, str(outputs[4]), str(outputs[1])).stdout)
        if compared["frames"][0] != compared["frames"][1]:
            r.fail(f"frame counts differ: {compared['frames']}")
        quality, levels = compared["min_psnr"], compared["max_abs_levels"]
    else:
        scores = [psnr(read_rgb(a), read_rgb(outputs[1] / a.name)) for a in sorted(outputs[4].glob("*.png"))]
        quality = min(scores) if scores else 0.0
        levels = max(
            float(np.abs(read_rgb(a) - read_rgb(outputs[1] / a.name)).max()) * 255
            for a in sorted(outputs[4].glob("*.png"))
        )
    r.figures["batch 4 vs 1 min dB"] = quality
    r.figures["max |Δ| levels"] = levels
    if quality < MIN_SAME_RESULT_PSNR:
        r.fail(f"batch 4 and batch 1 outputs differ: {quality:.1f} dB")


MAKE_CLEAR = r"""
import sys
from pathlib import Path
from dcmp_cli.data.image_io import write_image
from dcmp_cli.data.video.testclips import textured_scene
count, side = int(sys.argv[2]), int(sys.argv[3])
for i in range(count):
    write_image(Path(sys.argv[1]) / f"scene{i:03d}.png", textured_scene(side, side, seed=i))
"""


def _train_rows(run: Path) -> list[dict[str, Any]]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    return [row for row in map(json.loads, path.read_text().splitlines()) if row.get("type") == "train"]


def _train_args(c: Check, data: Path, run: Path, precision: str, iters: int, *extra: str) -> list[str]:
    return [
        "train",
        "--data",
        str(data),
        "--out",
        str(run),
        "--preset",
        c.s.preset,
        "--iters",
        str(iters),
        "-b",
        str(c.s.batch),
        "--patch-size",
        str(c.s.patch),
        "--device",
        c.s.device,
        "--precision",
        precision,
        "--workers",
        "0" if c.s.smoke else "2",
        "--set",
        f"log_every={c.s.log_every}",
        "--json",
        *extra,
    ]


def _interrupt_and_resume(c: Check, data: Path, run: Path, precision: str) -> tuple[int, dict[str, Any]]:
    """Starts a deterministic run, sends SIGINT once it logged ``stop_after`` iterations, resumes it;
    returns (iteration it stopped at, the resumed run's summary)."""
    args = [c.python, "-m", "dcmp_cli", *_train_args(c, data, run, precision, c.s.iters, "--set", "deterministic=true")]
    c.write_log(f"\n$ {shlex.join(args)}  (SIGINT after iteration {c.s.stop_after}, then --resume)\n")
    output = c.work / f"{run.name}.output"
    with output.open("w") as sink:
        proc = subprocess.Popen(
            args, stdout=sink, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=c.env, start_new_session=True
        )
        try:
            while proc.poll() is None:
                if c.remaining() < 3:
                    raise Timeout("the interrupted training run ran out of time")
                rows = _train_rows(run)
                if rows and rows[-1]["step"] >= c.s.stop_after:
                    os.killpg(proc.pid, signal.SIGINT)
                    break
                time.sleep(0.05)
            proc.wait(timeout=max(3.0, c.remaining()))
        except subprocess.TimeoutExpired:
            raise Timeout("the interrupted training run did not stop in time") from None
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    text = output.read_text()
    c.write_log(text + f"[exit {proc.returncode}]\n")
    match = re.search(r"interrupted at iteration (\d+)", " ".join(text.split()))
    stopped = int(match.group(1)) if match else max((row["step"] for row in _train_rows(run)), default=0)
    resumed = last_json(c.dcmp("train", "--out", str(run), "--resume", "--json").stdout)
    return stopped, resumed


def step_train(c: Check, r: StepResult) -> None:
    clear, data = c.work / "clear", c.work / "synth"
    c.python_code(MAKE_CLEAR, str(clear), str(c.s.clear_images), str(c.s.clear_side))
    synth = last_json(
        c.dcmp("synth", str(clear), str(data), "--per-image", str(c.s.per_image), "--overwrite", "--json").stdout
    )
    r.figures["pairs"] = synth["hazy_images"]
    first, second = c.s.train_precisions
    fingerprints: dict[str, list[str]] = {}
    for precision, extra in ((first, ("--set", "deterministic=true")), (second, ())):
        run = c.work / f"run-{precision}"
        summary = last_json(c.dcmp(*_train_args(c, data, run, precision, c.s.iters, *extra)).stdout)
        rows = _train_rows(run)
        speeds = [row["images_per_s"] for row in rows[1:]] or [row["images_per_s"] for row in rows]
        r.figures[f"{precision} images/s"] = float(np.median(speeds)) if speeds else 0.0
        r.figures[f"{precision} loss first→last"] = (
            f"{rows[0]['loss_dehaze']:.4f}→{rows[-1]['loss_dehaze']:.4f}" if rows else "no rows"
        )
        if summary["step"] != c.s.iters:
            r.fail(f"{precision}: ran {summary['step']} of {c.s.iters} iterations")
        if not all(math.isfinite(row["loss_dehaze"]) and math.isfinite(row["loss_depth"]) for row in rows):
            r.fail(f"{precision}: non-finite losses")
        fingerprints[precision] = summary["fingerprints"]
    stopped, resumed = _interrupt_and_resume(c, data, c.work / f"run-{first}-resumed", first)
    r.figures[f"{first} stopped at"] = stopped
    if not 0 < stopped < c.s.iters:
        r.fail(f"the run to interrupt was not stopped mid-way (last iteration logged: {stopped})")
    same = resumed["fingerprints"] == fingerprints[first]
    r.figures[f"{first} resumed == straight"] = same
    if not same:
        r.fail(
            f"{first}: the interrupted and resumed run ended with other weights than the straight run "
            "(CUDA non-determinism? see train.log for warnings)"
        )


def step_torchrun(c: Check, r: StepResult) -> None:
    data = c.work / "synth"
    if not data.is_dir():
        c.python_code(MAKE_CLEAR, str(c.work / "clear"), str(c.s.clear_images), str(c.s.clear_side))
        c.dcmp("synth", str(c.work / "clear"), str(data), "--per-image", str(c.s.per_image), "--overwrite")
    run = c.work / "run-torchrun"
    precision = c.s.train_precisions[0]
    args = [
        c.python,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "1",
        "-m",
        "dcmp_cli",
        *_train_args(c, data, run, precision, c.s.torchrun_iters),
    ]
    summary = last_json(c.run(args).stdout)
    rows = _train_rows(run)
    r.figures["iterations"] = summary["step"]
    r.figures["images/s"] = float(np.median([row["images_per_s"] for row in rows])) if rows else 0.0
    r.notes.append(
        "WORLD_SIZE=1: dcmp starts no process group for one process; NCCL itself is checked by "
        "tests/test_cuda.py::test_nccl_collectives_and_ddp_in_a_one_process_group"
    )
    if summary["step"] != c.s.torchrun_iters or len(summary["fingerprints"]) != 1:
        r.fail(f"torchrun run ended at {summary['step']} of {c.s.torchrun_iters} iterations")


# --- main ------------------------------------------------------------------------------------------------------------


def capped_cli(cap: str, argv: list[str]) -> None:
    """``dcmp ARGV`` with this process's CUDA allocator capped at ``cap`` bytes ("none": no cap)."""
    import torch

    from dcmp_cli.sizes import parse_size

    if cap != "none" and torch.cuda.is_available():
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, parse_size(cap) / total), 0)
        print(f"CUDA allocator capped at {cap} ({parse_size(cap) / total:.2%} of the GPU)", file=sys.stderr)
    from dcmp_cli.cli.app import main as dcmp_main

    sys.argv = ["dcmp", *argv]
    dcmp_main()


def prepare_weights(c: Check) -> None:
    found = (
        None
        if c.s.smoke
        else (Path(os.environ["DCMP_GPU_WEIGHTS"]) if os.environ.get("DCMP_GPU_WEIGHTS") else find_asset(WEIGHTS_NAME))
    )
    if found is not None and found.is_file():
        c.weights, c.real_weights = found, True
    else:
        c.weights, c.real_weights = c.work / f"{c.s.preset}-random.safetensors", False
        c.log = c.out / "dehaze.log"
        c.step_deadline = time.monotonic() + 120
        c.python_code(MAKE_CHECKPOINT, str(c.weights), c.s.preset)
        c.step_deadline = math.inf
    c.info["weights"] = str(c.weights) + ("" if c.real_weights else " (random weights: PSNR limits not applied)")
    if c.real_weights:
        c.env["DCMP_GPU_WEIGHTS"] = str(c.weights)  # for tests/test_cuda.py


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "gpu-check-out"))
    parser.add_argument(
        "--work", type=Path, help="keep intermediate files here (default: a temporary folder, removed at the end)"
    )
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny preset, tiny sizes: the plumbing check")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated subset of {','.join(STEPS)}")
    parser.add_argument("--budget", type=float, help="seconds for the whole run (default 450 on the GPU, 900 smoke)")
    parser.add_argument("--python", default=sys.executable, help="the Python that runs dcmp and pytest")
    parser.add_argument("--capped-cli", metavar="CAP", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.capped_cli:
        capped_cli(args.capped_cli, rest)
        return
    if rest:
        parser.error(f"unrecognised arguments: {' '.join(rest)}")
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        parser.error(f"unknown steps {unknown}; choose from {', '.join(STEPS)}")
    settings = Settings.for_mode(args.smoke)
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="dcmp-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    budget = args.budget or (900.0 if args.smoke else 450.0)
    c = Check(args.out, work, settings, budget, args.python)
    limits = SMOKE_LIMITS if args.smoke else GPU_LIMITS
    logs = {
        "env": "env.log",
        "pytest": "pytest.log",
        "inference": "inference.log",
        "dehaze": "dehaze.log",
        "video": "video.log",
        "train": "train.log",
        "torchrun": "train.log",
        "compile": "inference.log",
    }
    bodies: dict[str, Callable[[StepResult], None]] = {
        "env": lambda r: step_env(c, r),
        "pytest": lambda r: step_pytest(c, r),
        "inference": lambda r: step_inference(c, r),
        "dehaze": lambda r: step_dehaze(c, r),
        "video": lambda r: step_video(c, r),
        "train": lambda r: step_train(c, r),
        "torchrun": lambda r: step_torchrun(c, r),
        "compile": lambda r: step_compile(c, r),
    }
    print(f"dcmp GPU check: steps {', '.join(steps)}; out {args.out}; work {work}; budget {budget:.0f} s", flush=True)
    c.step("env", "env.log", bodies["env"], limits["env"])  # always: the other steps read what it found
    try:
        prepare_weights(c)
    except (Timeout, CommandFailed) as e:
        c.results["env"].fail(f"could not prepare weights: {e}")
        c.weights, c.real_weights = Path("missing"), False
    for name in steps:
        if name != "env":
            c.step(name, logs[name], bodies[name], limits[name])
    (args.out / "summary.txt").write_text(c.summary())
    (args.out / "results.json").write_text(
        json.dumps(
            {
                "info": c.info,
                "smoke": args.smoke,
                "steps": {
                    k: {"status": v.status, "seconds": round(v.seconds, 1), "figures": v.figures, "notes": v.notes}
                    for k, v in c.results.items()
                },
            },
            indent=2,
            default=str,
        )
    )
    print(c.summary(), flush=True)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    if any(r.status in ("FAIL", "TIMEOUT") for r in c.results.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
