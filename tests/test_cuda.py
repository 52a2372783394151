"""CUDA code paths checked on a real GPU: device placement, cuDNN autotuning, fp16/bf16 autocast with
fp32 statistics, the free-memory tile budget, batched tiles and frames, out-of-memory retries under a
real memory cap, AMP training with exact resume, and NCCL.

Every test here is marked ``cuda`` and skips without a CUDA GPU; run them with ``pytest -m cuda``
(``benchmarks/gpu_check.sh`` does, see docs/gpu.md). Real weights are used where found:
``$DCMP_GPU_WEIGHTS``, ``.gpu-assets/`` in the repository, or ``../shared/weights``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dcmp_cli.core.checkpoint import read_checkpoint
from dcmp_cli.core.loading import load_dehazer
from dcmp_cli.core.memory import PeakMemory, activation_budget
from dcmp_cli.core.predictor import DehazePredictor, TileSettings
from dcmp_cli.core.temporal import TemporalDehazer, TemporalOptions, dehaze_stream
from dcmp_cli.data.image_io import image_to_tensor
from dcmp_cli.data.video.testclips import hazy_clip
from dcmp_cli.models import create_model
from dcmp_cli.models.global_stats import RecordStats, global_statistics
from dcmp_cli.signals import StopSignal
from dcmp_cli.training.config import TrainConfig
from dcmp_cli.training.events import TrainEvents
from dcmp_cli.training.metrics_log import read_metrics
from dcmp_cli.training.trainer import train

from helpers import SHARED, synthetic_hazy, tiny_train_config, write_pairs

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
CUDA = torch.device("cuda", 0)
MIB = 2**20
WEIGHTS_NAME = "dcmpnet-sots-briefly-trained.pth"


# --- helpers ---------------------------------------------------------------------------------------------------


def real_weights() -> Path:
    """The briefly trained published-format checkpoint, or skip: $DCMP_GPU_WEIGHTS, .gpu-assets/, ../shared."""
    candidates = [
        os.environ.get("DCMP_GPU_WEIGHTS"),
        ROOT / ".gpu-assets" / WEIGHTS_NAME,
        SHARED / "weights" / WEIGHTS_NAME,
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    pytest.skip(f"needs {WEIGHTS_NAME} ($DCMP_GPU_WEIGHTS, .gpu-assets/ or ../shared/weights)")


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two [0, 1] tensors (inf when equal)."""
    mse = ((a.float() - b.float()) ** 2).mean().item()
    return float("inf") if mse == 0 else 10 * float(np.log10(1 / mse))


def hazy_image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """(1, 3, H, W) synthetic hazy scene in [0, 1]."""
    return image_to_tensor(synthetic_hazy(height, width, seed=seed)[1])


def tiny_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("dcmpnet-tiny").eval()


@contextlib.contextmanager
def memory_cap(extra_bytes: int) -> Iterator[int]:
    """Caps this process's CUDA allocator at what it holds now plus ``extra_bytes`` (a real out-of-memory
    limit, through ``torch.cuda.set_per_process_memory_fraction``); lifted afterwards. Yields the cap."""
    torch.cuda.synchronize(CUDA)
    torch.cuda.empty_cache()
    cap = torch.cuda.memory_reserved(CUDA) + extra_bytes
    total = torch.cuda.get_device_properties(CUDA).total_memory
    torch.cuda.set_per_process_memory_fraction(cap / total, CUDA)
    try:
        yield cap
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, CUDA)
        torch.cuda.empty_cache()


def dehaze_frames(model: DehazePredictor, frames: list[np.ndarray], batch: int) -> list[np.ndarray]:
    """Frames through the video path (temporal smoothing 0.8, ``batch`` frames per network call)."""
    dehazer = TemporalDehazer(model, TemporalOptions(smooth=0.8, batch=batch))
    return [out for _, _, out in dehaze_stream(((None, f) for f in frames), dehazer)]


def peak_bytes(run) -> int:
    """Peak CUDA allocation of ``run()`` above what was allocated before it."""
    torch.cuda.empty_cache()
    with PeakMemory(CUDA) as meter:
        run()
    assert meter.bytes is not None
    return meter.bytes


# --- inference ---------------------------------------------------------------------------------------------------


