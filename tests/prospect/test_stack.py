import json

import numpy as np
import pytest
import rioxarray  # noqa: F401
import xarray as xr
import zarr

from engine.errors import LodeInputError
from engine.prospect.stack import Grid, build_stack, open_stack

CRS = "EPSG:32633"
GRID = Grid((40, 50), 10.0, 1000.0, 2000.0, CRS)


def _da(values, cell, west, north):
    h, w = values.shape
    return xr.DataArray(
        values.astype(np.float32),
        dims=("northing", "easting"),
        coords={"northing": north - (np.arange(h) + 0.5) * cell, "easting": west + (np.arange(w) + 0.5) * cell},
    )


def _tif(da, path, nodata=None):
    r = da.rio.set_spatial_dims(x_dim="easting", y_dim="northing").rio.write_crs(CRS)
    if nodata is not None:
        r = r.rio.write_nodata(nodata)
    r.rio.to_raster(path)


def mag_f(e, n):
    return 0.01 * (e - 1000) - 0.02 * (n - 2000)


def cu_log(e, n):
    return 1.0 + 0.002 * (e - 1000) + 0.001 * (2000 - n)


@pytest.fixture
def region(tmp_path):
    # mag: finer (5 m), origin shifted by (+2.5, +1) m, covers e [1002.5, 1452.5]: the east of the grid is missing
    m = _da(np.zeros((80, 90)), 5.0, 1002.5, 2001.0)
    ee, nn = np.meshgrid(m.easting.values, m.northing.values)
    _tif(m.copy(data=mag_f(ee, nn).astype(np.float32)), tmp_path / "mag.tif")
    # Cu: coarser (40 m), larger extent, concentrations; source columns with e >= 1380 are no-data -9999 (netCDF)
    c = _da(np.zeros((12, 14)), 40.0, 980.0, 2020.0)
    ee, nn = np.meshgrid(c.easting.values, c.northing.values)
    vals = (10.0 ** cu_log(ee, nn)).astype(np.float32)
    vals[:, 10:] = -9999.0
    ds = c.copy(data=vals).to_dataset(name="Cu")
    ds["Cu"].attrs = {"crs": CRS, "nodata": -9999.0}
    ds.to_netcdf(tmp_path / "Cu.nc", engine="scipy")
    # geology: 20 m, origin shifted by (-10, +10) m, unit = 1 + (source column // 5) % 3
    g = _da(np.zeros((23, 27)), 20.0, 990.0, 2010.0)
    codes = np.broadcast_to(1 + (np.arange(27) // 5) % 3, (23, 27)).astype(np.float32)
    _tif(g.copy(data=codes), tmp_path / "geology.tif", nodata=0)
    # a fault along e = 1253 (inside target column 25)
    fc = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {},
                "geometry": {"type": "LineString", "coordinates": [[1253.0, 1500.0], [1253.0, 2100.0]]},
            }
        ],
    }
    (tmp_path / "faults.geojson").write_text(json.dumps(fc))
    spec = {
        "grid": GRID.to_dict(),
        "layers": [
            {"name": "mag", "path": "mag.tif", "kind": "continuous"},
            {"name": "Cu", "path": "Cu.nc", "kind": "geochem"},
            {"name": "geology", "path": "geology.tif", "kind": "categorical"},
            {"name": "fault", "path": "faults.geojson", "kind": "lines"},
        ],
    }
    (tmp_path / "layers.json").write_text(json.dumps(spec))
    return tmp_path


def _unscaled(root, name):
    meta = next(m for m in root.attrs["layers"] if m["channel"] == name)
    i = root.attrs["channels"].index(name)
    x = np.asarray(root["stack"][i])
    if meta["robust"] is None:
        return x
    med, iqr = meta["robust"]
    return x * iqr + med


def test_alignment_with_known_offsets(region, tmp_path):
    out = build_stack(region / "layers.json", tmp_path / "stack.zarr")
    root = zarr.open_group(out, mode="r")
    assert root.attrs["channels"] == ["mag", "Cu", "geology=1", "geology=2", "geology=3", "fault"]
    e, n = np.meshgrid(GRID.easting, GRID.northing)
    valid = np.asarray(root["valid"]) > 0

    mag = _unscaled(root, "mag")
    inner = np.zeros(GRID.shape, bool)
    inner[1:39, 1:45] = True  # target centres inside the mag source's centre hull
    assert (inner & valid).sum() > 600
    np.testing.assert_allclose(mag[inner & valid], mag_f(e, n)[inner & valid], atol=1e-3)
    assert not valid[:, 46:].any()  # east of the mag extent: invalid, NaN
    assert np.isnan(root["stack"][0][:, 46:]).all()

    cu = _unscaled(root, "Cu")
    good = (e <= 1360) & (e >= 1000 + 20) & (n <= 2000 - 20)
    np.testing.assert_allclose(cu[good & valid], cu_log(e, n)[good & valid], atol=1e-4)
    assert not valid[e >= 1400].any()  # no-data source cells never become data

    col = np.floor((e - 990.0) / 20.0).astype(int)
    unit = 1 + (col // 5) % 3
    for k in (1, 2, 3):
        np.testing.assert_array_equal(_unscaled(root, f"geology={k}")[valid], (unit == k)[valid].astype(np.float32))

    dist_cells = np.abs(np.arange(50) - 25)[None].repeat(40, 0)
    np.testing.assert_allclose(_unscaled(root, "fault")[valid], np.log1p(dist_cells)[valid], atol=1e-5)

    expected_valid = np.zeros(GRID.shape, bool)
    expected_valid[:, :45] = e[:, :45] < 1380
    assert (valid[:, 1:44] == expected_valid[:, 1:44]).all()
    s = open_stack(out)
    assert s.grid == GRID and s.channels == list(root.attrs["channels"])
    assert s.measured == [0, 1, 5]


def test_bad_inputs_raise_named_errors(region, tmp_path):
    spec = json.loads((region / "layers.json").read_text())
    spec["layers"].append({"name": "Zn", "path": "missing.tif", "kind": "geochem"})
    (region / "bad.json").write_text(json.dumps(spec))
    with pytest.raises(LodeInputError, match="missing.tif"):
        build_stack(region / "bad.json", tmp_path / "s.zarr")
    assert not (tmp_path / "s.zarr").exists()

    _tif(_da(np.full((10, 10), -9999.0), 10.0, 1000.0, 2000.0), region / "empty.tif", nodata=-9999.0)
    spec["layers"][-1] = {"name": "Zn", "path": "empty.tif", "kind": "geochem"}
    (region / "bad.json").write_text(json.dumps(spec))
    with pytest.raises(LodeInputError, match="empty.tif.*no valid cells"):
        build_stack(region / "bad.json", tmp_path / "s.zarr")

    spec["layers"][-1] = {"name": "Zn", "path": "mag.tif", "kind": "radar"}
    (region / "bad.json").write_text(json.dumps(spec))
    with pytest.raises(LodeInputError, match="unknown layer kind"):
        build_stack(region / "bad.json", tmp_path / "s.zarr")
    assert not list(tmp_path.glob(".s.zarr*"))
