"""Tiled application of a network to images larger than memory allows.

Tiles overlap by ``overlap`` pixels and are blended with weights that ramp linearly
across each overlap, so every output pixel is a convex combination of the tiles that
cover it (no seams from hard cuts, and the low-quality rim of each tile, where the
network saw padding instead of the neighbouring pixels, gets little weight). Tile
origins lie on a grid of :data:`ALIGN` pixels so that the network's attention windows
and pooling grids fall on the same pixels as in a whole-image pass, and the last tile
of each row and column ends at the image edge (it may be shorter), so that the network
meets the image's edges exactly as in a whole-image pass. Grids use the fewest tiles,
and neighbours share exactly the overlap: tiling computes the least extra area.

:func:`normalize_tiles` is the one place where a requested tile size and overlap become
legal values: tiles are multiples of the grid and neighbours always share at least the
requested overlap (never silently less).

This module knows nothing about the network's image-global statistics
(:mod:`dcmp_cli.core.tiled_inference` handles them). Errors raised for a tile propagate:
nothing is swallowed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

#: Attention window (8) × the two 2× downsamplings (4) of the dehazing network; also a
#: multiple of the 16-pixel grids of the guide UNet and the depth network. Tile sizes
#: are multiples of it, and so are tile origins wherever the overlap leaves room.
ALIGN = 32
#: The network's own size multiple (two 2× downsamplings): the finest step between tile
#: origins (used only when a tile is too small to step by :data:`ALIGN` and keep its
#: overlap), and the grid of the tile cores over which statistics are accumulated.
FINE_STEP = 4

TileFn = Callable[[torch.Tensor], torch.Tensor]
#: (done, total) progress within one image, e.g. tiles.
ProgressFn = Callable[[int, int], None]


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


class TileRequestError(ValueError):
    """A tile size or overlap that cannot be honoured."""


@dataclass(frozen=True)
class TileRequest:
    """A normalised tile request.

    ``tile``: None = choose automatically, 0 = whole image, else the tile side in pixels
    (a multiple of :data:`ALIGN`). ``overlap``: the least number of pixels neighbouring
    tiles share, as requested. ``note``: one line saying what was changed or what to
    expect, else None.
    """

    tile: int | None
    overlap: int
    note: str | None = None


def min_tile_for(overlap: int, align: int = ALIGN) -> int:
    """Smallest tile side (a multiple of ``align``) that can share ``overlap`` pixels with its neighbours."""
    return max(align, round_up(overlap + FINE_STEP, align))


def tile_stride(tile: int, overlap: int, align: int = ALIGN) -> int:
    """Step between tile origins: the largest multiple of ``align`` (else of :data:`FINE_STEP`) ≤ tile − overlap."""
    gap = tile - overlap
    step = align if gap >= align else FINE_STEP
    stride = gap // step * step
    if stride < FINE_STEP:
        raise TileRequestError(
            f"tiles of {tile} pixels cannot share a {overlap}-pixel overlap; "
            f"use tiles of at least {min_tile_for(overlap, align)} pixels"
        )
    return stride


def normalize_tiles(tile: int | None, overlap: int, align: int = ALIGN) -> TileRequest:
    """Turns a requested tile size and overlap into legal ones, or raises :class:`TileRequestError`.

    ``tile``: None (automatic), 0 (whole image) or N ≥ ``align`` pixels. N is rounded
    down to a multiple of ``align``, and raised to :func:`min_tile_for` the overlap when
    the overlap would leave no room to step. ``overlap`` (≥ 0) is always kept:
    neighbouring tiles share at least that many pixels. ``note`` says what changed, or
    that tiles step off the ``align`` grid (tile − overlap < ``align``), which costs a
    little agreement with the whole-image output.
    """
    if overlap < 0:
        raise TileRequestError(f"tile overlap must be ≥ 0 pixels, got {overlap}")
    if tile is None or tile == 0:
        return TileRequest(tile, overlap)
    if tile < align:
        raise TileRequestError(f"tile size must be 0 (whole image) or at least {align} pixels, got {tile}")
    rounded = tile // align * align
    legal = max(rounded, min_tile_for(overlap, align))
    if legal > rounded:
        note = f"tile size {tile} raised to {legal} to keep the {overlap}-pixel overlap"
    elif legal < tile:
        note = f"tile size {tile} rounded down to {legal}, the {align}-pixel grid"
    else:
        note = None
    stride = tile_stride(legal, overlap, align)
    if stride % align:
        note = (f"{note}; " if note else "") + (
            f"{legal}-pixel tiles step by {stride} to keep the {overlap}-pixel overlap, off the {align}-pixel grid "
            "(slightly less exact)"
        )
    return TileRequest(legal, overlap, note)


@dataclass(frozen=True)
class TileGrid:
    """Tile placement over a (height, width) image.

    ``ys``/``xs``: tile origins; ``heights``/``widths``: the tile extents along each axis
    (the nominal ``size`` except the last, which ends at the image edge).
    """

    height: int
    width: int
    size: tuple[int, int]
    ys: tuple[int, ...]
    xs: tuple[int, ...]
    overlap: int

    def __len__(self) -> int:
        return len(self.ys) * len(self.xs)

    @property
    def heights(self) -> tuple[int, ...]:
        return tuple(min(self.size[0], self.height - y) for y in self.ys)

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(min(self.size[1], self.width - x) for x in self.xs)

    def tiles(self) -> Iterator[tuple[int, int, int, int]]:
        """(y, x, tile height, tile width) of every tile, row by row."""
        for y, th in zip(self.ys, self.heights):
            for x, tw in zip(self.xs, self.widths):
                yield y, x, th, tw

    def origins(self) -> Iterator[tuple[int, int]]:
        for y, x, _, _ in self.tiles():
            yield y, x

    def cores(self, height: int, width: int, step: int = FINE_STEP) -> dict[tuple[int, int], tuple[int, int, int, int]]:
        """Each tile's core: windows that partition [0, height) × [0, width) exactly.

        Keys are tile origins; values (top, bottom, left, right) in the tile's own pixels.
        Core edges between neighbours lie on the ``step`` grid mid-way through their
        overlap (rounded down), so every pixel belongs to the tile that sees most context
        around it. ``height``/``width`` may exceed the image by the network's own padding.
        """
        rows = _core_spans(self.ys, self.heights, height, step)
        cols = _core_spans(self.xs, self.widths, width, step)
        return {
            (y, x): (top - y, bottom - y, left - x, right - x)
            for y, (top, bottom) in zip(self.ys, rows)
            for x, (left, right) in zip(self.xs, cols)
        }


def _core_spans(starts: tuple[int, ...], lengths: tuple[int, ...], end: int, step: int) -> list[tuple[int, int]]:
    """[lo, hi) per tile, partitioning [0, end): boundaries on the ``step`` grid, inside each overlap."""
    edges = [0]
    for before, length, start in zip(starts, lengths, starts[1:]):
        middle = (start + before + length) // 2 // step * step
        edges.append(min(max(middle, start), end))
    edges.append(end)
    return list(zip(edges, edges[1:]))


def _axis(length: int, tile: int, overlap: int, align: int) -> tuple[tuple[int, ...], int]:
    """Origins and extent of the fewest tiles of ≤ ``tile`` covering [0, length), neighbours sharing ``overlap``.

    The count is the least that tiles stepping by :func:`tile_stride` need; the step is then
    the smallest one on that stride's grid with which that count still reaches the end, so
    every tile but the last spans step + ``overlap`` pixels, neighbours share exactly
    ``overlap``, and the last one ends at the image edge (shorter, but longer than the
    overlap). The tiles cover length + (count − 1) × overlap pixels, the least possible.
    """
    if tile >= length:
        return (0,), length
    stride = tile_stride(tile, overlap, align)
    unit = align if stride % align == 0 else FINE_STEP
    count = -(-(length - overlap) // stride)
    step = round_up(-(-(length - overlap) // count), unit)
    return tuple(i * step for i in range(count)), step + overlap


def plan_tiles(height: int, width: int, tile: int, overlap: int, align: int = ALIGN) -> TileGrid:
    """The fewest tiles of at most ``tile``² pixels over a (height, width) image; neighbours share ``overlap``.

    Origins lie on the ``align`` grid (where the overlap leaves room, see
    :func:`normalize_tiles`), as the network's attention windows and poolings do in a
    whole-image pass; the last tile of a row or column ends at the image edge, so that the
    network meets that edge as in a whole-image pass (no padding to the grid). Tiles may
    be smaller than ``tile`` where that takes no more of them (:func:`_axis`).
    ``tile`` and ``overlap`` go through :func:`normalize_tiles` (an unaligned tile is
    rounded down to the grid; an overlap the tile cannot keep raises
    :class:`TileRequestError`).
    """
    request = normalize_tiles(tile, overlap, align)
    if not request.tile:
        raise TileRequestError(f"tile size must be at least {align} pixels to plan tiles, got {tile}")
    if request.tile > tile:
        raise TileRequestError(
            f"tiles of {tile} pixels cannot share a {overlap}-pixel overlap; "
            f"use tiles of at least {request.tile} pixels"
        )
    ys, th = _axis(height, request.tile, overlap, align)
    xs, tw = _axis(width, request.tile, overlap, align)
    return TileGrid(height, width, (th, tw), ys, xs, overlap)


def _ramp(length: int, ramp_in: int, ramp_out: int, device: torch.device) -> torch.Tensor:
    """1-D weights: rising over ``ramp_in`` samples, flat, falling over ``ramp_out``; never 0."""
    w = torch.ones(length, device=device)
    if ramp_in:
        w[:ramp_in] = torch.linspace(1.0 / (ramp_in + 1), 1.0, ramp_in + 1, device=device)[:-1]
    if ramp_out:
        w[length - ramp_out :] = torch.linspace(1.0, 1.0 / (ramp_out + 1), ramp_out + 1, device=device)[1:]
    return w


def _axis_weights(starts: tuple[int, ...], lengths: tuple[int, ...], i: int, device: torch.device) -> torch.Tensor:
    """Weights along one axis of tile ``i``: ramps across the overlaps with its neighbours."""
    ramp_in = 0 if i == 0 else max(0, starts[i - 1] + lengths[i - 1] - starts[i])
    ramp_out = 0 if i == len(starts) - 1 else max(0, starts[i] + lengths[i] - starts[i + 1])
    return _ramp(lengths[i], ramp_in, ramp_out, device)


def _axis_weight_sum(
    starts: tuple[int, ...], lengths: tuple[int, ...], size: int, device: torch.device
) -> torch.Tensor:
    """(size,) sum of the axis weights of every tile along one axis."""
    total = torch.zeros(size, device=device)
    for i, (start, length) in enumerate(zip(starts, lengths)):
        total[start : start + length] += _axis_weights(starts, lengths, i, device)
    return total


def blend_weights(grid: TileGrid, y: int, x: int, device: torch.device) -> torch.Tensor:
    """(1, 1, th, tw) weights of the tile at (y, x): ramps only where a neighbour overlaps."""
    wy = _axis_weights(grid.ys, grid.heights, grid.ys.index(y), device)
    wx = _axis_weights(grid.xs, grid.widths, grid.xs.index(x), device)
    return (wy[:, None] * wx[None, :])[None, None]


def tile_batches(grid: TileGrid, batch_tiles: int) -> Iterator[list[tuple[int, int, int, int]]]:
    """The grid's tiles in row order, in batches of at most ``batch_tiles`` tiles of one shape."""
    batch: list[tuple[int, int, int, int]] = []
    for tile in grid.tiles():
        if batch and (len(batch) == batch_tiles or batch[0][2:] != tile[2:]):
            yield batch
            batch = []
        batch.append(tile)
    if batch:
        yield batch


