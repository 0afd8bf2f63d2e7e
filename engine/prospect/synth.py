"""Synthetic prospectivity regions with exact truth.

A region is ten source layers on their own grids (different cell size, extent and
no-data convention, as real compilations are), fault traces as lines, and planted
deposits kept as points and split into training and held-out sets.

**Geology and background.** Five units from smooth random fields; unit 3 (mafic
volcanic) is the favourable host. Geochemistry is a unit baseline plus two broad
regional factors (a Cu-Au one and an As-Zn one, correlation length ~160 cells, so
that each pair varies together across the region as it does with lithology and
regolith), an element's own local field and noise. Magnetics follow the units plus
broad and local fields; K and Th follow the units.

**Deposits are spatial signatures, not coincident spikes.** Deposits sit in unit 3
within 12 cells of a fault or 8 cells of the granite contact (structural and
intrusive controls), at least 36 cells apart. Each carries the zoned footprint of a hydrothermal
system (porphyry / intrusion-related style), built so that its cells taken one by
one are only moderately unusual while their *arrangement* is what no ordinary place
shows (at the core, about a quarter of deposits reach the region's top 0.5 % of Cu
values, as enrichment zones and spikes do; As and Zn cores are never extreme):

- a Cu-Au core (Gaussian, sigma 6 and 4.5 cells, +0.4 log10 units, about the
  spread of the broad Cu-Au factor);
- a pathfinder ring of As and Zn around it (an annulus of radius 16 cells, width
  sigma 4 cells, +0.35 log10) with background values inside the ring: the distal
  halo of metal zoning;
- an alteration footprint: a potassic core (K +0.6 %, sigma 7 cells, within the
  unit contrasts) inside a phyllic shell where magnetite is destroyed (magnetics
  -120 nT in an annulus of radius 10 cells, width sigma 3, within the local
  magnetic variation): the magnetic-low ring around porphyry systems.

The whole footprint is about 40 cells (1 km) across; amplitudes vary by 0.7-1.3.

**Decoys**, so that per-cell detectors are neither handed a trivial signal nor
sabotaged (none is stronger per cell than a footprint, except the natural spikes):

- single-cell spikes: the nugget effect in every geochemical layer (0.5 % of the
  samples, +0.5 to +1.0 log10), multi-element contamination spikes (Cu, Zn, As
  together, 0.1 %), cultural spikes in the magnetics (0.05 %, +-300 nT);
- broad regional trends: regolith enrichment zones (Gaussian, sigma 30-60 cells)
  raising Cu, Au, As and Zn together by a footprint's amount, and planar regional
  gradients in magnetics and K;
- compact single-source anomalies with a footprint's size and amplitude: magnetic
  plugs, barren felsic cupolas (K and Th up together), Zn-only exhalative lenses,
  As along shear zones (elongated 25 x 3 cells).

A per-cell detector sees a footprint's core and ring cells as moderately high, like
the cells of the enrichment zones and decoys; only the zoning (a Cu-Au high
surrounded by an As-Zn ring, inside an alteration halo of a characteristic size)
sets the deposits apart. This is why the method looks at patches.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from scipy import ndimage

from engine.io.atomic import staged_directory

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

_CORE = {"Cu": (0.4, 6.0), "Au": (0.4, 4.5)}  # layer: (amplitude, sigma in cells)
_RING = {"As": 0.35, "Zn": 0.35}
RING_RADIUS, RING_WIDTH = 16.0, 4.0
_ALTERATION = {"K": (0.6, 7.0)}
SHELL_RADIUS, SHELL_WIDTH, SHELL_MAG = 10.0, 3.0, -120.0
FOOTPRINT_CELLS = 40
DEPOSIT_SPACING = 36.0
_DECOY_KINDS = ("plug", "cupola", "lens", "shear")


@dataclass
class Region:
    """A synthetic region: native layers, fault lines, deposits, and the truth grid.

    Attributes:
        layers: name -> (DataArray on its own grid, kind). Kinds: ``geochem``,
            ``continuous``, ``categorical``.
        faults: polylines as arrays of (easting, northing) vertices.
        deposits: one row per deposit: id, easting, northing, row, col (on the
            truth grid), split (``train`` or ``heldout``).
        decoys: one row per decoy: kind, easting, northing, row, col.
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
    fields[FAVOURABLE_UNIT - 1] += 0.3
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


