"""Per-frame, per-channel exposure gains by least squares over overlaps.

For every overlapping pair the mean colour of each frame over the shared area,
``I_ij`` and ``I_ji``, should agree after gains: ``g_i I_ij ≈ g_j I_ji`` (weighted
by the overlap's pixel count). The mean gain is held at 1, so the panorama keeps the
average exposure of its frames.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import lstsq


def overlap_means(
    images: list[np.ndarray | None],
    masks: list[np.ndarray | None],
    corners: list[tuple[int, int]],
    min_pixels: int = 64,
) -> list[tuple[int, int, np.ndarray, np.ndarray, int]]:
    """``(i, j, mean_i, mean_j, pixels)`` for every pair of warped frames that share pixels."""
    out = []
    n = len(images)
    for i in range(n):
        if images[i] is None:
            continue
        for j in range(i + 1, n):
            if images[j] is None:
                continue
            (xi, yi), (xj, yj) = corners[i], corners[j]
            hi, wi = masks[i].shape  # type: ignore[union-attr]
            hj, wj = masks[j].shape  # type: ignore[union-attr]
            x0, y0 = max(xi, xj), max(yi, yj)
            x1, y1 = min(xi + wi, xj + wj), min(yi + hi, yj + hj)
            if x1 <= x0 or y1 <= y0:
                continue
            si = (slice(y0 - yi, y1 - yi), slice(x0 - xi, x1 - xi))
            sj = (slice(y0 - yj, y1 - yj), slice(x0 - xj, x1 - xj))
            both = (masks[i][si] > 0) & (masks[j][sj] > 0)  # type: ignore[index]
            npx = int(both.sum())
            if npx < min_pixels:
                continue
            out.append(
                (
                    i,
                    j,
                    images[i][si][both].astype(np.float64).mean(0),  # type: ignore[index]
                    images[j][sj][both].astype(np.float64).mean(0),  # type: ignore[index]
                    npx,
                )
            )
    return out


def solve_gains(
    n: int, pairs: list[tuple[int, int, np.ndarray, np.ndarray, int]], placed: list[bool] | None = None
) -> np.ndarray:
    """Gains ``(n, c)``; frames in no pair keep 1."""
    placed = placed if placed is not None else [True] * n
    c = len(pairs[0][2]) if pairs else 3
    gains = np.ones((n, c))
    used = sorted({k for p in pairs for k in p[:2] if placed[k]})
    if not used:
        return gains
    col = {k: q for q, k in enumerate(used)}
    for ch in range(c):
        rows, rhs = [], []
        for i, j, mi, mj, npx in pairs:
            if i not in col or j not in col:
                continue
            r = np.zeros(len(used))
            w = np.sqrt(npx)
            r[col[i]], r[col[j]] = w * mi[ch], -w * mj[ch]
            rows.append(r)
            rhs.append(0.0)
        scale = np.sqrt(sum(p[4] for p in pairs)) * max(1.0, float(np.mean([p[2][ch] for p in pairs])))
        rows.append(np.full(len(used), scale / len(used)))
        rhs.append(scale)
        g, *_ = lstsq(np.array(rows), np.array(rhs))
        for k in used:
            gains[k, ch] = g[col[k]]
    return gains