def tiled_apply(
    fn: TileFn,
    x: torch.Tensor,
    tile: int,
    overlap: int,
    *,
    batch_tiles: int = 1,
    progress: ProgressFn | None = None,
    align: int = ALIGN,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Applies ``fn`` ((N, C, th, tw) -> (N, C_out, th, tw)) tile by tile to x (1, C, H, W).

    Up to ``batch_tiles`` tiles of equal shape go through ``fn`` together. The blended
    result is float32 (1, C_out, H, W) on x's device, written into ``out`` when given
    (a float32 buffer of that shape, e.g. a view into a batch's result) and returned.
    Memory beyond ``fn``'s: the result alone. Tiles are accumulated into it in place and
    the blend weights, products of one ramp per axis, are normalised by two 1-D sums.
    """
    if x.shape[0] != 1:
        raise ValueError(f"tiled inference takes one image at a time, got a batch of {x.shape[0]}")
    height, width = x.shape[2:]
    grid = plan_tiles(height, width, tile, overlap, align)
    done = 0
    for batch in tile_batches(grid, batch_tiles):
        th, tw = batch[0][2:]
        result = fn(torch.cat([x[:, :, y : y + th, x0 : x0 + tw] for y, x0, _, _ in batch]))
        if out is None:
            out = torch.zeros(1, result.shape[1], height, width, device=x.device)
        elif done == 0:
            out.zero_()
        for i, (y, x0, _, _) in enumerate(batch):
            w = blend_weights(grid, y, x0, x.device)
            out[:, :, y : y + th, x0 : x0 + tw].addcmul_(result[i : i + 1].float(), w)
        del result
        done += len(batch)
        if progress is not None:
            progress(done, len(grid))
    assert out is not None
    out.div_(_axis_weight_sum(grid.ys, grid.heights, height, x.device).view(1, 1, height, 1))
    out.div_(_axis_weight_sum(grid.xs, grid.widths, width, x.device).view(1, 1, 1, width))
    return out
