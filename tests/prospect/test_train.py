import numpy as np
import pytest
import torch

from engine.prospect.model import ProspectMAE
from engine.prospect.stack import build_stack, open_stack
from engine.prospect.synth import synth_region, write_region
from engine.prospect.train import WindowPool, fit, fit_latent_gaussian, load_checkpoint, train_local, train_with_ray

TINY = dict(window=16, patch=4, fused=8, dim=16, depth=1, heads=2, decoder_dim=16, decoder_depth=1)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    d = tmp_path_factory.mktemp("train")
    write_region(synth_region(96, seed=2), d / "r")
    return build_stack(d / "r" / "layers.json", d / "s.zarr")


def test_pool_windows_are_mostly_valid(stack):
    pool = WindowPool(open_stack(stack), window=16, blocks=2, block=64, seed=0)
    x, v = pool.batch(32)
    assert x.shape == (32, 14, 16, 16) and v.shape == (32, 16, 16)
    assert np.isfinite(x).all() and (v.mean(axis=(1, 2)) >= 0.5).all()


def test_fit_lowers_masked_reconstruction_loss(stack):
    torch.set_num_threads(1)
    pool = WindowPool(open_stack(stack), window=16, seed=0)
    model = ProspectMAE(14, **TINY)
    losses = fit(model, pool, steps=60, batch=16, lr=3e-3)
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:5])
    lat = fit_latent_gaussian(model, pool, windows=64, batch=16)
    assert lat["mean"].shape == (16,) and np.all(np.linalg.eigvalsh(lat["precision"]) > 0)


def test_train_local_checkpoint_roundtrip(stack, tmp_path):
    torch.set_num_threads(1)
    cfg = dict(channels=14, **TINY)
    summary = train_local(stack, tmp_path / "m.pt", "mae", steps=5, batch=8, config=cfg)
    model, ck = load_checkpoint(tmp_path / "m.pt")
    assert summary["steps"] == 5 and ck["channels"] == open_stack(stack).channels
    assert isinstance(model, ProspectMAE) and "latent" in ck


@pytest.mark.slow
@pytest.mark.ray
def test_train_with_ray_torchtrainer(stack, tmp_path, ray_session):
    cfg = dict(channels=14, **TINY)
    metrics = train_with_ray(stack, tmp_path / "m.pt", "mae", steps=5, batch=8, config=cfg, storage=tmp_path / "runs")
    assert metrics["steps"] == 5
    model, ck = load_checkpoint(tmp_path / "m.pt")
    assert ck["kind"] == "mae"