def test_tiny_network_on_cuda_agrees_with_the_cpu():
    model = tiny_model()
    image = hazy_image(96, 128, seed=1)
    cpu = DehazePredictor(model, CPU, tiling=TileSettings(tile=0))(image)
    gpu_predictor = DehazePredictor(model, CUDA, tiling=TileSettings(tile=0))
    gpu = gpu_predictor.run(image.to(CUDA))  # run(): inputs anywhere, float32 on the CPU out
    assert gpu.device == CPU and gpu.dtype == torch.float32 and gpu.shape == image.shape
    assert next(gpu_predictor.model.parameters()).device.type == "cuda"
    same_form = gpu_predictor(image.to(CUDA))  # calling keeps the input's form: a CUDA tensor in, one out
    assert same_form.device.type == "cuda"
    torch.testing.assert_close(same_form.cpu(), gpu, atol=1e-4, rtol=0)
    assert psnr(gpu, cpu) >= 45.0, psnr(gpu, cpu)
    plain = DehazePredictor(model, CUDA, fast=False, tiling=TileSettings(tile=0))(image)
    assert psnr(gpu, plain) >= 50.0, psnr(gpu, plain)  # the fast path (channels-last, fused) on cuDNN


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_reduced_precision_on_cuda_stays_close_and_keeps_fp32_statistics(precision):
    model = tiny_model()
    image = hazy_image(96, 128, seed=2)
    fp32 = DehazePredictor(model, CUDA, "fp32", tiling=TileSettings(tile=0))(image)
    reduced_predictor = DehazePredictor(model, CUDA, precision, tiling=TileSettings(tile=0))  # type: ignore[arg-type]
    reduced = reduced_predictor(image)
    assert reduced.dtype == torch.float32 and torch.isfinite(reduced).all()
    assert psnr(reduced, fp32) >= 30.0, psnr(reduced, fp32)

    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    x = (image.to(CUDA) * 2 - 1).contiguous(memory_format=torch.channels_last)
    with (
        torch.inference_mode(),
        torch.autocast("cuda", dtype=dtype),
        global_statistics(reduced_predictor.model, RecordStats()) as recorder,
    ):
        reduced_predictor.model(x)
    dtypes = {key: {str(v.dtype) for v in values} for key, values in recorder.values.items()}
    assert dtypes and all(kinds == {"torch.float32"} for kinds in dtypes.values()), dtypes


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_real_weights_on_cuda(precision):
    """fp32 on the GPU matches the CPU; fp16/bf16 stay within 45 dB of fp32 with real weights."""
    checkpoint = read_checkpoint(real_weights(), kind="dehaze")
    image = hazy_image(256, 320, seed=3)
    gpu_fp32 = DehazePredictor(checkpoint.build(), CUDA, "fp32", tiling=TileSettings(tile=0))(image)
    if precision == "fp32":
        cpu = DehazePredictor(checkpoint.build(), CPU, "fp32", tiling=TileSettings(tile=0))(image)
        assert psnr(gpu_fp32, cpu) >= 45.0, psnr(gpu_fp32, cpu)
        return
    reduced = DehazePredictor(checkpoint.build(), CUDA, precision, tiling=TileSettings(tile=0))(image)  # type: ignore[arg-type]
    assert psnr(reduced, gpu_fp32) >= 45.0, psnr(reduced, gpu_fp32)


@pytest.mark.parametrize("before", [False, True])
def test_cudnn_autotuning_is_on_during_a_run_and_restored_after(before):
    predictor = DehazePredictor(tiny_model(), CUDA, tiling=TileSettings(tile=0))
    seen: list[bool] = []
    predictor.model.register_forward_pre_hook(lambda module, args: seen.append(torch.backends.cudnn.benchmark))
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = before
    try:
        predictor(hazy_image(64, 64))
        assert seen == [True]
        assert torch.backends.cudnn.benchmark is before
    finally:
        torch.backends.cudnn.benchmark = previous


def test_auto_tile_budget_follows_free_gpu_memory(monkeypatch):
    torch.cuda.empty_cache()
    free = torch.cuda.mem_get_info(CUDA)[0]
    budget = activation_budget(CUDA)
    assert abs(budget - 0.8 * free) <= 0.8 * 64 * MIB, (budget, free)
    block = torch.empty(4 * 1024 * MIB, dtype=torch.uint8, device=CUDA)  # 4 GiB less free memory
    smaller = activation_budget(CUDA)
    del block
    torch.cuda.empty_cache()
    assert abs((budget - smaller) - 0.8 * 4 * 1024 * MIB) <= 0.8 * 128 * MIB, (budget, smaller)

    predictor = DehazePredictor(tiny_model(), CUDA)
    assert predictor.plan(1024, 1024) == 0  # plenty of free memory: the whole image in one pass
    total = torch.cuda.get_device_properties(CUDA).total_memory
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (64 * MIB, total))
    tile = predictor.plan(1024, 1024)
    assert 0 < tile < 1024 and tile % 32 == 0
    assert tile * tile * predictor.bytes_per_pixel() <= 0.8 * 64 * MIB or tile == 64


