"""Benchmarking dehazing models on paired (or unpaired) datasets.

One :class:`EvalSet` (a dataset folder, found by :func:`open_eval_set`) is evaluated
with one or several :class:`EvalModel` s: each image is read once, every model runs on
it, and each (model, image) gives an :class:`ImageRow`. :func:`iter_evaluate` yields
the rows as they come (progress leaves through :class:`EvalEvents`);
:func:`evaluate` collects them into a :class:`DatasetReport` with per-model means.

Measuring conventions:

* PSNR/SSIM follow a named protocol (:mod:`dcmp_cli.metrics`) and are computed on the
  model's float output clamped to [0, 1], not on an 8-bit file, as the authors' test
  script does. Outputs read from a folder (``EvalModel.from_outputs``) are measured as
  stored.
* ``seconds`` is the model call alone (device → CPU copy included; reading, scoring
  and saving excluded). The first image of a model includes its warm-up.
* No-reference measures (:mod:`dcmp_cli.noref`) are given for the input and the output.
"""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dcmp_cli.atomic import write_bytes_atomic
from dcmp_cli.choices import value_of
from dcmp_cli.core.batch import describe_error
from dcmp_cli.core.image_model import Dehazer, ProgressFn, TemporalState
from dcmp_cli.data.datasets import (
    HAZY_DIRS,
    NAMED_DATASETS,
    DatasetError,
    NamedDataset,
    PairedDataset,
    align_clear,
    discover_pairs,
    resolve_named_dataset,
)
from dcmp_cli.data.image_io import (
    IMAGE_EXTENSIONS,
    ImageReadError,
    LoadedImage,
    image_to_tensor,
    read_image,
    tensor_to_image,
    write_image,
)
from dcmp_cli.events import EvalEvents
from dcmp_cli.metrics import PROTOCOLS, Protocol, score
from dcmp_cli.noref import NoRefScores, no_reference

#: What made a row: DCMPNet, a prior's name, "none" (the hazy input) or "outputs" (a folder).
Method = str


class DataRootRequired(DatasetError):
    """A named dataset was asked for without the folder holding the releases (``dataset``: its name)."""

    def __init__(self, dataset: str) -> None:
        super().__init__(f"the named dataset {dataset} needs a data root (the folder holding the unpacked release)")
        self.dataset = dataset


