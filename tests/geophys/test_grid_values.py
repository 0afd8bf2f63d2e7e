"""check_values: inf and undeclared no-data sentinels refused (in memory and streamed from dask
chunks), the share of finite cells returned, and one warning for a holed grid when asked."""

import logging
import re

import numpy as np
import pytest

from engine.errors import LodeInputError
from engine.geophys.grid import EXTREME, check_values, make_dataarray, open_grid, read_grid, write_grid


def grid(edit=None) -> np.ndarray:
    v = np.random.default_rng(0).normal(0, 50, (32, 48))
    if edit:
        edit(v)
    return v


@pytest.mark.parametrize(
    "value, reason",
    [
        (np.inf, "1 infinite values"),
        (-1e32, "1 cells beyond ±1e+15 (largest 1e+32)"),
        (1.70141e38, "1 cells beyond ±1e+15 (largest 1.70141e+38)"),
    ],
)
def test_bad_values_are_refused_streamed_from_chunks(tmp_path, value, reason):
    path = write_grid(make_dataarray(grid(lambda v: v.__setitem__((30, 40), value)), 50.0), tmp_path / "g.zarr")
    da = open_grid(path, chunks=16)
    assert da.chunks is not None
    with pytest.raises(LodeInputError, match=re.escape(f"g.zarr: grid has {reason}")):
        check_values(da, path)


def test_the_extreme_bound_is_inclusive():
    assert check_values(make_dataarray(grid(lambda v: v.__setitem__((0, 0), -EXTREME)), 50.0), "g") == 1.0
    with pytest.raises(LodeInputError, match="1 cells beyond"):
        check_values(make_dataarray(grid(lambda v: v.__setitem__((0, 0), -1.01 * EXTREME)), 50.0), "g")


def test_share_of_finite_cells_and_the_hole_warning(tmp_path, caplog):
    holes = np.random.default_rng(1).random((32, 48)) < 0.3
    values = grid(lambda v: v.__setitem__(holes, np.nan))
    path = write_grid(make_dataarray(values, 50.0), tmp_path / "holed.nc")
    share = 1 - holes.mean()
    with caplog.at_level(logging.WARNING, logger="engine.geophys.grid"):
        assert read_grid(path).shape == (32, 48)  # read_grid checks silently
        assert caplog.records == []
        assert check_values(open_grid(path, chunks=16), path, warn_holes=True) == pytest.approx(share)
    assert [r.getMessage() for r in caplog.records] == [
        f"grid {path}: {100 * share:.1f} % of cells valid after masking NaN holes; lines are not traced through holes"
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="engine.geophys.grid"):
        few = grid(lambda v: v.__setitem__(np.s_[:3], np.nan))  # 3 of 32 rows: 90.6 % valid
        assert check_values(make_dataarray(few, 50.0), "few", warn_holes=True) == pytest.approx(29 / 32)
    assert caplog.records == []
