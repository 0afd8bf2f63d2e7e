"""Synthetic prospectivity regions with exact truth.

A region is ten source layers on their own grids (different cell size, extent and
no-data convention, as real compilations are), fault traces as lines, and planted
deposits kept as points and split into training and held-out sets.

Geology: five units from smooth random fields; unit 3 is the favourable host.
Deposits sit in unit 3 within ``fault_reach`` cells of a fault. Around each one
the data carry a footprint: Cu, Au, As haloes (log10 additions), potassic
alteration (K up) and magnetite destruction (magnetics down). Decoys are strong
single-layer anomalies of the same size anywhere (a Zn-only halo, a magnetic
plug, a Cu-only or As-only halo, a K-only high); geochemistry also carries
nugget spikes. A footprint is the coincidence of several moderate anomalies; a
decoy is one layer departing alone.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from scipy import ndimage

CRS = "EPSG:32645"
ORIGIN = (500_000.0, 4_800_000.0)
CELL = 25.0
UNITS = {1: "granite", 2: "sandstone", 3: "mafic volcanic", 4: "schist", 5: "limestone"}
FAVOURABLE_UNIT = 3
ELEMENTS = ("Cu", "Au", "As", "Zn", "Ni")

_UNIT_LOG10 = {
    "Cu": {1: 1.3, 2: 1.2, 3: 1.8, 4: 1.5, 5: 1.0},
    "Au": {1: 0.2, 2: 0.1, 3: 0.4, 4: 0.3, 5: 0.0},
    "As": {1: 0.5, 2: 0.7, 3: 0.6, 4: 0.9, 5: 0.4},
    "Zn": {1: 1.6, 2: 1.5, 3: 1.9, 4: 1.8, 5: 1.4},
    "Ni": {1: 0.8, 2: 1.1, 3: 2.0, 4: 1.5, 5: 0.9},
}
_UNIT_MAG = {1: -50.0, 2: 0.0, 3: 250.0, 4: 60.0, 5: -80.0}
_UNIT_K = {1: 3.5, 2: 1.8, 3: 0.8, 4: 2.4, 5: 0.5}
_UNIT_TH = {1: 18.0, 2: 9.0, 3: 3.0, 4: 12.0, 5: 2.0}

_FOOTPRINT = {  # layer: (amplitude, sigma in cells)
    "Cu": (0.55, 6.0),
    "Au": (0.6, 4.0),
    "As": (0.5, 8.0),
    "K": (0.9, 7.0),
    "mag": (-180.0, 5.0),
}
_DECOYS = {
    "Zn": (1.0, 7.0),
    "mag": (450.0, 5.0),
    "Cu": (0.9, 6.0),
    "As": (0.9, 8.0),
    "K": (1.6, 7.0),
}


@dataclass
class Region:
    """A synthetic region: native layers, fault lines, deposits, and the truth grid.

    Attributes:
        layers: name -> (DataArray on its own grid, kind). Kinds: ``geochem``,
            ``continuous``, ``categorical``.
        faults: polylines as arrays of (easting, northing) vertices.
        deposits: one row per deposit: id, easting, northing, row, col (on the
            truth grid), split (``train`` or ``heldout``).
        decoys: one row per decoy: layer, easting, northing, row, col.
        grid: truth grid: shape, cell size, origin (west, north), CRS.
    """

    layers: dict[str, tuple[xr.DataArray, str]]
    faults: list[np.ndarray]
    deposits: pd.DataFrame
    decoys: pd.DataFrame
    grid: dict = field(default_factory=dict)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Unit-variance smooth random field with correlation length about ``scale`` cells."""
    factor = max(1, int(scale // 4))
    small = (max(4, shape[0] // factor + 3), max(4, shape[1] // factor + 3))
    noise = ndimage.gaussian_filter(rng.standard_normal(small), sigma=2.0, mode="wrap")
    big = ndimage.zoom(noise, factor, order=1)[: shape[0], : shape[1]]
    big = big.astype(np.float32)
    big -= big.mean()
    big /= big.std() + 1e-9
    return big


def _lookup(table: dict[int, float], codes: np.ndarray) -> np.ndarray:
    lut = np.zeros(max(table) + 1, dtype=np.float32)
    for k, v in table.items():
        lut[k] = v
    return lut[codes]


def _geology(rng: np.random.Generator, n: int) -> np.ndarray:
    fields = np.stack([_smooth_field(rng, (n, n), 96.0) for _ in UNITS])
    fields[FAVOURABLE_UNIT - 1] += 0.15
    return (np.argmax(fields, axis=0) + 1).astype(np.uint8)


def _faults(rng: np.random.Generator, n: int, count: int) -> list[np.ndarray]:
    lines = []
    for _ in range(count):
        angle = rng.uniform(0, np.pi)
        cx, cy = rng.uniform(0.1 * n, 0.9 * n, size=2)
        d = np.array([np.cos(angle), np.sin(angle)])
        t = np.linspace(-1.5 * n, 1.5 * n, 7)
        pts = np.stack([cx + t * d[0], cy + t * d[1]], axis=1)
        pts += rng.normal(0, n * 0.01, size=pts.shape) * np.array([[-d[1], d[0]]])
        lines.append(pts)
    return lines


def _cell_lines_to_world(lines: list[np.ndarray]) -> list[np.ndarray]:
    out = []
    for pts in lines:
        e = ORIGIN[0] + pts[:, 0] * CELL
        nn = ORIGIN[1] - pts[:, 1] * CELL
        out.append(np.stack([e, nn], axis=1))
    return out


def _fault_distance_cells(lines: list[np.ndarray], n: int) -> np.ndarray:
    from skimage.draw import line as draw_line

    trace = np.ones((n, n), dtype=bool)
    for pts in lines:
        for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:]):
            rr, cc = draw_line(int(round(y0)), int(round(x0)), int(round(y1)), int(round(x1)))
            keep = (rr >= 0) & (rr < n) & (cc >= 0) & (cc < n)
            trace[rr[keep], cc[keep]] = False
    return ndimage.distance_transform_edt(trace).astype(np.float32)


def _add_halo(grid: np.ndarray, row: float, col: float, amp: float, sigma: float, scale: float = 1.0) -> None:
    """Add ``amp * exp(-r^2 / 2 sigma^2)`` around (row, col); grid cells are ``scale`` truth cells."""
    s = sigma / scale
    r0, c0 = row / scale, col / scale
    rad = int(np.ceil(4 * s)) + 1
    ys = slice(max(0, int(r0) - rad), min(grid.shape[0], int(r0) + rad + 1))
    xs = slice(max(0, int(c0) - rad), min(grid.shape[1], int(c0) + rad + 1))
    yy, xx = np.mgrid[ys, xs]
    d2 = (yy + 0.5 - r0) ** 2 + (xx + 0.5 - c0) ** 2
    grid[ys, xs] += (amp * np.exp(-d2 / (2 * s * s))).astype(grid.dtype)


def _pick_deposits(
    rng: np.random.Generator, candidates: np.ndarray, count: int, spacing: float, shape: tuple[int, int]
) -> np.ndarray:
    """Random candidates, each at least ``spacing`` cells from those already taken."""
    r = int(np.ceil(spacing))
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    disk = np.hypot(dy, dx) < spacing
    blocked = np.zeros((shape[0] + 2 * r, shape[1] + 2 * r), dtype=bool)
    chosen: list[np.ndarray] = []
    for idx in rng.permutation(len(candidates)):
        p = candidates[idx]
        y, x = int(p[0]), int(p[1])
        if blocked[y + r, x + r]:
            continue
        chosen.append(p)
        blocked[y : y + 2 * r + 1, x : x + 2 * r + 1] |= disk
        if len(chosen) == count:
            break
    return np.array(chosen, dtype=np.float64).reshape(-1, 2)


def _data_array(values: np.ndarray, cell: float, west: float, north: float, name: str, nodata: float | None) -> xr.DataArray:
    h, w = values.shape
    easting = west + (np.arange(w) + 0.5) * cell
    northing = north - (np.arange(h) + 0.5) * cell
    da = xr.DataArray(values, dims=("northing", "easting"), coords={"northing": northing, "easting": easting}, name=name)
    da.attrs["crs"] = CRS
    da.attrs["cell_size"] = cell
    if nodata is not None:
        da.attrs["nodata"] = nodata
    return da


def _coarsen(values: np.ndarray, factor: int) -> np.ndarray:
    h, w = (values.shape[0] // factor) * factor, (values.shape[1] // factor) * factor
    v = values[:h, :w].reshape(h // factor, factor, w // factor, factor)
    return v.mean(axis=(1, 3))


def synth_region(
    size: int = 512,
    seed: int = 0,
    deposit_density: float = 40 / 512**2,
    decoy_ratio: float = 1.5,
    heldout_fraction: float = 0.5,
    fault_count: int | None = None,
) -> Region:
    """Generate a region of ``size`` x ``size`` truth cells (25 m) with ten source layers.

    Layers and their native grids: ``geology`` (categorical, 25 m, full extent),
    ``Cu, Au, Zn, Ni`` (geochemistry, 100 m, full extent), ``As`` (100 m, the east
    fifth is no-data -9999), ``mag`` (20 m, shifted origin, missing the north 3 %),
    ``K`` and ``Th`` (radiometrics, 50 m, NaN no-data); faults are lines.
    Deposits lie only where every layer has data.
    """
    if size < 64 or size % 4:
        raise ValueError(f"size must be a multiple of 4 and >= 64, got {size}")
    rng = np.random.default_rng(seed)
    n = size
    geology = _geology(rng, n)
    fault_cells = _faults(rng, n, fault_count or max(4, int(round(6 * n / 512))))
    fdist = _fault_distance_cells(fault_cells, n)

    mag_missing_rows = int(np.ceil(0.03 * n))
    as_missing_col = int(0.8 * n)
    margin = 16
    favourable = (geology == FAVOURABLE_UNIT) & (fdist <= 8.0)
    favourable[: max(margin, mag_missing_rows + margin)] = False
    favourable[-margin:] = False
    favourable[:, :margin] = False
    favourable[:, min(n - margin, as_missing_col - margin):] = False
    cand = np.argwhere(favourable).astype(np.float64) + 0.5
    n_dep = max(4, int(round(deposit_density * n * n)))
    deposits = _pick_deposits(rng, cand, n_dep, spacing=22.0, shape=(n, n))

    n_decoy = int(round(decoy_ratio * len(deposits)))
    decoy_layers = rng.choice(list(_DECOYS), size=n_decoy)
    decoy_pos = rng.uniform(margin, n - margin, size=(n_decoy, 2))

    log10 = {}
    for el in ELEMENTS:
        base = _lookup(_UNIT_LOG10[el], geology)
        log10[el] = base + 0.18 * _smooth_field(rng, (n, n), 40.0) + 0.05 * rng.standard_normal((n, n)).astype(np.float32)
    mag = _lookup(_UNIT_MAG, geology)
    mag = ndimage.gaussian_filter(mag, 3.0) + 60.0 * _smooth_field(rng, (n, n), 120.0) + 25.0 * _smooth_field(rng, (n, n), 12.0)
    k = _lookup(_UNIT_K, geology) + 0.25 * _smooth_field(rng, (n, n), 30.0)
    th = _lookup(_UNIT_TH, geology) + 1.5 * _smooth_field(rng, (n, n), 30.0)
    continuous = {**log10, "mag": mag, "K": k}

    for r, c in deposits:
        for name, (amp, sigma) in _FOOTPRINT.items():
            a = amp * rng.uniform(0.7, 1.3)
            _add_halo(continuous[name], r, c, a, sigma)
    for name, (r, c) in zip(decoy_layers, decoy_pos):
        amp, sigma = _DECOYS[name]
        _add_halo(continuous[name], r, c, amp * rng.uniform(0.8, 1.2), sigma)

    west, north = ORIGIN
    layers: dict[str, tuple[xr.DataArray, str]] = {
        "geology": (_data_array(geology, CELL, west, north, "geology", 0), "categorical"),
    }
    for el in ELEMENTS:
        coarse = _coarsen(log10[el], 4)
        coarse = coarse + 0.08 * rng.standard_normal(coarse.shape)
        spikes = rng.random(coarse.shape) < 0.004
        coarse[spikes] += rng.uniform(0.8, 1.5, size=spikes.sum())
        values = (10.0 ** coarse).astype(np.float32)
        nodata = None
        if el == "As":
            values[:, as_missing_col // 4 :] = -9999.0
            nodata = -9999.0
        layers[el] = (_data_array(values, 4 * CELL, west, north, el, nodata), "geochem")

    mag_cell = 20.0
    mag_west = west + 7.0
    mag_north = north - mag_missing_rows * CELL
    m_h = int((n - mag_missing_rows) * CELL / mag_cell)
    m_w = int((n * CELL - 7.0) / mag_cell)
    ys = (mag_north - north) / -CELL + (np.arange(m_h) + 0.5) * mag_cell / CELL - 0.5
    xs = (mag_west - west) / CELL + (np.arange(m_w) + 0.5) * mag_cell / CELL - 0.5
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    mag_native = ndimage.map_coordinates(mag, [yy, xx], order=1, mode="nearest").astype(np.float32)
    mag_native += 8.0 * rng.standard_normal(mag_native.shape).astype(np.float32)
    layers["mag"] = (_data_array(mag_native, mag_cell, mag_west, mag_north, "mag", None), "continuous")
    for name, grid in (("K", k), ("Th", th)):
        coarse = _coarsen(grid, 2) + 0.1 * rng.standard_normal((n // 2, n // 2))
        layers[name] = (_data_array(np.maximum(coarse, 0.01).astype(np.float32), 2 * CELL, west, north, name, None), "continuous")

    ids = np.arange(len(deposits))
    held = np.zeros(len(deposits), dtype=bool)
    held[rng.permutation(len(deposits))[: int(round(heldout_fraction * len(deposits)))]] = True
    dep = pd.DataFrame(
        {
            "id": ids,
            "easting": west + deposits[:, 1] * CELL,
            "northing": north - deposits[:, 0] * CELL,
            "row": deposits[:, 0].astype(int),
            "col": deposits[:, 1].astype(int),
            "split": np.where(held, "heldout", "train"),
        }
    )
    dec = pd.DataFrame(
        {
            "layer": decoy_layers,
            "easting": west + decoy_pos[:, 1] * CELL,
            "northing": north - decoy_pos[:, 0] * CELL,
            "row": decoy_pos[:, 0].astype(int),
            "col": decoy_pos[:, 1].astype(int),
        }
    )
    grid = {"shape": [n, n], "cell_size": CELL, "west": west, "north": north, "crs": CRS}
    return Region(layers=layers, faults=_cell_lines_to_world(fault_cells), deposits=dep, decoys=dec, grid=grid)


def write_region(region: Region, out_dir: str | Path) -> Path:
    """Write a region as files: one GeoTIFF or netCDF per layer, faults.geojson,
    deposits.csv, decoys.csv and ``layers.json`` (the stack spec ``lode prospect stack``
    reads). Written to a temporary folder first, then renamed into place."""
    import rioxarray  # noqa: F401

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    specs = []
    for i, (name, (da, kind)) in enumerate(region.layers.items()):
        nodata = da.attrs.get("nodata")
        if i % 2 == 0:
            path = f"{name}.tif"
            r = da.rio.set_spatial_dims(x_dim="easting", y_dim="northing").rio.write_crs(CRS)
            if nodata is not None:
                r = r.rio.write_nodata(nodata)
            r.rio.to_raster(tmp / path)
        else:
            path = f"{name}.nc"
            ds = da.to_dataset(name=name)
            ds[name].attrs = {"crs": CRS}
            if nodata is not None:
                ds[name].attrs["nodata"] = nodata
            ds.to_netcdf(tmp / path, engine="scipy")
        specs.append({"name": name, "path": path, "kind": kind})
    features = [
        {"type": "Feature", "properties": {"id": i}, "geometry": {"type": "LineString", "coordinates": line.tolist()}}
        for i, line in enumerate(region.faults)
    ]
    (tmp / "faults.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    specs.append({"name": "fault_distance", "path": "faults.geojson", "kind": "lines"})
    region.deposits.to_csv(tmp / "deposits.csv", index=False)
    region.decoys.to_csv(tmp / "decoys.csv", index=False)
    spec = {"grid": region.grid, "layers": specs, "deposits": "deposits.csv"}
    (tmp / "layers.json").write_text(json.dumps(spec, indent=2))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out
