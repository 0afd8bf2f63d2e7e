import numpy as np
import pytest
import rasterio
import xarray as xr

from engine.errors import LodeInputError
from engine.geophys.grid import grid_spacing, make_dataarray, read_grid, write_grid


def _grid(crs: str | None = "EPSG:32633") -> xr.DataArray:
    v = np.random.default_rng(0).normal(size=(30, 40))
    v[5:8, 5:9] = np.nan
    return make_dataarray(v, 25.0, (7_000_000.0, 500_000.0), crs=crs)


@pytest.mark.parametrize("suffix", [".tif", ".nc", ".zarr"])
def test_roundtrip_keeps_values_coordinates_and_crs(tmp_path, suffix):
    da = _grid()
    path = write_grid(da, tmp_path / f"g{suffix}")
    back = read_grid(path)
    np.testing.assert_allclose(back.values, da.values.astype(np.float32), equal_nan=True, rtol=1e-6)
    np.testing.assert_allclose(back.northing.values, da.northing.values)
    np.testing.assert_allclose(back.easting.values, da.easting.values)
    assert "32633" in back.attrs["crs"] or "UTM zone 33N" in back.attrs["crs"]
    assert not list(tmp_path.glob(".*tmp*"))


def test_geotiff_is_north_up_with_cell_corner_transform(tmp_path):
    path = write_grid(_grid(), tmp_path / "g.tif")
    with rasterio.open(path) as src:
        t = src.transform
        assert (t.a, t.e) == (25.0, -25.0)
        assert t.c == 500_000.0 - 12.5
        assert t.f == 7_000_000.0 + 29 * 25.0 + 12.5
        assert src.crs.to_epsg() == 32633


def test_reads_y_x_netcdf_with_descending_y(tmp_path):
    v = np.arange(12.0).reshape(3, 4)
    ds = xr.Dataset({"tmi": (("y", "x"), v)}, coords={"y": [300.0, 200.0, 100.0], "x": [0.0, 10.0, 20.0, 30.0]})
    ds.to_netcdf(tmp_path / "g.nc")
    da = read_grid(tmp_path / "g.nc")
    assert da.dims == ("northing", "easting")
    assert list(da.northing.values) == [100.0, 200.0, 300.0]
    np.testing.assert_array_equal(da.values, v[::-1])
    assert grid_spacing(da) == (100.0, 10.0)


def test_bad_inputs_raise_lode_input_error(tmp_path):
    with pytest.raises(LodeInputError, match="no such"):
        read_grid(tmp_path / "missing.tif")
    (tmp_path / "junk.tif").write_bytes(b"not a tiff")
    with pytest.raises(LodeInputError, match="junk.tif"):
        read_grid(tmp_path / "junk.tif")
    write_grid(make_dataarray(np.full((4, 4), np.nan), 10.0), tmp_path / "nan.nc")
    with pytest.raises(LodeInputError, match="no finite"):
        read_grid(tmp_path / "nan.nc")
    xr.Dataset({"a": (("time", "y", "x"), np.zeros((2, 3, 3)))}, coords={"y": [0.0, 1, 2], "x": [0.0, 1, 2]}).to_netcdf(
        tmp_path / "t.nc"
    )
    with pytest.raises(LodeInputError, match="2-D"):
        read_grid(tmp_path / "t.nc")


@pytest.mark.parametrize("suffix", [".tif", ".nc", ".zarr"])
def test_open_grid_is_lazy_with_block_aligned_chunks(tmp_path, suffix):
    from engine.geophys.grid import halo_chunk, open_grid
    from engine.geophys.predict import GridRef

    v = np.random.default_rng(3).normal(size=(300, 260))
    path = write_grid(make_dataarray(v, 10.0, (1000.0, 2000.0), crs="EPSG:32633"), tmp_path / f"g{suffix}")
    chunk = halo_chunk(100, 32)
    assert chunk == 50 and halo_chunk(2048, 128) == 128 and halo_chunk(48, 64) == 48
    da = open_grid(path, chunks=chunk)
    assert da.chunks == ((50,) * 6, (50,) * 5 + (10,))
    assert np.array_equal(da.northing.values, 1000.0 + 10.0 * np.arange(300))
    region = da[100 - 32 : 200 + 32, 100 - 32 : 200 + 32]
    assert region.data.numblocks == (4, 4)  # a block plus its halo touches 4 x 4 of the grid's 6 x 6 chunks
    want = v.astype(np.float32)[68:232, 68:232]
    np.testing.assert_array_equal(np.asarray(region.values, np.float32), want)
    np.testing.assert_array_equal(GridRef(str(path), None, chunk).read(68, 232, 68, 232), want)
    np.testing.assert_array_equal(GridRef(str(path)).read(68, 232, 68, 232), want)