class NotPairedError(DatasetError):
    """A folder without hazy/clear pairs, evaluated with reference (no-reference measures would accept it).
    ``reason``: why no pairs were found."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"{reason} (hazy photos without ground truth can be scored without reference)")
        self.reason = reason


@dataclass(frozen=True)
class EvalItem:
    """One hazy image and its ground truth (None in unpaired sets)."""

    name: str
    hazy: Path
    clear: Path | None = None


@dataclass
class EvalSet:
    """The images of one dataset to evaluate, and how they were found.

    ``layout``: a human-readable description of the folder layout and matching rules.
    ``total``: images found before ``limit``. ``unmatched``: hazy images without a
    clear image (not evaluated).
    """

    label: str
    root: Path
    layout: str
    items: list[EvalItem]
    hazy_dir: Path
    clear_dir: Path | None
    total: int
    unmatched: list[Path] = field(default_factory=list)
    named: NamedDataset | None = None

    @property
    def paired(self) -> bool:
        return self.clear_dir is not None

    def as_dict(self) -> dict:
        return {
            "label": self.label,
            "name": self.named.name if self.named else None,
            "root": str(self.root),
            "hazy_dir": str(self.hazy_dir),
            "clear_dir": str(self.clear_dir) if self.clear_dir else None,
            "layout": self.layout,
            "found": self.total,
            "evaluated": len(self.items),
            "unmatched": [str(p) for p in self.unmatched],
        }


def _from_paired(dataset: PairedDataset, label: str, limit: int | None, named: NamedDataset | None) -> EvalSet:
    items = [EvalItem(p.name, p.hazy, p.clear) for p in dataset.pairs]
    folders = (
        "one flat folder"
        if dataset.hazy_dir == dataset.clear_dir
        else f"{dataset.hazy_dir.name}/ + {dataset.clear_dir.name}/"
    )
    return EvalSet(
        label,
        dataset.root,
        f"{folders}, matched by {dataset.layout}",
        items[:limit] if limit else items,
        dataset.hazy_dir,
        dataset.clear_dir,
        len(items),
        list(dataset.unmatched),
        named,
    )


def _unpaired(root: Path, label: str, limit: int | None) -> EvalSet:
    hazy_dir = next((root / d for d in HAZY_DIRS if (root / d).is_dir()), root)
    files = sorted(
        p
        for p in hazy_dir.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )
    if not files:
        raise DatasetError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {hazy_dir}")
    items = [EvalItem(p.stem, p) for p in files]
    where = f"{hazy_dir.name}/" if hazy_dir != root else "the folder itself"
    return EvalSet(
        label,
        root,
        f"unpaired: hazy images in {where}, no ground truth",
        items[:limit] if limit else items,
        hazy_dir,
        None,
        len(items),
    )


def open_eval_set(
    dataset: str,
    data_root: str | Path | None = None,
    *,
    limit: int | None = None,
    unpaired: bool = False,
) -> EvalSet:
    """Finds the images of ``dataset``: a folder, or a name in :data:`NAMED_DATASETS` below ``data_root``.

    With ``unpaired``, a folder without ground truth is accepted (its hazy images, for
    no-reference measures); paired folders are still paired. ``limit`` keeps the first
    images by name. Raises :class:`DatasetError` with a one-line message.
    """
    if limit is not None and limit < 1:
        raise DatasetError("the image limit must be at least 1")
    path = Path(dataset).expanduser()
    named = NAMED_DATASETS.get(dataset.lower())
    if named is not None and not path.is_dir():
        if data_root is None:
            raise DataRootRequired(dataset)
        return _from_paired(resolve_named_dataset(named.name, data_root), named.name, limit, named)
    if not path.is_dir():
        names = ", ".join(NAMED_DATASETS)
        raise DatasetError(f"dataset not found: {dataset} is neither a folder nor a named dataset ({names})")
    label = path.resolve().name
    try:
        return _from_paired(discover_pairs(path), label, limit, None)
    except DatasetError as e:
        if not unpaired:
            raise NotPairedError(str(e)) from None
        return _unpaired(path, label, limit)


class HazyInput(Dehazer):
    """The input itself, unchanged: the baseline every method should beat."""

    method = "none"

    def run(
        self, images: torch.Tensor, *, progress: ProgressFn | None = None, temporal: TemporalState | None = None
    ) -> torch.Tensor:
        return images.detach().float().cpu().clone()

    def temporal_state(self, smooth: float) -> TemporalState:
        raise ValueError("the hazy input has no image-global quantities to smooth")


class EvalModel:
    """A row of the comparison: a dehazer run on each hazy image, or a folder of outputs made elsewhere.

    ``model``: any :class:`~dcmp_cli.core.image_model.Dehazer` (a predictor, a prior, …).
    ``outputs``: a folder holding one restored image per hazy image, named by its stem.
    """

    def __init__(
        self,
        label: str,
        method: Method,
        model: Dehazer | None = None,
        *,
        weights: str | None = None,
        outputs: Path | None = None,
    ) -> None:
        if (model is None) == (outputs is None):
            raise ValueError("an EvalModel needs exactly one of model and outputs")
        self.label, self.method, self.model, self.weights, self.outputs = label, method, model, weights, outputs

    @classmethod
    def hazy_input(cls, label: str = "hazy input") -> EvalModel:
        """The input itself, unchanged: the baseline every method should beat."""
        return cls(label, "none", HazyInput())

    @classmethod
    def from_outputs(cls, folder: Path, label: str | None = None) -> EvalModel:
        """Restored images made elsewhere, one per hazy image, named by the hazy image's stem."""
        folder = Path(folder)
        if not folder.is_dir():
            raise DatasetError(f"outputs folder not found: {folder}")
        return cls(label or folder.name, "outputs", outputs=folder)

    def output_file(self, item: EvalItem) -> Path:
        assert self.outputs is not None
        for candidate in [
            self.outputs / item.hazy.name,
            *(self.outputs / f"{item.hazy.stem}{e}" for e in IMAGE_EXTENSIONS),
        ]:
            if candidate.is_file():
                return candidate
        raise DatasetError(
            f"no output for {item.hazy.name} in {self.outputs} (expected {item.hazy.stem}.png or similar)"
        )

    def as_dict(self) -> dict:
        return {
            "label": self.label,
            "method": self.method,
            "weights": self.weights,
            "outputs": str(self.outputs) if self.outputs else None,
        }


