"""Multi-source stack: source layers of any cell size, extent and no-data convention
aligned onto one grid, transformed per layer kind, with a validity mask, written to zarr.

A stack spec (``layers.json``) names the target grid and the layers::

    {"grid": {"shape": [H, W], "cell_size": 25, "west": ..., "north": ..., "crs": "EPSG:32645"},
     "layers": [{"name": "Cu", "path": "Cu.nc", "kind": "geochem"},
                {"name": "geology", "path": "geology.tif", "kind": "categorical"},
                {"name": "fault_distance", "path": "faults.geojson", "kind": "lines"}, ...]}

Kinds: ``geochem`` (log10 on the native grid, bilinear, robust scale), ``continuous``
(bilinear, robust scale), ``categorical`` (nearest, one-hot), ``lines`` (GeoJSON
lines rasterised, distance feature), ``fault_raster`` (non-zero cells are traces,
distance feature). Optional per layer: ``nodata`` (overrides the file's),
``classes`` (for categorical), ``clr_group`` (geochem layers sharing a group name
get centred log-ratios), ``crs`` (when the file states none). The spec is validated by
:class:`schemas.stack.StackSpec`: unknown keys and duplicate names are refused.

A ``geochem`` or ``continuous`` layer may also be point samples (a CSV or GeoParquet file,
``{"name": "Cu", "path": "soil.csv", "kind": "geochem", "column": "Cu_ppm"}``): geochem values
are log10-transformed per sample, then gridded onto the stack's grid by
:mod:`engine.prospect.points` (optional ``block`` and ``max_distance``, in cells); the gridding
parameters are kept in the layer's entry of ``layers`` (``points``).

Refused too: infinite values in a layer, a layer without valid cells, two layers reading
the same data (same file, and for netCDF the same variable), and a layer valid on less than
:data:`MIN_COVERAGE` of the grid, since every stack cell needs every layer
(``allow_sparse`` stacks it anyway, with a warning).

Store layout (zarr v3): ``stack`` (channel, northing, easting) float32 with NaN at
invalid cells, ``valid`` (northing, easting) uint8, ``northing``/``easting``
coordinates, attributes ``channels``, ``crs``, ``transform`` (west, cell, north),
``layers`` (spec + fitted transform parameters).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr

from engine.errors import LodeInputError
from engine.io.atomic import staged_directory
from engine.io.layout import attrs_of

if TYPE_CHECKING:
    import xarray as xr

    from schemas.stack import StackSpec

CHUNK = 512
MIN_COVERAGE = 0.05

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Grid:
    """A north-up target grid: ``shape`` cells of ``cell_size`` from (``west``, ``north``)."""

    shape: tuple[int, int]
    cell_size: float
    west: float
    north: float
    crs: str

    @classmethod
    def from_dict(cls, d: dict) -> Grid:
        return cls(
            (int(d["shape"][0]), int(d["shape"][1])),
            float(d["cell_size"]),
            float(d["west"]),
            float(d["north"]),
            str(d["crs"]),
        )

    def to_dict(self) -> dict:
        return {
            "shape": list(self.shape),
            "cell_size": self.cell_size,
            "west": self.west,
            "north": self.north,
            "crs": self.crs,
        }

    @property
    def easting(self) -> np.ndarray:
        return self.west + (np.arange(self.shape[1]) + 0.5) * self.cell_size

    @property
    def northing(self) -> np.ndarray:
        return self.north - (np.arange(self.shape[0]) + 0.5) * self.cell_size

    def template(self) -> xr.DataArray:
        import rioxarray  # noqa: F401
        import xarray as xr

        da = xr.DataArray(
            np.broadcast_to(np.float32(0), self.shape),
            dims=("northing", "easting"),
            coords={"northing": self.northing, "easting": self.easting},
        )
        return da.rio.set_spatial_dims(x_dim="easting", y_dim="northing").rio.write_crs(self.crs)

    def rowcol(self, easting: np.ndarray, northing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cell indices of map points (may fall outside the grid)."""
        col = np.floor((np.asarray(easting) - self.west) / self.cell_size).astype(int)
        row = np.floor((self.north - np.asarray(northing)) / self.cell_size).astype(int)
        return row, col


def _spatial(da: xr.DataArray, source: str) -> xr.DataArray:
    rename = {}
    for y, x in (("y", "x"), ("lat", "lon"), ("latitude", "longitude")):
        if y in da.dims and x in da.dims:
            rename = {y: "northing", x: "easting"}
    da = da.rename(rename)
    extra = [d for d in da.dims if d not in ("northing", "easting")]
    for d in extra:
        if da.sizes[d] != 1:
            raise LodeInputError(source, f"expected one 2-D grid, found extra dimension {d!r} of size {da.sizes[d]}")
        da = da.isel({d: 0}, drop=True)
    if set(da.dims) != {"northing", "easting"}:
        raise LodeInputError(source, f"expected dims (northing, easting), found {tuple(da.dims)}")
    return da.transpose("northing", "easting")


