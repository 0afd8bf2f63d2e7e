"""The classical route blockwise: against the whole-grid filters and the pre-blockwise output."""

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from engine.geophys.blockwise import blockwise_tga_ridges, stored_quantile
from engine.geophys.lineaments import classical_lineaments
from engine.geophys.ridges import ridge_mask
from engine.geophys.synth import SurveyConfig, make_survey
from engine.geophys.transforms import rtp_tga
from jobs import lineaments as job
from tests.geophys.test_lineaments_job import _args

FIXTURES = Path(__file__).parent / "fixtures"
INC, DEC = 60.0, 10.0


@pytest.fixture(scope="module")
def holed():
    """A 256² survey (inclination 60) with a NaN hole, its whole-grid TGA and crest threshold."""
    s = make_survey(3, SurveyConfig(shape=(256, 256), noise_nt=0.5), inclination=INC, declination=DEC)
    values = s.anomaly.astype(np.float64)
    values[100:120, 140:170] = np.nan
    da = s.to_dataarray().copy(data=values)
    spacing = (s.spacing_m, s.spacing_m)
    whole = rtp_tga(values, spacing, INC, DEC, 0.5 * s.spacing_m)
    return da, spacing, whole, float(np.nanquantile(whole, 0.8))


def _blockwise(holed, halo, tmp_path):
    da, spacing, _, _ = holed
    tga, mask = blockwise_tga_ridges(
        da, spacing, INC, DEC, 0.5 * spacing[0], 0.8, 2, 64, tmp_path / f"h{halo}", halo=halo
    )
    return tga.values, mask


def test_blockwise_tga_equals_whole_grid_away_from_the_edge(holed, tmp_path):
    """64² blocks with a 64-cell halo: within 10 % of the crest threshold of the whole-grid TGA
    more than 64 cells from the grid edge, NaN exactly in the hole; without a halo the block
    seams are visible (beyond 50 %), so the tolerance separates the two."""
    _, _, whole, level = holed
    inner = (slice(64, -64), slice(64, -64))
    tga, _ = _blockwise(holed, 64, tmp_path)
    assert tga.dtype == np.float32
    assert np.array_equal(np.isnan(tga), np.isnan(whole))
    assert np.nanmax(np.abs(tga - whole)[inner]) <= 0.1 * level
    seams, _ = _blockwise(holed, 0, tmp_path)
    assert np.nanmax(np.abs(seams - whole)[inner]) > 0.5 * level


def test_blockwise_crests_equal_whole_grid_crests_of_the_same_tga(holed, tmp_path):
    """Crests picked block by block with a one-cell halo are the whole-grid crests of the stored TGA
    at its exact quantile (block edges and grid edges included)."""
    tga, mask = _blockwise(holed, 64, tmp_path)
    level = stored_quantile(tga, 0.8)
    assert level == float(np.quantile(tga[np.isfinite(tga)], 0.8))
    assert np.array_equal(mask, ridge_mask(np.where(np.isfinite(tga), tga, -np.inf), 2, level))
    assert mask.sum() > 100


def _equals_pinned_classical(out) -> None:
    """The job's TGA and lines equal the pre-blockwise output (fixtures/pin_classical*); no scratch store left."""
    tga = xr.open_dataset(out / "total_gradient_amplitude.nc")["total_gradient_amplitude"].values
    assert np.array_equal(tga, np.load(FIXTURES / "pin_classical_tga.npy"), equal_nan=True)
    got = json.loads((out / "lineaments.geojson").read_text())
    assert got["features"] == json.loads((FIXTURES / "pin_classical.geojson").read_text())["features"]
    assert not (out / "_classical").exists()


def test_small_grid_classical_job_equals_pinned_old_output(tmp_path):
    """Within one block the route is the whole-grid one: the job's TGA and lines equal the output of
    the code before the blockwise route (fixtures/pin_classical*), bit for bit."""
    assert job.run(_args(str(FIXTURES / "pin_survey.nc"), out=tmp_path / "o", method="classical")) == 0
    _equals_pinned_classical(tmp_path / "o")


def test_blockwise_job_with_halo_over_the_grid_keeps_the_lines(tmp_path):
    """``--block 32`` on the 96×80 pinned survey: every block's halo covers the grid, so the TGA is the
    whole-grid one and so are the lines; the scratch store is removed."""
    assert job.run(_args(str(FIXTURES / "pin_survey.nc"), out=tmp_path / "o", method="classical", block=32)) == 0
    _equals_pinned_classical(tmp_path / "o")


def test_blockwise_route_without_work_folder_returns_tga_in_memory(holed):
    """No ``work``: the TGA (here the whole-grid one: the default halo covers the 256² grid) comes
    back loaded from a temporary store that is gone."""
    da, _, whole, _ = holed
    tga, lines = classical_lineaments(da, block=128)
    assert isinstance(tga.data, np.ndarray) and tga.name == "total_gradient_amplitude"
    assert np.array_equal(tga.values, whole.astype(np.float32), equal_nan=True)
    assert len(lines) > 3
