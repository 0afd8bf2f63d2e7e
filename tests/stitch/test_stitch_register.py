import numpy as np

from engine.stitch.register import apply, compose, invert, register_pair, translation
from engine.synth.captures import CaptureConfig, capture_grid

HW = (200, 300)
FULL = np.full(HW, 255, np.uint8)


def _pair(**kw):
    cfg = CaptureConfig(rows=1, cols=2, frame_hw=HW, seed=11, **kw)
    caps = capture_grid(None, cfg)
    prior = translation(*(caps.nominal_xy[1] - caps.nominal_xy[0]))
    return caps, prior


def test_pair_transform_matches_truth():
    caps, prior = _pair()
    e = register_pair(0, 1, caps.frames[0], FULL, caps.frames[1], FULL, prior)
    assert e.ok and e.inliers >= 50
    true = compose(invert(caps.transforms[0]), caps.transforms[1])
    q = np.stack(np.meshgrid(np.arange(0, 300, 25), np.arange(0, 200, 25)), -1).reshape(-1, 2).astype(float)
    assert np.sqrt(np.mean(np.sum((apply(e.M, q) - apply(true, q)) ** 2, axis=1))) < 0.2


def test_whole_frame_search_without_prior_agrees():
    caps, prior = _pair()
    a = register_pair(0, 1, caps.frames[0], FULL, caps.frames[1], FULL, prior)
    b = register_pair(0, 1, caps.frames[0], FULL, caps.frames[1], FULL, None)
    assert b.ok and np.abs(a.M - b.M)[:, 2].max() < 0.3


def test_featureless_and_unrelated_frames_fail_with_a_reason():
    caps, prior = _pair(blank_frames=(1,))
    e = register_pair(0, 1, caps.frames[0], FULL, caps.frames[1], FULL, prior)
    assert not e.ok and "features" in e.reason
    caps, prior = _pair(isolated_frames=(1,))
    e = register_pair(0, 1, caps.frames[0], FULL, caps.frames[1], FULL, prior)
    assert not e.ok and e.reason


def _smooth_source(shape, sigma=8.0):
    """Texture too smooth for keypoints (blurred noise): what intensity registration is for."""
    import cv2

    f = cv2.GaussianBlur(np.random.default_rng(5).standard_normal(shape).astype(np.float32), (0, 0), sigma)
    return np.repeat(np.clip(128 + f / f.std() * 40, 0, 255)[..., None], 3, axis=2).astype(np.uint8)


def test_smooth_overlap_keeps_its_edge_by_intensity_registration():
    from engine.stitch.register import RegisterOptions

    cfg = CaptureConfig(rows=1, cols=2, frame_hw=HW, seed=11, jitter_px=8)
    caps = capture_grid(_smooth_source(cfg.source_hw), cfg)
    prior = translation(*(caps.nominal_xy[1] - caps.nominal_xy[0]))
    off = register_pair(
        0, 1, caps.frames[0], FULL, caps.frames[1], FULL, prior, RegisterOptions(intensity_fallback=False)
    )
    assert not off.ok and "features" in off.reason
    e = register_pair(0, 1, caps.frames[0], FULL, caps.frames[1], FULL, prior)
    assert e.ok and e.method == "intensity" and e.correlation > 0.9 and len(e.pts_j) >= 16
    true = compose(invert(caps.transforms[0]), caps.transforms[1])
    q = np.stack(np.meshgrid(np.arange(0, 75, 15), np.arange(0, 200, 20)), -1).reshape(-1, 2).astype(float)
    assert np.sqrt(np.mean(np.sum((apply(e.M, q) - apply(true, q)) ** 2, axis=1))) < 0.15
    assert np.abs(apply(e.M, e.pts_j) - e.pts_i).max() < 1e-9


def test_registration_does_not_depend_on_threads_or_on_what_ran_before():
    import cv2

    from engine.synth.photos import photo_config, photo_grid

    caps = photo_grid(photo_config(1, 3, HW, degraded=True, seed=1, jitter_px=10.0))
    prior = [translation(*(caps.nominal_xy[j] - caps.nominal_xy[i])) for i, j in ((0, 1), (1, 2))]
    threads = cv2.getNumThreads()
    runs = []
    try:
        for n in (1, 4):
            cv2.setNumThreads(n)
            runs.append(
                [register_pair(i, i + 1, caps.frames[i], FULL, caps.frames[i + 1], FULL, prior[i]) for i in (1, 0)]
            )
    finally:
        cv2.setNumThreads(threads)
    assert [e.method for e in runs[0] if e.ok] == ["intensity", "features"]
    assert all(np.array_equal(a.M, b.M) and np.array_equal(a.pts_j, b.pts_j) for a, b in zip(*runs))