def read_layer(path: str | Path, name: str, nodata: float | None = None, crs: str | None = None) -> xr.DataArray:
    """Read one grid layer (GeoTIFF or netCDF) as float32 with NaN at no-data cells; the netCDF
    variable read (``name`` if the file has it, else its first) is in ``attrs["variable"]``."""
    import rioxarray
    import xarray as xr

    path = Path(path)
    if not path.exists():
        raise LodeInputError(path, "layer file not found")
    var = None
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            raw = rioxarray.open_rasterio(path, masked=False)
            if not isinstance(raw, xr.DataArray):
                raise LodeInputError(path, "holds several subdatasets; expected one raster")
            da = raw.load()
            file_nodata = da.rio.nodata
            crs = crs or (da.rio.crs.to_string() if da.rio.crs else None)
        else:
            with xr.open_dataset(path, mask_and_scale=True) as ds:
                var = name if name in ds.data_vars else next(iter(ds.data_vars), None)
                if var is None:
                    raise LodeInputError(path, "no data variable in file")
                da = ds[var].load()
            file_nodata = da.attrs.get("nodata", da.attrs.get("_FillValue"))
            crs = crs or da.attrs.get("crs")
    except LodeInputError:
        raise
    except Exception as exc:  # corrupt or unreadable file
        raise LodeInputError(path, f"cannot read grid: {exc}") from exc
    da = _spatial(da, str(path)).astype(np.float32)
    nd = nodata if nodata is not None else file_nodata
    values = da.values
    if nd is not None and not np.isnan(nd):
        values = np.where(values == np.float32(nd), np.float32(np.nan), values)
    n_inf = int(np.isinf(values).sum())
    if n_inf:
        raise LodeInputError(
            path,
            f"layer {name!r} has {n_inf} infinite values (or values beyond float32); "
            "mark missing cells with NaN or a no-data value",
        )
    if da.sizes["northing"] < 2 or da.sizes["easting"] < 2:
        raise LodeInputError(path, f"grid too small: {dict(da.sizes)}")
    if not np.isfinite(values).any():
        raise LodeInputError(path, "grid has no valid cells (all NaN / no-data)")
    out = xr.DataArray(
        values,
        dims=("northing", "easting"),
        coords={"northing": da.northing.values, "easting": da.easting.values},
        name=name,
        attrs={"variable": var},
    )
    if crs is None:
        raise LodeInputError(path, "no CRS in file and none given")
    return (
        out.rio.set_spatial_dims(x_dim="easting", y_dim="northing")
        .rio.write_crs(crs)
        .rio.write_nodata(np.nan, encoded=False)
    )


def align(da: xr.DataArray, grid: Grid, categorical: bool = False) -> np.ndarray:
    """Resample a layer onto ``grid`` (bilinear, or nearest for categorical); NaN outside its extent."""
    from rasterio.enums import Resampling

    if da.rio.crs is None:
        da = da.rio.write_crs(grid.crs)
    da = da.rio.set_spatial_dims(x_dim="easting", y_dim="northing").rio.write_nodata(np.nan, encoded=False)
    out = da.rio.reproject_match(
        grid.template(), resampling=Resampling.nearest if categorical else Resampling.bilinear, nodata=np.nan
    )
    return np.asarray(out.values, dtype=np.float32).reshape(grid.shape)


def rasterise_lines(geojson_path: str | Path, grid: Grid) -> np.ndarray:
    """Cells touched by the LineStrings of a GeoJSON file."""
    from rasterio.features import rasterize
    from rasterio.transform import from_origin
    from shapely.geometry import shape

    path = Path(geojson_path)
    if not path.exists():
        raise LodeInputError(path, "line file not found")
    try:
        data = json.loads(path.read_text())
        feats = data["features"] if data.get("type") == "FeatureCollection" else [data]
        geoms = [shape(f["geometry"]) for f in feats]
    except Exception as exc:
        raise LodeInputError(path, f"cannot read GeoJSON lines: {exc}") from exc
    if not geoms:
        raise LodeInputError(path, "no line features")
    transform = from_origin(grid.west, grid.north, grid.cell_size, grid.cell_size)
    return rasterize(
        [(g, 1) for g in geoms], out_shape=grid.shape, transform=transform, all_touched=True, dtype="uint8"
    ).astype(bool)


def _claim(read: dict[tuple[str, str | None], str], path: Path, variable: str | None, name: str) -> None:
    """Refuse a layer whose data (file, and netCDF variable) an earlier layer of the spec already reads."""
    key = (str(path.resolve()), variable)
    if key in read:
        what = f"variable {variable!r} of the same file" if variable else "the same file"
        raise LodeInputError(path, f"duplicate layer: {name!r} reads {what} as layer {read[key]!r}")
    read[key] = name


