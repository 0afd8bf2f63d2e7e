"""``shapely.make_valid`` of polygons traced along pixel edges: the same geometry, sooner.

GEOS's linework ``MakeValidPoly`` (GEOS 3.14 ``operation/valid/MakeValid.cpp``) nodes the polygon's
boundary into cut edges, then builds an area from the cut edges, symmetric-differences it into the
result and takes the area's boundary off the cut edges, until no area is left to build; the noded
boundary's points are also overlaid with the boundary's to find points lost in noding. The area
building and the symmetric differences are what shape the result and are done here with the same
GEOS calls. The two other overlays only decide emptiness or drop lines that lie wholly on the
area's boundary; with integer, axis-parallel coordinates (pixel outlines) those questions are
settled exactly on vertices and unit pixel edges, and the overlay is run on what is left. Anything
else goes to ``shapely.make_valid``.
"""

from __future__ import annotations

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

AREAS = ("Polygon", "MultiPolygon")
LINES = ("LineString", "MultiLineString")


def make_valid(geom: BaseGeometry, valid: bool | None = None) -> BaseGeometry:
    """``shapely.make_valid(geom)`` exactly; ``valid``: whether ``geom`` is known to be valid."""
    if valid is None:
        valid = bool(shapely.is_valid(geom))
    if valid or geom.geom_type != "Polygon":
        return shapely.make_valid(geom)
    bound = shapely.boundary(geom)
    cut = shapely.union(bound, shapely.points(shapely.get_coordinates(bound)[0]))
    if cut.geom_type not in LINES or not _holds_points(cut, bound):
        return shapely.make_valid(geom)
    area: BaseGeometry = shapely.Polygon()
    while not cut.is_empty:
        new = shapely.build_area(cut)
        if new.is_empty:
            break
        if not _overlaid(area, new):
            return shapely.make_valid(geom)
        area = shapely.symmetric_difference(area, new)
        new_bound = shapely.boundary(new)
        rest = _off(cut, new_bound)
        if rest is not None and rest.is_empty:
            cut = rest
        else:
            cut = shapely.difference(cut if rest is None else rest, new_bound)
        if not (cut.is_empty or cut.geom_type in LINES):
            return shapely.make_valid(geom)
    parts = [g for g in (area, cut) if not g.is_empty]
    return parts[0] if len(parts) == 1 else shapely.GeometryCollection(parts)


def _overlaid(area: BaseGeometry, new: BaseGeometry) -> bool:
    """Whether shapely's symmetric difference of ``area`` and ``new`` is the overlay GEOS runs
    there (shapely merely combines two parts whose envelopes are disjoint)."""
    if new.geom_type not in AREAS:
        return False
    if area.is_empty:
        return True
    ax0, ay0, ax1, ay1 = area.bounds
    bx0, by0, bx1, by1 = new.bounds
    return area.geom_type in AREAS and ax0 <= bx1 and bx0 <= ax1 and ay0 <= by1 and by0 <= ay1


def _grid(*geoms: BaseGeometry) -> tuple[float, float, int] | None:
    """Origin and row width of integer codes for the vertices of ``geoms``; None unless every
    coordinate is a finite integer and the codes fit int64."""
    x0, y0, x1, y1 = shapely.total_bounds(list(geoms))
    if not np.isfinite([x0, y0, x1, y1]).all():
        return None
    width = int(x1 - x0) + 2
    if width * (int(y1 - y0) + 2) >= 2**60:
        return None
    if not all(np.array_equal(xy, np.round(xy)) for xy in map(shapely.get_coordinates, geoms)):
        return None
    return x0, y0, width


def _holds_points(noded: BaseGeometry, lines: BaseGeometry) -> bool:
    """Whether every vertex of ``lines`` is a vertex of ``noded`` (GEOS then finds no collapsed
    points); False where the coordinates are not integers."""
    grid = _grid(noded, lines)
    if grid is None:
        return False
    x0, y0, width = grid
    a, b = ((xy - (x0, y0)).astype(np.int64) for xy in map(shapely.get_coordinates, (lines, noded)))
    return bool(_within(a[:, 1] * width + a[:, 0], b[:, 1] * width + b[:, 0]).all())


def _within(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Whether each of ``a`` is in ``b`` (``np.isin`` for int64 codes, by sort and search)."""
    b = np.sort(b)
    i = np.minimum(np.searchsorted(b, a), len(b) - 1)
    return b[i] == a if len(b) else np.zeros(len(a), bool)


def _unit_edges(lines: BaseGeometry, x0: float, y0: float, width: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Codes of the unit pixel edges along ``lines`` and the index of the line each lies on; None
    unless every segment is axis-parallel and of non-zero length."""
    xy, part = shapely.get_coordinates(shapely.get_parts(lines), return_index=True)
    same = part[1:] == part[:-1]
    a, b, line = xy[:-1][same], xy[1:][same], part[1:][same]
    vertical = a[:, 0] == b[:, 0]
    if not (vertical | (a[:, 1] == b[:, 1])).all():
        return None
    length = np.abs(b - a).sum(axis=1).astype(np.int64)
    if (length == 0).any():
        return None
    start = (np.minimum(a, b) - (x0, y0)).astype(np.int64)
    up = np.repeat(vertical.astype(np.int64), length)
    step = np.arange(int(length.sum())) - np.repeat(np.cumsum(length) - length, length)
    x = np.repeat(start[:, 0], length) + step * (1 - up)
    y = np.repeat(start[:, 1], length) + step * up
    return (y * width + x) * 2 + up, np.repeat(line, length)


def _off(cut: BaseGeometry, bound: BaseGeometry) -> BaseGeometry | None:
    """The lines of ``cut`` that do not lie wholly on ``bound`` (empty where none); None where
    that cannot be told on unit pixel edges.

    ``difference(cut, bound)`` equals ``difference(_off(cut, bound), bound)``: a dropped line lies
    on ``bound``, so every node it gave a kept line ``bound`` gives too, and none of its own edges
    is in the result."""
    grid = _grid(cut, bound)
    if grid is None:
        return None
    mine, theirs = _unit_edges(cut, *grid), _unit_edges(bound, *grid)
    if mine is None or theirs is None:
        return None
    lines = shapely.get_parts(cut)
    codes, line = mine
    left = np.bincount(line[~_within(codes, theirs[0])], minlength=len(lines)) > 0
    return shapely.multilinestrings(lines[left]) if left.any() else shapely.LineString()
