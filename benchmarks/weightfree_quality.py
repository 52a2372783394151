"""Quality of weight-free dehazers on real photos, real smog pairs, SOTS-indoor and synthetic outdoor haze.

    .venv/bin/python benchmarks/weightfree_quality.py [--out DIR] [--methods dcp cap ...] [--max-side N]

Data (each folder is skipped when absent; paths relative to the repository's parent):
* ``shared/data/real`` + ``shared/data/real_more``: 32 real hazy photos, no ground truth;
* ``shared/data/outdoor_pairs``: 5 real smog photos (BeDDE, Chengdu) with a clear-day view as GT;
* ``shared/data/sots_indoor_sample``: 10 RESIDE SOTS-indoor pairs;
* synthetic outdoor pairs: the clear Chengdu view (GT of ``outdoor_pairs``; its 5 GT files are
  one photo) hazed with the scattering model ``I = J·t + A·(1 − t)``, ``t = exp(−β·d)`` and the
  stand-in depth (vertical gradient, far at the top, near = 0.2) at four (β, A) settings; plus,
  when scikit-image is installed, its public-domain outdoor photos ``rocket`` and ``camera``
  (as RGB) hazed the same way (the table says which were used).

Figures per method: PSNR/SSIM (``dcmp_cli.metrics``, DCMPNet protocol) where there is ground
truth; on real photos the change measures of :mod:`dcmp_cli.noref` (noise amplification in
smooth bright areas, luma ratio, colour-cast shift, dark-channel ratio; median and worst
tenth), and seconds per megapixel of compute (median over photos, measured in this process,
methods interleaved photo by photo so a busy machine affects all alike).

Methods (``--methods``): ``dcp`` (the package's dark channel prior, He et al. 2009), ``cap``
(colour attenuation prior, Zhu et al. 2015), ``bccr`` (boundary constraint, Meng et al. 2013,
with a guided filter in place of the contextual regularisation), ``hazelines`` (non-local
haze-lines, Berman et al. 2016, guided filter in place of the WLS step), ``fusion`` (multi-scale
fusion, Ancuti & Ancuti 2013), the package's weight-free default ``layered`` and
``layered-cap`` (the same with the colour attenuation prior's transmission). The other methods here
are compact re-implementations for comparison only (not shipped in the package).

Writes contact sheets ``DIR/sheet_<set>_<k>.png`` (input | each method, one row per photo).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from dcmp_cli.data.haze import add_haze, vertical_gradient_depth
from dcmp_cli.data.image_io import read_image
from dcmp_cli.metrics import score
from dcmp_cli.noref import change_scores
from dcmp_cli.prior import DarkChannelPrior
from dcmp_cli.prior.guided_filter import guided_filter

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
Method = Callable[[np.ndarray], np.ndarray]


# =========================================================================== comparison methods


def _channel_min(x: np.ndarray) -> np.ndarray:
    return x.min(axis=2)


def _erode(x: np.ndarray, size: int) -> np.ndarray:
    return cv2.erode(x, cv2.getStructuringElement(cv2.MORPH_RECT, (size, size)), borderType=cv2.BORDER_REPLICATE)


def _grey(x: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)


def _refine(image: np.ndarray, t: np.ndarray, eps: float = 1e-3) -> np.ndarray:
    r = max(8, round(min(t.shape) / 20))
    return np.clip(guided_filter(_grey(image), t, r, eps, subsample=max(1, r // 8)), 0, 1)


def _recover(image: np.ndarray, t: np.ndarray, a: np.ndarray, t_min: float) -> np.ndarray:
    a3 = np.asarray(a, np.float32).reshape(1, 1, 3)
    return np.clip((image - a3) / np.maximum(t, t_min)[..., None] + a3, 0, 1).astype(np.float32)


def cap(image: np.ndarray) -> np.ndarray:
    """Colour attenuation prior (Zhu, Mai, Shao, TIP 2015): depth = θ0 + θ1·v + θ2·s (learned linear
    model), 15×15 minimum filter, guided filter; A = brightest input among the farthest 0.1 %;
    t = exp(−β·d), β = 1, bounded to [0.1, 0.9] in the recovery."""
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    depth = 0.121779 + 0.959710 * hsv[..., 2] - 0.780245 * hsv[..., 1]
    depth = _erode(depth.astype(np.float32), 15)
    depth = guided_filter(_grey(image), depth, 60 if min(depth.shape) > 240 else 15, 1e-3, subsample=4)
    flat = depth.reshape(-1)
    n = max(1, flat.size // 1000)
    idx = np.argpartition(flat, flat.size - n)[flat.size - n :]
    pixels = image.reshape(-1, 3)[idx]
    a = pixels[np.argmax(pixels.sum(axis=1))]
    t = np.clip(np.exp(-1.0 * depth), 0.1, 0.9)
    return _recover(image, t, a, 0.1)


def bccr(image: np.ndarray) -> np.ndarray:
    """Boundary-constrained transmission (Meng, Wang, Duan, Xiang, Pan, ICCV 2013): the radiance must
    stay inside [C0, C1] = [20, 300]/255, which bounds t from below; a 3×3 max-then-min (closing)
    of that bound; here refined by a guided filter instead of the paper's contextual
    regularisation; A from the dark channel prior; t ≥ 0.1."""
    a = DarkChannelPrior().estimate_globals(image)
    c0, c1 = 20 / 255, 300 / 255
    a3 = a.reshape(1, 1, 3)
    bound = np.maximum((a3 - image) / np.maximum(a3 - c0, 1e-3), (image - a3) / np.maximum(c1 - a3, 1e-3))
    t = np.minimum(bound.max(axis=2), 1.0).astype(np.float32)
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (3, 3))
    t = cv2.erode(cv2.dilate(t, kernel), kernel)
    return _recover(image, _refine(image, t), a, 0.1)


def _sphere_bins(directions: np.ndarray, bins: int) -> np.ndarray:
    """Unit vectors (N, 3) -> bin index of an equal-angle (θ, φ) grid with ``bins``² cells."""
    theta = np.arccos(np.clip(directions[:, 2], -1, 1)) / np.pi
    phi = (np.arctan2(directions[:, 1], directions[:, 0]) + np.pi) / (2 * np.pi)
    return np.minimum((theta * bins).astype(np.int32), bins - 1) * bins + np.minimum(
        (phi * bins).astype(np.int32), bins - 1
    )


def hazelines(image: np.ndarray) -> np.ndarray:
    """Non-local haze-lines (Berman, Treibitz, Avidan, CVPR 2016): pixels of one clear colour lie on a
    line through A; cluster the directions of I − A (here a 32×32 (θ, φ) grid instead of a
    1000-point tessellation), t = r / r_max per line, lower bound 1 − min_c I/A; guided filter in
    place of the weighted least squares; A from the dark channel prior; t ≥ 0.1."""
    a = DarkChannelPrior().estimate_globals(image)
    diff = (image - a.reshape(1, 1, 3)).reshape(-1, 3)
    radius = np.linalg.norm(diff, axis=1) + 1e-6
    labels = _sphere_bins(diff / radius[:, None], 32)
    r_max = np.zeros(32 * 32, np.float32)
    np.maximum.at(r_max, labels, radius.astype(np.float32))
    t = (radius / np.maximum(r_max[labels], 1e-6)).reshape(image.shape[:2]).astype(np.float32)
    lower = 1.0 - _channel_min(image / np.maximum(a, 1e-3).reshape(1, 1, 3))
    t = np.clip(np.maximum(t, lower), 0.1, 1).astype(np.float32)
    return _recover(image, _refine(image, t), a, 0.1)


def _pyramid(x: np.ndarray, levels: int) -> list[np.ndarray]:
    out = [x]
    for _ in range(levels - 1):
        out.append(cv2.pyrDown(out[-1]))
    return out


def fusion(image: np.ndarray, levels: int = 5) -> np.ndarray:
    """Multi-scale fusion (Ancuti & Ancuti, TIP 2013): input 1 = grey-world white balance, input 2 =
    contrast stretch about the mean luma (2.5·(I − Ȳ)); weights = luminance (std over channels),
    chromatic (saturation near its maximum, σ = 0.3) and saliency (|blurred Lab − mean Lab|),
    normalised and blended in a Laplacian pyramid."""
    balanced = np.clip(image * (image.mean() / np.maximum(image.reshape(-1, 3).mean(axis=0), 1e-3)), 0, 1)
    y = _grey(image)
    enhanced = np.clip(2.5 * (image - float(y.mean())) + float(y.mean()), 0, 1)
    inputs = [balanced.astype(np.float32), enhanced.astype(np.float32)]
    weights = []
    for x in inputs:
        lum = x.std(axis=2)
        sat = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)[..., 1]
        chroma = np.exp(-((sat - 1.0) ** 2) / (2 * 0.3**2))
        lab = cv2.cvtColor(x, cv2.COLOR_RGB2Lab)
        blurred = cv2.GaussianBlur(lab, (5, 5), 0)
        salient = np.linalg.norm(blurred - lab.reshape(-1, 3).mean(axis=0), axis=2) / 100
        weights.append((lum * chroma * salient + 1e-4).astype(np.float32))
    total = weights[0] + weights[1]
    levels = max(1, min(levels, int(np.log2(min(image.shape[:2]))) - 3))
    fused = None
    for x, w in zip(inputs, weights):
        gw = _pyramid(w / total, levels)
        gx = _pyramid(x, levels)
        lap = [gx[i] - cv2.pyrUp(gx[i + 1], dstsize=gx[i].shape[1::-1]) for i in range(levels - 1)] + [gx[-1]]
        part = [lp * g[..., None] for lp, g in zip(lap, gw)]
        fused = part if fused is None else [f + p for f, p in zip(fused, part)]
    out = fused[-1]
    for lp in reversed(fused[:-1]):
        out = cv2.pyrUp(out, dstsize=lp.shape[1::-1]) + lp
    return np.clip(out, 0, 1).astype(np.float32)


def layered_cap():
    """The package's layered method with the colour attenuation prior's transmission (Zhu et al. 2015,
    β = 1.2, minimum filter, no sky tolerance) in place of the dark channel's: a candidate for later."""
    from dataclasses import dataclass

    from dcmp_cli.prior.airlight import odd, patch_minimum
    from dcmp_cli.prior.layered import LayeredDehazer

    @dataclass(frozen=True)
    class LayeredCap(LayeredDehazer):
        beta: float = 1.2

        def raw_transmission(self, small: np.ndarray, airlight: np.ndarray) -> np.ndarray:
            hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
            depth = (0.121779 + 0.959710 * hsv[..., 2] - 0.780245 * hsv[..., 1]).astype(np.float32)
            depth = patch_minimum(depth, odd(min(small.shape[:2]) * self.patch_fraction))
            return np.exp(-self.beta * depth).astype(np.float32)

    return LayeredCap()


