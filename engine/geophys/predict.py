"""Lineament inference as a raster block stage: the U-Net's sliding windows over a survey grid of any size.

Each output block reads the grid region its windows cover (the global clamped window grid of
``engine.raster``, so the result equals one sliding window over the whole grid), runs every
window that touches it on the model actor, blends the window probabilities with the raster
engine's Gaussian kernel and writes its whole chunk of the probability grid. NaN cells (holes)
are zero for the network and NaN in the output; a window without a finite cell is skipped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.raster.blend import blend_weights
from engine.raster.grid import block_grid, stride_starts
from engine.raster.runner import RunOptions, run_stage
from engine.raster.stage import BlockStage, Unit, units_of

PEAK_FLOOR = 1e-3


@dataclass(frozen=True)
class GridRef:
    """A survey grid on disk, opened lazily where it is read (path, variable, chunk size)."""

    path: str
    variable: str | None = None
    chunk: int | None = None

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Cells ``[y0, y1) × [x0, x1)`` of the normalised grid as float32."""
        region = _opened(self)[y0:y1, x0:x1].compute(scheduler="synchronous")
        return np.asarray(region.values, dtype=np.float32)


_OPEN: dict[GridRef, Any] = {}


def _opened(ref: GridRef):
    if ref not in _OPEN:
        from engine.geophys.grid import open_grid

        _OPEN[ref] = open_grid(ref.path, ref.variable, ref.chunk)
    return _OPEN[ref]


