"""Grain outlines as GeoJSON that QuPath imports as detection objects.

QuPath reads a FeatureCollection whose features carry ``properties.objectType`` ("detection")
and ``properties.classification`` (``{"name", "color": [r, g, b]}``); coordinates are image pixels
(x right, y down). Outlines follow pixel edges, so a polygon's area equals the grain's pixel count.

A section's outlines are traced in one GDAL polygonise call over the label image: its regions are
the 8-connected components of equal class, and a region's rings depend only on which pixels are
in it (the two-arm-chains tracer builds each polygon's arcs from its own pixels), so they are the
rings :func:`outline` traces from the grain's mask alone. A row is matched to the region of its
class, bounding box and pixel count: the one component :func:`~engine.export.grains.grain_mask`
finds, since two components of one class that both span a box meet, and so are one. Rows of a
4-connected table that no 8-connected region matches are matched to 4-connected regions; rows the
labels no longer hold fall back to :func:`~engine.export.grains.grain_mask` and :func:`outline`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import chain
from typing import Any

import numpy as np
import pandas as pd
import shapely
import shapely.geometry
from rasterio.features import shapes
from rasterio.transform import Affine
from shapely.geometry.base import BaseGeometry

from engine.export.grains import bbox_of, grain_mask

MEASUREMENTS = (
    "area_px",
    "area_um2",
    "ecd_px",
    "ecd_um",
    "perimeter_px",
    "perimeter_um",
    "feret_max_px",
    "feret_min_px",
)
TRACEABLE = (np.uint8, np.uint16, np.int8, np.int16, np.int32)  # label dtypes GDAL polygonises

Key = tuple[int, int, int, int, int, int]  # class, y0, x0, y1, x1, pixel count


def outline(mask: np.ndarray, y0: int, x0: int) -> dict:
    """GeoJSON Polygon (or MultiPolygon: parts that touch only at corners are split, as valid
    GeoJSON needs) of ``mask`` ``(h, w)``
    placed at ``(y0, x0)``, along pixel edges."""
    parts = [
        shapely.geometry.shape(g)
        for g, v in shapes(mask.astype(np.uint8), mask=mask, connectivity=8, transform=Affine.translation(x0, y0))
        if v == 1
    ]
    return _finish(shapely.unary_union(parts))


def _finish(union: BaseGeometry) -> dict:
    """The GeoJSON geometry of a grain from the union of its traced parts."""
    geom = shapely.make_valid(union)  # rings touching at a corner are split
    if geom.geom_type == "GeometryCollection":
        geom = shapely.unary_union([g for g in geom.geoms if g.geom_type in ("Polygon", "MultiPolygon")])
    return dict(shapely.geometry.mapping(geom))


def grain_outlines(labels: np.ndarray, grains: pd.DataFrame) -> list[dict | None]:
    """The GeoJSON geometry of every row of ``grains`` (one section) in ``labels`` ``(y, x)``: what
    :func:`outline` draws from :func:`~engine.export.grains.grain_mask`; None where no grain
    matches the row."""
    rows = list(grains.itertuples(index=False))
    keys: list[Key] = [(int(r.class_code), *bbox_of(r), int(r.area_px)) for r in rows]
    out: list[dict | None] = [None] * len(rows)
    todo = list(range(len(rows)))
    labels = np.ascontiguousarray(labels)
    if labels.dtype.type in TRACEABLE:
        for connectivity in (8, 4):
            if not todo:
                break
            traced, polygons, regions = _trace(
                labels, _rows_mask(labels, [keys[r] for r in todo], connectivity), connectivity
            )
            found = _match(keys, regions, todo)
            _settle(out, found, traced, polygons)
            del traced, polygons
            todo = [r for r in todo if r not in found]
    for r in todo:
        y0, x0, y1, x1 = bbox_of(rows[r])
        mask = grain_mask(labels[y0:y1, x0:x1], rows[r])
        if mask is not None:
            out[r] = outline(mask, y0, x0)
    return out


def _rows_mask(labels: np.ndarray, keys: Sequence[Key], connectivity: int) -> np.ndarray:
    """Where to trace: every pixel of the rows' classes (8-connected: whole components), or for
    4-connected regions only those inside the rows' boxes (which hold their whole grains)."""
    if connectivity == 8:
        codes = sorted({k[0] for k in keys})
        if labels.dtype != np.uint8:
            return np.isin(labels, codes)
        table = np.zeros(256, bool)
        table[[c for c in codes if 0 <= c < 256]] = True
        return table[labels]
    mask = np.zeros(labels.shape, bool)
    for code, y0, x0, y1, x1, _ in keys:
        mask[y0:y1, x0:x1] |= labels[y0:y1, x0:x1] == code
    return mask