def _prior_method(prior) -> Method:
    return lambda image: prior.dehaze(image).image


def available_methods() -> dict[str, Method]:
    from dcmp_cli.prior.layered import LayeredDehazer

    return {
        "dcp": _prior_method(DarkChannelPrior()),
        "cap": cap,
        "bccr": bccr,
        "hazelines": hazelines,
        "fusion": fusion,
        "layered": _prior_method(LayeredDehazer()),
        "layered-cap": _prior_method(layered_cap()),
    }


# =========================================================================== data


@dataclass
class Sample:
    name: str
    hazy: np.ndarray
    clear: np.ndarray | None = None


def _load(path: Path, max_side: int | None) -> np.ndarray:
    rgb = read_image(path).rgb
    h, w = rgb.shape[:2]
    if max_side and max(h, w) > max_side:
        s = max_side / max(h, w)
        rgb = cv2.resize(rgb, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(rgb, dtype=np.float32)


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".bmp"})


def real_photos(max_side: int | None) -> list[Sample]:
    out = []
    for sub in ("real", "real_more"):
        if (DATA / sub).is_dir():
            out += [Sample(p.stem, _load(p, max_side)) for p in _images(DATA / sub)]
    return out


def pairs(sub: str, max_side: int | None) -> list[Sample]:
    hazy, gt = DATA / sub / "hazy", DATA / sub / "GT"
    if not hazy.is_dir():
        return []
    return [Sample(p.stem, _load(p, max_side), _load(gt / p.name, max_side)) for p in _images(hazy)]


