import numpy as np
import pytest
import torch

from engine.prospect import evaluate as ev
from engine.prospect.baselines import PCAScorer, sample_cells
from engine.prospect.model import ProspectMAE
from engine.prospect.score import CellScorer, MAEScorer, channel_error, lattice_offsets, read_score, score_block, score_map
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



def test_shifted_lattices_average_single_lattices(small_stack):
    """A scorer with shifts=2 equals the mean of the four single-lattice maps (each offset
    alone), blocked or whole; offsets are whole patches so each lattice stays a global one."""
    stack = open_stack(small_stack)
    shifted = _mae(len(stack.channels))
    shifted.offsets = lattice_offsets(2, shifted.model.patch)
    assert shifted.offsets == ((0, 0), (0, 4), (4, 0), (4, 4))
    whole = score_block(stack, shifted, 24, 72, 24, 72)
    singles = []
    for off in shifted.offsets:
        one = _mae(len(stack.channels))
        one.offsets = (off,)
        singles.append(score_block(stack, one, 24, 72, 24, 72))
    valid = np.isfinite(whole[0])
    np.testing.assert_allclose(whole[:, valid], np.mean(singles, axis=0)[:, valid], rtol=1e-4, atol=1e-6)
    assert not np.allclose(singles[0][:, valid], singles[3][:, valid], rtol=1e-3)
    tiled = np.full_like(whole, np.nan)
    for y in (0, 30):
        for x in (0, 30):
            tiled[:, y : min(48, y + 30), x : min(48, x + 30)] = score_block(stack, shifted, 24 + y, 24 + min(48, y + 30), 24 + x, 24 + min(48, x + 30))
    np.testing.assert_allclose(tiled, whole, rtol=1e-4, atol=1e-5, equal_nan=True)


def test_lattice_offsets_rejects_zero():
    with pytest.raises(ValueError, match="shifts"):
        lattice_offsets(0, 8)


def test_channel_error_drops_each_cells_largest_channels():
    rng = np.random.default_rng(0)
    sq = rng.random((5, 9, 3, 4)).astype(np.float32)
    for drop in (0, 1, 2):
        expect = np.array([[[np.mean(sorted(sq[b, :, i, j])[: 9 - drop]) for j in range(4)] for i in range(3)] for b in range(5)])
        np.testing.assert_allclose(channel_error(sq, 1, drop), expect, rtol=1e-6)
        np.testing.assert_allclose(channel_error(torch.from_numpy(sq), 1, drop).numpy(), expect, rtol=1e-6)
    one_source = np.zeros((1, 9, 1, 1), np.float32)
    one_source[0, 4] = 9.0
    shared = np.zeros((1, 9, 1, 1), np.float32)
    shared[0, :3] = 1.0
    assert channel_error(one_source, 1) > channel_error(shared, 1)
    assert channel_error(one_source, 1, 1) < channel_error(shared, 1, 1)
    with pytest.raises(ValueError, match="drop_top"):
        channel_error(sq, 1, 9)