def _trace(labels: np.ndarray, mask: np.ndarray, connectivity: int) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """Every region of equal class within ``mask``: GDAL's GeoJSON polygon, the shapely polygon and
    its key as a row of an ``(n, 6)`` array."""
    found = list(shapes(labels, mask=mask, connectivity=connectivity))
    if not found:
        return [], np.empty(0, object), np.empty((0, 6), np.int64)
    rings = [ring for g, _ in found for ring in g["coordinates"]]
    ring_sizes = np.fromiter(map(len, rings), np.int64, len(rings))
    ring_counts = np.fromiter((len(g["coordinates"]) for g, _ in found), np.int64, len(found))
    n = int(ring_sizes.sum())
    coords = np.fromiter(chain.from_iterable(chain.from_iterable(rings)), np.float64, 2 * n).reshape(n, 2)
    offsets = (np.concatenate([[0], np.cumsum(ring_sizes)]), np.concatenate([[0], np.cumsum(ring_counts)]))
    polygons = shapely.from_ragged_array(shapely.GeometryType.POLYGON, coords, offsets)
    keys = np.empty((len(found), 6), np.int64)
    keys[:, 0] = [int(v) for _, v in found]
    keys[:, 1:5] = shapely.bounds(polygons)[:, [1, 0, 3, 2]]
    keys[:, 5] = shapely.area(polygons)
    return [g for g, _ in found], polygons, keys


def _match(keys: Sequence[Key], regions: np.ndarray, todo: Sequence[int]) -> dict[int, int]:
    """Row -> region for the rows ``todo`` whose key one region alone has."""
    where: dict[tuple[int, ...], int] = {}
    for i, k in enumerate(map(tuple, regions.tolist())):
        where[k] = -1 if k in where else i
    return {r: where[keys[r]] for r in todo if where.get(keys[r], -1) >= 0}


def _settle(out: list[dict | None], found: dict[int, int], traced: list[dict], polygons: np.ndarray) -> None:
    """Fill ``out`` for the matched rows. A region is one polygon, of which ``unary_union`` returns
    a copy, as ``make_valid`` does where it is valid: then GDAL's polygon is the outline."""
    if not found:
        return
    regions = np.unique(np.fromiter(found.values(), np.int64, len(found)))
    valid = shapely.is_valid(polygons[regions]).tolist()
    geometry = {int(i): traced[i] if ok else _finish(polygons[i]) for i, ok in zip(regions, valid, strict=True)}
    for r, i in found.items():
        out[r] = geometry[i]


def _number(v: Any) -> float | None:
    return None if v is None or pd.isna(v) else float(v)


def grain_features(
    labels: np.ndarray, grains: pd.DataFrame, colours: dict[int, tuple[int, int, int]]
) -> Iterator[dict]:
    """One QuPath detection feature per row of ``grains`` (one section) found in ``labels`` ``(y, x)``."""
    for row, geometry in zip(grains.itertuples(index=False), grain_outlines(labels, grains), strict=True):
        if geometry is None:
            continue
        code = int(row.class_code)
        yield {
            "type": "Feature",
            "id": f"{row.section}-{int(row.grain_id)}",
            "geometry": geometry,
            "properties": {
                "objectType": "detection",
                "name": f"grain {int(row.grain_id)}",
                "classification": {"name": str(row.class_name), "color": list(colours.get(code, (128, 128, 128)))},
                "isLocked": False,
                "measurements": {k: v for k in MEASUREMENTS if (v := _number(getattr(row, k, None))) is not None},
                "grain_id": int(row.grain_id),
                "class_code": code,
            },
        }
