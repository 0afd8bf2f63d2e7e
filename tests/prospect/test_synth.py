import numpy as np

from engine.prospect.stack import build_stack, open_stack
from engine.prospect.synth import DEPOSIT_SPACING, FAVOURABLE_UNIT, RING_RADIUS, synth_region, write_region


def test_region_truth_and_split():
    a = synth_region(256, seed=3)
    b = synth_region(256, seed=3)
    assert a.deposits.equals(b.deposits)
    assert len(a.layers) + 1 == 10  # nine grids + faults
    dep = a.deposits
    assert set(dep.split) == {"train", "heldout"}
    assert abs((dep.split == "heldout").sum() - (dep.split == "train").sum()) <= 1
    geology = a.layers["geology"][0].values
    assert (geology[dep.row, dep.col] == FAVOURABLE_UNIT).all()
    d = np.hypot(dep.row.values[:, None] - dep.row.values[None], dep.col.values[:, None] - dep.col.values[None])
    assert d[np.triu_indices(len(dep), 1)].min() >= DEPOSIT_SPACING - 1
    cu = a.layers["Cu"][0]
    at_dep = cu.values[dep.row // 4, dep.col // 4]
    assert np.median(np.log10(at_dep)) > np.median(np.log10(cu.values)) + 0.3


def test_written_region_stacks_with_deposits_valid(tmp_path):
    region = synth_region(128, seed=1)
    write_region(region, tmp_path / "r")
    s = open_stack(build_stack(tmp_path / "r" / "layers.json", tmp_path / "s.zarr"))
    assert s.shape == (128, 128)
    assert len(s.channels) == 14
    rows, cols = s.grid.rowcol(region.deposits.easting.values, region.deposits.northing.values)
    np.testing.assert_array_equal(rows, region.deposits.row.values)
    np.testing.assert_array_equal(cols, region.deposits.col.values)
    valid = np.asarray(s.valid[:, :]) > 0
    assert valid[rows, cols].all()
    assert 0.6 < valid.mean() < 0.85  # As misses the east fifth, mag the north 3 %


def test_footprints_are_zoned_and_cells_stay_in_range():
    """Core cells are high in Cu, but most are not extreme in any layer; As peaks on the ring, not at the core."""
    region = synth_region(512, seed=5)
    dep = region.deposits
    assert len(dep) >= 10
    logs = {el: np.log10(region.layers[el][0].values) for el in ("Cu", "As")}
    r, c = dep.row.values // 4, dep.col.values // 4
    cu = logs["Cu"]
    assert np.median(cu[r, c]) > np.median(cu) + 0.3
    for el in ("Cu", "As", "Zn", "Au"):
        v = region.layers[el][0].values
        v = np.log10(v[v > 0])
        assert np.mean(np.log10(region.layers[el][0].values[r, c]) > np.quantile(v, 0.995)) < 0.35, el
    asr = logs["As"]
    ring, core = [], []
    for rr, cc in zip(dep.row.values, dep.col.values):
        ang = np.linspace(0, 2 * np.pi, 16, endpoint=False)
        ry = ((rr + RING_RADIUS * np.sin(ang)) // 4).astype(int)
        rx = ((cc + RING_RADIUS * np.cos(ang)) // 4).astype(int)
        ok = (ry >= 0) & (ry < asr.shape[0]) & (rx >= 0) & (rx < asr.shape[1])
        vals = asr[ry[ok], rx[ok]]
        ring.append(np.median(vals[vals > -9]))
        core.append(asr[rr // 4, cc // 4])
    core, ring = np.array(core), np.array(ring)
    fine = core > -9  # As no-data (-9999) east of 0.8 n
    assert np.median(ring[fine] - core[fine]) > 0.15


def test_point_samples_are_the_layers_bilinear_values_with_log_noise():
    from scipy.interpolate import RegularGridInterpolator

    from engine.prospect.synth import ELEMENTS, sample_points

    region = synth_region(128, seed=2)
    clean = sample_points(region, per_cell=0.25, noise=0.0, seed=2)
    noisy = sample_points(region, per_cell=0.25, noise=0.05, seed=2)
    assert len(clean) == 128 * 128 // 4 and (clean.crs == region.grid["crs"]).all()
    np.testing.assert_array_equal(clean[["x", "y"]].values, noisy[["x", "y"]].values)
    for el in ELEMENTS:
        da = region.layers[el][0]
        values = da.values.astype(float)
        if da.attrs.get("nodata") is not None:
            values[values == da.attrs["nodata"]] = np.nan
        north, east = da.northing.values, da.easting.values
        truth = RegularGridInterpolator((north[::-1], east), values[::-1], bounds_error=False, fill_value=np.nan)(
            np.c_[clean.y, clean.x]
        )
        np.testing.assert_allclose(clean[el].values, truth, rtol=1e-9, equal_nan=True)
        ok = np.isfinite(truth)
        assert ok.mean() > 0.5 and np.isnan(noisy[el].values[~ok]).all()
        err = np.log10(noisy[el].values[ok] / truth[ok])
        assert abs(err.mean()) < 0.005 and abs(err.std() - 0.05) < 0.005
    east_fifth = clean.x > region.grid["west"] + 0.8 * 128 * region.grid["cell_size"] + 100
    assert clean.As[east_fifth].isna().all() and clean.Cu[east_fifth].notna().mean() > 0.8
