import numpy as np

from engine.prospect.stack import build_stack, open_stack
from engine.prospect.synth import FAVOURABLE_UNIT, synth_region, write_region


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
    assert d[np.triu_indices(len(dep), 1)].min() >= 21
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
