"""Ridge (crest) picking on gridded fields in the manner of Blakely & Simpson (1986).

Every cell is compared with its two neighbours along four directions (north-south,
east-west and both diagonals). Where it exceeds both, a parabola through the three values
gives the crest value; the number of directions with a crest (1-4) measures how ridge-like
the cell is.
"""

from __future__ import annotations

import numpy as np

_DIRECTIONS = ((1, 0), (0, 1), (1, 1), (1, -1))


def blakely_simpson(grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crest count (0-4, uint8) and largest parabolic crest value per cell (NaN where no crest).

    Cells on the grid border and next to NaN cells never carry a crest.
    """
    g = np.asarray(grid, dtype=np.float64)
    count = np.zeros(g.shape, np.uint8)
    peak = np.full(g.shape, -np.inf)
    centre = g[1:-1, 1:-1]
    for dr, dc in _DIRECTIONS:
        a = g[1 - dr : g.shape[0] - 1 - dr, 1 - dc : g.shape[1] - 1 - dc]
        c = g[1 + dr : g.shape[0] - 1 + dr, 1 + dc : g.shape[1] - 1 + dc]
        with np.errstate(invalid="ignore"):
            crest = (centre > a) & (centre > c)
            curvature = a - 2 * centre + c
            value = centre - (a - c) ** 2 / (8 * np.where(curvature < 0, curvature, -np.inf))
        count[1:-1, 1:-1] += crest
        inner = peak[1:-1, 1:-1]
        np.maximum(inner, np.where(crest, value, -np.inf), out=inner)
    peak[~np.isfinite(peak)] = np.nan
    return count, peak


def ridge_mask(grid: np.ndarray, min_directions: int = 2, min_value: float = -np.inf) -> np.ndarray:
    """Cells with a crest in at least ``min_directions`` directions and crest value >= ``min_value``."""
    count, peak = blakely_simpson(grid)
    with np.errstate(invalid="ignore"):
        return (count >= min_directions) & (peak >= min_value)
