import json

import numpy as np
import pytest
import torch
import zarr

from engine.nets.mae import ProspectMAE
from engine.prospect import evaluate as ev
from engine.prospect.baselines import PCAScorer, sample_cells
from engine.prospect.score import (
    CellScorer,
    MAEScorer,
    ScoreStage,
    channel_error,
    read_score,
    score_map,
)
from engine.prospect.stack import build_stack, open_stack
from engine.prospect.synth import synth_region, write_region
from engine.raster import Block, Unit, lattice_offsets


@pytest.fixture(scope="module")
def small_stack(tmp_path_factory):
    d = tmp_path_factory.mktemp("region")
    write_region(synth_region(96, seed=5), d / "r")
    return build_stack(d / "r" / "layers.json", d / "s.zarr")


def _mae(channels):
    torch.manual_seed(0)
    m = ProspectMAE(channels, window=16, patch=4, fused=8, dim=16, depth=1, heads=2, decoder_dim=16, decoder_depth=1)
    return MAEScorer(m, {"mean": np.zeros(16, np.float32), "precision": np.eye(16, dtype=np.float32)})


def score_block(stack_path, scorer, y0: int, y1: int, x0: int, x1: int, sigma: float = 0.0) -> np.ndarray:
    """Component maps (K, y1 - y0, x1 - x0) of one block, through the stage's read and compute."""
    stage = ScoreStage(str(stack_path), "", scorer, sigma)
    stage.setup("cpu")
    unit = Unit("map", Block(0, y0, x0, y1 - y0, x1 - x0))
    return stage.compute(unit, stage.read(unit))["maps"]


def test_scoring_masks_cover_every_patch_once():
    m = ProspectMAE(3, window=32, patch=4)
    masks = m.scoring_masks()
    assert masks.shape == (2, 64)
    np.testing.assert_array_equal(masks.sum(0).numpy(), np.ones(64))
    assert masks[0].sum() == 32


def test_blocked_equals_global(small_stack):
    stack = open_stack(small_stack)
    scorer = _mae(len(stack.channels))
    whole = score_block(small_stack, scorer, 0, 96, 0, 96, sigma=2.0)
    tiled = np.full_like(whole, np.nan)
    for y in (0, 40, 80):
        for x in (0, 40, 80):
            y1, x1 = min(96, y + 40), min(96, x + 40)
            tiled[:, y:y1, x:x1] = score_block(small_stack, scorer, y, y1, x, x1, sigma=2.0)
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
    whole = score_block(small_stack, shifted, 24, 72, 24, 72)
    singles = []
    for off in shifted.offsets:
        one = _mae(len(stack.channels))
        one.offsets = (off,)
        singles.append(score_block(small_stack, one, 24, 72, 24, 72))
    valid = np.isfinite(whole[0])
    np.testing.assert_allclose(whole[:, valid], np.mean(singles, axis=0)[:, valid], rtol=1e-4, atol=1e-6)
    assert not np.allclose(singles[0][:, valid], singles[3][:, valid], rtol=1e-3)
    tiled = np.full_like(whole, np.nan)
    for y in (0, 30):
        for x in (0, 30):
            y1, x1 = min(48, y + 30), min(48, x + 30)
            tiled[:, y:y1, x:x1] = score_block(small_stack, shifted, 24 + y, 24 + y1, 24 + x, 24 + x1)
    np.testing.assert_allclose(tiled, whole, rtol=1e-4, atol=1e-5, equal_nan=True)


def test_lattice_offsets_rejects_zero():
    with pytest.raises(ValueError, match="shifts"):
        lattice_offsets(0, 8)


def test_channel_error_drops_each_cells_largest_channels():
    rng = np.random.default_rng(0)
    sq = rng.random((5, 9, 3, 4)).astype(np.float32)
    for drop in (0, 1, 2):
        expect = np.array(
            [[[np.mean(sorted(sq[b, :, i, j])[: 9 - drop]) for j in range(4)] for i in range(3)] for b in range(5)]
        )
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


