import cv2
import numpy as np
import pytest
from skimage.measure import label

from engine.analyze.annotate import UNLABELLED, expand_scribbles, select_uncertain, uncertainty
from engine.classes import LUMENSTONE

from .synthetic_sections import colour_image, gaussian_colour_model, place_grains, scribbles_for


@pytest.mark.parametrize("seed", [3, 9])
def test_sparse_scribbles_expand_to_accurate_map(seed):
    truth = place_grains((384, 512), [1, 2, 5, 6, 8], 60, seed=seed).labels
    img = cv2.GaussianBlur(colour_image(truth, LUMENSTONE, seed=seed, noise=14).transpose(1, 2, 0), (3, 3), 0)
    sc = scribbles_for(truth, seed)
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


@pytest.mark.parametrize("seed", [3, 5])
def test_uncertain_regions_hold_most_errors(seed):
    truth = place_grains((384, 512), [1, 2, 5, 6, 8], 60, seed=seed).labels
    img, prob, pred = gaussian_colour_model(truth, seed)
    wrong = pred != truth
    assert 0.005 < wrong.mean() < 0.1
    sel = select_uncertain(prob, share=0.10, image=img)
    assert 0.09 <= sel.share <= 0.10
    assert (wrong & sel.mask).sum() / wrong.sum() >= 0.5
    assert np.all(np.diff(sel.scores) <= 0)
    rng = np.random.default_rng(0)  # a random choice of the same regions captures about its share
    random_pick = rng.permutation(int(sel.regions.max()) + 1)[: len(sel.ranked)]
    assert (wrong & np.isin(sel.regions, random_pick)).sum() / wrong.sum() < 0.3


def test_uncertainty_measures():
    p = np.array([[[1.0, 0.5]], [[0.0, 0.5]]])
    np.testing.assert_allclose(uncertainty(p, "least_confidence"), [[0.0, 0.5]])
    np.testing.assert_allclose(uncertainty(p, "entropy"), [[0.0, 1.0]], atol=1e-6)
    np.testing.assert_allclose(uncertainty(p, "margin"), [[0.0, 1.0]])
    with pytest.raises(ValueError):
        uncertainty(p, "hyperbolic")
