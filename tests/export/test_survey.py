"""GIS outputs of the survey jobs, opened through GDAL: lineament axes as GeoPackage and GeoJSON and
prospectivity maps as cloud-optimised GeoTIFF, each with its input's CRS and within (or on) its
bounds; ``rio_cogeo`` validates the COG; the deposit table's area ranks against a brute-force count."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio
import shapely
import xarray as xr
import zarr
from rio_cogeo.cogeo import cog_validate

from engine.prospect.score import read_score
from jobs.cli import main as lode

CELL, WEST, SOUTH, N = 50.0, 500_000.0, 7_000_000.0, 128


@pytest.fixture(scope="module")
def lineaments(tmp_path_factory) -> Path:
    """``lode lineaments`` (classical route) on a survey with one N-S and one oblique dyke."""
    tmp = tmp_path_factory.mktemp("survey")
    yy, xx = np.mgrid[0:N, 0:N].astype(float)
    values = 120 * np.exp(-((np.abs(xx - 40) / 2.5) ** 2)) + 90 * np.exp(
        -(((yy - 0.6 * xx - 30) / np.hypot(1, 0.6) / 2.5) ** 2)
    )
    values += np.random.default_rng(0).normal(0, 0.3, values.shape)
    coords = {"northing": SOUTH + CELL * np.arange(N), "easting": WEST + CELL * np.arange(N)}
    attrs = {"inclination": 90.0, "declination": 0.0, "crs": "EPSG:32633"}
    da = xr.DataArray(values, dims=("northing", "easting"), name="anomaly", coords=coords, attrs=attrs)
    da.to_dataset().to_netcdf(tmp / "survey.nc", engine="h5netcdf")
    assert lode(["lineaments", str(tmp / "survey.nc"), "--method", "classical", "--out", str(tmp / "lin")]) == 0
    return tmp / "lin"


def test_lineament_axes_open_as_geopackage_and_geojson_with_the_grid_crs(lineaments):
    west, south = WEST - CELL / 2, SOUTH - CELL / 2
    grid_bounds = shapely.box(west, south, west + N * CELL, south + N * CELL)
    layers = {}
    for name in ("lineaments.gpkg", "lineaments.geojson"):
        info = pyogrio.read_info(lineaments / name)
        assert info["crs"] == "EPSG:32633" and info["geometry_type"] == "LineString" and info["features"] >= 2
        assert list(info["fields"]) == ["length_m", "azimuth_deg"]
        assert grid_bounds.contains(shapely.box(*info["total_bounds"]))
        _, fids, wkb, fields = pyogrio.raw.read(lineaments / name, return_fids=True)
        assert list(fids) == list(range(len(fids)))
        layers[name] = (shapely.from_wkb(wkb), fields)
    (g1, f1), (g2, f2) = layers.values()
    assert all(shapely.equals_exact(g1, g2, tolerance=1e-6)) and len(g1) == len(g2)
    for a, b in zip(f1, f2):
        np.testing.assert_array_equal(a, b)
    # the N-S dyke at column 40 is found: a long line of azimuth ~0/180 near its easting
    ns = [g for g, az in zip(g1, f1[1]) if min(az, 180 - az) < 5 and g.length > 40 * CELL]
    assert ns and all(abs(shapely.centroid(g).x - (WEST + 40 * CELL)) < 2 * CELL for g in ns)
    summary = json.loads((lineaments / "summary.json").read_text())
    assert {str(lineaments / n) for n in layers} <= set(summary["outputs"])
    assert json.loads((lineaments / "lineaments.geojson").read_text())["properties"]["cell_size"] == CELL


@pytest.fixture(scope="module")
def prospect(tmp_path_factory) -> Path:
    """A small synthetic region, stacked, mapped (PCA, in process) and evaluated on all its deposits."""
    tmp = tmp_path_factory.mktemp("prospect")
    r, s, m = tmp / "r", tmp / "s.zarr", tmp / "m.zarr"
    assert lode(["synth", "region", str(r), "--size", "96", "--seed", "4"]) == 0
    assert lode(["prospect", "stack", "--spec", str(r / "layers.json"), "--out", str(s)]) == 0
    assert lode(["prospect", "map", "--stack", str(s), "--method", "pca", "--out", str(m), "--no-ray"]) == 0
    argv = ["prospect", "evaluate", "--map", str(m), "--deposits", str(r / "deposits.csv"), "--split", "all"]
    assert lode([*argv, "--out", str(tmp / "eval")]) == 0
    return tmp


def test_prospectivity_map_is_a_valid_cog_beside_the_zarr(prospect):
    tif = prospect / "m.tif"  # the default: beside m.zarr
    grid = zarr.open_group(prospect / "s.zarr", mode="r").attrs["grid"]
    h, w = grid["shape"]
    is_valid, errors, warnings = cog_validate(str(tif))
    assert is_valid and errors == [], (errors, warnings)
    with rasterio.open(tif) as src:
        assert src.crs.to_string() == grid["crs"] == "EPSG:32645"
        assert tuple(src.bounds) == (
            grid["west"],
            grid["north"] - h * grid["cell_size"],
            grid["west"] + w * grid["cell_size"],
            grid["north"],
        )
        assert src.res == (grid["cell_size"], grid["cell_size"])
        np.testing.assert_array_equal(src.read(1), read_score(prospect / "m.zarr"))
    manifest = json.loads((prospect / "m.zarr.manifest.json").read_text())
    assert manifest["config"]["geotiff"] == str(tif)


def test_deposit_table_has_every_deposit_with_its_area_rank(prospect):
    dep = pd.read_csv(prospect / "r" / "deposits.csv")
    table = pd.read_csv(prospect / "eval" / "deposit_ranks.csv")
    assert list(table["id"]) == list(dep["id"]) and {"pca_score", "pca_area_rank"} <= set(table.columns)
    score = read_score(prospect / "m.zarr")
    valid = score[np.isfinite(score)]
    for row in table.itertuples():
        s = score[row.row, row.col]
        assert row.pca_score == pytest.approx(s)
        rank = ((valid > s).sum() + 0.5 * (valid == s).sum()) / valid.size
        assert row.pca_area_rank == pytest.approx(rank)
    metrics = json.loads((prospect / "eval" / "metrics.json").read_text())["maps"]["pca"]
    assert sorted(metrics["area_ranks"]) == pytest.approx(sorted(table["pca_area_rank"]))


def test_cog_of_a_grid_larger_than_a_tile_has_overviews_and_validates(tmp_path):
    from rasterio.transform import from_origin

    from engine.export.survey import write_cog

    rng = np.random.default_rng(0)
    values = rng.normal(size=(1100, 1300)).astype(np.float32)
    values[:200, :300] = np.nan
    reads = []

    def read(y0, y1, x0, x1):
        reads.append((y1 - y0) * (x1 - x0))
        return values[y0:y1, x0:x1]

    path = write_cog(tmp_path / "g.tif", values.shape, read, "EPSG:32633", from_origin(1e5, 2e6, 10, 10), block=400)
    assert max(reads) == 400 * 400 and sum(reads) == values.size  # read block by block, each cell once
    is_valid, errors, warnings = cog_validate(str(path))
    assert is_valid and errors == [], (errors, warnings)
    with rasterio.open(path) as src:
        assert src.overviews(1) and src.crs.to_epsg() == 32633 and src.bounds.left == 1e5
        np.testing.assert_array_equal(src.read(1), values)
    assert [p.name for p in tmp_path.iterdir()] == ["g.tif"]  # no scratch left