class LineamentStage(BlockStage):
    """U-Net windows (actor) → Gaussian blend → the block of the axis-probability grid.

    Args:
        grid: the input, a :class:`GridRef` (Ray runs) or a numpy-sliceable array (serial runs).
        shape: ``(height, width)`` of the grid.
        out: the output, ``(zarr grid path, variable)`` or a preallocated float32 array (serial runs).
        window, stride: window size and step in cells.
        batch_size: windows per forward pass (default: 16 on a GPU, 4 on a CPU, where larger
            batches cost memory and gain little speed).
        checkpoint: a lineament checkpoint, built in :meth:`setup`; or ``net``, a module used as is.
    """

    name = "lineaments"
    model = True

    def __init__(
        self,
        grid: Any,
        shape: tuple[int, int],
        out: Any,
        window: int,
        stride: int,
        batch_size: int | None = None,
        checkpoint: str | None = None,
        net: Any = None,
        threads: int | None = None,
    ):
        self.grid, self.shape, self.out = grid, shape, out
        self.window, self.stride, self.batch_size = window, stride, batch_size
        self.checkpoint, self.net, self.threads = checkpoint, net, threads
        self.device: Any = None

    def _span(self, b0: int, size: int, total: int) -> tuple[list[int], int, int]:
        starts = [s for s in stride_starts(total, self.window, self.stride) if s < b0 + size and s + self.window > b0]
        return starts, starts[0], starts[-1] + self.window

    def size_bytes(self, unit: Unit) -> int:
        return 4 * (unit.block.h + 2 * self.window) * (unit.block.w + 2 * self.window)

    def read(self, unit: Unit) -> dict[str, Any]:
        """The cells the block's windows cover, ``(y1 - y0, x1 - x0)`` float32 cut to the grid."""
        b, (h, w) = unit.block, self.shape
        _, y0, y1 = self._span(b.y0, b.h, h)
        _, x0, x1 = self._span(b.x0, b.w, w)
        if isinstance(self.grid, GridRef):
            region = self.grid.read(y0, min(y1, h), x0, min(x1, w))
        else:
            region = np.asarray(self.grid[y0 : min(y1, h), x0 : min(x1, w)], dtype=np.float32)
        return {"region": region}

    def setup(self, device: str) -> None:
        import torch

        if self.device is not None:
            return
        self.batch_size = self.batch_size or (16 if device.startswith("cuda") else 4)
        if self.net is None:
            from engine.geophys.model import load_inference_model

            if self.checkpoint is None:
                raise ValueError("a lineament stage needs a checkpoint or a loaded net")
            self.net = load_inference_model(self.checkpoint, device)
            self.device = torch.device(device)
        else:
            self.device = next(self.net.parameters()).device
        if self.device.type == "cpu":
            self.threads = self.threads or os.cpu_count() or 1

    def compute(self, unit: Unit, data: dict[str, Any]) -> dict[str, Any]:
        """Blend ``(block.h, block.w)`` float32 probabilities (NaN in holes) and the windows run."""
        import torch

        from engine.geophys.model import normalise_windows

        if self.threads:
            torch.set_num_threads(self.threads)
        b, (h, w), win = unit.block, self.shape, self.window
        rows, y0, y1 = self._span(b.y0, b.h, h)
        cols, x0, x1 = self._span(b.x0, b.w, w)
        region = np.full((y1 - y0, x1 - x0), np.nan, np.float32)
        src = data["region"]
        region[: src.shape[0], : src.shape[1]] = src
        weights = blend_weights(win, "gaussian", peak_floor=PEAK_FLOOR)
        acc = np.zeros_like(region)
        wsum = np.zeros_like(region)
        origins = [(r - y0, c - x0) for r in rows for c in cols]
        origins = [(r, c) for r, c in origins if np.isfinite(region[r : r + win, c : c + win]).any()]
        batch = self.batch_size or 4
        with torch.no_grad():
            for i in range(0, len(origins), batch):
                chunk = origins[i : i + batch]
                xb = torch.from_numpy(np.stack([region[r : r + win, c : c + win] for r, c in chunk])[:, None])
                prob = torch.sigmoid(self.net(normalise_windows(xb.to(self.device)))).float().cpu().numpy()[:, 0]
                for (r, c), p in zip(chunk, prob):
                    acc[r : r + win, c : c + win] += p * weights
                    wsum[r : r + win, c : c + win] += weights
        with np.errstate(invalid="ignore", divide="ignore"):
            blend = np.where(wsum > 0, acc / wsum, np.nan).astype(np.float32)
        blend[~np.isfinite(region)] = np.nan
        return {
            "prob": np.ascontiguousarray(blend[b.y0 - y0 : b.y0 - y0 + b.h, b.x0 - x0 : b.x0 - x0 + b.w]),
            "windows": len(origins),
        }

    def write(self, unit: Unit, result: dict[str, Any]) -> dict[str, Any]:
        b, prob = unit.block, np.asarray(result["prob"], dtype=np.float32)
        if isinstance(self.out, tuple):
            from engine.geophys.grid import write_zarr_block

            write_zarr_block(self.out[0], self.out[1], b.y0, b.x0, prob)
        else:
            self.out[b.y0 : b.y0 + b.h, b.x0 : b.x0 + b.w] = prob
        return {"windows": int(result["windows"])}


def predict_grid(
    model: Any,
    grid: Any,
    window: int = 128,
    stride: int | None = None,
    block: int = 2048,
    batch_size: int | None = 16,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Axis probability (float32, NaN in holes) of a 2-D grid, in this process (the stage run serially).

    Args:
        model: network mapping ``(B, 1, window, window)`` normalised windows to logits (on its device).
        grid: (northing, easting) anomaly; anything numpy-sliceable (ndarray, memmap, zarr or xarray array).
        window: window size in cells; grids smaller than it are NaN-padded.
        stride: window step (default ``window // 2``).
        block: output block size in cells.
        batch_size: windows per forward pass.
        out: optional preallocated float32 output (e.g. a memmap) of the grid's shape.
    """
    h, w = grid.shape
    out = np.full((h, w), np.nan, np.float32) if out is None else out
    stage = LineamentStage(grid, (h, w), out, window, stride or window // 2, batch_size, net=model, threads=None)
    run_stage(stage, units_of("axis_probability", block_grid(h, w, block)), None, RunOptions(executor="serial"))
    return out
