"""``lode view`` on a lineament output (classical route on a small two-dyke survey): the grid is
drawn with its colour map and the lineament vectors over it at their known positions."""

from __future__ import annotations

import json

import numpy as np
import pyogrio
import pytest
import rasterio
import xarray as xr

from jobs.cli import main as lode
from tests.viewer.conftest import InProcessView

CELL, WEST, SOUTH = 50.0, 500_000.0, 7_000_000.0


def two_dykes(n: int = 128) -> xr.DataArray:
    """Vertical-field anomalies of two thin dykes (Gaussian ridges), one N-S and one oblique."""
    yy, xx = np.mgrid[0:n, 0:n].astype(float)
    d1 = np.abs(xx - 40)
    d2 = np.abs((yy - 0.6 * xx - 30) / np.hypot(1, 0.6))
    values = 120 * np.exp(-((d1 / 2.5) ** 2)) + 90 * np.exp(-((d2 / 2.5) ** 2))
    values += np.random.default_rng(0).normal(0, 0.3, values.shape)
    return xr.DataArray(
        values,
        dims=("northing", "easting"),
        name="anomaly",
        coords={"northing": SOUTH + CELL * np.arange(n), "easting": WEST + CELL * np.arange(n)},
        attrs={"inclination": 90.0, "declination": 0.0, "crs": "EPSG:32633"},
    )


@pytest.fixture(scope="module")
def lineament_out(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("survey")
    two_dykes().to_dataset().to_netcdf(tmp / "survey.nc", engine="h5netcdf")
    assert lode(["lineaments", str(tmp / "survey.nc"), "--method", "classical", "--out", str(tmp / "lin")]) == 0
    return tmp / "lin"


def test_lineament_grid_is_a_geotiff_with_its_crs(lineament_out):
    with rasterio.open(lineament_out / "total_gradient_amplitude.tif") as src:
        assert src.crs.to_epsg() == 32633 and src.shape == (128, 128)
        assert src.transform.a == CELL and src.transform.c == WEST - CELL / 2
    info = pyogrio.read_info(lineament_out / "lineaments.geojson")
    assert info["crs"] == "EPSG:32633" and info["features"] >= 2


def test_lineament_vectors_are_drawn_at_their_positions(lineament_out, browser):
    view = InProcessView(lineament_out)
    try:
        browser.goto(view.url)
        browser.evaluate("lode.ready")
        browser.evaluate("lode.showImageRect(0, 0, 128, 128); lode.idle()")
        assert browser.console_errors() == []
        shot = browser.screenshot()
        doc = json.loads((lineament_out / "lineaments.geojson").read_text())
        north = SOUTH + CELL * 127 + CELL / 2
        on_line = []
        for f in doc["features"]:
            pts = np.asarray(f["geometry"]["coordinates"], float)
            mids = (pts[1:] + pts[:-1]) / 2
            for e, n in mids:
                p = browser.evaluate(f"lode.toPage({(e - WEST + CELL / 2) / CELL}, {(north - n) / CELL})")
                on_line.append(shot[round(p["y"]), round(p["x"])].astype(int))
        on_line = np.array(on_line)
        red = (on_line[:, 0] > 200) & (on_line[:, 1] < 80) & (on_line[:, 2] < 80)
        assert len(on_line) >= 4 and red.mean() > 0.9, on_line[~red]
        # far from both dykes (and so from every line) the colour map shows, not the vector colour
        for x, y in ((100, 20), (110, 110), (10, 120)):
            p = browser.evaluate(f"lode.toPage({x + 0.5}, {y + 0.5})")
            r, g, b = shot[int(p["y"]), int(p["x"])].astype(int)
            assert not (r > 200 and g < 80 and b < 80)
            assert (r, g, b) != (0, 0, 0)
    finally:
        view.stop()


def test_prospectivity_map_with_deposits(browser, tmp_path):
    import zarr

    from engine.export.survey import deposits_geojson

    out = tmp_path / "prospect"
    root = zarr.open_group(str(out / "map_pca.zarr"), mode="w")
    h, w, cell, west, north = 64, 96, 25.0, 300_000.0, 6_500_000.0
    root.create_array("prospectivity", data=np.add.outer(np.arange(h), np.arange(w)).astype(np.float32))
    root.attrs.update(
        {
            "grid": {"shape": [h, w], "cell_size": cell, "west": west, "north": north, "crs": "EPSG:32645"},
            "complete": True,
            "method": "pca",
        }
    )
    cells = [(10, 20), (50, 70)]  # (row, col) of the deposits
    (tmp_path / "deposits.csv").write_text(
        "easting,northing,split\n"
        + "".join(f"{west + (c + 0.5) * cell},{north - (r + 0.5) * cell},heldout\n" for r, c in cells)
    )
    doc = json.loads(deposits_geojson(tmp_path / "deposits.csv", "EPSG:32645", out / "deposits.geojson").read_text())
    assert doc["crs"]["properties"]["name"] == "EPSG:32645" and doc["features"][0]["properties"] == {"split": "heldout"}
    view = InProcessView(out)
    try:
        browser.goto(view.url)
        browser.evaluate("lode.ready")
        browser.evaluate(f"lode.showImageRect(0, 0, {w}, {h}); lode.idle()")
        assert browser.console_errors() == []
        assert "2 deposits" in browser.evaluate("document.getElementById('status').textContent")
        shot = browser.screenshot()
        radius = max(w, h) / 120
        for r, c in cells:
            ring = browser.evaluate(f"lode.toPage({c + 0.5 + radius}, {r + 0.5})")
            centre = browser.evaluate(f"lode.toPage({c + 0.5}, {r + 0.5})")
            patch = shot[round(ring["y"]) - 1 : round(ring["y"]) + 2, round(ring["x"]) - 1 : round(ring["x"]) + 2]
            assert np.abs(patch.astype(int) - (0, 255, 255)).max(axis=-1).min() <= 10  # the marker's ring
            assert np.abs(shot[round(centre["y"]), round(centre["x"])].astype(int) - (0, 255, 255)).max() > 100
    finally:
        view.stop()
