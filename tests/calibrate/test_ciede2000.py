"""CIEDE2000 against the published test data of Sharma, Wu & Dalal (2005) and scikit-image."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.color import deltaE_ciede2000, rgb2lab

from engine.calibrate.colour import ciede2000, ciede2000_terms, linear_to_lab, linearize

# Sharma, Wu & Dalal (2005), Color Res. Appl. 30(1):21-30, Table 1: L1 a1 b1  L2 a2 b2  ΔE00.
SHARMA_2005 = np.array(
    [
        [50.0000, 2.6772, -79.7751, 50.0000, 0.0000, -82.7485, 2.0425],
        [50.0000, 3.1571, -77.2803, 50.0000, 0.0000, -82.7485, 2.8615],
        [50.0000, 2.8361, -74.0200, 50.0000, 0.0000, -82.7485, 3.4412],
        [50.0000, -1.3802, -84.2814, 50.0000, 0.0000, -82.7485, 1.0000],
        [50.0000, -1.1848, -84.8006, 50.0000, 0.0000, -82.7485, 1.0000],
        [50.0000, -0.9009, -85.5211, 50.0000, 0.0000, -82.7485, 1.0000],
        [50.0000, 0.0000, 0.0000, 50.0000, -1.0000, 2.0000, 2.3669],
        [50.0000, -1.0000, 2.0000, 50.0000, 0.0000, 0.0000, 2.3669],
        [50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0009, 7.1792],
        [50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0010, 7.1792],
        [50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0011, 7.2195],
        [50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0012, 7.2195],
        [50.0000, -0.0010, 2.4900, 50.0000, 0.0009, -2.4900, 4.8045],
        [50.0000, -0.0010, 2.4900, 50.0000, 0.0010, -2.4900, 4.8045],
        [50.0000, -0.0010, 2.4900, 50.0000, 0.0011, -2.4900, 4.7461],
        [50.0000, 2.5000, 0.0000, 50.0000, 0.0000, -2.5000, 4.3065],
        [50.0000, 2.5000, 0.0000, 73.0000, 25.0000, -18.0000, 27.1492],
        [50.0000, 2.5000, 0.0000, 61.0000, -5.0000, 29.0000, 22.8977],
        [50.0000, 2.5000, 0.0000, 56.0000, -27.0000, -3.0000, 31.9030],
        [50.0000, 2.5000, 0.0000, 58.0000, 24.0000, 15.0000, 19.4535],
        [50.0000, 2.5000, 0.0000, 50.0000, 3.1736, 0.5854, 1.0000],
        [50.0000, 2.5000, 0.0000, 50.0000, 3.2972, 0.0000, 1.0000],
        [50.0000, 2.5000, 0.0000, 50.0000, 1.8634, 0.5757, 1.0000],
        [50.0000, 2.5000, 0.0000, 50.0000, 3.2592, 0.3350, 1.0000],
        [60.2574, -34.0099, 36.2677, 60.4626, -34.1751, 39.4387, 1.2644],
        [63.0109, -31.0961, -5.8663, 62.8187, -29.7946, -4.0864, 1.2630],
        [61.2901, 3.7196, -5.3901, 61.4292, 2.2480, -4.9620, 1.8731],
        [35.0831, -44.1164, 3.7933, 35.0232, -40.0716, 1.5901, 1.8645],
        [22.7233, 20.0904, -46.6940, 23.0331, 14.9730, -42.5619, 2.0373],
        [36.4612, 47.8580, 18.3852, 36.2715, 50.5065, 21.2231, 1.4146],
        [90.8027, -2.0831, 1.4410, 91.1528, -1.6435, 0.0447, 1.4441],
        [90.9257, -0.5406, -0.9208, 88.6381, -0.8985, -0.7239, 1.5381],
        [6.7747, -0.2908, -2.4247, 5.8714, -0.0985, -2.2286, 0.6377],
        [2.0776, 0.0795, -1.1350, 0.9033, -0.0636, -0.5514, 0.9082],
    ]
)


def test_sharma_34_pairs_to_1e4():
    de = ciede2000(SHARMA_2005[:, 0:3], SHARMA_2005[:, 3:6])
    assert SHARMA_2005.shape == (34, 7)
    np.testing.assert_allclose(de, SHARMA_2005[:, 6], atol=1e-4, rtol=0)


def test_sharma_table_agrees_with_scikit_image():
    """The typed table is checked against an independent implementation too (catches typos)."""
    de = deltaE_ciede2000(SHARMA_2005[:, 0:3], SHARMA_2005[:, 3:6])
    np.testing.assert_allclose(de, SHARMA_2005[:, 6], atol=1e-4, rtol=0)


def test_symmetric_and_matches_scikit_image_on_random_pairs():
    rng = np.random.default_rng(0)
    lab1 = np.column_stack([rng.uniform(0, 100, 2000), rng.uniform(-90, 90, 2000), rng.uniform(-90, 90, 2000)])
    lab2 = lab1 + rng.normal(0, 6, lab1.shape)
    ours = ciede2000(lab1, lab2)
    np.testing.assert_allclose(ours, ciede2000(lab2, lab1), atol=1e-9)
    np.testing.assert_allclose(ours, deltaE_ciede2000(lab1, lab2), atol=1e-8)


def test_terms_square_sum_equals_delta_e_squared():
    rng = np.random.default_rng(1)
    lab1 = np.column_stack([rng.uniform(0, 100, 500), rng.uniform(-60, 60, 500), rng.uniform(-60, 60, 500)])
    lab2 = lab1 + rng.normal(0, 10, lab1.shape)
    terms = ciede2000_terms(lab1, lab2)
    assert terms.shape == (500, 3)
    np.testing.assert_allclose((terms**2).sum(-1), deltaE_ciede2000(lab1, lab2) ** 2, rtol=1e-9, atol=1e-9)


def test_linear_to_lab_matches_scikit_image_srgb_path():
    """Our linear-RGB → Lab equals skimage's sRGB → Lab when fed sRGB-decoded values."""
    rng = np.random.default_rng(2)
    srgb = rng.uniform(0, 1, (300, 3))
    lin = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    np.testing.assert_allclose(linear_to_lab(lin), rgb2lab(srgb), atol=5e-4)
    assert np.allclose(linearize(np.array([0, 255])), [0.0, 1.0])


@pytest.mark.parametrize("bad", [np.array([50.0, 0.0, 0.0]), np.array([[0.0, 0.0, 0.0]])])
def test_identical_colours_have_zero_difference(bad):
    assert np.all(ciede2000(bad, bad) == 0)
