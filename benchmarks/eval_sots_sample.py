"""PSNR/SSIM of the hazy input and the dark channel prior (and optionally DCMPNet weights) on the
real SOTS-indoor sample in ../shared/data, under both protocols, with timings.

    .venv/bin/python benchmarks/eval_sots_sample.py [--weights FILE ...] [--device cpu]

Prints one line per (protocol, model): images, mean PSNR/SSIM and the model's seconds per
image; then, per protocol, the rest of the evaluation's wall time per image (reading the
pair once, then scoring every model's output).
Note: ../shared/weights/dcmpnet-sots-briefly-trained.pth was trained on these very scenes
(1440–1449), so its figures here are not held-out results.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from dcmp_cli.core.device import resolve_device
from dcmp_cli.core.evaluate import EvalModel, evaluate, open_eval_set
from dcmp_cli.core.predictor import DehazePredictor
from dcmp_cli.core.prior_models import PriorDehazer
from dcmp_cli.metrics import PROTOCOLS
from dcmp_cli.prior import DarkChannelPrior

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "sots_indoor_sample"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SAMPLE, help="paired dataset folder (default: the SOTS sample)")
    parser.add_argument("--weights", type=Path, action="append", default=[], help="DCMPNet checkpoint(s) to add")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    eval_set = open_eval_set(str(args.data))
    device = resolve_device(args.device)
    models = [
        EvalModel.hazy_input(),
        EvalModel("dcp", "dcp", PriorDehazer(DarkChannelPrior())),
        EvalModel("layered", "layered", PriorDehazer()),
    ]
    models += [
        EvalModel(w.stem, "dcmp", DehazePredictor.from_checkpoint(w, device), weights=str(w)) for w in args.weights
    ]
    print(f"{eval_set.label}: {len(eval_set.items)} pairs ({eval_set.layout}); device {device}")
    print(f"{'protocol':<13} {'model':<36} {'images':>6} {'PSNR':>7} {'SSIM':>7} {'model s/img':>12}")
    for protocol in PROTOCOLS:
        start = time.perf_counter()
        report = evaluate(eval_set, models, protocol)
        wall = (time.perf_counter() - start) / max(1, len(eval_set.items))
        for m in report.models:
            scores = f"{m.images:>6} {m.psnr:>7.2f} {m.ssim:>7.4f}"
            print(f"{protocol:<13} {m.model.label:<36} {scores} {m.seconds_per_image:>12.3f}")
        overhead = wall - sum(m.seconds_per_image for m in report.models)
        label = f"reading + scoring {len(models)} models"
        print(f"{protocol:<13} {label:<36} {'':>22} {overhead:>12.3f}")


if __name__ == "__main__":
    main()