@dataclass
class ImageRow:
    """The result of one model on one image. ``error`` is set (and scores None) when it failed."""

    dataset: str
    model: str
    name: str
    hazy: Path
    clear: Path | None
    width: int = 0
    height: int = 0
    psnr: float | None = None
    ssim: float | None = None
    seconds: float | None = None
    noref_input: NoRefScores | None = None
    noref_output: NoRefScores | None = None
    output: Path | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_dict(self) -> dict:
        """Flat dict (the CSV columns): scores rounded to 6 decimals, None where not measured."""
        row = {
            "dataset": self.dataset,
            "model": self.model,
            "image": self.name,
            "hazy": str(self.hazy),
            "clear": str(self.clear) if self.clear else None,
            "width": self.width or None,
            "height": self.height or None,
            "psnr": _round(self.psnr),
            "ssim": _round(self.ssim),
            "seconds": _round(self.seconds),
        }
        for field_name in NoRefScores._fields:
            row[f"{field_name}_in"] = _round(getattr(self.noref_input, field_name)) if self.noref_input else None
            row[f"{field_name}_out"] = _round(getattr(self.noref_output, field_name)) if self.noref_output else None
        row["output"] = str(self.output) if self.output else None
        row["error"] = self.error
        return row


#: Per-image columns of ``--csv`` (and keys of the JSON rows).
CSV_COLUMNS = [
    "dataset",
    "model",
    "image",
    "hazy",
    "clear",
    "width",
    "height",
    "psnr",
    "ssim",
    "seconds",
    *(f"{name}_{side}" for name in NoRefScores._fields for side in ("in", "out")),
    "output",
    "error",
]


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(float(value), digits)


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


@dataclass
class ModelSummary:
    """Means over the images one model got through (failed images are counted, not averaged)."""

    dataset: str
    model: EvalModel
    images: int
    failed: int
    psnr: float | None
    ssim: float | None
    seconds_per_image: float | None
    noref_input: dict[str, float] | None
    noref_output: dict[str, float] | None

    @classmethod
    def of(cls, dataset: str, model: EvalModel, rows: list[ImageRow]) -> ModelSummary:
        ok = [r for r in rows if r.ok]

        def means(attr: str) -> dict[str, float] | None:
            scores = [getattr(r, attr) for r in ok if getattr(r, attr) is not None]
            if not scores:
                return None
            return {name: float(np.mean([getattr(s, name) for s in scores])) for name in NoRefScores._fields}

        return cls(
            dataset,
            model,
            len(ok),
            len(rows) - len(ok),
            _mean([r.psnr for r in ok if r.psnr is not None]),
            _mean([r.ssim for r in ok if r.ssim is not None]),
            _mean([r.seconds for r in ok if r.seconds is not None]),
            means("noref_input"),
            means("noref_output"),
        )

    def as_dict(self) -> dict:
        def rounded(d: dict[str, float] | None) -> dict[str, float] | None:
            return {k: round(v, 6) for k, v in d.items()} if d else None

        return {
            **self.model.as_dict(),
            "images": self.images,
            "failed": self.failed,
            "psnr": _round(self.psnr),
            "ssim": _round(self.ssim),
            "seconds_per_image": _round(self.seconds_per_image),
            "no_reference_input": rounded(self.noref_input),
            "no_reference_output": rounded(self.noref_output),
        }