def test_batched_tiles_on_cuda_match_one_tile_per_pass():
    """On GPUs several tiles go through the network together (up to 8); the replayed image statistics
    (batch 1) must broadcast over such a batch and give what one tile per pass gives."""
    model = tiny_model()
    image = hazy_image(200, 260, seed=4)
    one = DehazePredictor(model, CUDA, tiling=TileSettings(tile=64, overlap=16, batch_tiles=1))(image)
    batched = DehazePredictor(model, CUDA, tiling=TileSettings(tile=64, overlap=16))
    sizes: list[int] = []
    batched.model.register_forward_pre_hook(lambda module, args: sizes.append(args[0].shape[0]))
    out = batched(image)
    assert max(sizes) > 1, sizes  # tiles really were batched
    assert (out - one).abs().max().item() <= 1e-3
    whole = DehazePredictor(model, CUDA, tiling=TileSettings(tile=0))(image)
    assert out.shape == whole.shape and psnr(out, whole) >= 30.0


def test_out_of_memory_on_the_gpu_retries_with_tiles_and_keeps_the_result():
    """A whole-image pass that does not fit under a real allocator cap is retried with tiles."""
    model = tiny_model()
    image = hazy_image(1024, 1024, seed=5)
    whole = DehazePredictor(model, CUDA, tiling=TileSettings(tile=0))
    need = peak_bytes(lambda: whole(image))
    notices: list[str] = []
    capped = DehazePredictor(model, CUDA, tiling=TileSettings(tile=0), on_notice=notices.append)
    with memory_cap(int(0.45 * need)):
        out = capped(image)
    assert notices and notices[0] == "out of memory with the whole image; retrying with 512-pixel tiles", notices
    final = int(re.findall(r"retrying with (\d+)-pixel tiles", notices[-1])[0])
    reference = DehazePredictor(model, CUDA, tiling=TileSettings(tile=final))(image)
    assert out.shape == image.shape
    assert (out - reference).abs().max().item() <= 1e-3, (final, notices)


def test_out_of_memory_on_the_gpu_splits_a_batch_of_frames():
    model = tiny_model()
    frames = list(hazy_clip(8, 512, 512, seed=6))
    one_by_one = dehaze_frames(DehazePredictor(model, CUDA, tiling=TileSettings(tile=0)), frames, batch=1)
    four = DehazePredictor(model, CUDA, tiling=TileSettings(tile=0))
    batch = torch.from_numpy(np.stack(frames[:4]).transpose(0, 3, 1, 2).copy())
    need = peak_bytes(lambda: four(batch))
    notices: list[str] = []
    capped = DehazePredictor(model, CUDA, tiling=TileSettings(tile=0), on_notice=notices.append)
    with memory_cap(int(0.7 * need)):
        outputs = dehaze_frames(capped, frames, batch=4)
    assert notices and notices[0] == "out of memory with 4 images per pass; retrying with 2", notices
    for a, b in zip(one_by_one, outputs):
        np.testing.assert_allclose(b, a, atol=1e-3)


