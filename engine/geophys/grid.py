"""Survey-grid I/O: netCDF and zarr through xarray, GeoTIFF through rioxarray.

In memory a grid is an ``xarray.DataArray`` with dims ``("northing", "easting")``, coordinates
at cell centres in metres, northing ascending, and the CRS (when known) in ``attrs["crs"]``
as WKT or an authority string. :func:`open_grid` opens lazily (dask chunks aligned to the
raster runner's blocks, so a block's read reads only its block and halo); :func:`read_grid`
loads. Writers put the same coordinates (and for GeoTIFF the same transform and CRS) back on
disk, atomically; block-written outputs are chunked zarr grids with the CRS and transform in
their attributes (:func:`create_zarr_grid`, :func:`write_zarr_block`).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import xarray as xr

from engine.errors import LodeInputError
from engine.io.atomic import atomic_path

GEOTIFF_SUFFIXES = (".tif", ".tiff")
NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf")
EXTREME = 1e15
"""Largest magnitude a survey cell may hold: beyond any measurement in any unit, and far enough below
float32's range that the window normalisation (which squares deviations) cannot overflow. Larger
values are undeclared no-data values (1e30, -1e32, 1.70141e38 are common) or corruption."""
HOLES_WARNING = 0.9
"""Share of finite cells below which a run warns that its grid is holed."""

log = logging.getLogger(__name__)
_DIM_ALIASES = {
    "northing": ("northing", "y", "lat", "latitude", "north"),
    "easting": ("easting", "x", "lon", "longitude", "east"),
}


def make_dataarray(
    values: np.ndarray,
    spacing: float | tuple[float, float],
    origin: tuple[float, float] = (0.0, 0.0),
    crs: str | None = None,
    attrs: dict | None = None,
    name: str = "anomaly",
) -> xr.DataArray:
    """Wrap a (northing, easting) array with regular coordinates starting at ``origin`` (cell centres)."""
    dn, de = spacing if isinstance(spacing, (tuple, list, np.ndarray)) else (spacing, spacing)
    attrs = dict(attrs or {})
    if crs:
        attrs["crs"] = crs
    return xr.DataArray(
        values,
        dims=("northing", "easting"),
        name=name,
        attrs=attrs,
        coords={
            "northing": origin[0] + dn * np.arange(values.shape[0]),
            "easting": origin[1] + de * np.arange(values.shape[1]),
        },
    )


def grid_spacing(da: xr.DataArray) -> tuple[float, float]:
    """Cell sizes (northing, easting) of a regular grid; raises if irregular."""
    out = []
    for dim in ("northing", "easting"):
        c = np.asarray(da[dim].values, dtype=np.float64)
        if c.size < 2:
            raise LodeInputError(str(da.name or "grid"), f"{dim} has fewer than 2 cells")
        d = np.diff(c)
        if not np.allclose(d, d[0], rtol=1e-6, atol=1e-9 * abs(d[0])) or d[0] <= 0:
            raise LodeInputError(str(da.name or "grid"), f"{dim} coordinates are not regular and ascending")
        out.append(float(d[0]))
    return out[0], out[1]


def _normalise(da: xr.DataArray, source: str | Path) -> xr.DataArray:
    """Dims ``(northing, easting)``, both ascending (descending axes are flipped, lazily)."""
    rename = {}
    for target, aliases in _DIM_ALIASES.items():
        for dim in da.dims:
            if str(dim).lower() in aliases:
                rename[dim] = target
    da = da.rename(rename)
    extra = [d for d in da.dims if d not in ("northing", "easting")]
    for d in extra:
        if da.sizes[d] != 1:
            raise LodeInputError(
                source, f"grid must be 2-D (northing, easting); extra dimension {d!r} of size {da.sizes[d]}"
            )
        da = da.isel({d: 0}, drop=True)
    if set(da.dims) != {"northing", "easting"}:
        raise LodeInputError(source, f"cannot find northing/easting dimensions among {tuple(da.dims)}")
    da = da.transpose("northing", "easting")
    for dim in ("northing", "easting"):
        c = da[dim].values
        if c.size > 1 and c[0] > c[-1]:
            da = da.isel({dim: slice(None, None, -1)})
    grid_spacing(da.rename(str(source)))
    return da


def open_grid(
    path: str | Path, variable: str | None = None, chunks: int | tuple[int, int] | None = None
) -> xr.DataArray:
    """Open a survey grid (GeoTIFF, netCDF or zarr) lazily, normalised as :func:`read_grid` does.

    Nothing is read until values are asked for. With ``chunks`` the values are a dask array of
    those chunks (``(northing, easting)`` cells, counted from the southwest corner of the
    normalised grid, so block-aligned chunks stay aligned); without, slicing the array reads only
    the slice. Values keep their stored dtype; :func:`check_values` validates them.
    """
    path = Path(path)
    if not path.exists():
        raise LodeInputError(path, "no such file or folder")
    suffix = path.suffix.lower()
    try:
        if suffix in GEOTIFF_SUFFIXES:
            # MB of decoded tiles per reading process (GDAL's default: 5 % of RAM). Blocks are read
            # once, sharing only their halo tiles with the next block: a small cache serves them.
            os.environ.setdefault("GDAL_CACHEMAX", "16")
            import rioxarray

            raw = rioxarray.open_rasterio(path, masked=True, cache=False)
            if not isinstance(raw, xr.DataArray):
                raise LodeInputError(path, "holds several subdatasets; expected one raster")
            crs = raw.rio.crs
            da = raw.isel(band=0, drop=True) if "band" in raw.dims else raw
            attrs = {k: v for k, v in raw.attrs.items() if k in ("units", "long_name", "inclination", "declination")}
            if crs is not None:
                attrs["crs"] = crs.to_wkt()
            da = da.drop_vars([c for c in da.coords if c not in da.dims])
            da.attrs = attrs
        else:
            is_zarr = suffix == ".zarr" or path.is_dir()
            ds = (
                xr.open_dataset(path, engine="zarr", consolidated=False, cache=False)
                if is_zarr
                else xr.open_dataset(path, cache=False)
            )
            names = list(ds.data_vars)
            if variable is None:
                names = [n for n in names if n not in ("spatial_ref", "crs")]
                if len(names) != 1:
                    raise LodeInputError(path, f"choose a variable, found {names}")
                variable = str(names[0])
            if variable not in ds:
                raise LodeInputError(path, f"no variable {variable!r}")
            da = ds[variable]
            if not isinstance(da, xr.DataArray):
                raise LodeInputError(path, f"{variable!r} is not a data variable")
            if "crs" not in da.attrs and "crs" in ds.attrs:
                da.attrs["crs"] = ds.attrs["crs"]
            da = da.drop_vars([c for c in da.coords if c not in da.dims])
        da.name = da.name or "anomaly"
        da = _normalise(da, path)
    except LodeInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad input file
        raise LodeInputError(path, f"cannot read grid: {exc}") from exc
    if chunks is not None:
        cn, ce = (chunks, chunks) if isinstance(chunks, int) else chunks
        da = da.chunk({"northing": cn, "easting": ce})
    return da


def check_values(da: xr.DataArray, source: str | Path, warn_holes: bool = False) -> float:
    """Refuse grids with infinite values, values beyond ±:data:`EXTREME` or without any finite value
    (streams a dask-backed grid chunk by chunk); returns the share of finite cells. With
    ``warn_holes``, one WARNING line gives that share when it is under :data:`HOLES_WARNING`.

    Infinity is refused rather than masked: no grid format uses it for no-data (NaN or a declared
    fill value are), so it marks a failed computation upstream whose neighbours are suspect too.
    """
    import dask

    data = da.data
    n_inf, n_extreme, n_finite = dask.compute(
        np.isinf(data).sum(), (abs(data) > EXTREME).sum(), np.isfinite(data).sum()
    )
    if int(n_inf):
        raise LodeInputError(source, f"grid has {int(n_inf)} infinite values (mark missing cells with NaN)")
    if int(n_extreme):
        (top,) = dask.compute(np.nanmax(abs(data)))
        raise LodeInputError(
            source,
            f"grid has {int(n_extreme)} cells beyond ±{EXTREME:g} (largest {float(top):g}): "
            "an undeclared no-data value? Mark missing cells with NaN or declare the no-data "
            "value (_FillValue, GeoTIFF nodata)",
        )
    if not int(n_finite):
        raise LodeInputError(source, "grid has no finite values")
    share = int(n_finite) / data.size
    if warn_holes and share < HOLES_WARNING:
        log.warning(
            "grid %s: %.1f %% of cells valid after masking NaN holes; lines are not traced through holes",
            source,
            100 * share,
        )
    return share


def read_grid(path: str | Path, variable: str | None = None) -> xr.DataArray:
    """Read a survey grid (GeoTIFF, netCDF or zarr) into memory as a normalised float64 ``DataArray``.

    Args:
        path: ``.tif``/``.tiff``, ``.nc`` or a zarr store (``.zarr`` folder).
        variable: data variable to take from a netCDF/zarr dataset (default: the only one).
    """
    da = open_grid(path, variable)
    try:
        da = da.load().astype(np.float64)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad input file
        raise LodeInputError(path, f"cannot read grid: {exc}") from exc
    check_values(da, path)
    return da


def halo_chunk(block: int, halo: int) -> int:
    """Chunk size for a grid read by blocks of ``block`` cells plus a ``halo``: the smallest divisor
    of ``block`` that is at least ``halo`` (so chunks are block-aligned and a block's read
    touches only chunks within ``halo`` of it, rounded to a chunk)."""
    return next(d for d in range(max(1, min(halo, block)), block + 1) if block % d == 0)


def grid_transform(da: xr.DataArray) -> list[float]:
    """Affine ``[a, b, c, d, e, f]`` (GDAL order) from (row, column) of the stored, northing-ascending
    array to map coordinates of cell corners."""
    dn, de = grid_spacing(da)
    n0, e0 = float(da.northing[0]), float(da.easting[0])
    return [de, 0.0, e0 - de / 2, 0.0, dn, n0 - dn / 2]


def create_zarr_grid(
    path: str | Path, like: xr.DataArray, name: str, chunks: tuple[int, int], attrs: dict | None = None
) -> Path:
    """An empty (NaN) float32 zarr grid with ``like``'s coordinates, chunked as ``chunks``, with the
    CRS and the affine ``transform`` in the array attributes; blocks are filled by :func:`write_zarr_block`."""
    import dask.array

    path = Path(path)
    attrs = {
        **({"crs": like.attrs["crs"]} if like.attrs.get("crs") else {}),
        "transform": grid_transform(like),
        **(attrs or {}),
    }
    data = dask.array.full(like.shape, np.nan, dtype=np.float32, chunks=chunks)
    ds = xr.Dataset(
        {name: (("northing", "easting"), data, attrs)},
        coords={"northing": like.northing.values, "easting": like.easting.values},
    )
    if path.exists():
        shutil.rmtree(path)
    ds.to_zarr(
        path, mode="w", compute=False, consolidated=False, encoding={name: {"chunks": chunks, "fill_value": np.nan}}
    )
    return path


def write_zarr_block(path: str | Path, name: str, y0: int, x0: int, data: np.ndarray) -> None:
    """Write a block (whole chunks, or the grid's edge) into a grid made by :func:`create_zarr_grid`."""
    import zarr

    zarr.open_array(str(Path(path) / name), mode="r+")[y0 : y0 + data.shape[0], x0 : x0 + data.shape[1]] = data


def write_grid(da: xr.DataArray, path: str | Path) -> Path:
    """Write a normalised grid to GeoTIFF, netCDF or zarr (by suffix), atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    crs = da.attrs.get("crs")
    with atomic_path(path) as tmp:
        if suffix in GEOTIFF_SUFFIXES:
            import rioxarray  # noqa: F401

            out = da.sortby("northing", ascending=False).rename({"northing": "y", "easting": "x"})
            out = out.astype(np.float32)
            out.attrs = {k: v for k, v in da.attrs.items() if k != "crs" and isinstance(v, (int, float, str))}
            if crs:
                out = out.rio.write_crs(crs)
            out = out.rio.write_nodata(np.nan, encoded=False)
            out.rio.to_raster(
                tmp, driver="GTiff", compress="DEFLATE", tiled=True, lock=True if out.chunks else None
            )  # dask: chunk by chunk
        elif suffix in NETCDF_SUFFIXES:
            da.to_dataset(name=da.name or "grid").to_netcdf(tmp, engine="h5netcdf")
        else:
            da.to_dataset(name=da.name or "grid").to_zarr(tmp, mode="w", consolidated=False)
    return path
