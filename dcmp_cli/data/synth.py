"""Synthesising a paired hazy/clear dataset with the atmospheric scattering model (RESIDE-style).

For each clear image ``J`` and its relative depth ``d`` (normalised per image to [0, 1],
0 = nearest, 1 = farthest — dcmp's depth convention), ``K`` hazy versions
``I = J·t + A·(1 − t)``, ``t = exp(−β·d)`` are drawn with β and a grey airlight ``A``
uniform in the given ranges (defaults β ∈ [0.6, 1.8], A ∈ [0.7, 1.0], RESIDE's ranges
carried over to normalised depth: β is the optical thickness at the farthest point).

Output folder (what :func:`dcmp_cli.data.datasets.discover_pairs`, ``dcmp eval`` and
training read without options)::

    OUT/GT/{stem}.png        the clear image (its bit depth kept, alpha dropped)
    OUT/hazy/{stem}_{k}.png  k = 1 … K
    OUT/depth/{stem}.png     16-bit depth as used (dcmp_cli.data.depth_io convention)
    OUT/manifest.csv, OUT/manifest.json   per hazy image: files, β, A, depth source

Depth: given maps (``depth_dir``, matched by stem; ``.png``/``.tif``/``.tiff``/``.npy``;
JPEG/WebP/BMP maps are refused with the reason: lossy or 8-bit) are min-max normalised;
``disparity`` maps (larger = nearer) are flipped linearly after normalising, as
``dcmp depth`` does. Maps of another size with the same aspect ratio (within 1 %) are
resized bilinearly. Without ``depth_dir`` a *stand-in* is used: the
vertical gradient of :func:`~dcmp_cli.data.haze.vertical_gradient_depth` (top row
farthest, bottom row nearest) — a ground plane seen level, not an estimate of the scene.

Random draws are seeded per image (``numpy.random.default_rng([seed, crc32(stem)])``), so
an image's β and A depend only on the seed and its name, not on the other files.
Every file is written atomically; inputs are never overwritten.
"""

from __future__ import annotations

import csv
import io
import json
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from dcmp_cli import __version__
from dcmp_cli.atomic import write_bytes_atomic
from dcmp_cli.choices import value_of
from dcmp_cli.data.datasets import read_depth_map
from dcmp_cli.data.depth_io import (
    CONVENTION_TEXT,
    DEPTH_EXTENSIONS,
    normalise_depth,
    write_depth,
)
from dcmp_cli.data.files import collect_inputs
from dcmp_cli.data.haze import add_haze, vertical_gradient_depth
from dcmp_cli.data.image_io import (
    IMAGE_EXTENSIONS,
    ImageReadError,
    read_image,
    write_image,
)
from dcmp_cli.events import SynthEvents

DepthKind = Literal["depth", "disparity"]
DEPTH_KINDS: tuple[DepthKind, ...] = ("depth", "disparity")
STAND_IN = "stand-in: vertical gradient"
GIVEN = "given"
HAZY_DIR, CLEAR_DIR, DEPTH_DIR = "hazy", "GT", "depth"
MANIFEST_CSV, MANIFEST_JSON = "manifest.csv", "manifest.json"
MANIFEST_COLUMNS = ("hazy", "clear", "depth", "source", "depth_source", "depth_file", "k", "beta", "airlight")
#: Relative aspect-ratio difference up to which a given depth map is resized to its image.
ASPECT_TOLERANCE = 0.01
SCATTERING_MODEL = "I = J*t + A*(1 - t), t = exp(-beta * d), d: relative depth in [0, 1] (0 = nearest, 1 = farthest)"


