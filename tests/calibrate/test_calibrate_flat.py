import numpy as np
import pytest

from engine.calibrate.capture import CaptureCalibration
from engine.calibrate.flat import FlatField, fit_flat
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


def test_flat_roundtrip_and_bad_input(tmp_path):
    ff = FlatField(np.full((4, 5, 3), 0.9, np.float32), np.zeros((4, 5, 3), np.float32))
    ff.save(tmp_path / "flat.npz")
    assert np.allclose(FlatField.load(tmp_path / "flat.npz").flat, 0.9)
    with pytest.raises(LodeInputError, match="flat"):
        fit_flat([np.zeros((8, 8, 3), np.uint8)], [np.full((8, 8, 3), 5, np.uint8)])
    (tmp_path / "bad.npz").write_bytes(b"nope")
    with pytest.raises(LodeInputError, match="bad.npz"):
        FlatField.load(tmp_path / "bad.npz")
