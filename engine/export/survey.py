"""Survey outputs as layers QGIS opens with their CRS: grids as GeoTIFF, known deposits as GeoJSON
points (the GeoJSON ``crs`` member, which GDAL/QGIS read, carries the CRS)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from engine.errors import LodeInputError
from engine.io.atomic import atomic_write_text


def deposits_geojson(deposits_csv: str | Path, crs: str | None, out: str | Path) -> Path:
    """Points of a deposits CSV (``easting``, ``northing`` and any other columns as properties)."""
    dep = pd.read_csv(deposits_csv)
    if not {"easting", "northing"} <= set(dep.columns):
        raise LodeInputError(deposits_csv, "needs easting and northing columns")
    features = []
    for i, row in enumerate(dep.to_dict("records")):
        props = {k: (None if pd.isna(v) else v) for k, v in row.items() if k not in ("easting", "northing")}
        features.append(
            {
                "type": "Feature",
                "id": i,
                "properties": props,
                "geometry": {"type": "Point", "coordinates": [float(row["easting"]), float(row["northing"])]},
            }
        )
    doc: dict = {"type": "FeatureCollection", "features": features}
    if crs:
        doc["crs"] = {"type": "name", "properties": {"name": crs}}
    atomic_write_text(out, json.dumps(doc, default=str))
    return Path(out)
