import cv2
import numpy as np
import pytest
import shapely

from engine.geophys.evaluate import buffer_scores
from engine.geophys.ridges import blakely_simpson, ridge_mask
from engine.geophys.vectorize import axial_azimuth, mask_to_lineaments, trace_skeleton


def test_blakely_simpson_marks_crest_of_oblique_ridge():
    rr, cc = np.mgrid[0:80, 0:80].astype(float)
    d = (cc - 0.5 * rr - 20) / np.hypot(1, 0.5)  # line col = 20 + 0.5 row
    g = np.exp(-0.5 * (d / 2.0) ** 2)
    loose = ridge_mask(g, min_directions=1, min_value=0.5)
    strict = ridge_mask(g, min_directions=2, min_value=0.5)
    assert loose[1:-1].any(axis=1).all()
    assert np.abs(d[loose]).max() <= 0.5
    assert strict.sum() > 30 and not (strict & ~loose).any()
    count, peak = blakely_simpson(g)
    assert count.max() <= 4 and np.nanmax(peak) >= g.max() - 1e-9
    assert count[0].sum() == 0 and count[:, -1].sum() == 0


def test_trace_skeleton_splits_a_cross_into_four_branches():
    skel = np.zeros((41, 41), bool)
    skel[20, 5:36] = True
    skel[5:36, 20] = True
    paths = trace_skeleton(skel)
    assert len(paths) == 4
    assert sum(len(p) - 1 for p in paths) == 60


def test_trace_skeleton_closes_a_ring_and_keeps_a_tail_apart():
    skel = np.zeros((30, 30), bool)
    skel[5, 5:15] = skel[14, 5:15] = True
    skel[5:15, 5] = skel[5:15, 14] = True
    ring = trace_skeleton(skel)
    assert len(ring) == 1 and np.array_equal(ring[0][0], ring[0][-1]) and len(ring[0]) == 36 + 1
    assert {tuple(p) for p in ring[0]} == {tuple(p) for p in np.argwhere(skel)}
    skel[15:25, 10] = True  # a tail hanging off the ring: a junction splits it
    paths = trace_skeleton(skel)
    assert sorted(len(p) for p in paths) == [11, 37]


def test_vectorised_lines_have_right_length_and_azimuth():
    mask = np.zeros((200, 200), np.uint8)
    cv2.line(mask, (20, 30), (170, 30), 1, thickness=3)  # east-west, 150 cells
    cv2.line(mask, (40, 60), (140, 160), 1, thickness=3)  # north-east (northing grows with row)
    coords = np.arange(200) * 25.0
    lines = sorted(
        mask_to_lineaments(mask.astype(bool), coords + 1000.0, coords + 5000.0, min_length_cells=10),
        key=lambda ln: ln.azimuth_deg,
    )
    assert len(lines) == 2
    assert lines[0].azimuth_deg == pytest.approx(45.0, abs=2.0)
    assert lines[1].azimuth_deg == pytest.approx(90.0, abs=2.0)
    assert lines[1].length_m == pytest.approx(150 * 25.0, rel=0.05)
    assert lines[0].length_m == pytest.approx(100 * np.sqrt(2) * 25.0, rel=0.05)
    assert lines[1].line.bounds[1] == pytest.approx(1000.0 + 30 * 25.0, abs=25.0)


def test_lines_are_cut_out_of_excluded_region():
    mask = np.zeros((100, 100), bool)
    mask[50, 5:95] = True
    hole = shapely.box(40 * 10.0, 0, 60 * 10.0, 1000.0)
    lines = mask_to_lineaments(mask, np.arange(100) * 10.0, np.arange(100) * 10.0, min_length_cells=5, exclude=hole)
    assert len(lines) == 2
    assert all(not ln.line.intersects(hole.buffer(-1e-6)) for ln in lines)


def test_axial_azimuth_ignores_direction_of_travel():
    a = shapely.LineString([(0, 0), (1, 1)])
    b = shapely.LineString([(1, 1), (0, 0)])
    assert axial_azimuth(a) == pytest.approx(45.0) and axial_azimuth(b) == pytest.approx(45.0)


def test_buffer_scores_exact_cases():
    truth = [shapely.LineString([(0, 0), (100, 0)])]
    near = [shapely.LineString([(0, 0.5), (100, 0.5)])]
    far = [shapely.LineString([(0, 3), (100, 3)])]
    half = [shapely.LineString([(50, 0.2), (150, 0.2)])]
    assert buffer_scores(near, truth, 1.0) == pytest.approx({"precision": 1.0, "recall": 1.0, "f1": 1.0})
    assert buffer_scores(far, truth, 2.0)["f1"] == 0.0
    s = buffer_scores(half, truth, 1.0)
    overlap = 50 + np.sqrt(1 - 0.2**2)  # round buffer caps reach sqrt(1 - 0.2^2) past the ends
    assert s["precision"] == pytest.approx(overlap / 100, abs=1e-3)
    assert s["recall"] == pytest.approx(overlap / 100, abs=1e-3)
    assert buffer_scores([], truth, 1.0)["f1"] == 0.0


def test_blakely_simpson_in_row_bands_equals_one_pass():
    g = np.random.default_rng(4).standard_normal((97, 61)).cumsum(axis=1)
    g[40:45, 10:20] = np.nan
    count, peak = blakely_simpson(g, band=10**6)
    for band in (1, 7, 32):
        c, p = blakely_simpson(g, band=band)
        np.testing.assert_array_equal(c, count)
        np.testing.assert_array_equal(p, peak)