def _window(shape: tuple[int, int], r0: float, c0: float, rad: float) -> tuple[slice, slice, np.ndarray, np.ndarray]:
    ys = slice(max(0, int(r0 - rad)), min(shape[0], int(r0 + rad) + 1))
    xs = slice(max(0, int(c0 - rad)), min(shape[1], int(c0 + rad) + 1))
    yy, xx = np.mgrid[ys, xs]
    return ys, xs, yy + 0.5 - r0, xx + 0.5 - c0


def _add_halo(grid: np.ndarray, row: float, col: float, amp: float, sigma: float, scale: float = 1.0) -> None:
    """Add ``amp * exp(-r^2 / 2 sigma^2)`` around (row, col); grid cells are ``scale`` truth cells."""
    s = sigma / scale
    ys, xs, dy, dx = _window(grid.shape, row / scale, col / scale, int(np.ceil(4 * s)) + 1)
    grid[ys, xs] += (amp * np.exp(-(dy**2 + dx**2) / (2 * s * s))).astype(grid.dtype)


def _add_ring(grid: np.ndarray, row: float, col: float, amp: float, radius: float, width: float) -> None:
    """Add an annulus ``amp * exp(-(r - radius)^2 / 2 width^2)`` around (row, col)."""
    ys, xs, dy, dx = _window(grid.shape, row, col, radius + 4 * width + 1)
    r = np.hypot(dy, dx)
    grid[ys, xs] += (amp * np.exp(-((r - radius) ** 2) / (2 * width * width))).astype(grid.dtype)


def _add_elongated(
    grid: np.ndarray, row: float, col: float, amp: float, along: float, across: float, angle: float
) -> None:
    """Add an elongated Gaussian (sigmas ``along`` x ``across`` cells, axis at ``angle`` radians)."""
    ys, xs, dy, dx = _window(grid.shape, row, col, 4 * along + 1)
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    grid[ys, xs] += (amp * np.exp(-(u**2) / (2 * along**2) - v**2 / (2 * across**2))).astype(grid.dtype)


def _planar(rng: np.random.Generator, n: int, amp: float) -> np.ndarray:
    """A planar regional gradient rising by ``amp`` across the region in a random direction."""
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[:n, :n].astype(np.float32) / n - 0.5
    return (amp * (np.cos(angle) * xx + np.sin(angle) * yy)).astype(np.float32)


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