def test_partial_map_is_never_read_as_complete_and_resumes(small_stack, tmp_path):
    """A map stopped after some blocks is refused by readers; its rerun scores only the rest and
    equals an uninterrupted map."""
    from engine.errors import LodeInputError
    from engine.prospect.score import write_geotiff

    stack = open_stack(small_stack)
    scorer = CellScorer(PCAScorer(sample_cells(stack, 5000)))
    whole = score_map(small_stack, scorer, tmp_path / "whole.zarr", block=32)
    part = score_map(small_stack, scorer, tmp_path / "part.zarr", block=32, max_blocks=4)
    assert zarr.open_group(part, mode="r").attrs["complete"] is False
    with pytest.raises(LodeInputError, match="partial map"):
        read_score(part)
    with pytest.raises(LodeInputError, match="partial map"):
        write_geotiff(part, tmp_path / "p.tif")
    assert np.isfinite(read_score(part, "pca", partial=True)[:32]).any()
    assert np.isnan(read_score(part, "pca", partial=True)[64:]).all()
    assert len(list((part / "_run" / "_status" / "map").glob("*.json"))) == 4
    score_map(small_stack, scorer, part, block=32)
    assert zarr.open_group(part, mode="r").attrs["complete"] is True
    doc = json.loads((part / "_run" / "manifest.json").read_text())
    assert doc["skipped_already_done"] == 4 and doc["status"] == "complete" and len(doc["blocks"]) == 9
    for name in ("pca", "prospectivity"):
        np.testing.assert_array_equal(read_score(part, name), read_score(whole, name))


def test_another_map_into_the_same_store_starts_afresh(small_stack, tmp_path):
    stack = open_stack(small_stack)
    scorer = CellScorer(PCAScorer(sample_cells(stack, 5000)))
    out = score_map(small_stack, scorer, tmp_path / "m.zarr", block=48, max_blocks=1)
    score_map(small_stack, scorer, out, block=32)
    root = zarr.open_group(out, mode="r")
    assert root.attrs["complete"] is True and root.attrs["block"] == 32 and root["pca"].chunks == (32, 32)
    assert json.loads((out / "_run" / "manifest.json").read_text())["skipped_already_done"] == 0


def test_driver_never_asks_torch_for_a_device(small_stack, tmp_path, monkeypatch):
    """Scorers are built on the CPU and moved by the stage's setup to the device the runner gives
    it; nothing in the driver asks torch whether CUDA is there."""

    def no(*_a, **_k):
        raise AssertionError("torch.cuda.is_available() called")

    monkeypatch.setattr(torch.cuda, "is_available", no)
    scorer = _mae(len(open_stack(small_stack).channels))
    assert scorer.device == "cpu" and next(scorer.model.parameters()).device.type == "cpu"
    out = score_map(small_stack, scorer, tmp_path / "m.zarr", block=48)
    assert zarr.open_group(out, mode="r").attrs["device"] == "cpu"


def test_checkpoint_scorer_reads_without_torch_and_maps_like_the_model(small_stack, tmp_path):
    """``make_scorer`` for a checkpoint leaves torch out of the driver (its import alone costs the CUDA
    build ~0.6 GiB); the scorer it ships builds the same model where it runs and maps identically."""
    import subprocess
    import sys
    from pathlib import Path

    from engine.errors import LodeInputError
    from engine.prospect.checkpoint import ProspectCard, read_card
    from engine.prospect.score import CheckpointScorer
    from engine.prospect.train import save_checkpoint

    st = open_stack(small_stack)
    mae = _mae(len(st.channels))
    ck = save_checkpoint(tmp_path / "m.pt", mae.model, "mae", st.channels, mae.latent)
    assert read_card(ck) == ProspectCard(kind="mae", config=mae.model.config, channels=st.channels)
    code = (
        "import sys; from pathlib import Path; from engine.prospect.select import make_scorer; "
        f"s = make_scorer('mae', Path({str(small_stack)!r}), Path({str(ck)!r}), shifts=1); "
        "print(s.window, s.stride, s.offsets, 'torch' in sys.modules)"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(root), "PATH": ""},
    )
    assert out.stdout.split() == ["16", "8", "((0,", "0),)", "False"]
    shipped = CheckpointScorer.open(ck, "mae", st.channels, list(range(len(st.channels))), shifts=1)
    a = score_map(small_stack, shipped, tmp_path / "a.zarr", block=48)
    b = score_map(small_stack, mae, tmp_path / "b.zarr", block=48)
    for name in ("recon_error", "latent_distance", "prospectivity"):
        np.testing.assert_array_equal(read_score(a, name), read_score(b, name))
    save_checkpoint(ck, _mae(len(st.channels)).model, "mae", st.channels, mae.latent)
    shipped = CheckpointScorer.open(ck, "mae", st.channels, list(range(len(st.channels))), shifts=1)
    score_map(small_stack, shipped, a, block=48)
    assert json.loads((a / "_run" / "manifest.json").read_text())["skipped_already_done"] == 0
    with pytest.raises(LodeInputError, match="not cae"):
        CheckpointScorer.open(ck, "cae", st.channels, [0])
    with pytest.raises(LodeInputError, match="channels differ"):
        CheckpointScorer.open(ck, "mae", st.channels[::-1], [0])
    (tmp_path / "bad.pt").write_bytes(b"not a zip")
    with pytest.raises(LodeInputError, match="not a prospect checkpoint"):
        CheckpointScorer.open(tmp_path / "bad.pt", "mae", st.channels, [0])
