"""Ridge (crest) picking on gridded fields in the manner of Blakely & Simpson (1986).

Every cell is compared with its two neighbours along four directions (north-south,
east-west and both diagonals). Where it exceeds both, a parabola through the three values
gives the crest value; the number of directions with a crest (1-4) measures how ridge-like
the cell is.
"""

from __future__ import annotations

import numpy as np

_DIRECTIONS = ((1, 0), (0, 1), (1, 1), (1, -1))


def blakely_simpson(grid: np.ndarray, band: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Crest count (0-4, uint8) and largest parabolic crest value per cell (float32, NaN where
    no crest), computed in row bands of ``band`` rows (each cell needs only its 8 neighbours).

    Cells on the grid border and next to NaN cells never carry a crest.
    """
    h, w = grid.shape
    count = np.zeros((h, w), np.uint8)
    peak = np.full((h, w), np.nan, np.float32)
    for r0 in range(1, h - 1, band):
        r1 = min(h - 1, r0 + band)
        g = np.asarray(grid[r0 - 1 : r1 + 1], dtype=np.float64)
        centre = g[1:-1, 1:-1]
        best = np.full(centre.shape, -np.inf)
        n = count[r0:r1, 1:-1]
        for dr, dc in _DIRECTIONS:
            a = g[1 - dr : g.shape[0] - 1 - dr, 1 - dc : w - 1 - dc]
            c = g[1 + dr : g.shape[0] - 1 + dr, 1 + dc : w - 1 + dc]
            with np.errstate(invalid="ignore"):
                crest = (centre > a) & (centre > c)
                curvature = a - 2 * centre + c
                value = centre - (a - c) ** 2 / (8 * np.where(curvature < 0, curvature, -np.inf))
            n += crest
            np.maximum(best, np.where(crest, value, -np.inf), out=best)
        best[~np.isfinite(best)] = np.nan
        peak[r0:r1, 1:-1] = best
    return count, peak


def ridge_mask(grid: np.ndarray, min_directions: int = 2, min_value: float = -np.inf) -> np.ndarray:
    """Cells with a crest in at least ``min_directions`` directions and crest value >= ``min_value``."""
    count, peak = blakely_simpson(grid)
    with np.errstate(invalid="ignore"):
        return (count >= min_directions) & (peak >= min_value)