@dataclass
class DatasetReport:
    """Everything measured on one dataset: per-model means and per-image rows."""

    eval_set: EvalSet
    protocol: Protocol
    models: list[ModelSummary]
    rows: list[ImageRow]

    @property
    def failed(self) -> list[ImageRow]:
        return [r for r in self.rows if not r.ok]

    def as_dict(self) -> dict:
        return {
            **self.eval_set.as_dict(),
            "protocol": self.protocol,
            "means": [m.as_dict() for m in self.models],
            "rows": [r.as_dict() for r in self.rows],
        }


def _read(path: Path) -> LoadedImage:
    try:
        return read_image(path)
    except ImageReadError as e:
        raise ImageReadError(f"{path}: {e}") from None


def _load_item(item: EvalItem) -> tuple[LoadedImage, np.ndarray | None]:
    """(hazy image, clear RGB aligned to it or None); errors name the file."""
    hazy = _read(item.hazy)
    if item.clear is None:
        return hazy, None
    clear = align_clear(hazy.rgb.shape[:2], _read(item.clear).rgb, item.hazy, item.clear)
    return hazy, clear


def _read_output(model: EvalModel, item: EvalItem, size: tuple[int, int]) -> tuple[torch.Tensor, Path]:
    path = model.output_file(item)
    rgb = _read(path).rgb
    if rgb.shape[:2] != size:
        h, w = size
        raise DatasetError(f"size mismatch: output {path} is {rgb.shape[1]}×{rgb.shape[0]} but {item.hazy} is {w}×{h}")
    return image_to_tensor(rgb), path


def _reason(error: BaseException, item: EvalItem) -> str:
    """One line naming the file: dataset and read errors already do, others get the hazy path."""
    text = describe_error(error)
    return text if isinstance(error, (DatasetError, ImageReadError)) else f"{item.hazy}: {text}"


def check_save_dirs(eval_set: EvalSet, save_dirs: dict[str, Path]) -> None:
    """Raises :class:`DatasetError` when a saved output would land on one of the dataset's images."""
    inputs = {item.hazy.resolve() for item in eval_set.items} | {
        item.clear.resolve() for item in eval_set.items if item.clear is not None
    }
    for folder in save_dirs.values():
        for item in eval_set.items:
            target = (folder / f"{item.hazy.stem}.png").resolve()
            if target in inputs:
                raise DatasetError(
                    f"saving outputs to {folder} would overwrite the dataset image {target}; choose another folder"
                )


