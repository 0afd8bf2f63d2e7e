import math

import numpy as np
import pytest
from scipy.spatial import ConvexHull
from skimage.draw import disk
from skimage.measure import label, regionprops

from engine.analyze.grains import feret_diameters, grain_lut_for, measure_labels

LUT = grain_lut_for(range(256), [0])


def _random_map(seed: int, shape=(200, 260)) -> np.ndarray:
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    lab = (rng.random(shape) < 0.55) * rng.integers(1, 5, shape)
    return ndi.median_filter(lab.astype(np.uint8), 5)


@pytest.mark.parametrize("connectivity", [1, 2])
def test_blockwise_equals_whole_image_labelling(connectivity):
    lab = _random_map(7)
    blocked, t_b = measure_labels(lab, lab.shape, (48, 64), LUT, connectivity)
    whole, t_w = measure_labels(lab, lab.shape, lab.shape, LUT, connectivity)
    ref = regionprops(label(lab, background=0, connectivity=connectivity))
    assert len(blocked) == len(whole) == len(ref)
    key = ["bbox_y0", "bbox_x0", "area_px"]
    b, w = blocked.sort_values(key).reset_index(drop=True), whole.sort_values(key).reset_index(drop=True)
    cols = [
        "class_code",
        "area_px",
        "perimeter_px",
        "feret_max_px",
        "feret_min_px",
        "centroid_y_px",
        "centroid_x_px",
        "bbox_y1",
        "bbox_x1",
        "touches_ore",
        "touches_edge",
    ]
    np.testing.assert_allclose(b[cols].to_numpy(float), w[cols].to_numpy(float), rtol=0, atol=1e-9)
    np.testing.assert_allclose(t_b.crossings, t_w.crossings)
    np.testing.assert_array_equal(t_b.class_px, np.bincount(lab.ravel(), minlength=256))
    ref_rows = sorted((r.bbox[0], r.bbox[1], r.area, r.bbox[2], r.bbox[3], *r.centroid) for r in ref)
    ours = sorted(zip(b.bbox_y0, b.bbox_x0, b.area_px, b.bbox_y1, b.bbox_x1, b.centroid_y_px, b.centroid_x_px))
    np.testing.assert_allclose(np.array(ours, float), np.array(ref_rows, float), atol=1e-9)


def test_grain_over_four_blocks_is_one_row():
    lab = np.zeros((256, 256), np.uint8)
    lab[disk((128, 128), 50)] = 2
    lab[disk((128, 128), 20)] = 6
    ring = np.zeros_like(lab)
    ring[20:60, 150:240] = 5
    ring[25:60, 160:230] = 0
    lab[ring > 0] = 5
    df, _ = measure_labels(lab, lab.shape, (128, 128), LUT)
    assert sorted(df.class_code.tolist()) == [2, 5, 6]
    galena = df[df.class_code == 2].iloc[0]
    assert galena.area_px == np.count_nonzero(lab == 2)
    assert galena.touches_ore and not galena.touches_edge
    ys, xs = np.nonzero(lab == 2)
    assert (galena.bbox_y0, galena.bbox_x0, galena.bbox_y1, galena.bbox_x1) == (
        ys.min(),
        xs.min(),
        ys.max() + 1,
        xs.max() + 1,
    )
    assert (galena.centroid_y_px, galena.centroid_x_px) == pytest.approx((ys.mean(), xs.mean()))


def test_disc_measures_match_geometry():
    r = 60.0
    lab = np.zeros((300, 300), np.uint8)
    lab[disk((150.5, 149.5), r)] = 1
    df, tally = measure_labels(lab, lab.shape, (100, 100), LUT)
    g = df.iloc[0]
    assert g.ecd_px == pytest.approx(2 * r, rel=0.01)
    assert g.perimeter_px == pytest.approx(2 * math.pi * r, rel=0.01)
    assert g.feret_max_px == pytest.approx(2 * r + 1, abs=1.5)
    assert g.feret_min_px == pytest.approx(2 * r + 1, abs=1.5)
    assert tally.boundary_length_px()[0, 1] == pytest.approx(g.perimeter_px)


def test_feret_against_brute_force():
    lab = _random_map(11, (120, 120))
    df, _ = measure_labels(lab, lab.shape, (40, 40), LUT)
    big = df[df.area_px > 30]
    ref = {(*r.bbox, r.area): r.coords for r in regionprops(label(lab, background=0, connectivity=2))}
    for g in big.itertuples():
        ys, xs = ref[(g.bbox_y0, g.bbox_x0, g.bbox_y1, g.bbox_x1, g.area_px)].T
        corners = np.concatenate([np.stack([xs + dx, ys + dy], 1) for dy in (0, 1) for dx in (0, 1)]).astype(float)
        corners = corners[ConvexHull(corners).vertices]
        d = corners[:, None] - corners[None]
        assert g.feret_max_px == pytest.approx(np.sqrt((d**2).sum(-1)).max(), abs=1e-9)
        ang = np.linspace(0, np.pi, 3601)
        proj = corners @ np.stack([np.cos(ang), np.sin(ang)])
        assert g.feret_min_px == pytest.approx((proj.max(0) - proj.min(0)).min(), abs=0.02)


def test_feret_of_rectangle():
    fmax, fmin = feret_diameters(np.array([[0, 0], [4, 0], [4, 3], [0, 3]]))
    assert (fmax, fmin) == (5.0, 3.0)


def test_synthetic_section_counts_and_sizes(two_sections):
    _, truth = two_sections
    t = truth["s1"]
    df, tally = measure_labels(t.labels, t.labels.shape, (128, 128), LUT)
    assert len(df) == len(t.grains)
    for code in {g.code for g in t.grains}:
        true_mean = np.mean([g.diameter for g in t.grains if g.code == code])
        ours = df[df.class_code == code]
        assert len(ours) == sum(g.code == code for g in t.grains)
        assert ours.ecd_px.mean() == pytest.approx(true_mean, rel=0.02)
    np.testing.assert_array_equal(tally.class_px, np.bincount(t.labels.ravel(), minlength=256))
    assert not df.touches_ore.any()
