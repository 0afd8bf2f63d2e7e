"""The classical lineament route over grids larger than a block, in memory bounded by a block.

The total gradient amplitude (TGA) is filtered block by block, each block from itself plus
:data:`TGA_HALO` cells (mirror-padded as the whole-grid filters are), into a zarr grid; the
threshold is the quantile of the whole stored grid; crests are picked block by block with a
one-cell halo (all a crest needs), into one boolean mask of the grid. Blocks come from
``engine.raster`` and run on its runner, serially.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from engine.geophys.ridges import ridge_mask
from engine.geophys.transforms import rtp_tga
from engine.raster.grid import block_grid
from engine.raster.runner import RunOptions, run_stage
from engine.raster.stage import BlockStage, Unit, units_of

TGA_HALO = 256
"""Cells of grid around a block that its Fourier filters see: far beyond the upward continuation
(half a cell) and the derivatives, and wide enough that the reduction to the pole (whose kernel
decays with distance) leaves no seam that moves a crest (``tests/geophys/test_blockwise.py``)."""
NAME = "total_gradient_amplitude"


class HaloStage(BlockStage):
    """A filter ``fn`` of a 2-D grid applied per block: read the block plus ``halo`` cells (cut to
    the grid), apply ``fn`` to that region, write the block's part of the result.

    Args:
        src: ``(height, width)`` input, anything numpy-sliceable (ndarray, dask, zarr array).
        out: output of the same shape that takes slice assignment (ndarray, zarr array).
        halo: cells read around each block.
        fn: region ``(rh, rw)`` → result of the same shape.
    """

    name = "halo_filter"

    def __init__(self, src: Any, out: Any, halo: int, fn: Callable[[np.ndarray], np.ndarray]):
        self.src, self.out, self.halo, self.fn = src, out, halo, fn

    def read(self, unit: Unit) -> dict[str, Any]:
        y0, y1, x0, x1 = unit.block.halo(self.halo, *self.src.shape)
        return {"region": np.asarray(self.src[y0:y1, x0:x1])}

    def compute(self, unit: Unit, data: dict[str, Any]) -> dict[str, Any]:
        b = unit.block
        y0, _, x0, _ = b.halo(self.halo, *self.src.shape)
        return {"block": self.fn(data["region"])[b.y0 - y0 : b.y0 - y0 + b.h, b.x0 - x0 : b.x0 - x0 + b.w]}

    def write(self, unit: Unit, result: dict[str, Any]) -> dict[str, Any]:
        b = unit.block
        self.out[b.y0 : b.y0 + b.h, b.x0 : b.x0 + b.w] = result["block"]
        return {}


def _tga(
    region: np.ndarray, spacing: tuple[float, float], inclination: float, declination: float, height: float
) -> np.ndarray:
    region = np.asarray(region, dtype=np.float64)
    if not np.isfinite(region).any():
        return np.full(region.shape, np.nan, np.float32)
    return rtp_tga(region, spacing, inclination, declination, height).astype(np.float32)


def _crests(region: np.ndarray, min_directions: int, level: float) -> np.ndarray:
    return ridge_mask(np.where(np.isfinite(region), region, -np.inf), min_directions, level)


def run_blocks(src: Any, out: Any, halo: int, fn: Callable[[np.ndarray], np.ndarray], block: int) -> None:
    """Apply ``fn`` to every ``block``² block of ``src`` plus ``halo`` cells, into ``out``."""
    h, w = src.shape
    run_stage(
        HaloStage(src, out, halo, fn), units_of(NAME, block_grid(h, w, block)), None, RunOptions(executor="serial")
    )


def stored_quantile(z: Any, q: float) -> float:
    """Exact ``q`` quantile of the finite cells of a stored grid (read once, as stored)."""
    values = z[:]
    values = values[np.isfinite(values)]
    return float(np.quantile(values, q, overwrite_input=True))


def blockwise_tga_ridges(
    da: xr.DataArray,
    spacing: tuple[float, float],
    inclination: float,
    declination: float,
    height: float,
    quantile: float,
    min_directions: int,
    block: int,
    work: Path,
    halo: int = TGA_HALO,
) -> tuple[xr.DataArray, np.ndarray]:
    """TGA of ``da`` (float32, dask-backed by ``work/total_gradient_amplitude.zarr``, with ``da``'s
    coordinates and attributes) and the ``(h, w)`` boolean crest mask at its ``quantile``."""
    import dask.array
    import zarr

    from engine.geophys.grid import create_zarr_grid

    zpath = create_zarr_grid(Path(work) / f"{NAME}.zarr", da, NAME, (block, block))
    tga = zarr.open_array(str(zpath / NAME), mode="r+")
    run_blocks(
        da.data,
        tga,
        halo,
        partial(_tga, spacing=spacing, inclination=inclination, declination=declination, height=height),
        block,
    )
    level = stored_quantile(tga, quantile)
    mask = np.zeros(da.shape, bool)
    run_blocks(tga, mask, 1, partial(_crests, min_directions=min_directions, level=level), block)
    return da.copy(data=dask.array.from_zarr(tga)), mask
