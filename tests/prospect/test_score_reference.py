"""The raster-runner map equals the serial score_map it replaced (pinned in fixtures/score_reference.pt
by fixtures/make_score_reference.py at f4383f6): |Δ| ≤ 1e-5 + 1e-5·|ref| and the same AUC.

The relative term admits float32 summation order, which differs between BLAS builds: the PCA case
moved by up to 1.2e-5 on maps of magnitude 6.5 (5e-6 relative, ~25 ulp) between two installs of the same pins."""

from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from engine.nets.mae import ConvAutoencoder, ProspectMAE
from engine.prospect import evaluate as ev
from engine.prospect.baselines import PCAScorer, sample_cells
from engine.prospect.score import (
    CAEScorer,
    CellScorer,
    MAEScorer,
    read_score,
    score_map,
)
from engine.prospect.stack import build_stack, open_stack
from engine.prospect.synth import synth_region, write_region
from engine.raster.runner import RunOptions

REF = Path(__file__).parent / "fixtures" / "score_reference.pt"


@pytest.fixture(scope="module")
def reference():
    return torch.load(REF, weights_only=False)


@pytest.fixture(scope="module")
def region(tmp_path_factory):
    d = tmp_path_factory.mktemp("ref")
    reg = synth_region(96, seed=5)
    write_region(reg, d / "r")
    return reg, build_stack(d / "r" / "layers.json", d / "s.zarr")


def _scorers(ref, stack_path):
    st = open_stack(stack_path)
    c = len(st.channels)
    latent = {"mean": np.zeros(16, np.float32), "precision": np.eye(16, dtype=np.float32)}
    mae = ProspectMAE(c, window=16, patch=4, fused=8, dim=16, depth=1, heads=2, decoder_dim=16, decoder_depth=1)
    mae.load_state_dict(ref["mae"])
    cae = ConvAutoencoder(c, width=8, window=16)
    cae.load_state_dict(ref["cae"])
    return {
        "mae_shift2_block40": MAEScorer(mae, latent, score_channels=st.measured, shifts=2),
        "mae_sigma2_block64": MAEScorer(mae, latent),
        "cae_shift2_block32": CAEScorer(cae, score_channels=st.measured, shifts=2, shift_step=4),
        "pca_sigma1.5_block48": CellScorer(PCAScorer(sample_cells(st, 5000), channels=st.measured)),
    }


def _check(ref_case: dict, out: Path, deposits) -> float:
    root = zarr.open_group(out, mode="r")
    assert root.attrs["complete"] is True
    worst = 0.0
    for name, want in ref_case["maps"].items():
        got = np.asarray(root[name][:])
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        worst = max(worst, float(np.nanmax(np.abs(got - want))))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, equal_nan=True)
    auc = ev.evaluate(read_score(out), deposits.row.values, deposits.col.values).auc
    assert auc == ref_case["auc"]
    for n, s in ref_case["standardisation"].items():
        assert root.attrs["standardisation"][n]["median"] == pytest.approx(s["median"], abs=1e-6)
        assert root.attrs["standardisation"][n]["iqr"] == pytest.approx(s["iqr"], abs=1e-6)
    return worst


def test_serial_runner_equals_pinned_maps(reference, region, tmp_path):
    reg, stack_path = region
    assert open_stack(stack_path).channels == reference["stack_channels"]
    worst = {}
    for name, scorer in _scorers(reference, stack_path).items():
        case = reference["cases"][name]
        out = score_map(stack_path, scorer, tmp_path / f"{name}.zarr", block=case["block"], sigma=case["sigma"])
        worst[name] = _check(case, out, reg.deposits)
    print("max |Δ| per case:", worst)


@pytest.mark.slow
def test_ray_runner_equals_pinned_maps(reference, region, tmp_path, ray_session):
    reg, stack_path = region
    scorers = _scorers(reference, stack_path)
    for name in ("mae_shift2_block40", "pca_sigma1.5_block48"):
        case = reference["cases"][name]
        out = score_map(
            stack_path,
            scorers[name],
            tmp_path / f"{name}.zarr",
            block=case["block"],
            sigma=case["sigma"],
            options=RunOptions(executor="ray", read_in_compute=name.startswith("mae")),  # as lode prospect map
        )
        print(name, "max |Δ|", _check(case, out, reg.deposits))
