import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from engine.geophys.grid import make_dataarray
from engine.geophys.lineaments import VectorParams, hole_geometry, unet_lineaments
from engine.geophys.predict import gaussian_weights, predict_grid, window_starts


def _conv_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 5, padding=2), torch.nn.Tanh(), torch.nn.Conv2d(4, 1, 3, padding=1)).eval()


def _global_sliding_window(model, grid, window, stride):
    """Independent reference: every window over the whole grid, blended at once."""
    h, w = grid.shape
    acc, wsum = np.zeros((h, w)), np.zeros((h, w))
    g = gaussian_weights(window)
    for r in window_starts(h, window, stride):
        for c in window_starts(w, window, stride):
            x = torch.from_numpy(grid[r : r + window, c : c + window].astype(np.float32))[None, None]
            x = (x - x.mean()) / (x.std(unbiased=False) + 1e-6)
            with torch.no_grad():
                p = torch.sigmoid(model(x))[0, 0].numpy()
            acc[r : r + window, c : c + window] += p * g
            wsum[r : r + window, c : c + window] += g
    return acc / wsum


def test_blocked_prediction_equals_global_sliding_window():
    grid = np.random.default_rng(1).normal(size=(150, 210)).cumsum(axis=1)
    model = _conv_model()
    ref = _global_sliding_window(model, grid, 32, 16)
    for block in (40, 64, 1000):
        out = predict_grid(model, grid, window=32, stride=16, block=block, batch_size=5)
        np.testing.assert_allclose(out, ref, atol=1e-5)


def test_window_starts_cover_grid_edges():
    for size, window, stride in ((100, 32, 16), (32, 32, 16), (33, 32, 16), (10, 32, 16)):
        s = window_starts(size, window, stride)
        assert s[0] == 0 and s[-1] == max(0, size - window)
        assert (np.diff(s) <= stride).all()


def test_small_grid_and_nan_hole_never_yield_lines_in_hole():
    always_on = torch.nn.Conv2d(1, 1, 1)
    torch.nn.init.zeros_(always_on.weight)
    torch.nn.init.constant_(always_on.bias, 5.0)
    v = np.random.default_rng(2).normal(size=(60, 70))
    v[20:35, 25:50] = np.nan
    da = make_dataarray(v, 100.0, (1000.0, 2000.0), crs="EPSG:32633")
    card = {"window": 32, "threshold": 0.5}
    prob, lines = unet_lineaments(da, always_on.eval(), card, VectorParams(min_length_cells=3))
    assert np.isnan(prob.values[20:35, 25:50]).all()
    assert (prob.values[np.isfinite(v)] > 0.99).all()
    assert prob.attrs["crs"] == "EPSG:32633" and np.array_equal(prob.northing.values, da.northing.values)
    assert lines
    hole = hole_geometry(da)
    assert hole.area == pytest.approx(15 * 25 * 100.0**2)
    assert all(not ln.line.intersects(hole.buffer(-1.0)) for ln in lines)


SCRIPT = textwrap.dedent(
    """
    import json, resource, sys, time
    import cv2, numpy as np, torch
    from engine.geophys.grid import make_dataarray
    from engine.geophys.lineaments import VectorParams, unet_lineaments
    n = int(sys.argv[1])
    g = np.zeros((n, n), np.float32)
    for i in range(6):
        cv2.line(g, (0, 500 + i * n // 7), (n - 1, 900 + i * n // 7), 1.0, 1)
    g = cv2.GaussianBlur(g, (0, 0), 1.5)
    g[n // 3 : n // 2, n // 3 : n // 2] = np.nan
    da = make_dataarray(g, 50.0, (7e6, 5e5), crs="EPSG:32633")
    model = torch.nn.Conv2d(1, 1, 1)
    torch.nn.init.constant_(model.weight, 10.0); torch.nn.init.constant_(model.bias, -30.0)
    t = time.perf_counter()
    prob, lines = unet_lineaments(da, model.eval(), {"window": 256}, VectorParams(min_length_cells=20), block=2048, batch_size=16)
    print(json.dumps({"lines": len(lines), "seconds": time.perf_counter() - t, "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                      "nan_in_hole": bool(np.isnan(prob.values[n // 3 + 1 : n // 2 - 1, n // 3 + 1 : n // 2 - 1]).all())}))
    """
)


def _run_large(n: int) -> dict:
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(n)], capture_output=True, text=True, timeout=900, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_2048_grid_inference_memory_and_holes():
    result = _run_large(2048)
    assert result["peak_gib"] <= 4.0
    assert result["nan_in_hole"]
    assert 6 <= result["lines"] <= 12


@pytest.mark.slow
def test_8192_grid_inference_stays_under_4_gib():
    result = _run_large(8192)
    assert result["peak_gib"] <= 4.0
    assert result["nan_in_hole"]
    assert 6 <= result["lines"] <= 12
