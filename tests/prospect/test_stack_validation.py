"""Stack spec and layer validation: every problem of a spec in one line, duplicate data caught by
(file, variable), declared infinite no-data honoured, float32 overflow refused, sparse layers."""

import json

import numpy as np
import pytest
import xarray as xr
import zarr

from engine.errors import LodeInputError
from engine.prospect.stack import build_stack, read_spec

CRS = "EPSG:32633"
N, CELL, WEST, NORTH = 20, 10.0, 1000.0, 2000.0
GRID = {"shape": [N, N], "cell_size": CELL, "west": WEST, "north": NORTH, "crs": CRS}


def write_nc(path, variables: dict[str, np.ndarray], dtype=np.float32, **attrs):
    coords = {"northing": NORTH - (np.arange(N) + 0.5) * CELL, "easting": WEST + (np.arange(N) + 0.5) * CELL}
    xr.Dataset(
        {k: (("northing", "easting"), v.astype(dtype), {"crs": CRS, **attrs}) for k, v in variables.items()},
        coords=coords,
    ).to_netcdf(path, engine="scipy")


def spec_file(tmp_path, layers, **top):
    path = tmp_path / "layers.json"
    path.write_text(json.dumps({"grid": GRID, "layers": layers, **top}))
    return path


def rand(seed=0):
    return np.random.default_rng(seed).normal(0, 1, (N, N))


def test_every_problem_of_a_spec_is_named_in_one_message(tmp_path):
    spec = spec_file(tmp_path, [{"name": "mag", "kind": "radar", "colour": "red"}], extra=1)
    with pytest.raises(LodeInputError) as e:
        read_spec(spec)
    msg = str(e.value)
    assert msg.startswith(f"{spec}: bad stack spec: ") and "\n" not in msg
    assert "layer 'mag' path: Field required" in msg
    assert "unknown layer kind 'radar'" in msg
    assert "unknown key 'colour' in layer 'mag'; allowed: name, path, kind, nodata, classes, clr_group, crs" in msg
    assert "unknown key 'extra' in spec; allowed: grid, layers, deposits" in msg


def test_bad_grid_values_and_empty_layers(tmp_path):
    spec = spec_file(
        tmp_path,
        [],
    )
    with pytest.raises(LodeInputError, match="spec layers: List should have at least 1 item"):
        read_spec(spec)
    path = tmp_path / "layers.json"
    path.write_text(
        json.dumps({"grid": {**GRID, "cell_size": -5}, "layers": [{"name": "a", "path": "a.nc", "kind": "continuous"}]})
    )
    with pytest.raises(LodeInputError, match="grid cell_size: Input should be greater than 0"):
        read_spec(path)
    path.write_text("[1, 2]")
    with pytest.raises(LodeInputError, match="valid dictionary"):
        read_spec(path)


def test_layers_reading_different_variables_of_one_file_are_not_duplicates(tmp_path):
    write_nc(tmp_path / "geochem.nc", {"Cu": rand(0), "Au": rand(1)})
    layers = [
        {"name": "Cu", "path": "geochem.nc", "kind": "continuous"},
        {"name": "Au", "path": "geochem.nc", "kind": "continuous"},
    ]
    out = build_stack(spec_file(tmp_path, layers), tmp_path / "s.zarr")
    assert zarr.open_group(out, mode="r").attrs["channels"] == ["Cu", "Au"]
    # a name that is no variable of the file falls back to its first variable: Cu, read twice
    layers.append({"name": "Zn", "path": "geochem.nc", "kind": "continuous"})
    with pytest.raises(LodeInputError, match="'Zn' reads variable 'Cu' of the same file as layer 'Cu'"):
        build_stack(spec_file(tmp_path, layers), tmp_path / "s2.zarr")
    assert not (tmp_path / "s2.zarr").exists()


def test_same_line_file_twice_is_a_duplicate(tmp_path):
    write_nc(tmp_path / "mag.nc", {"mag": rand()})
    fc = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {},
                "geometry": {"type": "LineString", "coordinates": [[1050.0, 1850.0], [1150.0, 1950.0]]},
            }
        ],
    }
    (tmp_path / "faults.geojson").write_text(json.dumps(fc))
    layers = [
        {"name": "mag", "path": "mag.nc", "kind": "continuous"},
        {"name": "faults", "path": "faults.geojson", "kind": "lines"},
        {"name": "faults2", "path": "faults.geojson", "kind": "lines"},
    ]
    with pytest.raises(
        LodeInputError, match="faults.geojson: duplicate layer: 'faults2' reads the same file as layer 'faults'"
    ):
        build_stack(spec_file(tmp_path, layers), tmp_path / "s.zarr")


def test_declared_infinite_no_data_is_masked_and_undeclared_is_refused(tmp_path):
    v = rand()
    v[:2] = -np.inf
    write_nc(tmp_path / "mag.nc", {"mag": v}, nodata=-np.inf)
    out = build_stack(
        spec_file(tmp_path, [{"name": "mag", "path": "mag.nc", "kind": "continuous"}]), tmp_path / "s.zarr"
    )
    valid = np.asarray(zarr.open_group(out, mode="r")["valid"]) > 0
    assert not valid[:2].any() and valid[2:].all()
    write_nc(tmp_path / "mag.nc", {"mag": v})
    with pytest.raises(LodeInputError, match=r"mag.nc: layer 'mag' has 40 infinite values"):
        build_stack(
            spec_file(tmp_path, [{"name": "mag", "path": "mag.nc", "kind": "continuous"}]), tmp_path / "s2.zarr"
        )


def test_float64_values_beyond_float32_are_refused(tmp_path):
    v = rand()
    v[3, 4] = 1e300
    write_nc(tmp_path / "mag.nc", {"mag": v}, dtype=np.float64)
    with pytest.raises(LodeInputError, match="1 infinite values \\(or values beyond float32\\)"):
        build_stack(spec_file(tmp_path, [{"name": "mag", "path": "mag.nc", "kind": "continuous"}]), tmp_path / "s.zarr")


def test_sparse_layer_threshold_and_a_line_layer_outside_the_grid(tmp_path):
    write_nc(tmp_path / "mag.nc", {"mag": rand()})
    thin = np.full((N, N), np.nan)
    thin[:4, :5] = 1.0  # 20 of 400 cells: exactly 5 %, accepted
    write_nc(tmp_path / "thin.nc", {"thin": thin})
    layers = [
        {"name": "mag", "path": "mag.nc", "kind": "continuous"},
        {"name": "thin", "path": "thin.nc", "kind": "continuous"},
    ]
    out = build_stack(spec_file(tmp_path, layers), tmp_path / "s.zarr")
    assert zarr.open_group(out, mode="r").attrs["valid_fraction"] == pytest.approx(0.05)
    thin[3, 4] = np.nan  # 19 cells: 4.75 %
    write_nc(tmp_path / "thin.nc", {"thin": thin})
    with pytest.raises(LodeInputError, match="thin.nc: layer 'thin' is valid on 4.8 % of the stack's grid"):
        build_stack(spec_file(tmp_path, layers), tmp_path / "s2.zarr")
    far = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {},
                "geometry": {"type": "LineString", "coordinates": [[9000.0, 9000.0], [9100.0, 9100.0]]},
            }
        ],
    }
    (tmp_path / "far.geojson").write_text(json.dumps(far))
    layers = [layers[0], {"name": "far", "path": "far.geojson", "kind": "lines"}]
    with pytest.raises(LodeInputError, match="far.geojson: layer 'far' has no valid cell on the stack's grid"):
        build_stack(spec_file(tmp_path, layers), tmp_path / "s3.zarr", allow_sparse=True)