def _data_array(
    values: np.ndarray, cell: float, west: float, north: float, name: str, nodata: float | None
) -> xr.DataArray:
    h, w = values.shape
    easting = west + (np.arange(w) + 0.5) * cell
    northing = north - (np.arange(h) + 0.5) * cell
    da = xr.DataArray(
        values, dims=("northing", "easting"), coords={"northing": northing, "easting": easting}, name=name
    )
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
    deposit_density: float = 30 / 512**2,
    decoy_ratio: float = 1.5,
    heldout_fraction: float = 0.5,
    fault_count: int | None = None,
) -> Region:
    """Generate a region of ``size`` x ``size`` truth cells (25 m) with ten source layers.

    Layers and their native grids: ``geology`` (categorical, 25 m, full extent),
    ``Cu, Au, Zn, Ni`` (geochemistry, 100 m, full extent), ``As`` (100 m, the east
    fifth is no-data -9999), ``mag`` (20 m, shifted origin, missing the north 3 %),
    ``K`` and ``Th`` (radiometrics, 50 m, NaN no-data); faults are lines.
    Deposits lie only where every layer has data, whole footprints inside the region.
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
    margin = min(FOOTPRINT_CELLS // 2 + 4, n // 4)
    granite = ndimage.distance_transform_edt(geology != 1)
    favourable = (geology == FAVOURABLE_UNIT) & ((fdist <= 12.0) | (granite <= 8.0))
    favourable[: max(margin, mag_missing_rows + margin)] = False
    favourable[-margin:] = False
    favourable[:, :margin] = False
    favourable[:, min(n - margin, as_missing_col - margin) :] = False
    cand = np.argwhere(favourable).astype(np.float64) + 0.5
    n_dep = max(4, int(round(deposit_density * n * n)))
    deposits = _pick_deposits(rng, cand, n_dep, spacing=DEPOSIT_SPACING, shape=(n, n))

    n_decoy = int(round(decoy_ratio * len(deposits)))
    decoy_kinds = rng.choice(_DECOY_KINDS, size=n_decoy)
    decoy_pos = rng.uniform(margin, n - margin, size=(n_decoy, 2))

    factor = {"Cu": _smooth_field(rng, (n, n), 160.0), "As": _smooth_field(rng, (n, n), 160.0)}
    factor["Au"], factor["Zn"] = factor["Cu"], factor["As"]
    log10 = {}
    for el in ELEMENTS:
        base = _lookup(_UNIT_LOG10[el], geology)
        regional = 0.15 * factor[el] if el in factor else 0.0
        log10[el] = (
            base
            + regional
            + 0.12 * _smooth_field(rng, (n, n), 40.0)
            + 0.05 * rng.standard_normal((n, n)).astype(np.float32)
        )
    mag = _lookup(_UNIT_MAG, geology)
    mag = (
        ndimage.gaussian_filter(mag, 3.0)
        + 60.0 * _smooth_field(rng, (n, n), 120.0)
        + 25.0 * _smooth_field(rng, (n, n), 12.0)
    )
    mag += _planar(rng, n, 200.0)
    k = _lookup(_UNIT_K, geology) + 0.25 * _smooth_field(rng, (n, n), 30.0) + _planar(rng, n, 0.8)
    th = _lookup(_UNIT_TH, geology) + 1.5 * _smooth_field(rng, (n, n), 30.0)
    continuous = {**log10, "mag": mag, "K": k, "Th": th}

    for r, c in deposits:
        for name, (amp, sigma) in {**_CORE, **_ALTERATION}.items():
            _add_halo(continuous[name], r, c, amp * rng.uniform(0.7, 1.3), sigma)
        for name, amp in _RING.items():
            _add_ring(continuous[name], r, c, amp * rng.uniform(0.7, 1.3), RING_RADIUS, RING_WIDTH)
        _add_ring(continuous["mag"], r, c, SHELL_MAG * rng.uniform(0.7, 1.3), SHELL_RADIUS, SHELL_WIDTH)
    for _ in range(max(1, int(round(3 * (n / 512) ** 2)))):
        r, c = rng.uniform(0, n, size=2)
        sigma, amp = rng.uniform(30, 60), rng.uniform(0.3, 0.5)
        for el in ("Cu", "Au", "As", "Zn"):
            _add_halo(continuous[el], r, c, amp, sigma)
    for kind, (r, c) in zip(decoy_kinds, decoy_pos):
        a = rng.uniform(0.7, 1.3)
        if kind == "plug":
            _add_halo(continuous["mag"], r, c, 150.0 * a, 6.0)
        elif kind == "cupola":
            _add_halo(continuous["K"], r, c, 0.6 * a, 9.0)
            _add_halo(continuous["Th"], r, c, 4.0 * a, 9.0)
        elif kind == "lens":
            _add_halo(continuous["Zn"], r, c, 0.4 * a, 6.0)
        else:
            _add_elongated(continuous["As"], r, c, 0.4 * a, 25.0, 3.0, rng.uniform(0, np.pi))

    west, north = ORIGIN
    layers: dict[str, tuple[xr.DataArray, str]] = {
        "geology": (_data_array(geology, CELL, west, north, "geology", 0), "categorical"),
    }
    coarse_shape = (n // 4, n // 4)
    contamination = rng.random(coarse_shape) < 0.001
    for el in ELEMENTS:
        coarse = _coarsen(log10[el], 4)
        coarse = coarse + 0.08 * rng.standard_normal(coarse.shape)
        spikes = rng.random(coarse.shape) < 0.005
        coarse[spikes] += rng.uniform(0.5, 1.0, size=spikes.sum())
        if el in ("Cu", "Zn", "As"):
            coarse[contamination] += rng.uniform(0.5, 1.0, size=contamination.sum())
        values = (10.0**coarse).astype(np.float32)
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
    cultural = rng.random(mag_native.shape) < 0.0005
    mag_native[cultural] += rng.choice([-300.0, 300.0], size=cultural.sum()).astype(np.float32)
    layers["mag"] = (_data_array(mag_native, mag_cell, mag_west, mag_north, "mag", None), "continuous")
    for name, grid in (("K", k), ("Th", th)):
        coarse = _coarsen(grid, 2) + 0.1 * rng.standard_normal((n // 2, n // 2))
        layers[name] = (
            _data_array(np.maximum(coarse, 0.01).astype(np.float32), 2 * CELL, west, north, name, None),
            "continuous",
        )

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
            "kind": decoy_kinds,
            "easting": west + decoy_pos[:, 1] * CELL,
            "northing": north - decoy_pos[:, 0] * CELL,
            "row": decoy_pos[:, 0].astype(int),
            "col": decoy_pos[:, 1].astype(int),
        }
    )
    grid = {"shape": [n, n], "cell_size": CELL, "west": west, "north": north, "crs": CRS}
    return Region(layers=layers, faults=_cell_lines_to_world(fault_cells), deposits=dep, decoys=dec, grid=grid)


def sample_points(region: Region, per_cell: float = 0.25, noise: float = 0.05, seed: int = 0) -> pd.DataFrame:
    """Point samples of the region's geochemistry, as a survey would take them: ``per_cell`` samples
    per truth cell at uniformly random places, each element the layer's bilinear value times
    ``10 ** N(0, noise)`` (NaN in the layer's no-data area).

    Returns a table with ``x``, ``y`` (metres), ``crs`` and one column per element of ``ELEMENTS``.
    """
    rng = np.random.default_rng(seed)
    g = region.grid
    size = g["shape"][0]
    count = int(per_cell * size * size)
    e = g["west"] + rng.uniform(0, size, count) * g["cell_size"]
    n = g["north"] - rng.uniform(0, size, count) * g["cell_size"]
    table: dict = {"x": e, "y": n, "crs": CRS}
    for el in ELEMENTS:
        da, _ = region.layers[el]
        if da.attrs.get("nodata") is not None:
            da = da.where(da != da.attrs["nodata"])
        at = da.interp(easting=xr.DataArray(e, dims="s"), northing=xr.DataArray(n, dims="s")).values
        table[el] = at * 10 ** rng.normal(0, noise, count)
    return pd.DataFrame(table)


def write_region(region: Region, out_dir: str | Path, points: pd.DataFrame | None = None) -> Path:
    """Write a region as files: one GeoTIFF or netCDF per layer, faults.geojson,
    deposits.csv, decoys.csv and ``layers.json`` (the stack spec ``lode prospect stack``
    reads). With ``points`` (:func:`sample_points`), also ``samples.csv`` and ``points.json``:
    the same spec with the geochemical layers gridded from the samples. Written to a temporary
    folder first, then renamed into place."""
    import rioxarray  # noqa: F401

    out = Path(out_dir)
    with staged_directory(out) as tmp:
        _write_region_files(region, tmp)
        if points is not None:
            points.to_csv(tmp / "samples.csv", index=False)
            spec = json.loads((tmp / "layers.json").read_text())
            for layer in spec["layers"]:
                if layer["name"] in ELEMENTS:
                    layer["path"] = "samples.csv"
            (tmp / "points.json").write_text(json.dumps(spec, indent=2))
    return out


def _write_region_files(region: Region, tmp: Path) -> None:
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
