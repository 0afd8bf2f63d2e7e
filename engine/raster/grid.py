"""Raster geometry: output blocks that own whole shards, halos, and the global window grids.

Two window conventions, both global so that a blocked run equals one pass over the raster:

- the *clamped* grid (:func:`window_starts`, :class:`WindowGrid`): MONAI's
  ``sliding_window_inference`` exactly (scan interval ``int(window * (1 - overlap))``,
  the last window clamped to the image edge); segmentation and lineament inference;
- the *lattice* (:func:`lattice_starts`): windows at ``offset + k * stride`` for every
  integer k, overhanging the raster edges, optionally several lattices shifted by
  :func:`lattice_offsets`; prospectivity scoring.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def window_starts(size: int, window: int, overlap: float) -> list[int]:
    """Start offsets of windows along one axis of length ``size`` (``size >= window``)."""
    if size < window:
        raise ValueError(f"axis of {size} px is shorter than the {window} px window")
    if size == window:
        return [0]
    interval = max(int(window * (1 - overlap)), 1)
    num = int(math.ceil(size / interval))
    count = next((d + 1 for d in range(num) if d * interval + window >= size), 1)
    return [i * interval - max(i * interval + window - size, 0) for i in range(count)]


def stride_starts(size: int, window: int, stride: int) -> list[int]:
    """Clamped window starts for a given stride: ``0, stride, ...`` and one flush with the end
    (:func:`window_starts` for ``overlap = 1 - stride / window``); ``[0]`` when ``size <= window``."""
    if size <= window:
        return [0]
    starts = list(range(0, size - window + 1, stride))
    return starts if starts[-1] == size - window else starts + [size - window]


def lattice_starts(e0: int, e1: int, window: int, stride: int, offset: int = 0) -> list[int]:
    """Starts ``offset + k * stride`` (any integer k) of the lattice windows that overlap ``[e0, e1)``."""
    first = math.floor((e0 - window + 1 - offset) / stride) * stride + offset
    return [s for s in range(first, e1, stride) if s + window > e0]


def lattice_offsets(shifts: int, step: int) -> tuple[tuple[int, int], ...]:
    """Lattice offsets ``{0, step, ..., (shifts - 1) * step}`` on both axes."""
    if shifts < 1:
        raise ValueError(f"shifts must be >= 1, got {shifts}")
    return tuple((i * step, j * step) for i in range(shifts) for j in range(shifts))


@dataclass(frozen=True)
class WindowGrid:
    """The global grid of square windows over an ``height × width`` image."""

    height: int
    width: int
    window: int
    overlap: float

    @property
    def ys(self) -> list[int]:
        return window_starts(self.height, self.window, self.overlap)

    @property
    def xs(self) -> list[int]:
        return window_starts(self.width, self.window, self.overlap)

    @property
    def count(self) -> int:
        return len(self.ys) * len(self.xs)

    def touching(self, y0: int, y1: int, x0: int, x1: int) -> tuple[list[int], list[int]]:
        """Window starts (rows, columns) of every window that overlaps ``[y0,y1) × [x0,x1)``."""
        w = self.window
        return ([s for s in self.ys if s < y1 and s + w > y0], [s for s in self.xs if s < x1 and s + w > x0])


BLOCK_PIXELS = 8192 * 12288
"""The most pixels of an automatic block (its model actor accumulates ``classes × height × window`` floats)."""


@dataclass(frozen=True)
class Block:
    """An output block ``[y0, y0+h) × [x0, x0+w)``; it owns whole shards of the output."""

    index: int
    y0: int
    x0: int
    h: int
    w: int

    @property
    def key(self) -> str:
        return f"{self.y0:06d}_{self.x0:06d}"

    def halo(self, halo: int, height: int, width: int) -> tuple[int, int, int, int]:
        """``(y0, y1, x0, x1)`` of the block grown by ``halo`` on every side, cut to the raster."""
        return (
            max(self.y0 - halo, 0),
            min(self.y0 + self.h + halo, height),
            max(self.x0 - halo, 0),
            min(self.x0 + self.w + halo, width),
        )


def block_grid(height: int, width: int, block: tuple[int, int] | int) -> list[Block]:
    """Row-major blocks of ``block`` size (edge blocks cropped to the image)."""
    bh, bw = (block, block) if isinstance(block, int) else block
    out: list[Block] = []
    for y0 in range(0, height, bh):
        for x0 in range(0, width, bw):
            out.append(Block(len(out), y0, x0, min(bh, height - y0), min(bw, width - x0)))
    return out


def auto_block(
    height: int, width: int, window: int, shard: int = 1024, target: int = 8192, max_block_pixels: int | None = None
) -> tuple[int, int]:
    """Block geometry: full-width strips about ``target`` high, rounded to whole shards.

    Strips only recompute windows along y, so redundant work per block is about
    ``(block + window) / block``, and a raster that fits one block (12000×8000 does) runs no window
    twice; wide images are split into as few equal columns as keep a block within
    ``max_block_pixels`` (default ``BLOCK_PIXELS``), which bounds the memory of a block in flight
    (its pixels in the object store, the model actor's accumulators and labels).
    """
    max_block_pixels = max_block_pixels or BLOCK_PIXELS

    def round_up(v: int) -> int:
        return max(shard, -(-v // shard) * shard)

    bh = min(round_up(height), round_up(target))
    columns = max(1, -(-bh * round_up(width) // max_block_pixels))
    bw = round_up(-(-width // columns))
    while bh * bw > max_block_pixels and bw > shard:
        columns += 1
        bw = round_up(-(-width // columns))
    return bh, bw


def redundancy(grid: WindowGrid, blocks: list[Block]) -> float:
    """Windows run by a blocked pass divided by the windows of one global pass."""
    total = 0
    for b in blocks:
        ys, xs = grid.touching(b.y0, b.y0 + b.h, b.x0, b.x0 + b.w)
        total += len(ys) * len(xs)
    return total / grid.count


@dataclass(frozen=True)
class PaddedGrid:
    """The window grid over an image padded (symmetrically) to at least one window."""

    height: int
    width: int
    window: int
    overlap: float

    @property
    def pad(self) -> tuple[int, int]:
        return (max(self.window - self.height, 0) // 2, max(self.window - self.width, 0) // 2)

    @property
    def grid(self) -> WindowGrid:
        return WindowGrid(max(self.height, self.window), max(self.width, self.window), self.window, self.overlap)

    def input_region(self, block: Block) -> tuple[int, int, int, int]:
        """Image rows/cols ``(y0, y1, x0, x1)`` that the windows touching ``block`` read."""
        py, px = self.pad
        ys, xs = self.grid.touching(block.y0 + py, block.y0 + block.h + py, block.x0 + px, block.x0 + block.w + px)
        w = self.window
        return (
            max(ys[0] - py, 0),
            min(ys[-1] + w - py, self.height),
            max(xs[0] - px, 0),
            min(xs[-1] + w - px, self.width),
        )