#: (β, airlight) settings for synthetic outdoor haze.
SYNTH_SETTINGS = [(0.8, (0.9, 0.9, 0.9)), (1.3, (0.82, 0.84, 0.87)), (1.8, (0.95, 0.95, 0.95)), (1.5, (0.85, 0.8, 0.7))]


def synthetic_outdoor(max_side: int | None) -> tuple[list[Sample], list[str]]:
    clear: list[tuple[str, np.ndarray]] = []
    gt = DATA / "outdoor_pairs" / "GT"
    if gt.is_dir():
        first = _images(gt)[0]  # all five GT files are the same clear-day view
        clear.append(("chengdu_clear", _load(first, max_side)))
    try:
        import skimage.data as skd

        clear.append(("sk_rocket", cv2.resize(skd.rocket(), (480, 285), interpolation=cv2.INTER_AREA) / 255.0))
        cam = cv2.resize(skd.camera(), (384, 384), interpolation=cv2.INTER_AREA) / 255.0
        clear.append(("sk_camera", np.repeat(cam[..., None], 3, axis=2)))
    except ImportError:
        pass
    samples = []
    for name, j in clear:
        j = np.ascontiguousarray(j, dtype=np.float32)
        depth = vertical_gradient_depth(*j.shape[:2], near=0.2, far=1.0)
        for beta, a in SYNTH_SETTINGS:
            hazy = add_haze(j, depth, beta, np.array(a, np.float32))
            hazy = np.round(hazy * 255) / 255  # 8-bit, as a saved photo would be
            samples.append(Sample(f"{name}_b{beta}", hazy.astype(np.float32), j))
    return samples, [name for name, _ in clear]


