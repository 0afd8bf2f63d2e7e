import json

import numpy as np
import pytest
import torch

from engine.errors import LodeInputError
from engine.nets.mae import ProspectMAE
from engine.prospect.stack import build_stack, open_stack
from engine.prospect.synth import synth_region, write_region
from engine.prospect.train import WindowPool, fit_latent_gaussian, load_checkpoint, train

TINY = dict(window=16, patch=4, fused=8, dim=16, depth=1, heads=2, decoder_dim=16, decoder_depth=1)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    d = tmp_path_factory.mktemp("train")
    write_region(synth_region(96, seed=2), d / "r")
    return build_stack(d / "r" / "layers.json", d / "s.zarr")


def _weights(path):
    return load_checkpoint(path)[0].state_dict()


def test_pool_windows_are_mostly_valid(stack):
    pool = WindowPool(open_stack(stack), window=16, blocks=2, block=64, seed=0)
    x, v = pool.batch(32)
    assert x.shape == (32, 14, 16, 16) and v.shape == (32, 16, 16)
    assert np.isfinite(x).all() and (v.mean(axis=(1, 2)) >= 0.5).all()


def test_training_lowers_masked_reconstruction_loss(stack, tmp_path):
    cfg = dict(channels=14, **TINY)
    summary = train(
        stack, tmp_path / "m.pt", "mae", steps=60, batch=16, lr=3e-3, config=cfg, epochs=6, executor="local", threads=1
    )
    history = json.loads((tmp_path / "m.pt.train" / "train_metrics.json").read_text())["history"]
    assert [r["step"] for r in history] == [10, 20, 30, 40, 50, 60]
    assert history[-1]["loss"] < 0.7 * history[0]["loss"]
    model, card, latent = load_checkpoint(tmp_path / "m.pt")
    assert summary["steps"] == 60 and card.train == summary and card.channels == open_stack(stack).channels
    assert isinstance(model, ProspectMAE) and np.all(np.linalg.eigvalsh(latent["precision"]) > 0)
    pool = WindowPool(open_stack(stack), window=16, seed=0)
    lat = fit_latent_gaussian(model, pool, windows=64, batch=16)
    assert lat["mean"].shape == (16,) and np.all(np.linalg.eigvalsh(lat["precision"]) > 0)


@pytest.mark.parametrize("kind", ["mae", "cae"])
def test_a_resumed_run_ends_where_an_uninterrupted_one_does(stack, tmp_path, kind, kill_after_epoch):
    """A run killed after its second epoch's checkpoint, resumed from its ``last/``, ends with the
    same weights (and latent Gaussian) as the run that was never stopped."""

    cfg = dict(channels=14, **TINY) if kind == "mae" else dict(channels=14, width=8, window=16)
    common = dict(kind=kind, steps=8, batch=8, config=cfg, epochs=4, executor="local", threads=1)
    train(stack, tmp_path / "whole.pt", **common)

    with kill_after_epoch(1):
        train(stack, tmp_path / "cut.pt", **common)
    last = tmp_path / "cut.pt.train" / "last"
    assert torch.load(last / "state.pt", weights_only=False)["epoch"] == 1
    summary = train(stack, tmp_path / "cut.pt", **common, resume=last)
    assert summary["steps"] == 8
    whole, resumed = _weights(tmp_path / "whole.pt"), _weights(tmp_path / "cut.pt")
    for k in whole:
        torch.testing.assert_close(resumed[k], whole[k], rtol=0, atol=0, msg=k)
    history = json.loads((tmp_path / "cut.pt.train" / "train_metrics.json").read_text())["history"]
    assert [r["epoch"] for r in history] == [0, 1, 2, 3]
    if kind == "mae":
        a, b = load_checkpoint(tmp_path / "whole.pt")[2], load_checkpoint(tmp_path / "cut.pt")[2]
        np.testing.assert_array_equal(a["mean"], b["mean"])
    with pytest.raises(LodeInputError, match="nothing to train"):
        train(stack, tmp_path / "again.pt", **common, resume=last)


def test_a_global_batch_that_does_not_split_over_the_workers_is_refused(stack, tmp_path):
    with pytest.raises(LodeInputError, match="--batch"):
        train(stack, tmp_path / "m.pt", steps=2, batch=9, workers=2, executor="local")
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.slow
@pytest.mark.ray
def test_two_ray_train_workers_share_the_global_batch(stack, tmp_path, ray_session):
    """DDP over two CPU workers: the workers' losses are averaged each epoch, the exported
    checkpoint loads, and the history records the world size."""
    cfg = dict(channels=14, **TINY)
    summary = train(stack, tmp_path / "m.pt", "mae", steps=4, batch=8, config=cfg, epochs=2, workers=2, threads=1)
    assert summary["steps"] == 4 and summary["workers"] == 2
    history = json.loads((tmp_path / "m.pt.train" / "train_metrics.json").read_text())["history"]
    assert [r["world_size"] for r in history] == [2, 2]
    model, card, _ = load_checkpoint(tmp_path / "m.pt")
    assert card.kind == "mae" and isinstance(model, ProspectMAE)
