"""Grain outlines as GeoJSON that QuPath imports as detection objects.

QuPath reads a FeatureCollection whose features carry ``properties.objectType`` ("detection")
and ``properties.classification`` (``{"name", "color": [r, g, b]}``); coordinates are image pixels
(x right, y down). Outlines follow pixel edges, so a polygon's area equals the grain's pixel count.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import shapely
import shapely.geometry
from rasterio.features import shapes
from rasterio.transform import Affine

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


def outline(mask: np.ndarray, y0: int, x0: int) -> dict:
    """GeoJSON Polygon (or MultiPolygon: parts that touch only at corners are split, as valid
    GeoJSON needs) of ``mask`` ``(h, w)``
    placed at ``(y0, x0)``, along pixel edges."""
    parts = [
        shapely.geometry.shape(g)
        for g, v in shapes(mask.astype(np.uint8), mask=mask, connectivity=8, transform=Affine.translation(x0, y0))
        if v == 1
    ]
    geom = shapely.make_valid(shapely.unary_union(parts))  # rings touching at a corner are split
    if geom.geom_type == "GeometryCollection":
        geom = shapely.unary_union([g for g in geom.geoms if g.geom_type in ("Polygon", "MultiPolygon")])
    return dict(shapely.geometry.mapping(geom))


def _number(v: Any) -> float | None:
    return None if v is None or pd.isna(v) else float(v)


def grain_features(
    labels: np.ndarray, grains: pd.DataFrame, colours: dict[int, tuple[int, int, int]]
) -> Iterator[dict]:
    """One QuPath detection feature per row of ``grains`` (one section) found in ``labels`` ``(y, x)``."""
    for row in grains.itertuples(index=False):
        y0, x0, y1, x1 = bbox_of(row)
        mask = grain_mask(labels[y0:y1, x0:x1], row)
        if mask is None:
            continue
        code = int(row.class_code)
        yield {
            "type": "Feature",
            "id": f"{row.section}-{int(row.grain_id)}",
            "geometry": outline(mask, y0, x0),
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