# =========================================================================== running


def run_methods(samples: list[Sample], methods: dict[str, Method]) -> dict[str, list[tuple[np.ndarray, float]]]:
    """Per method, (output, seconds) for every sample; methods interleaved per sample."""
    results: dict[str, list[tuple[np.ndarray, float]]] = {m: [] for m in methods}
    for s in samples:
        for m, fn in methods.items():
            start = time.perf_counter()
            out = fn(s.hazy)
            results[m].append((out, time.perf_counter() - start))
    return results


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


def full_reference(samples: list[Sample], results) -> dict[str, tuple[float, float]]:
    table = {}
    for m, outs in results.items():
        scores = [score(_t(o), _t(s.clear)) for s, (o, _) in zip(samples, outs)]
        table[m] = (float(np.mean([x.psnr for x in scores])), float(np.mean([x.ssim for x in scores])))
    table["(hazy input)"] = tuple(
        float(np.mean(v)) for v in zip(*[tuple(score(_t(s.hazy), _t(s.clear))) for s in samples])
    )
    return table


def worst_tenth(values: np.ndarray, high_is_bad: bool = True) -> float:
    """The value a tenth of the photos are worse than (90th or 10th percentile)."""
    values = values[np.isfinite(values)]
    return float(np.percentile(values, 90 if high_is_bad else 10)) if values.size else float("nan")


def no_reference_table(samples: list[Sample], results) -> dict[str, dict[str, float]]:
    table = {}
    for m, outs in results.items():
        rows = np.array([change_scores(s.hazy, o) for s, (o, _) in zip(samples, outs)], np.float64)
        mp = np.array([s.hazy.shape[0] * s.hazy.shape[1] / 1e6 for s in samples])
        secs = np.array([sec for _, sec in outs])
        noise, luma, cast, dark = rows.T
        table[m] = {
            "noise_med": float(np.nanmedian(noise)),
            "noise_w10": worst_tenth(noise),
            "luma_med": float(np.median(luma)),
            "luma_lo10": worst_tenth(luma, high_is_bad=False),
            "cast_med": float(np.median(cast)),
            "cast_w10": worst_tenth(cast),
            "dark_med": float(np.median(dark)),
            "s_per_mp": float(np.median(secs / mp)),
            "per_photo": rows,
        }
    return table


# =========================================================================== contact sheets


CELL_H, CELL_W, LABEL_H = 180, 270, 18