def test_video_batches_of_4_and_1_agree_on_cuda():
    predictor = DehazePredictor(tiny_model(), CUDA)
    frames = list(hazy_clip(10, 96, 128, seed=7))
    assert TemporalOptions().batch_for(predictor) == 4  # the GPU default
    outputs = {}
    sizes: list[int] = []
    predictor.model.register_forward_pre_hook(lambda module, args: sizes.append(args[0].shape[0]))
    for batch in (1, 4):
        sizes.clear()
        outputs[batch] = dehaze_frames(predictor, frames, batch)
        assert max(sizes) == batch
    for a, b in zip(outputs[1], outputs[4]):
        np.testing.assert_allclose(b, a, atol=1e-3)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_load_dehazer_on_cuda_with_reduced_precision(tiny_dehaze_ckpt, precision):
    dehazer = load_dehazer("dcmp", tiny_dehaze_ckpt, device="cuda", precision=precision)
    assert isinstance(dehazer, DehazePredictor)
    assert dehazer.device.type == "cuda" and dehazer.precision == precision
    photo = Image.fromarray((synthetic_hazy(80, 112, seed=8)[1] * 255).round().astype(np.uint8))
    restored = dehazer(photo)
    assert isinstance(restored, Image.Image) and restored.size == photo.size and restored.mode == "RGB"
    reference = load_dehazer("dcmp", tiny_dehaze_ckpt, device="cpu")(photo)
    a = torch.from_numpy(np.asarray(restored, dtype=np.float32) / 255)
    b = torch.from_numpy(np.asarray(reference, dtype=np.float32) / 255)
    assert psnr(a, b) >= 30.0, psnr(a, b)
    assert load_dehazer("dcmp", tiny_dehaze_ckpt, device="auto").device.type == "cuda"  # type: ignore[attr-defined]


# --- training ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    return write_pairs(tmp_path_factory.mktemp("cuda-train") / "pairs")


def cuda_config(data: Path, **values) -> TrainConfig:
    return tiny_train_config(data, device="cuda", **values)


class StopAt(TrainEvents):
    """Asks the trainer to stop once iteration ``at`` is done (what Ctrl-C does)."""

    def __init__(self, stop: StopSignal, at: int) -> None:
        self.stop, self.at = stop, at

    def progress(self, step, total, losses) -> None:
        if step == self.at:
            self.stop.set()


def _state(run: Path) -> dict:
    return torch.load(run / "last" / "state.pt", weights_only=True)


def _differences(a: dict, b: dict) -> dict[str, float]:
    """Largest |difference| per tensor that differs between two training states."""
    out = {}
    for key in ("dehaze", "depth"):
        for name, tensor in a[key].items():
            if not torch.equal(tensor, b[key][name]):
                out[f"{key}.{name}"] = (tensor.double() - b[key][name].double()).abs().max().item()
    for key in ("optim_dehaze", "optim_depth"):
        for index, slot in a[key]["state"].items():
            for name, tensor in slot.items():
                if not torch.equal(tensor, b[key]["state"][index][name]):
                    out[f"{key}[{index}].{name}"] = (
                        (tensor.double() - b[key]["state"][index][name].double()).abs().max().item()
                    )
    return out


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_amp_training_on_cuda_learns_and_resumes_exactly(pairs, tmp_path, precision):
    config = cuda_config(pairs, iters=6, precision=precision)  # 2 iterations per epoch
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        straight = train(config, tmp_path / "straight")
        stop = StopSignal()
        first = train(config, tmp_path / "resumed", events=StopAt(stop, 3), stop=stop)  # stops mid-epoch
        second = train(config, tmp_path / "resumed", resume=True)
    assert straight.step == 6 and first.interrupted and first.step == 3 and second.step == 6

    a, b = _state(tmp_path / "straight"), _state(tmp_path / "resumed")
    if precision == "fp16":
        assert a["scaler"] and a["scaler"]["scale"] > 0  # fp16 scales its gradients
    else:
        assert not a["scaler"]  # bf16 needs no gradient scaling
    torch.manual_seed(7)
    initial = create_model("dcmpnet-tiny", "dehaze").state_dict()
    assert any(not torch.equal(initial[k], v.cpu()) for k, v in a["dehaze"].items() if v.is_floating_point())
    rows = [r for r in read_metrics(tmp_path / "straight" / "metrics.jsonl") if r["type"] == "train"]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert all(np.isfinite(r["loss_dehaze"]) and np.isfinite(r["loss_depth"]) for r in rows)

    nondeterministic = sorted({str(w.message).split(".")[0] for w in caught if "deterministic" in str(w.message)})
    differences = _differences(a, b)
    assert not differences, (
        f"resumed run differs from the straight one in {len(differences)} tensors (largest "
        f"{max(differences.values()):.3g}); non-deterministic CUDA ops reported: {nondeterministic}"
    )
    assert straight.fingerprints == second.fingerprints
    resumed_rows = [r for r in read_metrics(tmp_path / "resumed" / "metrics.jsonl") if r["type"] == "train"]
    assert [r["loss_dehaze"] for r in resumed_rows] == [r["loss_dehaze"] for r in rows]


