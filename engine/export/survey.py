"""Survey outputs as layers QGIS opens with their CRS, written through GDAL: vector layers (GeoPackage
or GeoJSON, by pyogrio), grids as cloud-optimised GeoTIFF (rasterio, GDAL's ``COG`` driver), known
deposits as GeoJSON points."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from engine.errors import LodeInputError
from engine.io.atomic import atomic_path, atomic_write_text

if TYPE_CHECKING:
    import shapely

DRIVERS = {".gpkg": "GPKG", ".geojson": "GeoJSON"}
GPKG_DATE = "2000-01-01T00:00:00.000Z"
"""The change date a GeoPackage records (GDAL's ``OGR_CURRENT_DATE``): fixed, so that a rerun writes
the same bytes."""


def write_vectors(
    path: str | Path,
    geometries: Sequence[shapely.Geometry],
    fields: Mapping[str, Any],
    crs: str | None,
    properties: Mapping[str, Any] | None = None,
) -> Path:
    """One layer of ``geometries`` (one type) with attribute ``fields`` (one value per geometry) to a
    GeoPackage or GeoJSON file (by suffix), atomically. An integer ``id`` field becomes the feature id
    (the GeoPackage's FID column, the GeoJSON features' ``id``); ``properties`` (GeoJSON only) become
    the collection's ``properties`` member."""
    import pyogrio
    import pyogrio.raw
    import shapely

    path = Path(path)
    driver = DRIVERS[path.suffix.lower()]
    kinds = sorted({g.geom_type for g in geometries}) or ["LineString"]
    if len(kinds) > 1:
        raise ValueError(f"one geometry type per layer, got {kinds}")
    options: dict[str, str] = {}
    if "id" in fields:
        options["ID_FIELD" if driver == "GeoJSON" else "FID"] = "id"
    if driver == "GeoJSON" and properties:
        options["FOREIGN_MEMBERS_COLLECTION"] = json.dumps({"properties": dict(properties)}, default=str)
    date = pyogrio.get_gdal_config_option("OGR_CURRENT_DATE")
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": GPKG_DATE})
    try:
        with atomic_path(path) as tmp:
            pyogrio.raw.write(
                tmp,
                shapely.to_wkb(np.asarray(geometries, dtype=object)),
                [np.asarray(v) for v in fields.values()],
                list(fields),
                layer=path.stem,
                driver=driver,
                geometry_type=kinds[0],
                crs=crs,
                layer_options=options or None,
            )
    finally:
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": date})
    return path


COG_CACHE_MB = 16


def write_cog(
    path: str | Path,
    shape: tuple[int, ...],
    read: Callable[[int, int, int, int], np.ndarray],
    crs: str,
    transform: Any,
    block: int = 512,
) -> Path:
    """A float32 cloud-optimised GeoTIFF (deflate, 512-cell tiles, averaged overviews, NaN no-data) of a
    (H, W) grid read ``read(y0, y1, x0, x1)`` block by block, atomically. GDAL writes a COG only as a
    copy, so the blocks go to a tiled scratch GeoTIFF beside ``path`` first."""
    import rasterio
    import rasterio.shutil
    from rasterio.windows import Window

    path = Path(path)
    h, w = shape
    profile = dict(
        driver="GTiff",
        height=h,
        width=w,
        count=1,
        dtype="float32",
        crs=crs,
        transform=transform,
        nodata=np.nan,
        tiled=True,
        blockxsize=512,
        blockysize=512,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    # GDAL's block cache (default 5 % of RAM) would keep the whole grid and its overviews resident;
    # blocks are written once and read back once for the copy, so a small cache serves.
    with (
        rasterio.Env(GDAL_CACHEMAX=COG_CACHE_MB),
        tempfile.TemporaryDirectory(prefix=f".{path.stem}.", dir=path.parent) as scratch,
    ):
        src = Path(scratch) / "blocks.tif"
        with rasterio.open(src, "w", **profile) as dst:
            for y0 in range(0, h, block):
                for x0 in range(0, w, block):
                    y1, x1 = min(h, y0 + block), min(w, x0 + block)
                    tile = np.asarray(read(y0, y1, x0, x1), dtype=np.float32)
                    dst.write(tile, 1, window=Window(x0, y0, x1 - x0, y1 - y0))
        with atomic_path(path) as tmp:
            rasterio.shutil.copy(
                src, tmp, driver="COG", COMPRESS="DEFLATE", PREDICTOR="YES", BLOCKSIZE=512, RESAMPLING="AVERAGE"
            )
    return path


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
