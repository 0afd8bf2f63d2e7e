"""Point samples (soil and rock geochemistry, drill-collar assays) gridded onto a stack's grid.

A point file is a CSV or a (Geo)Parquet table with one row per sample: coordinates (``x`` and
``y``, or ``easting`` and ``northing``, or a GeoParquet point geometry), a CRS (a ``crs`` column
holding one value, the GeoParquet metadata, or the stack layer's ``crs``) and one column per
element. It must be in the stack grid's CRS (points are not reprojected).

**Gridding** (verde): samples are first median-reduced in blocks of ``block`` cells
(:class:`verde.BlockReduce`; merges duplicates and repeat assays), then interpolated with
:class:`verde.Cubic` (Clough-Tocher, piecewise cubic on the Delaunay triangulation: linear time
and memory in the samples, exact at the block medians). Cells outside the samples' convex hull
take the nearest block's value (:class:`verde.KNeighbors`). Cells farther than ``max_distance``
cells from every sample are NaN (:func:`verde.distance_mask`); the default is
:data:`DISTANCE_FACTOR` times the samples' median nearest-neighbour spacing, at least one cell.
The grid is predicted in bands of :data:`BAND` rows, so working memory beyond the output is one
band's coordinates.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.errors import LodeInputError

if TYPE_CHECKING:
    import pandas as pd

COORDINATES = (("x", "y"), ("easting", "northing"))
DISTANCE_FACTOR = 3.0
BAND = 256


@dataclass(frozen=True)
class Samples:
    """Samples of one column: coordinates and values (N,), and the file's CRS."""

    easting: np.ndarray
    northing: np.ndarray
    values: np.ndarray
    crs: str


def _geoparquet(path: Path) -> tuple[pd.DataFrame, str | None]:
    """The table of a Parquet file, with ``x``/``y`` from its GeoParquet point geometry if it has one,
    and the CRS its GeoParquet metadata states (``OGC:CRS84`` when the metadata omits it)."""
    import pyarrow.parquet as pq
    import shapely

    table = pq.read_table(path)
    geo = json.loads((table.schema.metadata or {}).get(b"geo", b"null"))
    df = table.to_pandas()
    if not geo:
        return df, None
    column = geo["primary_column"]
    meta = geo["columns"][column]
    crs = meta.get("crs", "OGC:CRS84")
    geoms = shapely.from_wkb(df.pop(column).to_numpy())
    kinds = set(shapely.get_type_id(geoms[~shapely.is_missing(geoms)]).tolist())
    if kinds - {shapely.GeometryType.POINT}:
        raise LodeInputError(path, f"geometry column {column!r} holds non-point geometries")
    df["x"], df["y"] = shapely.get_x(geoms), shapely.get_y(geoms)
    return df, _crs_text(crs) if crs is not None else None


def _crs_text(crs: Any) -> str:
    from pyproj import CRS

    return CRS.from_user_input(crs).to_string()


def _table(path: Path) -> tuple[pd.DataFrame, str | None]:
    import pandas as pd

    if not path.exists():
        raise LodeInputError(path, "point file not found")
    try:
        if path.suffix.lower() == ".csv":
            return pd.read_csv(path), None
        return _geoparquet(path)
    except LodeInputError:
        raise
    except pd.errors.EmptyDataError:
        raise LodeInputError(path, "empty point file") from None
    except Exception as exc:
        raise LodeInputError(path, f"cannot read point samples: {exc}") from exc


def _file_crs(path: Path, df: pd.DataFrame, stated: str | None) -> str | None:
    column = next((c for c in df.columns if str(c).lower() == "crs"), None)
    if column is None:
        return stated
    values = df[column].dropna().astype(str).unique()
    if len(values) != 1:
        raise LodeInputError(path, f"column {column!r} must hold one CRS, found {list(values)[:3]}")
    return str(values[0])