def _cell(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    s = min(CELL_H / h, CELL_W / w)
    small = cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    cell = np.full((CELL_H, CELL_W, 3), 0.12, np.float32)
    y, x = (CELL_H - small.shape[0]) // 2, (CELL_W - small.shape[1]) // 2
    cell[y : y + small.shape[0], x : x + small.shape[1]] = small
    return cell


def _label(text: str, width: int) -> np.ndarray:
    strip = np.full((LABEL_H, width, 3), 255, np.uint8)
    cv2.putText(strip, text, (4, LABEL_H - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return strip.astype(np.float32) / 255.0


def contact_sheets(out_dir: Path, tag: str, samples: list[Sample], results, rows_per_sheet: int = 8) -> list[Path]:
    """One PNG per ``rows_per_sheet`` photos: input | each method (| GT when there is one)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    names = ["input", *results, *(["GT"] if samples and samples[0].clear is not None else [])]
    paths = []
    for k in range(0, len(samples), rows_per_sheet):
        rows = [np.concatenate([_label(n, CELL_W) for n in names], axis=1)]
        for i in range(k, min(k + rows_per_sheet, len(samples))):
            s = samples[i]
            cells = [s.hazy, *(results[m][i][0] for m in results), *([s.clear] if s.clear is not None else [])]
            rows.append(np.concatenate([_label(s.name[:40], CELL_W * len(names))], axis=1))
            rows.append(np.concatenate([_cell(c) for c in cells], axis=1))
        sheet = np.concatenate(rows, axis=0)
        path = out_dir / f"sheet_{tag}_{k // rows_per_sheet + 1}.png"
        cv2.imwrite(str(path), cv2.cvtColor((np.clip(sheet, 0, 1) * 255 + 0.5).astype(np.uint8), cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths


# =========================================================================== main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/weightfree"))
    parser.add_argument("--methods", nargs="+", help="subset of methods (default: all)")
    parser.add_argument("--max-side", type=int, help="downscale photos to this longer side first (quick runs)")
    parser.add_argument("--no-sheets", action="store_true")
    args = parser.parse_args()
    every = available_methods()
    methods = {m: every[m] for m in (args.methods or every)}
    print("command:", shlex.join([".venv/bin/python", "benchmarks/weightfree_quality.py", *sys.argv[1:]]))
    import platform

    print(f"{platform.processor() or platform.machine()}, {time.strftime('%Y-%m-%d')}")
    print(f"cv2 {cv2.__version__}, {cv2.getNumThreads()} threads, numpy {np.__version__}")

    real = real_photos(args.max_side)
    if real:
        res = run_methods(real, methods)
        table = no_reference_table(real, res)
        print(f"\nreal photos ({len(real)}; no ground truth)")
        print(
            f"{'method':<11} {'noise med':>9} {'w10':>6} {'luma med':>8} {'lo10':>6} {'cast med':>8} {'w10':>6} "
            f"{'dark med':>8} {'s/MP':>7} {'MP/s':>6}"
        )
        for m, r in table.items():
            print(
                f"{m:<11} {r['noise_med']:9.2f} {r['noise_w10']:6.2f} {r['luma_med']:8.3f} {r['luma_lo10']:6.3f} "
                f"{r['cast_med']:8.2f} {r['cast_w10']:6.2f} {r['dark_med']:8.3f} {r['s_per_mp']:7.3f} "
                f"{1 / r['s_per_mp']:6.1f}"
            )
        if "dcp" in table:
            for m, r in table.items():
                print(f"  speed {m} / dcp: {table['dcp']['s_per_mp'] / r['s_per_mp']:.2f}")
        if not args.no_sheets:
            contact_sheets(args.out, "real", real, res)
        args.out.mkdir(parents=True, exist_ok=True)
        with open(args.out / "real_per_photo.tsv", "w") as f:
            f.write("method\tphoto\tnoise\tluma\tcast\tdark\n")
            for m, r in table.items():
                f.writelines(
                    f"{m}\t{s.name}\t" + "\t".join(f"{v:.3f}" for v in row) + "\n"
                    for s, row in zip(real, r["per_photo"])
                )

    synth, sources = synthetic_outdoor(args.max_side)
    for tag, samples in (
        ("outdoor_pairs", pairs("outdoor_pairs", args.max_side)),
        ("sots_indoor", pairs("sots_indoor_sample", args.max_side)),
        ("synthetic_outdoor", synth),
    ):
        if not samples:
            continue
        res = run_methods(samples, methods)
        table = full_reference(samples, res)
        extra = f"; clear sources: {', '.join(sources)}" if tag == "synthetic_outdoor" else ""
        print(f"\n{tag} ({len(samples)} pairs{extra}): mean PSNR / SSIM (DCMPNet protocol)")
        for m, (p, s) in table.items():
            gain = f"  {p - table['dcp'][0]:+.2f} dB vs dcp" if "dcp" in table and m != "dcp" else ""
            print(f"{m:<12} {p:7.2f} {s:7.4f}{gain}")
        if not args.no_sheets:
            contact_sheets(args.out, tag, samples, res)


if __name__ == "__main__":
    main()