def _channels_for(layer: dict, base: Path, grid: Grid, read: dict) -> tuple[list[str], list[np.ndarray], dict]:
    """Aligned, transformed channels of one layer (before robust scaling) and its fitted parameters;
    ``read`` maps the (file, variable) pairs read so far to their layer names."""
    from engine.prospect import transforms as T
    from schemas.stack import is_point_file

    kind, name, path = layer["kind"], layer["name"], base / layer["path"]
    if is_point_file(layer["path"]):
        return _point_channels(layer, path, grid, read)
    if kind == "lines":
        _claim(read, path, None, name)
        dist = T.distance_to_mask(rasterise_lines(path, grid), grid.cell_size)
        return [name], [T.distance_feature(dist, grid.cell_size)], {}
    da = read_layer(path, name, layer.get("nodata"), layer.get("crs"))
    _claim(read, path, da.attrs.get("variable"), name)
    if kind == "geochem":
        da = da.copy(data=T.log10_positive(da.values))
    values = align(da, grid, categorical=kind == "categorical")
    if not np.isfinite(values).any():
        raise LodeInputError(path, "layer does not overlap the target grid")
    if kind == "categorical":
        classes = layer.get("classes") or sorted(int(c) for c in np.unique(values[np.isfinite(values)]))
        return [f"{name}={c}" for c in classes], list(T.one_hot(values, classes)), {"classes": classes}
    if kind == "fault_raster":
        trace = np.nan_to_num(values) > 0
        return [name], [T.distance_feature(T.distance_to_mask(trace, grid.cell_size), grid.cell_size)], {}
    return [name], [values], {}


def _point_channels(layer: dict, path: Path, grid: Grid, read: dict) -> tuple[list[str], list[np.ndarray], dict]:
    """The gridded channel of a point-sample layer and its gridding parameters."""
    from engine.prospect import points as P
    from engine.prospect import transforms as T

    column = layer.get("column", layer["name"])
    _claim(read, path, column, layer["name"])
    samples = P.read_samples(path, column, layer.get("crs"), layer.get("nodata"))
    P.check_crs(samples, grid.crs, path)
    if layer["kind"] == "geochem":
        samples = replace(samples, values=T.log10_positive(samples.values))
    values, params = P.grid_samples(
        samples, grid.easting, grid.northing, path, layer.get("block", 1.0), layer.get("max_distance")
    )
    return [layer["name"]], [values], {"points": {"column": column, **params}}


def read_spec(spec_path: str | Path) -> StackSpec:
    """The validated stack spec of a ``layers.json``."""
    from pydantic import ValidationError

    from schemas.stack import StackSpec, spec_error_message

    spec_path = Path(spec_path)
    if not spec_path.exists():
        raise LodeInputError(spec_path, "stack spec not found")
    try:
        data = json.loads(spec_path.read_text())
    except (OSError, ValueError) as exc:
        raise LodeInputError(spec_path, f"bad stack spec: {exc}") from exc
    try:
        return StackSpec.model_validate(data)
    except ValidationError as exc:
        raise LodeInputError(spec_path, f"bad stack spec: {spec_error_message(exc, data)}") from None


def build_stack(spec_path: str | Path, out: str | Path, grid: Grid | None = None, allow_sparse: bool = False) -> Path:
    """Build the stack described by ``spec_path`` (layers.json) into zarr store ``out``.

    Layers are aligned and written one at a time (peak memory: a few full-grid
    layers), to a temporary store that is renamed into place when complete. A layer valid
    on less than :data:`MIN_COVERAGE` of the grid is refused, or with ``allow_sparse``
    stacked with a warning.
    """
    spec_path = Path(spec_path)
    spec = read_spec(spec_path)
    grid = grid or Grid.from_dict(spec.grid.model_dump())
    layers = [layer.model_dump(exclude_none=True) for layer in spec.layers]
    out = Path(out)
    with staged_directory(out) as tmp:
        _write_stack(layers, spec_path.parent, grid, tmp, allow_sparse)
    return out


def _check_coverage(layer: dict, base: Path, coverage: float, allow_sparse: bool) -> None:
    path, name = base / layer["path"], layer["name"]
    if coverage == 0:
        raise LodeInputError(path, f"layer {name!r} has no valid cell on the stack's grid")
    if coverage >= MIN_COVERAGE:
        return
    text = f"layer {name!r} is valid on {100 * coverage:.1f} % of the stack's grid (under {100 * MIN_COVERAGE:g} %)"
    if not allow_sparse:
        raise LodeInputError(
            path, f"{text}, which would leave the stack valid on at most that; pass --allow-sparse to stack it anyway"
        )
    log.warning("%s: %s; stacked anyway (--allow-sparse)", path, text)


