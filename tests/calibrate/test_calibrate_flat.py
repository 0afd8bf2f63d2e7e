import numpy as np
import pytest

from engine.calibrate.capture import CaptureCalibration
from engine.calibrate.flat import FlatField, fit_flat, smooth_surface
from engine.errors import LodeInputError
from engine.synth.captures import CaptureConfig, calibration_frames, vignette


def test_fit_flat_recovers_vignetting_and_dark():
    cfg = CaptureConfig(frame_hw=(120, 160), vignetting=0.35, dark_level=7.0, noise_sigma=2.0, jpeg_quality=92)
    cal = calibration_frames(cfg, n_views=0)
    ff = fit_flat(cal["flat"], cal["dark"])
    v = vignette(cfg.frame_hw, cfg.vignetting)
    assert np.abs(ff.flat[..., 1] - v).max() < 0.01
    assert abs(float(ff.dark.mean()) - 7.0) < 0.2
    scene = np.full((120, 160, 3), 150.0, np.float32)
    raw = np.rint(scene * v[..., None] + 7.0).astype(np.uint8)
    err = np.abs(CaptureCalibration(None, ff, cfg.frame_hw)(raw)[0] - scene)
    assert err.mean() < 0.8 and np.percentile(err, 99) < 2.5


def test_smooth_surface_reproduces_a_polynomial_of_its_degree_everywhere():
    """A per-channel quartic in scaled x, y (with cross terms), sampled every 4th pixel by the fit, is
    given back at every pixel, the ones between the samples and the last row and column included."""
    h, w = 123, 171
    y, x = np.mgrid[0:h, 0:w]
    u, v = x / (w - 1) * 2 - 1, y / (h - 1) * 2 - 1
    truth = np.stack([100 + 20 * u - 7 * v**2 + 3 * u**2 * v**2 + 5 * u**3 * v, 80 - 9 * u**4, 60 + 4 * v**4], -1)
    got = smooth_surface(truth.astype(np.float32), degree=4)
    assert got.shape == (h, w, 3) and got.dtype == np.float32
    assert np.abs(got - truth).max() < 1e-3


def test_flat_roundtrip_and_bad_input(tmp_path):
    ff = FlatField(np.full((4, 5, 3), 0.9, np.float32), np.zeros((4, 5, 3), np.float32))
    ff.save(tmp_path / "flat.npz")
    assert np.allclose(FlatField.load(tmp_path / "flat.npz").flat, 0.9)
    with pytest.raises(LodeInputError, match="flat"):
        fit_flat([np.zeros((8, 8, 3), np.uint8)], [np.full((8, 8, 3), 5, np.uint8)])
    (tmp_path / "bad.npz").write_bytes(b"nope")
    with pytest.raises(LodeInputError, match="bad.npz"):
        FlatField.load(tmp_path / "bad.npz")
