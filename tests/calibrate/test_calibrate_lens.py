import numpy as np
import pytest

from engine.calibrate.capture import CaptureCalibration
from engine.calibrate.lens import LensModel, fit_lens, ideal_points
from engine.errors import LodeInputError
from engine.synth.captures import CaptureConfig, calibration_frames, capture_grid


def _truth(cfg):
    return LensModel(cfg.lens.camera_matrix, cfg.lens.dist_coeffs, cfg.frame_hw)


def test_fit_lens_recovers_distortion_from_synthetic_checkerboards(tmp_path):
    cfg = CaptureConfig(frame_hw=(200, 300), distortion=(-0.08, 0.02, 0.0005, -0.0003, 0.0), noise_sigma=1.0)
    fitted = fit_lens(calibration_frames(cfg)["checkerboard"])
    assert fitted.views >= 8 and fitted.rms_px < 0.1
    ys, xs = np.mgrid[5:195:10, 5:295:10]
    pts = np.c_[xs.ravel(), ys.ravel()].astype(float)
    err = np.abs(ideal_points(pts, fitted) - ideal_points(pts, _truth(cfg)))
    assert np.abs(ideal_points(pts, _truth(cfg)) - pts).max() > 3
    assert err.max() < 0.15
    fitted.save(tmp_path / "lens.json")
    back = LensModel.load(tmp_path / "lens.json")
    assert np.allclose(back.camera_matrix, fitted.camera_matrix) and np.allclose(back.dist_coeffs, fitted.dist_coeffs)


def test_fit_lens_gives_the_same_lens_every_time():
    """A collection fitted again on a rerun must give the same lens to the last digit: the lens is part of
    every section's fingerprint, so the least digit changing would stitch every section again."""
    cfg = CaptureConfig.degraded(frame_hw=(160, 240), seed=41)
    views = calibration_frames(cfg)["checkerboard"]
    fits = [fit_lens(views).to_dict() for _ in range(4)]
    assert all(f == fits[0] for f in fits[1:])


def test_undistort_straightens_a_frame_onto_the_ideal_grid():
    dist = (-0.1, 0.0, 0.0, 0.0, 0.0)
    cfg_d = CaptureConfig(
        rows=1, cols=1, frame_hw=(120, 180), distortion=dist, jitter_px=0, rotation_deg=0, scale_jitter=0, seed=5
    )
    cfg_0 = CaptureConfig(rows=1, cols=1, frame_hw=(120, 180), jitter_px=0, rotation_deg=0, scale_jitter=0, seed=5)
    distorted = capture_grid(None, cfg_d).frames[0]
    ideal = capture_grid(None, cfg_0).frames[0]
    fixed, _ = CaptureCalibration(_truth(cfg_d), None, cfg_d.frame_hw)(distorted)
    inner = (slice(10, 110), slice(10, 170))
    before = np.abs(distorted[inner].astype(float) - ideal[inner]).mean()
    after = np.abs(fixed[inner].astype(float) - ideal[inner]).mean()
    assert after < 3 and after < before / 3


def test_bad_checkerboards_and_files_name_the_input(tmp_path):
    with pytest.raises(LodeInputError, match="checkerboard"):
        fit_lens([np.full((100, 150, 3), 128, np.uint8)] * 5)
    (tmp_path / "lens.json").write_text('{"camera_matrix": [1, 2]}')
    with pytest.raises(LodeInputError, match="lens.json"):
        LensModel.load(tmp_path / "lens.json")
