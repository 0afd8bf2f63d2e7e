import cv2
import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.measure import label, regionprops

from engine.analyze.annotate import UNLABELLED, expand_scribbles, select_uncertain, uncertainty
from engine.classes import LUMENSTONE

from .synthetic_sections import colour_image, place_grains


def _scribbles(truth: np.ndarray, seed: int, grain_share: float = 0.7) -> np.ndarray:
    """A user's strokes: a short line through the middle of most grains, and some strokes on background."""
    rng = np.random.default_rng(seed)
    sc = np.full(truth.shape, UNLABELLED, np.uint8)
    regions = label(truth, background=-1, connectivity=1)
    for r in regionprops(regions):
        if r.area < 30 or rng.random() > grain_share:
            continue
        dist = ndi.distance_transform_edt(regions == r.label)
        cy, cx = (int(v) for v in r.centroid)
        if dist[cy, cx] < 2:
            continue
        half = max(2, int(dist[cy, cx] * 0.6))
        xs = np.arange(cx - half, cx + half + 1)
        sc[cy, xs[dist[cy, xs] >= 2]] = truth[cy, cx]
    inside_bg = ndi.distance_transform_edt(truth == 0) >= 4
    for _ in range(40):
        y, x = int(rng.integers(0, truth.shape[0])), int(rng.integers(0, truth.shape[1] - 30))
        sc[y, x:x + 30][inside_bg[y, x:x + 30]] = 0
    return sc


@pytest.mark.parametrize("seed", [3, 9])
def test_sparse_scribbles_expand_to_accurate_map(seed):
    truth = place_grains((384, 512), [1, 2, 5, 6, 8], 60, seed=seed).labels
    img = cv2.GaussianBlur(colour_image(truth, LUMENSTONE, seed=seed, noise=14).transpose(1, 2, 0), (3, 3), 0)
    sc = _scribbles(truth, seed)
    assert (sc != UNLABELLED).mean() <= 0.02
    grains = label(truth, background=0)
    assert len(np.unique(grains[(sc != UNLABELLED) & (grains > 0)])) < grains.max()  # some grains get no scribble
    out = expand_scribbles(img, sc)
    assert out.shape == truth.shape and out.dtype == np.uint8
    assert (out == truth).mean() >= 0.9
    scribbled = sc != UNLABELLED
    np.testing.assert_array_equal(out[scribbled], sc[scribbled])


def test_conflicting_scribbles_split_a_segment():
    img = np.full((60, 80, 3), 100, np.uint8)
    img[:, 40:] = 110  # two faint halves that one coarse segment may merge
    sc = np.full((60, 80), UNLABELLED, np.uint8)
    sc[30, 5:35] = 1
    sc[30, 45:75] = 2
    out = expand_scribbles(img, sc)
    assert (out[:, :40] == 1).mean() > 0.95 and (out[:, 40:] == 2).mean() > 0.95


def _gaussian_model(labels: np.ndarray, seed: int, noise: float = 30.0):
    """Synthetic image with two pairs of look-alike minerals and a Gaussian colour classifier with spatial context."""
    rng = np.random.default_rng(seed)
    colours = {0: (40, 40, 40), 1: (200, 170, 60), 2: (170, 170, 230), 5: (210, 150, 90), 6: (225, 215, 120),
               8: (90, 110, 140)}
    codes = np.array(sorted(colours))
    img = np.zeros(labels.shape + (3,), np.float32)
    for c in codes:
        img[labels == c] = colours[c]
    img = cv2.GaussianBlur(img + rng.normal(0, noise, img.shape).astype(np.float32), (0, 0), 2.0)
    var = noise ** 2 / (4 * np.pi * 4.0)
    ll = np.stack([-((img - np.array(colours[c], np.float32)) ** 2).sum(-1) / (2 * var) for c in codes])
    p = np.exp(ll - ll.max(0))
    p /= p.sum(0)
    return np.clip(img, 0, 255).astype(np.uint8), (p * 255).round().astype(np.uint8), codes[p.argmax(0)]


@pytest.mark.parametrize("seed", [3, 5])
def test_uncertain_regions_hold_most_errors(seed):
    truth = place_grains((384, 512), [1, 2, 5, 6, 8], 60, seed=seed).labels
    img, prob, pred = _gaussian_model(truth, seed)
    wrong = pred != truth
    assert 0.005 < wrong.mean() < 0.1
    sel = select_uncertain(prob, share=0.10, image=img)
    assert 0.09 <= sel.share <= 0.10
    assert (wrong & sel.mask).sum() / wrong.sum() >= 0.5
    assert np.all(np.diff(sel.scores) <= 0)
    rng = np.random.default_rng(0)  # a random choice of the same regions captures about its share
    random_pick = rng.permutation(int(sel.regions.max()) + 1)[:len(sel.ranked)]
    assert (wrong & np.isin(sel.regions, random_pick)).sum() / wrong.sum() < 0.3


def test_uncertainty_measures():
    p = np.array([[[1.0, 0.5]], [[0.0, 0.5]]])
    np.testing.assert_allclose(uncertainty(p, "least_confidence"), [[0.0, 0.5]])
    np.testing.assert_allclose(uncertainty(p, "entropy"), [[0.0, 1.0]], atol=1e-6)
    np.testing.assert_allclose(uncertainty(p, "margin"), [[0.0, 1.0]])
    with pytest.raises(ValueError):
        uncertainty(p, "hyperbolic")
