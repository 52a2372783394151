"""dcmp_cli.core.video: temporal smoothing, batching, scene cuts, flicker."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dcmp_cli.core.flicker import FlickerMeter, flicker
from dcmp_cli.core.predictor import DehazePredictor
from dcmp_cli.core.prior_models import PriorDehazer
from dcmp_cli.core.temporal import (
    SceneCutDetector,
    SequentialStats,
    TemporalDehazer,
    TemporalOptions,
    dehaze_stream,
)
from dcmp_cli.core.video import natural_key
from dcmp_cli.data.video.testclips import hazy_clip
from dcmp_cli.models import create_model
from dcmp_cli.models.global_stats import StatsPolicy
from dcmp_cli.prior import DarkChannelPrior, LayeredDehazer

from helpers import shared_path

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_predictor() -> DehazePredictor:
    torch.manual_seed(0)
    return DehazePredictor(create_model("dcmpnet-tiny", "dehaze"), torch.device("cpu"))


class SmoothedStats(StatsPolicy):
    """Test oracle: a per-call exponential moving average of every statistic (batch of one)."""

    def __init__(self, momentum: float) -> None:
        self.momentum = momentum
        self.state: dict = {}

    def reset(self) -> None:
        self.state.clear()

    def resolve(self, key, compute):
        current = tuple(v.detach() for v in compute())
        previous = self.state.get(key)
        if previous is not None:
            current = tuple(self.momentum * p + (1.0 - self.momentum) * c for p, c in zip(previous, current))
        self.state[key] = current
        return current


def two_scenes(frames_each: int = 4, height: int = 32, width: int = 48) -> list[np.ndarray]:
    """Two unrelated hazy shots back to back: one scene cut at index ``frames_each``."""
    first = list(hazy_clip(frames_each, height, width, seed=1, vehicles=0))
    second = [1.0 - f[::-1] for f in hazy_clip(frames_each, height, width, seed=2, vehicles=0)]
    return first + second


def as_tensor(frames: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(frames).transpose(0, 3, 1, 2).copy())


def test_sequential_stats_equal_per_frame_smoothed_stats_with_resets(tiny_predictor):
    frames = two_scenes(3)
    starts = [True, False, False, True, False, False]
    reference = SmoothedStats(0.7)
    expected = []
    for frame, start in zip(frames, starts):
        if start:
            reference.reset()
        expected.append(tiny_predictor.run(as_tensor([frame]), temporal=reference))
    policy = SequentialStats(0.7)
    got = []
    for lo, hi in ((0, 4), (4, 6)):  # a batch across the cut, then the rest
        policy.set_starts(starts[lo:hi])
        got.extend(tiny_predictor.run(as_tensor(frames[lo:hi]), temporal=policy).split(1))
    for a, b in zip(expected, got):
        torch.testing.assert_close(b, a, atol=2e-5, rtol=0)
    # and smoothing does change the result of the frames after the first of a scene
    plain = tiny_predictor(as_tensor(frames[1:2]))
    assert (plain - expected[1]).abs().max() > 1e-3


def test_batching_gives_the_same_frames_as_one_by_one(tiny_predictor):
    frames = two_scenes(4)
    outputs = {}
    for batch in (1, 3, 8):
        dehazer = TemporalDehazer(tiny_predictor, TemporalOptions(smooth=0.8, scene_cut=0.1, batch=batch))
        outputs[batch] = [out for _, _, out in dehaze_stream(((None, f) for f in frames), dehazer)]
        assert dehazer.scene_cuts == 1
    for batch in (3, 8):
        for a, b in zip(outputs[1], outputs[batch]):
            np.testing.assert_allclose(b, a, atol=2e-5)


def test_sequential_stats_resolve_each_frame_once_even_when_the_network_retries():
    values = [torch.full((1, 2, 1, 1), float(v)) for v in (1.0, 3.0, 5.0)]
    batch = torch.cat(values)
    clean = SequentialStats(0.5)
    clean.set_starts([True, False, False])
    (expected,) = clean.resolve("norm", lambda: (batch,))
    torch.testing.assert_close(expected.flatten()[::2], torch.tensor([1.0, 2.0, 3.5]))

    retried = SequentialStats(0.5)
    retried.set_starts([True, False, False])
    retried.resolve("norm", lambda: (batch,))  # a whole-batch pass that ran out of memory later on
    per_frame = [retried.resolve("norm", lambda v=v: (v,))[0] for v in values]  # the retry, one frame per pass
    torch.testing.assert_close(torch.cat(per_frame), expected)
    again = [retried.resolve("norm", lambda v=v: (v,))[0] for v in values]  # and a second retry
    torch.testing.assert_close(torch.cat(again), expected)
    torch.testing.assert_close(retried.state["norm"][0], expected[2:])


def test_tiled_frames_are_smoothed_the_same_in_batches(tiny_predictor):
    from dcmp_cli.core.predictor import TileSettings

    tiled = DehazePredictor(tiny_predictor.model, torch.device("cpu"), tiling=TileSettings(tile=32, overlap=8))
    frames = list(hazy_clip(4, 48, 64))
    assert tiled.plan(48, 64) == 32
    one = TemporalDehazer(tiled, TemporalOptions(smooth=0.8, batch=1))(frames)
    four = TemporalDehazer(tiled, TemporalOptions(smooth=0.8, batch=4))(frames)
    for a, b in zip(one, four):
        np.testing.assert_allclose(b, a, atol=2e-5)
    plain = TemporalDehazer(tiled, TemporalOptions(smooth=0.0))(frames)
    assert np.abs(plain[3] - one[3]).max() > 1e-3  # the smoothed statistics reach the tiles


def test_no_smoothing_is_the_plain_predictor(tiny_predictor):
    frames = list(hazy_clip(3, 32, 48))
    outputs = TemporalDehazer(tiny_predictor, TemporalOptions(smooth=0.0, batch=2))(frames)
    for frame, out in zip(frames, outputs):
        np.testing.assert_allclose(out, tiny_predictor(as_tensor([frame]))[0].permute(1, 2, 0).numpy(), atol=1e-6)


class LimitedPredictor(DehazePredictor):
    """Runs out of memory on passes of more than ``limit`` images (and records every pass's batch)."""

    limit = 2

    def network(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(x.shape[0])
        if x.shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().network(x)


def test_out_of_memory_halves_the_batch_and_keeps_results(tiny_predictor):
    from dcmp_cli.core.predictor import TileSettings

    limited = LimitedPredictor(tiny_predictor.model, torch.device("cpu"), tiling=TileSettings(tile=0))
    limited.calls = []
    frames = list(hazy_clip(6, 32, 48))
    reference = TemporalDehazer(tiny_predictor, TemporalOptions(smooth=0.8, batch=1))(frames)
    dehazer = TemporalDehazer(limited, TemporalOptions(smooth=0.8, batch=6))
    outputs = [out for _, _, out in dehaze_stream(((None, f) for f in frames), dehazer)]
    assert limited.calls[0] == 6 and sum(c for c in limited.calls if c <= limited.limit) == len(frames)
    assert limited._max_batch is not None and limited._max_batch <= 2  # later batches start small
    for a, b in zip(reference, outputs):
        np.testing.assert_allclose(b, a, atol=2e-5)


def test_other_errors_are_not_taken_for_out_of_memory(tiny_predictor):
    class Broken(DehazePredictor):
        def network(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("expected input with 3 channels")

    broken = Broken(tiny_predictor.model, torch.device("cpu"))
    with pytest.raises(RuntimeError, match="3 channels"):
        TemporalDehazer(broken, TemporalOptions(batch=4))(list(hazy_clip(4, 32, 48)))


def test_scene_cut_detector():
    frames = two_scenes(4)
    detector = SceneCutDetector(0.1)
    assert [detector(f) for f in frames] == [True, False, False, False, True, False, False, False]
    assert detector.last_difference is not None and detector.last_difference < 0.1
    assert detector(frames[0][:40]) is True  # a new size starts a new scene
    never = SceneCutDetector(0.0)
    assert [never(f) for f in frames] == [True] + [False] * 7


def test_prior_airlight_follows_an_ema_and_restarts_at_cuts():
    frames = two_scenes(3)
    prior = PriorDehazer(DarkChannelPrior())
    dehazer = TemporalDehazer(prior, TemporalOptions(smooth=0.6, scene_cut=0.1))
    outputs = dehazer(frames)
    estimates = [prior.prior.airlight(f) for f in frames]
    smoothed = 0.6 * estimates[0] + 0.4 * estimates[1]
    expected_second, _, _ = prior.prior.dehaze(frames[1], smoothed)
    np.testing.assert_allclose(outputs[1], expected_second, atol=1e-6)
    fresh, _, _ = prior.prior.dehaze(frames[3])  # first frame after the cut: its own airlight
    np.testing.assert_allclose(outputs[3], fresh, atol=1e-6)
    assert not hasattr(prior, "airlight")  # the smoothed airlight lives in the dehazer's state, not on the model
    assert dehazer.scene_cuts == 1


def test_flicker_definition():
    inputs = [np.full((4, 4, 3), v, np.float32) for v in (0.0, 0.1, 0.0, 0.1)]
    outputs = [np.full((4, 4, 3), v, np.float32) for v in (0.5, 0.55, 0.5, 0.55)]
    assert flicker(inputs, outputs) == pytest.approx(0.5)
    meter = FlickerMeter()
    for a, b in zip(inputs, outputs):
        meter.update(a, b)
    assert meter.input == pytest.approx(0.1) and meter.output == pytest.approx(0.05) and meter.pairs == 3
    as_bytes = [np.round(f * 255).astype(np.uint8) for f in inputs]
    assert flicker(as_bytes, outputs) == pytest.approx(0.05 / (26 / 255), rel=1e-6)
    with pytest.raises(ValueError, match="do not change"):
        flicker(inputs[:1] * 3, outputs[:3])


def test_smoothing_lowers_flicker_of_the_prior_on_varying_haze():
    frames = list(hazy_clip())  # 32 frames, haze level sweeping and jittering, vehicles passing
    figures = {}
    for smooth in (0.0, 0.8):
        outputs = TemporalDehazer(PriorDehazer(DarkChannelPrior()), TemporalOptions(smooth=smooth))(frames)
        figures[smooth] = flicker(frames, outputs)
    assert figures[0.8] < 0.98 * figures[0.0]


def test_dehaze_stream_keeps_order_and_tags_and_splits_sizes():
    sizes = [(16, 16), (16, 16), (16, 16), (12, 16), (12, 16)]
    frames = [np.full((h, w, 3), i / 10, np.float32) for i, (h, w) in enumerate(sizes)]
    seen = []

    def model(frames_in):
        seen.append(len(frames_in))
        return [f * 0.5 for f in frames_in]

    class Dehazer:
        batch = 2

        def __call__(self, frames_in):
            return model(frames_in)

    results = list(dehaze_stream(enumerate(frames), Dehazer()))  # type: ignore[arg-type]
    assert [tag for tag, _, _ in results] == [0, 1, 2, 3, 4]
    assert seen == [2, 1, 2]
    assert all(np.allclose(out, frame * 0.5) for _, frame, out in results)


def test_natural_frame_order():
    from pathlib import Path

    names = ["f10.png", "f2.png", "f1.png", "F3.png"]
    assert [p.name for p in sorted(map(Path, names), key=natural_key)] == ["f1.png", "f2.png", "F3.png", "f10.png"]


def _real_clip_frames(count: int | None = None, size=(160, 90)) -> list[np.ndarray]:
    import cv2

    from dcmp_cli.data.video.decode import FrameRange, read_frames
    from dcmp_cli.data.video.probe import probe_video

    info = probe_video(shared_path("data", "video", "dvp30_hazy_video.mp4"))
    return [
        cv2.resize(f, size, interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
        for f in read_frames(info, FrameRange(max_frames=count))
    ]


def test_real_clip_cut_is_found_and_prior_smoothing_lowers_flicker():
    frames = _real_clip_frames()
    detector = SceneCutDetector(0.1)
    cuts = [i for i, f in enumerate(frames) if detector(f) and i > 0]
    assert cuts == [56]  # the clip cuts from the door to the corridor there
    figures = {}
    for smooth in (0.0, 0.8):
        outputs = TemporalDehazer(PriorDehazer(DarkChannelPrior()), TemporalOptions(smooth=smooth))(frames)
        figures[smooth] = flicker(frames, outputs)
    assert figures[0.8] < 0.95 * figures[0.0]


@pytest.mark.slow
def test_trained_network_smoothing_is_measured_and_batching_is_exact(trained_weights):
    """With real weights: batching equals one-by-one; smoothing changes the output by a
    bounded amount (its flicker effect is reported by benchmarks/flicker.py)."""
    predictor = DehazePredictor.from_checkpoint(trained_weights, torch.device("cpu"))
    frames = list(hazy_clip(6, 64, 96))
    one = TemporalDehazer(predictor, TemporalOptions(smooth=0.8, batch=1))(frames)
    three = TemporalDehazer(predictor, TemporalOptions(smooth=0.8, batch=3))(frames)
    for a, b in zip(one, three):
        np.testing.assert_allclose(b, a, atol=1e-4)
    plain = TemporalDehazer(predictor, TemporalOptions(smooth=0.0))(frames)
    np.testing.assert_allclose(one[0], plain[0], atol=1e-5)  # the first frame has no past
    change = max(float(np.abs(a - b).mean()) for a, b in zip(one[1:], plain[1:]))
    assert 1e-4 < change < 0.05


def test_layered_default_flickers_less_than_the_dark_channel_prior_on_the_real_clip():
    frames = _real_clip_frames()
    figures = {}
    for name, prior in (("dcp", DarkChannelPrior()), ("layered", LayeredDehazer())):
        dehazer = PriorDehazer(prior)
        assert dehazer.default_smoothing == 0.8
        figures[name] = flicker(frames, TemporalDehazer(dehazer, TemporalOptions())(frames))
    assert figures["layered"] < figures["dcp"], figures


def test_layered_globals_follow_the_ema():
    frames = two_scenes(3)
    prior = LayeredDehazer()
    outputs = TemporalDehazer(PriorDehazer(prior), TemporalOptions(smooth=0.5, scene_cut=0.1))(frames)
    estimates = [prior.estimate_globals(f) for f in frames]
    np.testing.assert_allclose(
        outputs[1], prior.dehaze(frames[1], 0.5 * estimates[0] + 0.5 * estimates[1]).image, atol=1e-6
    )
    np.testing.assert_allclose(outputs[3], prior.dehaze(frames[3]).image, atol=1e-6)  # restarted at the cut
