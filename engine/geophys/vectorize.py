"""Thin masks to vector lines: skeletonise, trace 8-connected pixel chains, simplify.

Lines come back in map coordinates (x = easting, y = northing, metres) with their length and
axial azimuth (degrees clockwise from north, 0-180).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from skimage.morphology import skeletonize

_ORTHO = ((-1, 0), (1, 0), (0, -1), (0, 1))
_DIAG = ((-1, -1), (-1, 1), (1, -1), (1, 1))


@dataclass
class Lineament:
    line: shapely.LineString
    length_m: float
    azimuth_deg: float


_STEPS = _ORTHO + _DIAG
_OPPOSITE = (1, 0, 3, 2, 7, 6, 5, 4)


def _neighbour_bits(skel: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Skeleton pixels ``(N,)`` rows and cols in row-major order, and ``(N,)`` uint8 bit sets:
    bit k is set when step k of ``_STEPS`` (orthogonal first) leads to a neighbour. A diagonal
    step whose corner is already on the skeleton is left out (no triangles), which keeps the
    relation symmetric."""
    pad = np.pad(skel, 1)
    rows, cols = np.nonzero(skel)
    bits = np.zeros(len(rows), np.uint8)
    for k, (dr, dc) in enumerate(_STEPS):
        on = pad[rows + 1 + dr, cols + 1 + dc]
        if dr and dc:
            on &= ~pad[rows + 1 + dr, cols + 1] & ~pad[rows + 1, cols + 1 + dc]
        bits |= on.astype(np.uint8) << k
    return rows, cols, bits


def trace_skeleton(skel: np.ndarray) -> list[np.ndarray]:
    """Pixel chains ``(k, 2)`` (row, col) between end points and junctions of a 1-pixel skeleton.

    Memory is a few bytes per skeleton pixel (arrays, not Python objects), so a dense skeleton
    of a whole survey grid traces in bounded memory."""
    skel = np.asarray(skel, dtype=bool)
    w = skel.shape[1]
    rows, cols, bits = _neighbour_bits(skel)
    flat = rows.astype(np.int64) * w + cols
    seen = np.zeros_like(bits)
    degree = np.unpackbits(bits[:, None], axis=1).sum(axis=1)
    offsets = [dr * w + dc for dr, dc in _STEPS]

    def walk(i: int, k: int) -> np.ndarray:
        path = [i]
        while True:
            j = int(np.searchsorted(flat, flat[i] + offsets[k]))
            seen[i] |= 1 << k
            seen[j] |= 1 << _OPPOSITE[k]
            path.append(j)
            free = int(bits[j]) & ~int(seen[j])
            if j == path[0] or degree[j] != 2 or not free:
                break
            i, k = j, (free & -free).bit_length() - 1
        return np.c_[rows[path], cols[path]].astype(np.int64)

    paths: list[np.ndarray] = []

    def trace_from(starts: np.ndarray) -> None:
        for i in starts.tolist():
            while free := int(bits[i]) & ~int(seen[i]):
                paths.append(walk(i, (free & -free).bit_length() - 1))

    trace_from(np.flatnonzero(degree != 2))
    trace_from(np.flatnonzero(bits & ~seen))  # closed loops: no end point or junction
    return paths


def axial_azimuth(line: shapely.LineString) -> float:
    """Length-weighted axial mean azimuth (degrees from north, clockwise, in [0, 180))."""
    xy = np.asarray(line.coords)
    d = np.diff(xy, axis=0)
    seg = np.hypot(d[:, 0], d[:, 1])
    ang = np.arctan2(d[:, 0], d[:, 1])
    s, c = (seg * np.sin(2 * ang)).sum(), (seg * np.cos(2 * ang)).sum()
    return float(np.rad2deg(np.arctan2(s, c) / 2) % 180.0)


def mask_to_lineaments(
    mask: np.ndarray,
    northing: np.ndarray,
    easting: np.ndarray,
    min_length_cells: float = 8.0,
    simplify_cells: float = 1.0,
    exclude: shapely.Geometry | None = None,
) -> list[Lineament]:
    """Skeletonise a boolean mask and return simplified lines at least ``min_length_cells`` long.

    Args:
        mask: (northing, easting) boolean mask of line cells.
        northing, easting: cell-centre coordinates (regular, ascending).
        min_length_cells: drop lines shorter than this (after simplification).
        simplify_cells: Douglas-Peucker tolerance in cells.
        exclude: map-coordinate region no line may enter (e.g. unsurveyed holes); lines are cut there.
    """
    dn, de = float(northing[1] - northing[0]), float(easting[1] - easting[0])
    cell = float(np.sqrt(abs(dn * de)))
    out: list[Lineament] = []
    for path in trace_skeleton(skeletonize(np.asarray(mask, dtype=bool))):
        if len(path) < 2:
            continue
        line = shapely.LineString(np.c_[easting[0] + path[:, 1] * de, northing[0] + path[:, 0] * dn]).simplify(
            simplify_cells * cell
        )
        parts = [line]
        if exclude is not None and not exclude.is_empty:
            cut = line.difference(exclude)
            parts = [g for g in getattr(cut, "geoms", [cut]) if isinstance(g, shapely.LineString) and not g.is_empty]
        for part in parts:
            if part.length >= min_length_cells * cell:
                out.append(Lineament(part, float(part.length), axial_azimuth(part)))
    return out
