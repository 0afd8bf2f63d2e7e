"""Point samples gridded onto a stack's grid: exact on a linear field, NaN exactly where no sample is
within the distance limit (checked with an independent k-d tree), the parameters recorded in the
stack, and every malformed point file refused naming it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely
from scipy.spatial import cKDTree

from engine.errors import LodeInputError
from engine.prospect.points import Samples, check_crs, grid_samples, read_samples
from engine.prospect.stack import Grid, build_stack, open_stack

CRS = "EPSG:32633"
GRID = Grid((60, 80), 10.0, 1000.0, 2000.0, CRS)


def _field(e: np.ndarray, n: np.ndarray) -> np.ndarray:
    return 3.0 + 0.01 * (e - 1000.0) - 0.02 * (n - 2000.0)


def _samples(rng: np.random.Generator, count: int, cols: tuple[float, float] = (0, 80)) -> Samples:
    """Samples of the linear field at random places between grid columns ``cols`` (the whole height)."""
    e = GRID.west + rng.uniform(*cols, count) * GRID.cell_size
    n = GRID.north - rng.uniform(0, GRID.shape[0], count) * GRID.cell_size
    return Samples(e, n, _field(e, n), CRS)


def _cell_distance(samples: Samples) -> np.ndarray:
    """Distance of every cell centre to its nearest sample, in cells (an independent k-d tree)."""
    ee, nn = np.meshgrid(GRID.easting, GRID.northing)
    d, _ = cKDTree(np.c_[samples.easting, samples.northing]).query(np.c_[ee.ravel(), nn.ravel()])
    return d.reshape(GRID.shape) / GRID.cell_size


@pytest.mark.parametrize("limit", [None, 2.5])
def test_masked_cells_are_exactly_those_far_from_every_sample(limit):
    # samples on the west half only, sparse enough to leave holes inside it too
    samples = _samples(np.random.default_rng(0), 300, cols=(0, 40))
    grid, params = grid_samples(samples, GRID.easting, GRID.northing, "s.csv", max_distance=limit)
    used = params["max_distance_cells"]
    if limit is None:
        assert params["max_distance_default"] and used == pytest.approx(3 * params["sample_spacing_cells"])
    else:
        assert used == limit and not params["max_distance_default"]
    dist = _cell_distance(samples)
    masked = np.isnan(grid)
    assert (dist[masked] > used).all()  # no cell is masked within reach of a sample
    assert np.isfinite(grid[dist <= used]).all()  # every cell within reach has a value
    assert masked[:, 60:].all() and masked.any() and (~masked).sum() > 0.4 * grid.size


def test_linear_field_is_reproduced_inside_the_hull():
    # one sample at a random place in every other cell (block medians of one sample are the sample)
    rng = np.random.default_rng(1)
    rows, cols = np.mgrid[0 : GRID.shape[0] : 2, 0 : GRID.shape[1] : 2].reshape(2, -1)
    e = GRID.west + (cols + rng.uniform(0, 1, cols.size)) * GRID.cell_size
    n = GRID.north - (rows + rng.uniform(0, 1, rows.size)) * GRID.cell_size
    samples = Samples(e, n, _field(e, n), CRS)
    grid, params = grid_samples(samples, GRID.easting, GRID.northing, "s.csv", max_distance=100)
    ee, nn = np.meshgrid(GRID.easting, GRID.northing)
    inner = (slice(5, -5), slice(5, -5))  # inside the samples' hull
    np.testing.assert_allclose(grid[inner], _field(ee, nn)[inner], atol=1e-3)
    assert np.isfinite(grid).all()  # cells outside the hull take the nearest block's value
    assert params["blocks"] == params["samples"] == rows.size


def test_too_few_or_collinear_samples_are_refused_in_one_line():
    line = Samples(GRID.west + np.arange(5.0) * 20, np.full(5, GRID.north - 100), np.arange(5.0), CRS)
    for samples in (Samples(line.easting[:2], line.northing[:2], line.values[:2], CRS), line):
        with pytest.raises(LodeInputError, match="cannot triangulate") as e:
            grid_samples(samples, GRID.easting, GRID.northing, "s.csv")
        assert "\n" not in str(e.value) and e.value.source == "s.csv"


def _write_csv(path: Path, samples: Samples, **extra) -> Path:
    pd.DataFrame(
        {"x": samples.easting, "y": samples.northing, "crs": samples.crs, "Cu": samples.values, **extra}
    ).to_csv(path, index=False)
    return path


def test_stack_grids_point_layers_and_records_how(tmp_path):
    samples = _samples(np.random.default_rng(2), 2000)
    _write_csv(tmp_path / "soil.csv", samples, Zn=10**samples.values)
    spec = {
        "grid": GRID.to_dict(),
        "layers": [
            {"name": "Cu", "path": "soil.csv", "kind": "continuous"},
            {"name": "Zn", "path": "soil.csv", "kind": "geochem", "column": "Zn", "block": 0.5, "max_distance": 4},
        ],
    }
    (tmp_path / "layers.json").write_text(json.dumps(spec))
    st = open_stack(build_stack(tmp_path / "layers.json", tmp_path / "s.zarr"))
    import zarr

    layers = zarr.open_group(tmp_path / "s.zarr", mode="r").attrs["layers"]
    cu, zn = (m["points"] for m in layers)
    assert cu["column"] == "Cu" and cu["block_cells"] == 1.0 and cu["max_distance_default"]
    assert zn["column"] == "Zn" and zn["block_cells"] == 0.5 and zn["max_distance_cells"] == 4.0
    assert zn["samples"] == 2000 and "verde" in zn["gridder"]
    # geochem is log10 per sample: the Zn channel (log10 of 10^field) equals the Cu channel
    data, valid = st.read(0, 60, 0, 80)
    assert valid.mean() > 0.9
    np.testing.assert_allclose(data[0][valid], data[1][valid], atol=0.05)


def test_geoparquet_points_with_crs_metadata(tmp_path):
    samples = _samples(np.random.default_rng(3), 50)
    geo = {
        "version": "1.1.0",
        "primary_column": "geometry",
        "columns": {"geometry": {"encoding": "WKB", "geometry_types": ["Point"], "crs": _projjson(CRS)}},
    }
    table = pa.table(
        {"geometry": shapely.to_wkb(shapely.points(samples.easting, samples.northing)), "Cu": samples.values}
    )
    pq.write_table(table.replace_schema_metadata({b"geo": json.dumps(geo).encode()}), tmp_path / "p.parquet")
    got = read_samples(tmp_path / "p.parquet", "Cu")
    assert got.crs == CRS
    np.testing.assert_array_equal(got.easting, samples.easting)
    np.testing.assert_array_equal(got.values, samples.values)


def test_crs_spelled_another_way_is_the_grids_and_another_crs_is_refused():
    s = Samples(np.zeros(1), np.zeros(1), np.zeros(1), "+proj=utm +zone=33 +datum=WGS84 +units=m +no_defs")
    check_crs(s, CRS, "s.csv")
    with pytest.raises(LodeInputError, match="EPSG:32634"):
        check_crs(s, "EPSG:32634", "s.csv")
    with pytest.raises(LodeInputError, match="unreadable CRS"):
        check_crs(Samples(s.easting, s.northing, s.values, "EPSG:nonsense"), CRS, "s.csv")


def _projjson(crs: str) -> dict:
    from pyproj import CRS as ProjCRS

    return ProjCRS.from_user_input(crs).to_json_dict()


def _bad(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "name, text, column, reason",
    [
        ("empty.csv", "", "Cu", "empty point file"),
        ("header.csv", "x,y,crs,Cu\n", "Cu", "no samples"),
        ("unknown.csv", "x,y,crs,Cu\n1,2,EPSG:32633,3\n", "Au", "no column 'Au'"),
        ("noxy.csv", "lon,lat,crs,Cu\n1,2,EPSG:32633,3\n", "Cu", "needs x and y"),
        ("nan.csv", "x,y,crs,Cu\n1,2,EPSG:32633,3\n,2,EPSG:32633,3\n", "Cu", "NaN or infinite coordinates"),
        ("nocrs.csv", "x,y,Cu\n1,2,3\n", "Cu", "no CRS"),
        ("twocrs.csv", "x,y,crs,Cu\n1,2,EPSG:32633,3\n1,3,EPSG:4326,3\n", "Cu", "one CRS"),
        ("novalues.csv", "x,y,crs,Cu\n1,2,EPSG:32633,\n", "Cu", "no values"),
        ("text.csv", "x,y,crs,Cu\n1,2,EPSG:32633,high\n", "Cu", "non-numeric"),
        ("missing.csv", None, "Cu", "not found"),
    ],
)
def test_malformed_point_files_are_named(tmp_path, name, text, column, reason):
    path = tmp_path / name if text is None else _bad(tmp_path, name, text)
    with pytest.raises(LodeInputError, match=reason) as e:
        read_samples(path, column)
    assert e.value.source == str(path)


def _sampled_region(tmp_path: Path, size: int, seed: int) -> Path:
    """A synthetic region (engine/prospect/synth.py, 100 deposits per 512² cells before spacing)
    whose geochemistry is also sampled as points: 1 sample per 4 cells, noise 10 ** N(0, 0.05).
    Returns the folder, with ``layers.json`` (the grids) and ``points.json`` (the samples)."""
    from engine.prospect.synth import sample_points, synth_region, write_region

    region = synth_region(size, seed, deposit_density=100 / 512**2, fault_count=8)
    return write_region(region, tmp_path / "region", sample_points(region, 0.25, 0.05, seed))


def test_map_from_gridded_samples_scores_like_the_full_grids(tmp_path):
    """Acceptance: ~1 sample per 4 cells with noise, gridded, gives the same prospectivity map's AUC
    within 0.03 of the full grids' (isolation forest, the cheapest baseline that is stable across
    regions: PCA's component count jumps with small changes of the data). One forest's AUC moves
    by up to 0.05 with its seed alone, so each map's AUC is the mean over three forest seeds; a
    512² region, the size of the held-out table's regions. ``benchmarks.prospect_points`` repeats
    this on six regions."""
    import zarr

    from engine.prospect import evaluate as ev
    from engine.prospect.score import read_score, score_map
    from engine.prospect.select import make_scorer

    folder = _sampled_region(tmp_path, 512, seed=0)
    dep = pd.read_csv(folder / "deposits.csv")
    auc = {}
    for spec in ("layers", "points"):
        stack = build_stack(folder / f"{spec}.json", tmp_path / f"{spec}.zarr")
        runs = [
            ev.evaluate(
                read_score(score_map(stack, make_scorer("iforest", stack, seed=s), tmp_path / f"{spec}{s}.zarr")),
                dep["row"],
                dep["col"],
            ).auc
            for s in range(3)
        ]
        auc[spec] = float(np.mean(runs))
    gridded = [
        m["channel"] for m in zarr.open_group(tmp_path / "points.zarr", mode="r").attrs["layers"] if "points" in m
    ]
    assert gridded == ["Cu", "Au", "As", "Zn", "Ni"]
    assert len(dep) >= 20 and auc["layers"] > 0.7
    assert abs(auc["points"] - auc["layers"]) <= 0.03, auc
