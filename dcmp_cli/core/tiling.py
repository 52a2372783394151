"""Tiled application of a network to images larger than memory allows.

Tiles overlap by ``overlap`` pixels and are blended with weights that ramp linearly
across each overlap, so every output pixel is a convex combination of the tiles that
cover it (no seams from hard cuts, and the low-quality rim of each tile, where the
network saw reflected padding, gets little weight). Tile origins lie on a grid of
:data:`ALIGN` pixels so that the network's attention windows and pooling grids fall on
the same pixels as in a whole-image pass; the image is reflect-padded to that grid
first and cropped back at the end.

This module knows nothing about the network's image-global statistics; the predictor
(:mod:`dcmp_cli.core.predictor`) records them on the whole image and replays them in
every tile. Errors raised for a tile propagate: nothing is swallowed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

#: Attention window (8) × the two 2× downsamplings (4) of the dehazing network; also a
#: multiple of the 16-pixel grids of the guide UNet and the depth network.
ALIGN = 32

TileFn = Callable[[torch.Tensor], torch.Tensor]
#: (done, total) progress within one image, e.g. tiles.
ProgressFn = Callable[[int, int], None]


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


@dataclass(frozen=True)
class TileGrid:
    """Tile placement over an image padded to (height, width).

    ``size``: (tile height, tile width); ``ys``/``xs``: tile origins.
    """

    height: int
    width: int
    size: tuple[int, int]
    ys: tuple[int, ...]
    xs: tuple[int, ...]
    overlap: int

    def __len__(self) -> int:
        return len(self.ys) * len(self.xs)

    def origins(self) -> Iterator[tuple[int, int]]:
        for y in self.ys:
            for x in self.xs:
                yield y, x


def _starts(length: int, tile: int, overlap: int, align: int) -> tuple[int, ...]:
    """Aligned origins covering [0, length) with tiles of ``tile`` overlapping by ≥ ``overlap``."""
    if tile >= length:
        return (0,)
    stride = max(align, (tile - overlap) // align * align)
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return tuple(sorted(set(starts)))


def plan_tiles(height: int, width: int, tile: int, overlap: int, align: int = ALIGN) -> TileGrid:
    """Tiles of at most ``tile``² pixels (rounded to ``align``) over an image padded to ``align``."""
    if tile < align:
        raise ValueError(f"tile size {tile} is below the minimum of {align} pixels")
    if overlap < 0 or overlap >= tile:
        raise ValueError(f"tile overlap {overlap} must lie in [0, tile size {tile})")
    padded_h, padded_w = round_up(height, align), round_up(width, align)
    tile = tile // align * align
    th, tw = min(tile, padded_h), min(tile, padded_w)
    return TileGrid(
        padded_h, padded_w, (th, tw), _starts(padded_h, th, overlap, align), _starts(padded_w, tw, overlap, align), overlap
    )


def _ramp(length: int, ramp_in: int, ramp_out: int, device: torch.device) -> torch.Tensor:
    """1-D weights: rising over ``ramp_in`` samples, flat, falling over ``ramp_out``; never 0."""
    w = torch.ones(length, device=device)
    if ramp_in:
        w[:ramp_in] = torch.linspace(1.0 / (ramp_in + 1), 1.0, ramp_in + 1, device=device)[:-1]
    if ramp_out:
        w[length - ramp_out :] = torch.linspace(1.0, 1.0 / (ramp_out + 1), ramp_out + 1, device=device)[1:]
    return w


def blend_weights(grid: TileGrid, y: int, x: int, device: torch.device) -> torch.Tensor:
    """(1, 1, th, tw) weights of the tile at (y, x): ramps only where a neighbour overlaps."""
    th, tw = grid.size
    first_y, last_y = y == grid.ys[0], y == grid.ys[-1]
    first_x, last_x = x == grid.xs[0], x == grid.xs[-1]

    def overlap_before(starts: tuple[int, ...], origin: int, size: int) -> int:
        i = starts.index(origin)
        return 0 if i == 0 else max(0, starts[i - 1] + size - origin)

    def overlap_after(starts: tuple[int, ...], origin: int, size: int) -> int:
        i = starts.index(origin)
        return 0 if i == len(starts) - 1 else max(0, origin + size - starts[i + 1])

    wy = _ramp(th, 0 if first_y else overlap_before(grid.ys, y, th), 0 if last_y else overlap_after(grid.ys, y, th), device)
    wx = _ramp(tw, 0 if first_x else overlap_before(grid.xs, x, tw), 0 if last_x else overlap_after(grid.xs, x, tw), device)
    return (wy[:, None] * wx[None, :])[None, None]


def pad_to_grid(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pads (B, C, h, w) on the bottom/right to (height, width): reflect where possible, else edge."""
    pad_h, pad_w = height - x.shape[2], width - x.shape[3]
    if not pad_h and not pad_w:
        return x
    mode = "reflect" if pad_h < x.shape[2] and pad_w < x.shape[3] else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


def tiled_apply(
    fn: TileFn,
    x: torch.Tensor,
    tile: int,
    overlap: int,
    *,
    batch_tiles: int = 1,
    progress: ProgressFn | None = None,
    align: int = ALIGN,
) -> torch.Tensor:
    """Applies ``fn`` ((N, C, th, tw) -> (N, C_out, th, tw)) tile by tile to x (1, C, H, W).

    ``batch_tiles`` tiles go through ``fn`` together. The blended result is returned
    as float32 (1, C_out, H, W) on x's device.
    """
    if x.shape[0] != 1:
        raise ValueError(f"tiled inference takes one image at a time, got a batch of {x.shape[0]}")
    height, width = x.shape[2:]
    grid = plan_tiles(height, width, tile, overlap, align)
    padded = pad_to_grid(x, grid.height, grid.width)
    th, tw = grid.size
    out: torch.Tensor | None = None
    weight_sum = torch.zeros(1, 1, grid.height, grid.width, device=x.device)
    origins = list(grid.origins())
    done = 0
    for start in range(0, len(origins), batch_tiles):
        group = origins[start : start + batch_tiles]
        batch = torch.cat([padded[:, :, y : y + th, x0 : x0 + tw] for y, x0 in group])
        result = fn(batch).float()
        if out is None:
            out = torch.zeros(1, result.shape[1], grid.height, grid.width, device=x.device)
        for i, (y, x0) in enumerate(group):
            w = blend_weights(grid, y, x0, x.device)
            out[:, :, y : y + th, x0 : x0 + tw] += result[i : i + 1] * w
            weight_sum[:, :, y : y + th, x0 : x0 + tw] += w
        done += len(group)
        if progress is not None:
            progress(done, len(origins))
    assert out is not None
    return (out / weight_sum)[:, :, :height, :width]