def iter_evaluate(
    eval_set: EvalSet,
    models: Sequence[EvalModel],
    protocol: Protocol = "dcmpnet",
    *,
    no_reference_measures: bool = False,
    save_dirs: dict[str, Path] | None = None,
    events: EvalEvents | None = None,
) -> Iterator[ImageRow]:
    """Yields one :class:`ImageRow` per (image, model), image by image.

    ``save_dirs`` maps model labels to folders for the restored images (PNG named by
    the hazy image's stem, in its bit depth). A failure (unreadable file, size
    mismatch, model error) gives rows with ``error`` set and the loop goes on.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    labels = [m.label for m in models]
    if len(set(labels)) != len(labels):
        raise ValueError(f"model labels must be unique, got {labels}")
    save_dirs = save_dirs or {}
    check_save_dirs(eval_set, save_dirs)
    events = events or EvalEvents()
    events.dataset_started(eval_set, len(eval_set.items) * len(models))
    for item in eval_set.items:
        try:
            hazy, clear = _load_item(item)
        except Exception as error:  # noqa: BLE001 - one bad pair must not stop the benchmark
            reason = _reason(error, item)
            for model in models:
                row = ImageRow(eval_set.label, model.label, item.name, item.hazy, item.clear, error=reason)
                events.row_finished(row)
                yield row
            continue
        hazy_t = image_to_tensor(hazy.rgb)
        clear_t = image_to_tensor(clear) if clear is not None else None
        noref_in = no_reference(hazy_t) if no_reference_measures else None
        for model in models:
            row = ImageRow(
                eval_set.label,
                model.label,
                item.name,
                item.hazy,
                item.clear,
                hazy.width,
                hazy.height,
                noref_input=noref_in,
            )
            try:
                if model.outputs is not None:
                    output, row.output = _read_output(model, item, hazy.rgb.shape[:2])
                else:
                    assert model.model is not None  # an EvalModel holds a model or outputs
                    start = time.perf_counter()
                    output = model.model.run(hazy_t)
                    row.seconds = time.perf_counter() - start
                    if tuple(output.shape) != tuple(hazy_t.shape):
                        raise ValueError(
                            f"{model.label} returned shape {tuple(output.shape)} for {tuple(hazy_t.shape)}"
                        )
                output = output.float().clamp(0.0, 1.0)
                if clear_t is not None:
                    row.psnr, row.ssim = score(output, clear_t, protocol)
                if no_reference_measures:
                    row.noref_output = no_reference(output)
                if model.label in save_dirs and model.outputs is None:
                    row.output = write_image(
                        save_dirs[model.label] / f"{item.hazy.stem}.png",
                        tensor_to_image(output),
                        bit_depth=hazy.bit_depth,
                    )
            except Exception as error:  # noqa: BLE001
                row.error = _reason(error, item)
                row.psnr = row.ssim = None
            events.row_finished(row)
            yield row


def evaluate(
    eval_set: EvalSet,
    models: Sequence[EvalModel],
    protocol: Protocol = "dcmpnet",
    *,
    no_reference_measures: bool = False,
    save_dirs: dict[str, Path] | None = None,
    events: EvalEvents | None = None,
) -> DatasetReport:
    """Evaluates every model on ``eval_set``; see :func:`iter_evaluate`."""
    rows = list(
        iter_evaluate(
            eval_set, models, protocol, no_reference_measures=no_reference_measures, save_dirs=save_dirs, events=events
        )
    )
    summaries = [ModelSummary.of(eval_set.label, m, [r for r in rows if r.model == m.label]) for m in models]
    return DatasetReport(eval_set, protocol, summaries, rows)


def write_csv(path: str | Path, rows: Sequence[ImageRow]) -> Path:
    """Writes per-image rows (:data:`CSV_COLUMNS`) atomically; empty cells where not measured."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.as_dict().items()})
    return write_bytes_atomic(path, buffer.getvalue().encode("utf-8"))


__all__ = [
    "CSV_COLUMNS",
    "DatasetReport",
    "EvalEvents",
    "EvalItem",
    "EvalModel",
    "EvalSet",
    "ImageRow",
    "ModelSummary",
    "check_save_dirs",
    "eval_models",
    "evaluate",
    "evaluate_datasets",
    "iter_evaluate",
    "open_eval_set",
    "write_csv",
]


# ----------------------------------------------------------------------------- building the rows


def _unique(label: str, taken: set[str], path: Path | None = None) -> str:
    if label in taken and path is not None:
        label = f"{path.parent.name}/{label}"
    base, n = label, 2
    while label in taken:
        label, n = f"{base} #{n}", n + 1
    taken.add(label)
    return label


