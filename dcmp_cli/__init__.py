"""dcmp: single-image and video dehazing with DCMPNet (Zhang, Zhou, Li, CVPR 2024).

Every command is one call away::

    from dcmp_cli import load_dehazer, dehaze_files
    dehazer = load_dehazer()                 # DCMPNet if weights are found, else the weight-free default
    restored = dehazer(Image.open("a.jpg"))  # PIL, NumPy or tensor in, the same kind out
    dehaze_files("photos/", "restored/")     # `dcmp dehaze photos/ restored/`

The names below are imported on first use, so ``import dcmp_cli`` stays light.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

#: Public name -> module holding it.
_EXPORTS = {
    "load_dehazer": "dcmp_cli.core.loading",
    "load_depth_estimator": "dcmp_cli.core.loading",
    "load_depth_model": "dcmp_cli.core.loading",
    "WeightsRequired": "dcmp_cli.core.loading",
    "dehaze_files": "dcmp_cli.core.image_jobs",
    "estimate_depth_files": "dcmp_cli.core.image_jobs",
    "dehaze_videos": "dcmp_cli.core.video",
    "eval_models": "dcmp_cli.core.evaluate",
    "evaluate_datasets": "dcmp_cli.core.evaluate",
    "synthesize_dataset": "dcmp_cli.data.synth",
    "train": "dcmp_cli.training",
    "resolve_train_config": "dcmp_cli.training",
    "read_checkpoint": "dcmp_cli.core.checkpoint",
    "create_model": "dcmp_cli.models",
    "Dehazer": "dcmp_cli.core.image_model",
    "ImageModel": "dcmp_cli.core.image_model",
    "DepthEstimator": "dcmp_cli.core.depth",
}

__all__ = [
    "__version__",
    "load_dehazer",
    "load_depth_estimator",
    "load_depth_model",
    "WeightsRequired",
    "dehaze_files",
    "estimate_depth_files",
    "dehaze_videos",
    "eval_models",
    "evaluate_datasets",
    "synthesize_dataset",
    "train",
    "resolve_train_config",
    "read_checkpoint",
    "create_model",
    "Dehazer",
    "ImageModel",
    "DepthEstimator",
]

if TYPE_CHECKING:
    from dcmp_cli.core.checkpoint import read_checkpoint
    from dcmp_cli.core.depth import DepthEstimator
    from dcmp_cli.core.evaluate import eval_models, evaluate_datasets
    from dcmp_cli.core.image_jobs import dehaze_files, estimate_depth_files
    from dcmp_cli.core.image_model import Dehazer, ImageModel
    from dcmp_cli.core.loading import WeightsRequired, load_dehazer, load_depth_estimator, load_depth_model
    from dcmp_cli.core.video import dehaze_videos
    from dcmp_cli.data.synth import synthesize_dataset
    from dcmp_cli.models import create_model
    from dcmp_cli.training import resolve_train_config, train


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dcmp_cli' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
