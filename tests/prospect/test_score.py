import numpy as np
import pytest
import torch

from engine.prospect import evaluate as ev
from engine.prospect.baselines import PCAScorer, sample_cells
from engine.prospect.model import ProspectMAE
from engine.prospect.score import CellScorer, MAEScorer, read_score, score_block, score_map
from engine.prospect.stack import build_stack, open_stack
from engine.prospect.synth import synth_region, write_region


@pytest.fixture(scope="module")
def small_stack(tmp_path_factory):
    d = tmp_path_factory.mktemp("region")
    write_region(synth_region(96, seed=5), d / "r")
    return build_stack(d / "r" / "layers.json", d / "s.zarr")


def _mae(channels):
    torch.manual_seed(0)
    m = ProspectMAE(channels, window=16, patch=4, fused=8, dim=16, depth=1, heads=2, decoder_dim=16, decoder_depth=1)
    return MAEScorer(m, {"mean": np.zeros(16, np.float32), "precision": np.eye(16, dtype=np.float32)}, device="cpu")


def test_scoring_masks_cover_every_patch_once():
    m = ProspectMAE(3, window=32, patch=4)
    masks = m.scoring_masks()
    assert masks.shape == (2, 64)
    np.testing.assert_array_equal(masks.sum(0).numpy(), np.ones(64))
    assert masks[0].sum() == 32


def test_blocked_equals_global(small_stack):
    stack = open_stack(small_stack)
    scorer = _mae(len(stack.channels))
    whole = score_block(stack, scorer, 0, 96, 0, 96, sigma=2.0)
    tiled = np.full_like(whole, np.nan)
    for y in (0, 40, 80):
        for x in (0, 40, 80):
            tiled[:, y : min(96, y + 40), x : min(96, x + 40)] = score_block(stack, scorer, y, min(96, y + 40), x, min(96, x + 40), sigma=2.0)
    np.testing.assert_allclose(tiled, whole, rtol=1e-4, atol=1e-5, equal_nan=True)


def test_nan_cells_never_high(small_stack, tmp_path):
    stack = open_stack(small_stack)
    valid = np.asarray(stack.valid[:, :]) > 0
    assert (~valid).sum() > 500
    scorer = CellScorer(PCAScorer(sample_cells(stack, 5000)))
    out = score_map(small_stack, scorer, tmp_path / "m.zarr", block=48, sigma=1.5)
    s = read_score(out)
    assert np.isnan(s[~valid]).all() and np.isfinite(s[valid]).all()
    top = s >= np.nanquantile(s, 0.9)
    assert not (top & ~valid).any()
    rows, cols = np.nonzero(~valid)
    m = ev.evaluate(s, rows[:50], cols[:50])
    assert m.n_deposits == 0 and m.n_deposits_invalid == 50


def test_mae_map_and_geotiff(small_stack, tmp_path):
    import rasterio

    from engine.prospect.score import write_geotiff

    out = score_map(small_stack, _mae(len(open_stack(small_stack).channels)), tmp_path / "m.zarr", block=64, sigma=2.0)
    s = read_score(out)
    comp = read_score(out, "recon_error")
    valid = np.isfinite(s)
    assert valid.sum() > 0.5 * s.size and (comp[valid] >= 0).all()
    tif = write_geotiff(out, tmp_path / "m.tif")
    with rasterio.open(tif) as src:
        np.testing.assert_array_equal(np.isnan(src.read(1)), ~valid)
        assert src.transform.c == 500_000.0 and src.crs.to_epsg() == 32645