class SynthError(ValueError):
    """Unusable synthesis settings or output folder; the message says what to do.
    ``option``: the setting at fault (e.g. "beta"), if one is."""

    def __init__(self, message: str, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option


class NothingSynthesizedError(SynthError):
    """No hazy image could be made; ``failures``: why, per clear image. No manifest is written."""

    def __init__(self, failures: Sequence[SynthFailure]) -> None:
        first = f" (first: {failures[0].reason})" if failures else ""
        super().__init__(f"nothing was synthesised: all {len(failures)} image(s) failed{first}; no manifest written")
        self.failures = list(failures)


#: Why depth maps of these types are refused (they are images, but not usable depth).
REJECTED_DEPTH_TYPES = {
    ".jpg": "JPEG is lossy and 8-bit: its compression artefacts and 256 levels turn into blocky, banded haze",
    ".jpeg": "JPEG is lossy and 8-bit: its compression artefacts and 256 levels turn into blocky, banded haze",
    ".webp": "WebP is 8-bit and usually lossy",
    ".bmp": "BMP is 8-bit: 256 depth levels turn into banded haze",
}
_DEPTH_ADVICE = "save depth maps as 16-bit .png or .tif, or as .npy"


@dataclass(frozen=True)
class SynthConfig:
    """How hazy versions are drawn. Ranges are (low, high), sampled uniformly; low == high fixes the value."""

    beta: tuple[float, float] = (0.6, 1.8)
    airlight: tuple[float, float] = (0.7, 1.0)
    per_image: int = 1
    seed: int = 0
    depth_dir: Path | None = None
    depth_kind: DepthKind = "depth"

    def check(self) -> None:
        """Raises :class:`SynthError` for ranges or counts that make no sense."""
        lo, hi = self.beta
        if not 0 <= lo <= hi:
            raise SynthError(f"β range {lo}–{hi}: need 0 ≤ low ≤ high", "beta")
        lo, hi = self.airlight
        if not 0 < lo <= hi <= 1:
            raise SynthError(f"airlight range {lo}–{hi}: need 0 < low ≤ high ≤ 1", "airlight")
        if self.per_image < 1:
            raise SynthError("hazy versions per image must be at least 1", "per-image")
        if self.depth_kind not in DEPTH_KINDS:
            raise SynthError(f"depth kind must be one of {', '.join(DEPTH_KINDS)}", "depth-kind")
        if self.depth_dir is not None and not Path(self.depth_dir).is_dir():
            raise SynthError(f"depth folder not found: {self.depth_dir}", "depth")


@dataclass
class HazyRecord:
    """One synthesised hazy image (paths relative to the output folder)."""

    hazy: str
    clear: str
    depth: str
    source: str
    depth_source: str
    depth_file: str
    k: int
    beta: float
    airlight: float


@dataclass
class SynthFailure:
    source: Path
    reason: str


@dataclass
class SynthReport:
    out_dir: Path
    config: SynthConfig
    records: list[HazyRecord] = field(default_factory=list)
    failures: list[SynthFailure] = field(default_factory=list)
    #: Images in hazy/ that this run did not write (left from an earlier run).
    stale: list[Path] = field(default_factory=list)

    @property
    def clear_images(self) -> int:
        return len({r.clear for r in self.records})

    def as_dict(self) -> dict:
        config = asdict(self.config)
        return {
            "generator": f"dcmp synth {__version__}",
            "scattering_model": SCATTERING_MODEL,
            "depth_convention": CONVENTION_TEXT,
            "seed": config["seed"],
            "beta_range": list(config["beta"]),
            "airlight_range": list(config["airlight"]),
            "per_image": config["per_image"],
            "depth_dir": str(config["depth_dir"]) if config["depth_dir"] else None,
            "depth_kind": config["depth_kind"] if config["depth_dir"] else None,
            "clear_images": self.clear_images,
            "hazy_images": len(self.records),
            "failed": [{"source": str(f.source), "reason": f.reason} for f in self.failures],
            "images": [asdict(r) for r in self.records],
        }


def image_rng(seed: int, stem: str) -> np.random.Generator:
    """The generator for one clear image: depends on the seed and the image's stem only."""
    return np.random.default_rng([seed, zlib.crc32(stem.encode("utf-8"))])


def draw_parameters(config: SynthConfig, stem: str) -> list[tuple[float, float]]:
    """(β, A) for the K hazy versions of ``stem``, rounded to 6 decimals (the values used and recorded)."""
    rng = image_rng(config.seed, stem)
    draws = []
    for _ in range(config.per_image):
        beta = round(float(rng.uniform(*config.beta)), 6)
        airlight = round(float(rng.uniform(*config.airlight)), 6)
        draws.append((beta, airlight))
    return draws


def find_depth_file(stem: str, depth_dir: Path) -> Path | None:
    for ext in DEPTH_EXTENSIONS:
        for candidate in (depth_dir / f"{stem}{ext}", depth_dir / f"{stem}{ext.upper()}"):
            if candidate.is_file():
                return candidate
    return None


def _missing_depth_reason(source: Path, depth_dir: Path) -> str:
    """Why ``source`` has no usable depth map: none at all, or one of a refused type (and why)."""
    for ext, why in REJECTED_DEPTH_TYPES.items():
        for candidate in (depth_dir / f"{source.stem}{ext}", depth_dir / f"{source.stem}{ext.upper()}"):
            if candidate.is_file():
                return f"depth map {candidate} is not accepted: {why}; {_DEPTH_ADVICE}"
    return f"no depth map for {source.name} in {depth_dir} (looked for {source.stem}.png/.tif/.npy)"


def check_depth_dir(depth_dir: Path) -> None:
    """Refuses a depth folder that holds refused map types (JPEG …) and no usable ones, before any work."""
    files = [p for p in depth_dir.iterdir() if p.is_file() and not p.name.startswith(".")]
    if any(p.suffix.lower() in DEPTH_EXTENSIONS for p in files):
        return
    refused = sorted(p for p in files if p.suffix.lower() in REJECTED_DEPTH_TYPES)
    if refused:
        why = REJECTED_DEPTH_TYPES[refused[0].suffix.lower()]
        raise SynthError(
            f"{depth_dir} holds {len(refused)} depth map(s) of a refused type (e.g. {refused[0].name}) and none "
            f"in {'/'.join(DEPTH_EXTENSIONS)}: {why}; {_DEPTH_ADVICE}"
        )


def load_given_depth(path: Path, kind: DepthKind, size: tuple[int, int]) -> tuple[np.ndarray, float, float]:
    """A depth/disparity map file -> ([0, 1] depth (H, W) with 0 = nearest, raw min, raw max) at ``size`` (H, W)."""
    try:
        raw = read_depth_map(path)
    except ImageReadError as e:
        raise SynthError(f"{path}: {e}") from None
    if not np.all(np.isfinite(raw)):
        raise SynthError(f"{path}: depth map holds NaN or infinite values")
    h, w = size
    if raw.shape != (h, w):
        rh, rw = raw.shape
        if abs((rw / rh) / (w / h) - 1) > ASPECT_TOLERANCE:
            raise SynthError(f"{path} is {rw}×{rh}, its image {w}×{h}: aspect ratios differ")
        raw = cv2.resize(raw, (w, h), interpolation=cv2.INTER_LINEAR)
    return normalise_depth(raw, larger_is_nearer=kind == "disparity")


def _plan(clear_files: Sequence[Path], per_image: int) -> None:
    stems = [p.stem for p in clear_files]
    seen: dict[str, Path] = {}
    for path in clear_files:
        if path.stem in seen:
            raise SynthError(f"{seen[path.stem].name} and {path.name} share the name {path.stem!r}; rename one")
        seen[path.stem] = path
    names = set(stems)
    for stem in stems:
        for k in range(1, per_image + 1):
            if f"{stem}_{k}" in names:
                raise SynthError(
                    f"hazy name {stem}_{k} would equal the clear image {seen[f'{stem}_{k}'].name}; rename it"
                )


def check_output_dir(out_dir: Path, inputs: Sequence[Path], overwrite: bool) -> None:
    """Refuses an output folder that holds a dataset already (unless ``overwrite``) or would hit an input."""
    input_set = {p.resolve() for p in inputs}
    for sub in (HAZY_DIR, CLEAR_DIR, DEPTH_DIR):
        folder = out_dir / sub
        if folder.is_dir() and any(p.resolve() in input_set for p in folder.iterdir()):
            raise SynthError(f"{folder} holds input files; choose an output folder apart from the inputs")
    if overwrite:
        return
    existing = [out_dir / n for n in (MANIFEST_JSON, MANIFEST_CSV) if (out_dir / n).exists()]
    existing += [
        out_dir / sub
        for sub in (HAZY_DIR, CLEAR_DIR, DEPTH_DIR)
        if (out_dir / sub).is_dir() and any((out_dir / sub).iterdir())
    ]
    if existing:
        raise SynthError(
            f"{out_dir} already holds a dataset ({existing[0].name}); overwrite it or choose another folder",
            "overwrite",
        )


def synthesize(
    clear_files: Sequence[Path],
    out_dir: str | Path,
    config: SynthConfig = SynthConfig(),
    *,
    overwrite: bool = False,
    events: SynthEvents | None = None,
) -> SynthReport:
    """Writes GT/, depth/ and hazy/ for ``clear_files`` into ``out_dir`` (see the module docstring).

    Unreadable images or depth maps are recorded as failures and skipped; when no image
    at all could be made, :class:`NothingSynthesizedError` is raised. A depth folder with
    only refused map types (JPEG …) is refused before any work. Call
    :func:`write_manifest` afterwards (the CLI does).
    """
    config.check()
    out_dir = Path(out_dir)
    clear_files = sorted(clear_files, key=lambda p: p.name)
    _plan(clear_files, config.per_image)
    depth_dir = Path(config.depth_dir) if config.depth_dir else None
    if depth_dir is not None:
        check_depth_dir(depth_dir)
    depth_inputs = [p for p in depth_dir.iterdir() if p.is_file()] if depth_dir else []
    check_output_dir(out_dir, [*clear_files, *depth_inputs], overwrite)
    events = events or SynthEvents()
    report = SynthReport(out_dir, config)
    events.started(len(clear_files))
    for source in clear_files:
        try:
            records = _synthesize_one(source, out_dir, config, depth_dir)
        except Exception as error:  # noqa: BLE001 - a bad file must not stop the run
            text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            reason = text if str(source) in text or (depth_dir and str(depth_dir) in text) else f"{source}: {text}"
            report.failures.append(SynthFailure(source, reason))
            events.image_finished(source, 0, reason)
            continue
        report.records.extend(records)
        events.image_finished(source, len(records), None)
    if clear_files and not report.records:
        raise NothingSynthesizedError(report.failures)
    written = {r.hazy for r in report.records}
    hazy_folder = out_dir / HAZY_DIR
    if hazy_folder.is_dir():
        report.stale = sorted(
            p
            for p in hazy_folder.iterdir()
            if p.suffix.lower() in IMAGE_EXTENSIONS
            and not p.name.startswith(".")
            and f"{HAZY_DIR}/{p.name}" not in written
        )
    return report


def _synthesize_one(source: Path, out_dir: Path, config: SynthConfig, depth_dir: Path | None) -> list[HazyRecord]:
    image = read_image(source)
    h, w = image.rgb.shape[:2]
    if depth_dir is not None:
        depth_file = find_depth_file(source.stem, depth_dir)
        if depth_file is None:
            raise SynthError(_missing_depth_reason(source, depth_dir))
        depth, lo, hi = load_given_depth(depth_file, config.depth_kind, (h, w))
        depth_source, depth_name = GIVEN, str(depth_file)
    else:
        depth, lo, hi = vertical_gradient_depth(h, w), 0.0, 1.0
        depth_source, depth_name = STAND_IN, ""
    clear_rel, depth_rel = f"{CLEAR_DIR}/{source.stem}.png", f"{DEPTH_DIR}/{source.stem}.png"
    write_image(out_dir / clear_rel, image.rgb, bit_depth=image.bit_depth)
    write_depth(out_dir / depth_rel, depth, (lo, hi))
    records = []
    for k, (beta, airlight) in enumerate(draw_parameters(config, source.stem), start=1):
        hazy_rel = f"{HAZY_DIR}/{source.stem}_{k}.png"
        write_image(out_dir / hazy_rel, add_haze(image.rgb, depth, beta, airlight), bit_depth=image.bit_depth)
        records.append(
            HazyRecord(hazy_rel, clear_rel, depth_rel, str(source), depth_source, depth_name, k, beta, airlight)
        )
    return records


def write_manifest(report: SynthReport) -> tuple[Path, Path]:
    """Writes manifest.csv (one row per hazy image) and manifest.json (settings + rows), atomically.

    Raises :class:`NothingSynthesizedError` for a report without hazy images (no empty manifests).
    """
    if not report.records:
        raise NothingSynthesizedError(report.failures)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for record in report.records:
        writer.writerow(asdict(record))
    text = json.dumps(report.as_dict(), indent=2, ensure_ascii=False) + "\n"
    return (
        write_bytes_atomic(report.out_dir / MANIFEST_CSV, buffer.getvalue().encode("utf-8")),
        write_bytes_atomic(report.out_dir / MANIFEST_JSON, text.encode("utf-8")),
    )


def synthesize_dataset(
    clear: str | Path,
    output: str | Path,
    *,
    depth: str | Path | None = None,
    depth_kind: str = "depth",
    beta: tuple[float, float] = (0.6, 1.8),
    airlight: tuple[float, float] = (0.7, 1.0),
    per_image: int = 1,
    seed: int = 0,
    overwrite: bool = False,
    events: SynthEvents | None = None,
) -> tuple[SynthReport, tuple[Path, Path]]:
    """``dcmp synth CLEAR OUTPUT`` in one call: (report, (manifest.csv, manifest.json)).

    ``clear``: a folder or glob of clear images; ``depth``: a folder of depth maps named
    like them (default: the stand-in vertical gradient). Raises :class:`SynthError` or
    :class:`~dcmp_cli.data.files.InputError`.
    """
    kind = value_of(depth_kind)
    if kind not in DEPTH_KINDS:
        raise SynthError(f"depth kind must be one of {', '.join(DEPTH_KINDS)}", "depth-kind")
    config = SynthConfig(
        (beta[0], beta[1]),
        (airlight[0], airlight[1]),
        per_image,
        seed,
        Path(depth) if depth is not None else None,
        kind,
    )
    config.check()
    report = synthesize(collect_inputs(clear).files, output, config, overwrite=overwrite, events=events)
    return report, write_manifest(report)


def read_manifest(out_dir: str | Path) -> dict:
    """The manifest.json of a synthesised dataset."""
    return json.loads((Path(out_dir) / MANIFEST_JSON).read_text(encoding="utf-8"))
