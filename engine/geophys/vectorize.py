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


def _neighbours(skel: np.ndarray, r: int, c: int) -> list[tuple[int, int]]:
    """8-neighbours, skipping a diagonal step whose corner is already on the skeleton (no triangles)."""
    h, w = skel.shape
    out = []
    for dr, dc in _ORTHO:
        rr, cc = r + dr, c + dc
        if 0 <= rr < h and 0 <= cc < w and skel[rr, cc]:
            out.append((rr, cc))
    for dr, dc in _DIAG:
        rr, cc = r + dr, c + dc
        if 0 <= rr < h and 0 <= cc < w and skel[rr, cc] and not skel[r + dr, c] and not skel[r, c + dc]:
            out.append((rr, cc))
    return out


def trace_skeleton(skel: np.ndarray) -> list[np.ndarray]:
    """Pixel chains ``(k, 2)`` (row, col) between end points and junctions of a 1-pixel skeleton."""
    skel = np.asarray(skel, dtype=bool)
    pixels = [tuple(p) for p in np.argwhere(skel)]
    nbrs = {p: _neighbours(skel, *p) for p in pixels}
    nodes = {p for p, n in nbrs.items() if len(n) != 2}
    seen: set[frozenset] = set()
    paths: list[np.ndarray] = []

    def walk(start: tuple[int, int], nxt: tuple[int, int]) -> list[tuple[int, int]]:
        path, prev, cur = [start, nxt], start, nxt
        seen.add(frozenset((start, nxt)))
        while cur not in nodes and cur != start:
            step = [q for q in nbrs[cur] if q != prev and frozenset((cur, q)) not in seen]
            if not step:
                break
            seen.add(frozenset((cur, step[0])))
            prev, cur = cur, step[0]
            path.append(cur)
        return path

    for p in sorted(nodes):
        for q in nbrs[p]:
            if frozenset((p, q)) not in seen:
                paths.append(np.array(walk(p, q)))
    for p in pixels:
        for q in nbrs[p]:
            if frozenset((p, q)) not in seen:
                paths.append(np.array(walk(p, q)))
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
        line = shapely.LineString(np.c_[easting[0] + path[:, 1] * de, northing[0] + path[:, 0] * dn]).simplify(simplify_cells * cell)
        parts = [line]
        if exclude is not None and not exclude.is_empty:
            cut = line.difference(exclude)
            parts = [g for g in getattr(cut, "geoms", [cut]) if isinstance(g, shapely.LineString) and not g.is_empty]
        for part in parts:
            if part.length >= min_length_cells * cell:
                out.append(Lineament(part, float(part.length), axial_azimuth(part)))
    return out