def _write_stack(layers: list[dict], base: Path, grid: Grid, store: Path, allow_sparse: bool = False) -> None:
    from engine.prospect import transforms as T

    h, w = grid.shape
    root = zarr.open_group(store, mode="w")
    root.create_array("northing", data=grid.northing, dimension_names=("northing",))
    root.create_array("easting", data=grid.easting, dimension_names=("easting",))
    valid = np.ones(grid.shape, dtype=bool)
    staged: list[tuple[str, np.ndarray, dict]] = []
    fitted: list[dict] = []
    clr_groups: dict[str, list[int]] = {}
    read: dict[tuple[str, str | None], str] = {}
    for layer in layers:
        names, chans, params = _channels_for(layer, base, grid, read)
        coverage = float(np.isfinite(chans[0]).mean())
        _check_coverage(layer, base, coverage, allow_sparse)
        params = {**params, "coverage": coverage}
        for nm, ch in zip(names, chans):
            valid &= np.isfinite(ch)
            if layer.get("clr_group") and layer["kind"] == "geochem":
                clr_groups.setdefault(layer["clr_group"], []).append(len(staged))
            staged.append((nm, ch, {"source": layer["name"], "kind": layer["kind"], **params}))
    for idx in clr_groups.values():
        for i, v in zip(idx, T.centred_log_ratio([staged[i][1] for i in idx])):
            staged[i] = (staged[i][0], v, {**staged[i][2], "clr": True})

    arr = root.create_array(
        "stack",
        shape=(len(staged), h, w),
        chunks=(1, min(CHUNK, h), min(CHUNK, w)),
        dtype="float32",
        fill_value=np.nan,
        dimension_names=("channel", "northing", "easting"),
    )
    for i, (nm, ch, meta) in enumerate(staged):
        if meta["kind"] == "categorical":
            scaled, stats = np.nan_to_num(ch, nan=0.0), None
        else:
            filled = np.where(valid, ch, np.float32(np.nan))
            scaled, stats = T.robust_scale(filled)
        scaled = np.where(valid, scaled, np.float32(np.nan)).astype(np.float32)
        arr[i] = scaled
        fitted.append({"channel": nm, **meta, "robust": stats})
        staged[i] = (nm, np.empty(0, np.float32), meta)  # free the layer
    root.create_array(
        "valid",
        data=valid.astype(np.uint8),
        chunks=(min(CHUNK, h), min(CHUNK, w)),
        dimension_names=("northing", "easting"),
    )
    root.attrs.update(
        {
            "channels": [f["channel"] for f in fitted],
            "crs": grid.crs,
            "grid": grid.to_dict(),
            "transform": [grid.west, grid.cell_size, grid.north],
            "layers": fitted,
            "valid_fraction": float(valid.mean()),
        }
    )
    zarr.consolidate_metadata(store)


@dataclass
class Stack:
    """An opened stack store (lazy: blocks are read on demand)."""

    path: Path
    stack: Any
    valid: Any
    channels: list[str]
    grid: Grid
    kinds: list[str]

    @property
    def shape(self) -> tuple[int, int]:
        return self.grid.shape

    @property
    def measured(self) -> list[int]:
        """Indices of measured channels (all but the one-hot categorical ones)."""
        return [i for i, k in enumerate(self.kinds) if k != "categorical"]

    def read(self, y0: int, y1: int, x0: int, x1: int) -> tuple[np.ndarray, np.ndarray]:
        """Channels (C, h, w) and validity (h, w) of a window, NaN-/False-padded outside the grid."""
        h, w = self.grid.shape
        c = len(self.channels)
        data = np.full((c, y1 - y0, x1 - x0), np.nan, dtype=np.float32)
        valid = np.zeros((y1 - y0, x1 - x0), dtype=bool)
        sy0, sy1, sx0, sx1 = max(0, y0), min(h, y1), max(0, x0), min(w, x1)
        if sy1 > sy0 and sx1 > sx0:
            data[:, sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = self.stack[:, sy0:sy1, sx0:sx1]
            valid[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = self.valid[sy0:sy1, sx0:sx1] > 0
        return data, valid


def open_stack(path: str | Path) -> Stack:
    path = Path(path)
    if not path.exists():
        raise LodeInputError(path, "stack store not found")
    try:
        root = zarr.open_group(path, mode="r")
        kinds = [m["kind"] for m in attrs_of(root)["layers"]]
        return Stack(
            path,
            root["stack"],
            root["valid"],
            list(attrs_of(root)["channels"]),
            Grid.from_dict(attrs_of(root)["grid"]),
            kinds,
        )
    except Exception as exc:
        raise LodeInputError(path, f"not a prospect stack: {exc}") from exc