def eval_models(
    methods: Sequence[str] = (),
    weights: Sequence[str | Path] = (),
    outputs: Sequence[str | Path] = (),
    **load_options: Any,
) -> list[EvalModel]:
    """The rows of a comparison, as ``dcmp eval`` builds them from its options.

    ``methods``: "auto", "dcmp", a prior's name, or "none" (the hazy input); none given
    and no ``weights``/``outputs``: ["auto"]. ``weights``: DCMPNet checkpoints, one row
    each ("auto" then means "dcmp"). ``outputs``: folders of restored images made
    elsewhere, one row each. Each (method, weights) appears once. ``load_options`` go to
    :func:`~dcmp_cli.core.loading.load_dehazer` (device, precision, tile, …).
    """
    from dcmp_cli.core.loading import load_dehazer

    names = [value_of(m) for m in methods]
    if not names and not weights and not outputs:
        names = ["auto"]
    if weights:  # weights always mean DCMPNet rows, one per file
        names = ["dcmp" if m == "auto" else m for m in names]
        names = names if "dcmp" in names else [*names, "dcmp"]
    models: list[EvalModel] = []
    taken: set[str] = set()
    seen: set[tuple[str, str | None]] = set()

    def add(dehazer: Dehazer) -> None:
        path = dehazer.weights
        key = (dehazer.method, str(path) if path else None)
        if key in seen:
            return
        seen.add(key)
        if path is None:
            models.append(EvalModel(_unique(dehazer.method, taken), dehazer.method, dehazer))
        else:
            models.append(EvalModel(_unique(path.stem, taken, path), dehazer.method, dehazer, weights=str(path)))

    for name in dict.fromkeys(names):
        if name == "none":
            models.append(EvalModel.hazy_input(_unique("hazy input", taken)))
        elif name == "dcmp":
            paths: list[str | Path | None] = [*weights] or [None]  # None: the default weights
            for path in paths:
                add(load_dehazer("dcmp", path, **load_options))
        else:
            add(load_dehazer(name, **load_options))
    for folder in outputs:
        folder = Path(folder)
        models.append(EvalModel.from_outputs(folder, _unique(folder.name, taken, folder)))
    return models


def _folder_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-") or "model"


def save_dirs_for(save_dir: Path | None, dataset: str, models: Sequence[EvalModel], n_datasets: int) -> dict[str, Path]:
    """Where each model's restored images go: SAVE_DIR[/DATASET][/MODEL], sub-folders only where there are several."""
    if save_dir is None:
        return {}
    base = save_dir / _folder_name(dataset) if n_datasets > 1 else save_dir
    runnable = [m for m in models if m.outputs is None]
    if len(runnable) == 1:
        return {runnable[0].label: base}
    return {m.label: base / _folder_name(m.label) for m in runnable}


def evaluate_datasets(
    datasets: Sequence[str | Path | EvalSet],
    models: Sequence[EvalModel] | None = None,
    protocol: Protocol = "dcmpnet",
    *,
    data_root: str | Path | None = None,
    limit: int | None = None,
    no_reference_measures: bool = False,
    save_dir: str | Path | None = None,
    csv_path: str | Path | None = None,
    events: EvalEvents | None = None,
    on_dataset: Callable[[EvalSet], None] | None = None,
) -> list[DatasetReport]:
    """``dcmp eval`` in one call: every model (default: :func:`eval_models`' ``auto`` row) on
    every dataset (a folder, a named dataset below ``data_root``, or an :class:`EvalSet`
    already opened by :func:`open_eval_set`).

    All datasets are found and all save folders checked before any model runs;
    ``on_dataset(eval_set)`` is called before each dataset is evaluated (the CLI describes
    it). Per-image rows go to ``csv_path`` when given. Raises :class:`DatasetError`.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    eval_sets = [
        d if isinstance(d, EvalSet) else open_eval_set(str(d), data_root, limit=limit, unpaired=no_reference_measures)
        for d in datasets
    ]
    models = list(models) if models is not None else eval_models()
    target = Path(save_dir) if save_dir is not None else None
    plans = {s.label: save_dirs_for(target, s.label, models, len(eval_sets)) for s in eval_sets}
    if len(plans) != len(eval_sets):
        raise DatasetError("two datasets have the same name; rename or link one of the folders")
    for eval_set in eval_sets:
        check_save_dirs(eval_set, plans[eval_set.label])
    reports = []
    for eval_set in eval_sets:
        if on_dataset is not None:
            on_dataset(eval_set)
        reports.append(
            evaluate(
                eval_set,
                models,
                protocol,
                no_reference_measures=no_reference_measures,
                save_dirs=plans[eval_set.label],
                events=events,
            )
        )
    if csv_path is not None:
        write_csv(csv_path, [row for report in reports for row in report.rows])
    return reports
