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
