import cv2
import numpy as np

from engine.synth.captures import (
    CaptureConfig,
    Lens,
    calibration_frames,
    capture_grid,
    observed_to_ideal_map,
    textured_section,
    vignette,
)


def test_clean_frames_sample_the_source_at_the_truth_transform():
    cfg = CaptureConfig(rows=2, cols=2, frame_hw=(120, 160), seed=1)
    src = textured_section(cfg.source_hw, seed=2)
    caps = capture_grid(src, cfg)
    rng = np.random.default_rng(0)
    for frame, M in zip(caps.frames, caps.transforms):
        xy = rng.uniform(5, 110, (200, 2))
        q = (xy @ M[:, :2].T + M[:, 2]).astype(np.float32)
        want = cv2.remap(src.astype(np.float32), q[:, :1], q[:, 1:], cv2.INTER_LINEAR)[:, 0]
        got = cv2.remap(
            frame.astype(np.float32), xy[:, :1].astype(np.float32), xy[:, 1:].astype(np.float32), cv2.INTER_LINEAR
        )[:, 0]
        assert np.abs(got - want).mean() < 2.0


def test_neighbours_overlap_by_the_nominal_fraction():
    cfg = CaptureConfig(rows=1, cols=2, frame_hw=(100, 200), overlap=0.25, jitter_px=0, rotation_deg=0, scale_jitter=0)
    caps = capture_grid(None, cfg)
    dx = caps.transforms[1][0, 2] - caps.transforms[0][0, 2]
    assert abs(dx - 150) < 1e-9
    assert np.array_equal(caps.frames[0][:, 150:], caps.frames[1][:, :50])


def test_ideal_map_inverts_opencv_projection():
    lens = Lens.centred((100, 150), (-0.1, 0.03, 0.001, -0.001, 0.0))
    ideal = observed_to_ideal_map(lens, (100, 150))
    pts = ideal.reshape(-1, 2)[::37].astype(np.float64)
    norm = np.c_[(pts - [lens.cx, lens.cy]) / [lens.fx, lens.fy], np.ones(len(pts))]
    back, _ = cv2.projectPoints(norm, np.zeros(3), np.zeros(3), lens.camera_matrix, lens.dist_coeffs)
    obs = np.stack(np.meshgrid(np.arange(150), np.arange(100)), -1).reshape(-1, 2)[::37]
    assert np.abs(back.reshape(-1, 2) - obs).max() < 1e-3
    assert np.abs(ideal[0, 0] - [0, 0]).max() > 1.0


def test_degradations_and_special_frames():
    cfg = CaptureConfig.degraded(frame_hw=(90, 120), blank_frames=(0,), isolated_frames=(3,), seed=3)
    caps = capture_grid(None, cfg)
    assert caps.transforms[0] is None and caps.transforms[3] is None and caps.transforms[4] is not None
    assert caps.frames[0][30:60, 40:80].std(axis=(0, 1)).max() < 3 and caps.frames[4].std() > 20
    assert np.allclose(caps.gains.mean(axis=0), 1.0) and caps.gains.std() > 0.01
    cal = calibration_frames(cfg, n_views=2, n_flat=2, n_dark=2)
    flat = cal["flat"][0].astype(np.float32).mean(axis=2)
    v = vignette(cfg.frame_hw, cfg.vignetting)
    assert abs(flat[45, 60] - 206) < 6 and abs(flat[0, 0] - (200 * v[0, 0] + 6)) < 8
    assert abs(cal["dark"][0].mean() - 6) < 0.5