NCCL_SCRIPT = r"""
import json, sys
import torch
import torch.distributed as dist
from dcmp_cli.training import distributed as D
from dcmp_cli.training.config import build_config
from dcmp_cli.training.model import DualTaskModel, create_networks


class OneProcessGroup(D.DistContext):
    # A process group of one: dcmp skips DDP for one process, this makes every collective go through NCCL.
    @property
    def distributed(self):
        return True


device = torch.device("cuda", 0)
torch.cuda.set_device(device)
dist.init_process_group("nccl", init_method="file://" + sys.argv[1], rank=0, world_size=1)
config = build_config(None, dict(data="unused", preset="dcmpnet-tiny", batch_size=2, patch_size=32, device="cuda"))
generator = torch.Generator().manual_seed(0)
batch = {"hazy": torch.rand(2, 3, 32, 32, generator=generator), "clear": torch.rand(2, 3, 32, 32, generator=generator),
         "depth": torch.rand(2, 1, 32, 32, generator=generator)}


def run(ctx):
    torch.manual_seed(3)
    dehaze, depth = create_networks("dcmpnet-tiny", device)
    model = DualTaskModel(dehaze, depth, config, ctx, "fp32", 10)
    return model, [model.step(batch) for _ in range(2)]


plain, plain_steps = run(D.DistContext(device=device))
ddp, ddp_steps = run(OneProcessGroup(0, 1, 0, device, "nccl"))
ctx = ddp.ctx
ddp.broadcast_buffers()
D.barrier(ctx)
pairs = zip(plain.dehaze_net.state_dict().values(), ddp.dehaze_net.state_dict().values())
print(json.dumps({
    "backend": dist.get_backend(),
    "wrapper": type(ddp.dehaze).__name__,
    "sync_batchnorm": sum(isinstance(m, torch.nn.SyncBatchNorm) for m in ddp.dehaze_net.modules()),
    "plain": [[s.dehaze, s.depth] for s in plain_steps],
    "ddp": [[s.dehaze, s.depth] for s in ddp_steps],
    "finite": all(s.finite for s in ddp_steps),
    "gathered": D.all_gather(ddp.fingerprint(), ctx) == [ddp.fingerprint()],
    "max_param_diff": max((a.double() - b.double()).abs().max().item() for a, b in pairs if a.is_floating_point()),
}))
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_nccl_collectives_and_ddp_in_a_one_process_group(tmp_path):
    if not torch.distributed.is_nccl_available():
        pytest.fail("this PyTorch build has no NCCL")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-c", NCCL_SCRIPT, str(tmp_path / "store")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["backend"] == "nccl" and result["wrapper"] == "DistributedDataParallel"
    assert result["sync_batchnorm"] > 0 and result["finite"] and result["gathered"]
    first_plain, first_ddp = result["plain"][0], result["ddp"][0]
    assert first_ddp == pytest.approx(first_plain, rel=1e-5, abs=1e-6)  # same weights, same batch
    assert result["ddp"][1] == pytest.approx(result["plain"][1], rel=1e-3, abs=1e-4)
    assert result["max_param_diff"] <= 1e-3


@pytest.mark.slow
def test_one_process_torchrun_trains_on_the_gpu(pairs, tmp_path):
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "1",
        "-m",
        "dcmp_cli",
        "train",
        "--data",
        str(pairs),
        "--out",
        str(tmp_path / "run"),
        "--iters",
        "2",
        "--preset",
        "dcmpnet-tiny",
        "-b",
        "2",
        "--patch-size",
        "32",
        "--workers",
        "0",
        "--device",
        "cuda",
        "--set",
        "log_every=1",
        "--json",
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["step"] == 2 and len(summary["fingerprints"]) == 1
    rows = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["type"] == "train"]
    assert len(rows) == 2 and all(np.isfinite(r["loss_dehaze"]) for r in rows)
    assert read_checkpoint(tmp_path / "run" / "last" / "dcmpnet-tiny-dehaze.safetensors").preset == "dcmpnet-tiny"


def test_copy_of_a_cuda_model_is_independent():
    """Predictors copy the network they are given; on the GPU the caller's parameters stay where they were."""
    model = tiny_model().to(CUDA)
    before = copy.deepcopy(model.state_dict())
    DehazePredictor(model, CUDA, tiling=TileSettings(tile=0))(hazy_image(64, 64))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.is_contiguous() for p in model.parameters())
