import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import engine.geophys.predict as predict
from engine.geophys.card import LineamentCard
from engine.geophys.grid import make_dataarray
from engine.geophys.lineaments import VectorParams, hole_geometry, unet_lineaments, write_lines
from engine.geophys.predict import predict_grid
from engine.raster.blend import blend_weights
from engine.raster.grid import stride_starts

FIXTURES = Path(__file__).parent / "fixtures"


def _conv_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 5, padding=2), torch.nn.Tanh(), torch.nn.Conv2d(4, 1, 3, padding=1)
    ).eval()


def _global_sliding_window(model, grid, window, stride):
    """Independent reference: every window over the whole grid, blended at once."""
    h, w = grid.shape
    acc, wsum = np.zeros((h, w)), np.zeros((h, w))
    g = blend_weights(window, "gaussian", peak_floor=predict.PEAK_FLOOR)
    for r in stride_starts(h, window, stride):
        for c in stride_starts(w, window, stride):
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


def _old_gaussian(window: int, sigma_scale: float = 0.125) -> np.ndarray:
    """The pre-port kernel (frozen here as the reference): peak-normalised, clamped at 1e-3 of the peak."""
    x = np.arange(window) - (window - 1) / 2
    g = np.exp(-0.5 * (x / (sigma_scale * window)) ** 2)
    w = np.outer(g, g)
    return np.maximum(w / w.max(), 1e-3).astype(np.float32)


def _pinned_conv_case():
    z = np.load(FIXTURES / "pin_conv.npz")
    net = _conv_model()
    for k, v in net.state_dict().items():
        assert np.array_equal(v.numpy(), z["w_" + k.replace(".", "_")]), "torch's init changed: the pin's net differs"
    grid = np.random.default_rng(1).normal(size=(150, 210)).cumsum(axis=1)
    grid[60:80, 100:140] = np.nan
    return net, make_dataarray(grid, 50.0, (7e6, 5e5), crs="EPSG:32633"), z["prob"]


def test_port_equals_pinned_old_output(tmp_path):
    """Against the pre-port code's output (fixtures/pin_conv.*): identical lines and probabilities
    within 1e-5; the kernel is the old one (peak-normalised, floor 1e-3 of the peak)."""
    net, da, pinned = _pinned_conv_case()
    prob, lines = unet_lineaments(
        da,
        net,
        LineamentCard(window=32),
        VectorParams(threshold=0.5, min_length_cells=5),
        block=64,
        stride=16,
        batch_size=5,
    )
    assert np.array_equal(np.isnan(prob.values), np.isnan(pinned))
    assert np.nanmax(np.abs(prob.values - pinned)) <= 1e-5
    write_lines(lines, tmp_path / "lines.geojson", "EPSG:32633")
    got, want = (json.loads(p.read_text()) for p in (tmp_path / "lines.geojson", FIXTURES / "pin_conv.geojson"))
    assert got["features"] == want["features"] and got["features"]
    np.testing.assert_allclose(
        blend_weights(32, "gaussian", peak_floor=predict.PEAK_FLOOR), _old_gaussian(32), atol=1e-7
    )


def test_small_grid_and_nan_hole_never_yield_lines_in_hole():
    always_on = torch.nn.Conv2d(1, 1, 1)
    torch.nn.init.zeros_(always_on.weight)
    torch.nn.init.constant_(always_on.bias, 5.0)
    v = np.random.default_rng(2).normal(size=(60, 70))
    v[20:35, 25:50] = np.nan
    da = make_dataarray(v, 100.0, (1000.0, 2000.0), crs="EPSG:32633")
    card = LineamentCard(window=32, threshold=0.5)
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
    from engine.geophys.card import LineamentCard
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
    params = VectorParams(min_length_cells=20)
    prob, lines = unet_lineaments(da, model.eval(), LineamentCard(window=256), params, block=2048, batch_size=16)
    hole = prob.values[n // 3 + 1 : n // 2 - 1, n // 3 + 1 : n // 2 - 1]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps({"lines": len(lines), "seconds": time.perf_counter() - t, "peak_gib": peak,
                      "nan_in_hole": bool(np.isnan(hole).all())}))
    """
)


def _run_large(n: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(n)], capture_output=True, text=True, timeout=900, check=True
    )
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
