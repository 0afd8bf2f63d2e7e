import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from engine.prospect import evaluate as ev


def _labels(shape, rows, cols):
    y = np.zeros(shape, dtype=int)
    y[rows, cols] = 1
    return y


def test_auc_matches_sklearn_with_ties_and_nan():
    rng = np.random.default_rng(1)
    score = np.round(rng.normal(size=(120, 150)), 1)  # many ties
    rows, cols = rng.integers(0, 120, 60), rng.integers(0, 150, 60)
    score[rows[:30], cols[:30]] += 1.0
    score[:10, :] = np.nan
    m = ev.evaluate(score, rows, cols)
    y = _labels(score.shape, rows, cols)
    ok = np.isfinite(score)
    assert m.auc == pytest.approx(roc_auc_score(y[ok], score[ok]), abs=1e-12)
    inside_nan = len(np.unique(np.ravel_multi_index((rows, cols), score.shape)[rows < 10]))
    assert m.n_deposits_invalid == inside_nan


def test_random_score_auc_near_half():
    rng = np.random.default_rng(7)
    score = rng.random((300, 300))
    rows, cols = rng.integers(0, 300, 500), rng.integers(0, 300, 500)
    m = ev.evaluate(score, rows, cols)
    assert abs(m.auc - 0.5) < 0.05
    assert abs(m.success_rate_area - 0.5) < 0.05
    assert abs(m.capture_top10 - 0.10) < 0.05


def test_perfect_and_known_ranks():
    score = np.arange(100, dtype=float).reshape(10, 10)  # 99 is the top cell
    # deposits at the cells ranked 1st and 6th from the top
    rows, cols = np.array([9, 9]), np.array([9, 4])
    m = ev.evaluate(score, rows, cols)
    assert sorted(m.area_ranks) == pytest.approx([0.005, 0.055])
    assert m.capture_top10 == 1.0
    assert m.success_rate_area == pytest.approx(1 - 0.03)
    y = _labels(score.shape, rows, cols)
    assert m.auc == pytest.approx(roc_auc_score(y.ravel(), score.ravel()))


def test_prediction_area_intersection_on_known_map():
    # 20 deposits spread uniformly over score quantiles 0.5..1: P(t) = 1 - A(t) at A = 1/3
    score = np.linspace(0, 1, 10_000).reshape(100, 100)
    q = np.linspace(0.5, 0.999, 20)
    idx = (q * 9999).astype(int)
    rows, cols = np.unravel_index(idx, score.shape)
    m = ev.evaluate(score, rows, cols)
    assert m.pa_intersection_area == pytest.approx(1 / 3, abs=0.03)
    assert m.pa_intersection_prediction == pytest.approx(2 / 3, abs=0.06)


def test_plots_and_report(tmp_path):
    rng = np.random.default_rng(0)
    score = rng.random((64, 64))
    rows, cols = rng.integers(0, 64, 10), rng.integers(0, 64, 10)
    m = ev.evaluate(score, rows, cols)
    ev.plot_success({"random": m}, tmp_path / "s.png")
    ev.plot_prediction_area(score, rows, cols, tmp_path / "pa.png")
    ev.write_report({"random": m}, tmp_path / "m.json")
    import json

    data = json.loads((tmp_path / "m.json").read_text())
    assert data["maps"]["random"]["auc"] == pytest.approx(m.auc)
    assert (tmp_path / "s.png").stat().st_size > 1000 and (tmp_path / "pa.png").stat().st_size > 1000
