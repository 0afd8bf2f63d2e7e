"""Blocked sliding-window inference of the lineament U-Net over survey grids of any size.

The output is cut into blocks; each block reads only the grid region its windows cover,
runs every window that touches it (global window grid, so the result equals one sliding
window over the whole grid), blends the window probabilities with Gaussian weights and
writes the block. Peak memory is the grid, the output and one block's buffers. NaN cells
(holes) are zero for the network and NaN in the output.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

from engine.geophys.model import normalise_windows


def gaussian_weights(window: int, sigma_scale: float = 0.125) -> np.ndarray:
    """Separable Gaussian blending weights peaking at the window centre (min 1e-3 of the peak)."""
    x = np.arange(window) - (window - 1) / 2
    g = np.exp(-0.5 * (x / (sigma_scale * window)) ** 2)
    w = np.outer(g, g)
    return np.maximum(w / w.max(), 1e-3).astype(np.float32)


def window_starts(size: int, window: int, stride: int) -> np.ndarray:
    """Window origins covering ``[0, size)`` with the last window flush with the end."""
    if size <= window:
        return np.array([0])
    starts = np.arange(0, size - window + 1, stride)
    return starts if starts[-1] == size - window else np.r_[starts, size - window]


def _blocks(size: int, block: int) -> Iterator[tuple[int, int]]:
    for b0 in range(0, size, block):
        yield b0, min(size, b0 + block)


@torch.no_grad()
def predict_grid(
    model: torch.nn.Module,
    grid: np.ndarray,
    window: int = 128,
    stride: int | None = None,
    block: int = 2048,
    batch_size: int = 16,
    device: torch.device | str | None = None,
    out: np.ndarray | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Axis probability (float32, NaN in holes) for a 2-D grid (array-like; sliced per block).

    Args:
        model: network mapping ``(B, 1, window, window)`` normalised windows to logits.
        grid: (northing, easting) anomaly; anything numpy-sliceable (ndarray, memmap, zarr array).
        window: window size in cells; grids smaller than it are NaN-padded.
        stride: window step (default ``window // 2``).
        block: output block size in cells.
        batch_size: windows per forward pass.
        device: torch device (default: the model's).
        out: optional preallocated float32 output (e.g. a memmap) of the grid's shape.
        progress: called as ``progress(blocks_done, blocks_total)`` after each block.
    """
    h, w = grid.shape
    stride = stride or window // 2
    device = device or next(model.parameters()).device
    weights = gaussian_weights(window)
    rows, cols = window_starts(h, window, stride), window_starts(w, window, stride)
    out = np.full((h, w), np.nan, np.float32) if out is None else out
    total, done = len(range(0, h, block)) * len(range(0, w, block)), 0
    for r0, r1 in _blocks(h, block):
        wr = rows[(rows < r1) & (rows + window > r0)]
        for c0, c1 in _blocks(w, block):
            wc = cols[(cols < c1) & (cols + window > c0)]
            y0, x0 = int(wr[0]), int(wc[0])
            y1, x1 = int(wr[-1]) + window, int(wc[-1]) + window
            region = np.full((y1 - y0, x1 - x0), np.nan, np.float32)
            src = np.asarray(grid[y0 : min(y1, h), x0 : min(x1, w)], dtype=np.float32)
            region[: src.shape[0], : src.shape[1]] = src
            acc = np.zeros_like(region)
            wsum = np.zeros_like(region)
            origins = [(int(r) - y0, int(c) - x0) for r in wr for c in wc]
            origins = [(r, c) for r, c in origins if np.isfinite(region[r : r + window, c : c + window]).any()]
            for i in range(0, len(origins), batch_size):
                chunk = origins[i : i + batch_size]
                xb = torch.from_numpy(np.stack([region[r : r + window, c : c + window] for r, c in chunk])[:, None])
                prob = torch.sigmoid(model(normalise_windows(xb.to(device)))).float().cpu().numpy()[:, 0]
                for (r, c), p in zip(chunk, prob):
                    acc[r : r + window, c : c + window] += p * weights
                    wsum[r : r + window, c : c + window] += weights
            with np.errstate(invalid="ignore", divide="ignore"):
                blend = np.where(wsum > 0, acc / wsum, np.nan)
            blend[~np.isfinite(region)] = np.nan
            out[r0:r1, c0:c1] = blend[r0 - y0 : r1 - y0, c0 - x0 : c1 - x0]
            done += 1
            if progress:
                progress(done, total)
    return out