def read_samples(path: str | Path, column: str, crs: str | None = None, nodata: float | None = None) -> Samples:
    """The samples of ``column`` in a point file; rows without a value (NaN or ``nodata``) are left
    out. ``crs`` is the CRS when the file states none."""
    import pandas as pd

    path = Path(path)
    df, stated = _table(path)
    if df.empty:
        raise LodeInputError(path, "no samples in point file")
    names = {str(c).lower(): c for c in df.columns}
    xy = next(((names[x], names[y]) for x, y in COORDINATES if x in names and y in names), None)
    if xy is None:
        raise LodeInputError(path, f"needs x and y (or easting and northing) columns; found {list(df.columns)}")
    if column not in df.columns:
        raise LodeInputError(path, f"no column {column!r}; found {list(df.columns)}")
    file_crs = _file_crs(path, df, stated) or crs
    if file_crs is None:
        raise LodeInputError(path, "no CRS: add a crs column or give the layer's crs")
    try:
        e = pd.to_numeric(df[xy[0]]).to_numpy(np.float64)
        n = pd.to_numeric(df[xy[1]]).to_numpy(np.float64)
        v = pd.to_numeric(df[column]).to_numpy(np.float64)
    except (ValueError, TypeError) as exc:
        raise LodeInputError(path, f"non-numeric coordinates or {column!r} values: {exc}") from None
    bad = ~(np.isfinite(e) & np.isfinite(n))
    if bad.any():
        rows = np.flatnonzero(bad)
        raise LodeInputError(path, f"{bad.sum()} samples have NaN or infinite coordinates (rows {rows[:5].tolist()})")
    if np.isinf(v).any():
        raise LodeInputError(path, f"column {column!r} has infinite values")
    keep = np.isfinite(v) & (v != nodata if nodata is not None else True)
    if not keep.any():
        raise LodeInputError(path, f"column {column!r} has no values")
    return Samples(e[keep], n[keep], v[keep], file_crs)


def check_crs(samples: Samples, crs: str, source: str | Path) -> None:
    """Refuse samples whose CRS is not ``crs`` (the stack grid's)."""
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        a, b = CRS.from_user_input(samples.crs), CRS.from_user_input(crs)
    except CRSError as exc:
        raise LodeInputError(source, f"unreadable CRS {samples.crs!r}: {exc}") from None
    same = a.equals(b, ignore_axis_order=True) or (a.to_epsg() is not None and a.to_epsg() == b.to_epsg())
    if not same:
        raise LodeInputError(source, f"samples are in {samples.crs}, the stack's grid in {crs}; reproject them")


def grid_samples(
    samples: Samples,
    easting: np.ndarray,
    northing: np.ndarray,
    source: str | Path,
    block: float = 1.0,
    max_distance: float | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """(H, W) float32 grid of the samples on the square cells centred on ``northing`` (H,) x ``easting``
    (W,) (NaN beyond ``max_distance`` cells from every sample) and the gridding parameters used.
    ``block`` and ``max_distance`` are in cells."""
    import verde as vd
    from scipy.spatial import QhullError
    from threadpoolctl import threadpool_limits

    cell = float(abs(easting[1] - easting[0]))
    data = (samples.easting, samples.northing)
    spacing = float(np.median(vd.median_distance(data, k_nearest=1))) / cell
    limit = max(1.0, DISTANCE_FACTOR * spacing) if max_distance is None else float(max_distance)
    # "median" by name: pandas then reduces in compiled code (np.median runs once per block in Python)
    coords, values = vd.BlockReduce("median", spacing=block * cell).filter(data, samples.values)
    out = np.empty((northing.size, easting.size), dtype=np.float32)
    # the triangulation makes one tiny LAPACK call per triangle: BLAS threads only add overhead
    # (100 times slower on a busy 2-core machine)
    with threadpool_limits(1, user_api="blas"):
        try:
            cubic = vd.Cubic().fit(coords, values)
        except (QhullError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0]
            raise LodeInputError(
                source, f"cannot triangulate {len(values)} sample blocks (need 3 or more, not on one line): {first}"
            ) from None
        nearest = vd.KNeighbors(k=1).fit(coords, values)
        for r0 in range(0, northing.size, BAND):
            ee, nn = (c.ravel() for c in np.meshgrid(easting, northing[r0 : r0 + BAND]))
            z = cubic.predict((ee, nn))
            hull = ~np.isfinite(z)
            if hull.any():
                z[hull] = nearest.predict((ee[hull], nn[hull]))
            z[~vd.distance_mask(data, limit * cell, coordinates=(ee, nn))] = np.nan
            out[r0 : r0 + BAND] = z.reshape(-1, easting.size)
    params = {
        "gridder": f"verde {vd.__version__}: BlockReduce(median) + Cubic, nearest outside the hull",
        "block_cells": float(block),
        "max_distance_cells": limit,
        "max_distance_default": max_distance is None,
        "sample_spacing_cells": spacing,
        "samples": int(samples.values.size),
        "blocks": int(values.size),
    }
    return out, params
