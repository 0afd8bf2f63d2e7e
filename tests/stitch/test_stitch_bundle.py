"""Bundle adjustment of the lens's k1, k2 with every frame's similarity (engine.stitch.bundle)."""

from dataclasses import replace

import cv2
import numpy as np
import pytest
import ray

from engine.calibrate.capture import CaptureCalibration
from engine.calibrate.flat import fit_flat
from engine.calibrate.lens import LensModel, fit_lens, ideal_points
from engine.io.images import read_rgb
from engine.stitch.align import solve
from engine.stitch.bundle import (
    BundleOptions,
    distort_points,
    refine_lens,
    refine_section_lens,
    remap_points,
    undistort_points,
)
from engine.stitch.evaluate import alignment_rms
from engine.stitch.frames import Correction
from engine.stitch.register import Edge, apply, compose, fit_similarity, invert
from engine.stitch.render import frame_path
from engine.stitch.section import CorrectionRef, StitchOptions, create_root, prepare_section
from engine.synth.captures import CaptureConfig, Lens, calibration_frames, capture_grid, textured_section, write_section

HW = (200, 300)
DIST = CaptureConfig.degraded().distortion


def _truth(side: int, rng) -> list[np.ndarray]:
    h, w = HW
    out = []
    for k in range(side * side):
        a, s = np.radians(rng.uniform(-0.3, 0.3)), 1 + rng.uniform(-0.002, 0.002)
        tx, ty = 0.75 * w * (k % side) + rng.uniform(-4, 4), 0.75 * h * (k // side) + rng.uniform(-4, 4)
        out.append(np.array([[s * np.cos(a), -s * np.sin(a), tx], [s * np.sin(a), s * np.cos(a), ty]]))
    return out


def _edges(truth, true_lens, lens, noise, rng, per_edge=150) -> list[Edge]:
    """Neighbours' correspondences: observed through ``true_lens`` with ``noise`` px, given in ``lens``'s ideal
    coordinates (as registration on frames corrected with ``lens`` finds them)."""
    h, w = HW
    side = int(round(np.sqrt(len(truth))))
    edges = []
    for i in range(len(truth)):
        for j in range(i + 1, len(truth)):
            if max(abs(i // side - j // side), abs(i % side - j % side)) != 1:
                continue
            qi = rng.uniform((0, 0), (w - 1, h - 1), (20000, 2))
            qj = apply(compose(invert(truth[j]), truth[i]), qi)
            oi, oj = distort_points(qi, true_lens), distort_points(qj, true_lens)
            inside = np.all((oi >= 0) & (oi <= (w - 1, h - 1)) & (oj >= 0) & (oj <= (w - 1, h - 1)), axis=1)
            if inside.sum() < per_edge:
                continue
            oi, oj = (o[inside][:per_edge] + rng.normal(0, noise, (per_edge, 2)) for o in (oi, oj))
            pi, pj = undistort_points(oi, lens), undistort_points(oj, lens)
            edges.append(Edge(i, j, True, M=fit_similarity(pj, pi), pts_i=pi, pts_j=pj, inliers=per_edge))
    return edges


def _lens(dist) -> LensModel:
    return LensModel(Lens.centred(HW).camera_matrix, np.asarray(dist, np.float64), HW)


def test_points_map_as_opencv_does():
    lens = _lens(DIST)
    K = lens.camera_matrix
    p = np.random.default_rng(0).uniform((0, 0), (299, 199), (200, 2))
    norm = np.c_[(p[:, 0] - K[0, 2]) / K[0, 0], (p[:, 1] - K[1, 2]) / K[1, 1], np.ones(len(p))]
    projected = cv2.projectPoints(norm, np.zeros(3), np.zeros(3), K, lens.dist_coeffs)[0].reshape(-1, 2)
    assert np.abs(distort_points(p, lens) - projected).max() < 1e-9
    assert np.abs(undistort_points(p, lens) - ideal_points(p, lens)).max() < 1e-6
    assert np.abs(remap_points(p, lens, lens) - p).max() < 1e-9


@pytest.mark.parametrize("scale", [(1.3, 1.0, 1.0), (1.3, 0.4, 1.0), (1.0, 1.0, 0.7)])
def test_a_mis_fitted_lens_is_recovered_from_the_overlaps(scale):
    rng = np.random.default_rng(7)
    truth = _truth(4, rng)
    true_lens = _lens(DIST)
    L0 = _lens(np.array(DIST) * (*scale, scale[-1], 1))
    edges = _edges(truth, true_lens, L0, 0.05, rng)
    al = solve(len(truth), edges)
    before = alignment_rms(al.transforms, L0, truth, true_lens, HW)[0]
    kept_a_term = []
    fit = refine_lens(edges, al.transforms, al.reference, L0, on_refining=lambda: kept_a_term.append(1))
    assert fit.refined, fit.reason
    assert kept_a_term == [1]  # told once, however many terms are kept
    k1, k2, p1, p2, k3 = fit.lens.dist_coeffs
    assert abs(k1 - DIST[0]) < 0.03 * abs(DIST[0]) and abs(k2 - DIST[1]) < 0.1 * DIST[1]
    assert abs(p1 - DIST[2]) < 0.1 * abs(DIST[2]) and abs(p2 - DIST[3]) < 0.1 * abs(DIST[3]) and k3 == 0
    assert np.array_equal(fit.lens.camera_matrix, L0.camera_matrix) and fit.lens.rms_px == L0.rms_px
    assert fit.rms_after_px < min(0.11, fit.rms_before_px)  # residual noise: 2 × 0.05 px
    after = alignment_rms(fit.transforms, fit.lens, truth, true_lens, HW)[0]
    assert after < 0.03 and before > 3 * after


def test_each_group_of_frames_that_feature_edges_join_keeps_a_frame_held():
    """Frames joined to the rest only by intensity edges would otherwise be free to shrink together towards
    zero scale, which lowers the residual without fitting anything."""
    rng = np.random.default_rng(10)
    truth = _truth(4, rng)
    true_lens = _lens(DIST)
    L0 = _lens(np.array(DIST) * (1.3, 1.0, 1.0, 1.0, 1.0))
    edges = [
        e if (e.i % 4 < 2) == (e.j % 4 < 2) else replace(e, method="intensity")
        for e in _edges(truth, true_lens, L0, 0.05, rng)
    ]
    al = solve(len(truth), edges)
    fit, moved = refine_section_lens(edges, al, L0)
    assert fit.refined and fit.edges == sum(e.method == "features" for e in edges) < len(edges), fit.reason
    assert max(abs(np.hypot(*M[:, 0]) - 1) for M in fit.transforms) < 0.005
    assert abs(fit.lens.dist_coeffs[0] - DIST[0]) < 0.03 * abs(DIST[0])
    after = alignment_rms(solve(len(truth), moved).transforms, fit.lens, truth, true_lens, HW)[0]
    assert after < 0.03 < alignment_rms(al.transforms, L0, truth, true_lens, HW)[0]


def test_a_right_lens_is_left_as_it_is():
    rng = np.random.default_rng(8)
    truth = _truth(4, rng)
    lens = _lens(DIST)
    edges = _edges(truth, lens, lens, 0.05, rng)
    al = solve(len(truth), edges)
    fit = refine_lens(edges, al.transforms, al.reference, lens)
    assert np.abs(fit.lens.dist_coeffs - lens.dist_coeffs).max() < 0.002
    assert alignment_rms(fit.transforms, fit.lens, truth, lens, HW)[0] < 0.03


def test_a_small_tangential_error_is_found_with_every_inlier():
    """A 20 % error in ``p1``, ``p2`` (what a checkerboard fit can leave) is below the significance test's
    reach on 256 points per edge and found on 2000."""
    rng = np.random.default_rng(11)
    truth = _truth(4, rng)
    true_lens = _lens(DIST)
    L0 = _lens(np.array(DIST) * (1.0, 1.0, 0.8, 0.8, 1.0))
    edges = _edges(truth, true_lens, L0, 0.1, rng, per_edge=2000)
    al = solve(len(truth), edges)
    before = alignment_rms(al.transforms, L0, truth, true_lens, HW)[0]
    few = refine_lens(edges, al.transforms, al.reference, L0, BundleOptions(points_per_edge=256))
    fit = refine_lens(edges, al.transforms, al.reference, L0)
    assert not few.refined and fit.refined and fit.terms == ("p",), (few.reason, fit.reason)
    assert np.all(np.abs(fit.lens.dist_coeffs[2:4] - DIST[2:4]) < 0.1 * np.abs(DIST[2:4]))
    assert alignment_rms(fit.transforms, fit.lens, truth, true_lens, HW)[0] < before / 4


def test_noise_does_not_pull_the_lens():
    """With the right lens and noisy points (0.3 px on 300 px frames), every term stays out, and a forced
    ``k1`` stays within 1 %: unweighted, the noise pulled it 1.5 % towards shrinking the overlaps, at F 19–29."""
    rng = np.random.default_rng(11)
    truth = _truth(4, rng)
    lens = _lens(DIST)
    edges = _edges(truth, lens, lens, 0.3, rng, per_edge=2000)
    al = solve(len(truth), edges)
    kept_a_term = []
    fit = refine_lens(
        edges, al.transforms, al.reference, lens, BundleOptions(points_per_edge=2048), lambda: kept_a_term.append(1)
    )
    assert not fit.refined and fit.reason.count("does not lower the residual significantly") == 3, fit.reason
    assert kept_a_term == []
    forced = refine_lens(
        edges, al.transforms, al.reference, lens, BundleOptions(2048, terms=("k1",), min_significance=0)
    )
    assert forced.refined and abs(forced.lens.dist_coeffs[0] - DIST[0]) < 0.01 * abs(DIST[0])


def test_too_few_correspondences_keep_the_checkerboard_lens():
    rng = np.random.default_rng(9)
    truth = _truth(2, rng)
    true_lens = _lens(DIST)
    L0 = replace(true_lens, dist_coeffs=true_lens.dist_coeffs * 1.3)
    edges = _edges(truth, true_lens, L0, 0.05, rng, per_edge=40)[:1]
    al = solve(len(truth), edges)
    fit = refine_lens(edges, al.transforms, al.reference, L0)
    assert not fit.refined and fit.lens is L0 and "too few correspondences" in fit.reason
    assert fit.transforms == al.transforms


def _stitch_rms(tmp_path, corrector, caps, cfg, corr, refine: bool) -> tuple[float, dict]:
    """Alignment RMS and report of the section prepared (placed, not rendered) with ``corr``."""
    out = tmp_path / f"refine{refine}.zarr"
    create_root(out)
    opts = StitchOptions(shard=256, refine_lens=refine, seam_refine=False)
    _, rep = prepare_section(tmp_path / "coll" / "s1", out, corr, opts, corrector)
    est = [np.array(f["transform"]) if f["placed"] else None for f in rep["frames"]]
    used = replace(corr.lens, dist_coeffs=np.array(rep["lens"]["dist_coeffs"]))
    return alignment_rms(est, used, caps.transforms, _lens(cfg.distortion), HW)[0], rep


@pytest.mark.ray
def test_stitching_refines_a_mis_fitted_lens_and_keeps_a_good_fit(tmp_path, corrector):
    cfg = CaptureConfig.degraded(frame_hw=HW, seed=22)
    cal = calibration_frames(cfg)
    fitted = Correction(fit_lens(cal["checkerboard"]), fit_flat(cal["flat"], cal["dark"]))
    caps = capture_grid(textured_section(cfg.source_hw, seed=23), cfg)
    write_section(tmp_path / "coll", "s1", caps)
    off, _ = _stitch_rms(tmp_path, corrector, caps, cfg, fitted, False)
    on, rep = _stitch_rms(tmp_path, corrector, caps, cfg, fitted, True)
    assert on <= off + 1e-4 and rep["lens"]["checkerboard"] == fitted.lens.to_dict()

    k = fitted.lens.dist_coeffs.copy()
    k[0] *= 1.3
    wrong = replace(fitted, lens=replace(fitted.lens, dist_coeffs=k))
    off, rep_off = _stitch_rms(tmp_path, corrector, caps, cfg, wrong, False)
    on, rep = _stitch_rms(tmp_path, corrector, caps, cfg, wrong, True)
    assert rep_off["lens"]["reason"] == "lens refinement is off" and not rep_off["lens"]["refined"]
    lens = rep["lens"]
    assert lens["refined"] and lens["rms_after_px"] < lens["rms_before_px"]
    assert abs(lens["k1_k2_p1_p2"]["used"][0] - cfg.distortion[0]) < 0.1 * abs(cfg.distortion[0])
    assert on < 0.05 < 0.12 < off
    assert rep["match_rms_px"] < rep_off["match_rms_px"]


@pytest.mark.ray
@pytest.mark.parametrize("as_ref", [False, True], ids=["correction", "object-store-ref"])
def test_prepared_frames_are_corrected_with_the_refined_lens(tmp_path, corrector, as_ref):
    """Also when the correction comes as a ref (as ``lode stitch`` hands it): the corrector gets the refined lens
    beside the correction as it is, and the report's key is that of the refined lens with the same flat."""
    cfg = CaptureConfig.degraded(frame_hw=HW, seed=22)
    cal = calibration_frames(cfg)
    lens = fit_lens(cal["checkerboard"])
    flat = fit_flat(cal["flat"], cal["dark"])
    wrong = Correction(replace(lens, dist_coeffs=lens.dist_coeffs * (1.3, 1, 1, 1, 1)), flat)
    given = CorrectionRef(ray.put(wrong)) if as_ref else wrong
    caps = capture_grid(textured_section(cfg.source_hw, seed=23), cfg)
    write_section(tmp_path / "coll", "s1", caps)
    store = tmp_path / "out.zarr"
    create_root(store)
    plan, rep = prepare_section(tmp_path / "coll" / "s1", store, given, StitchOptions(shard=256), corrector)
    refined = replace(lens, dist_coeffs=np.array(rep["lens"]["dist_coeffs"]))
    assert rep["lens"]["refined"] and not np.allclose(refined.dist_coeffs, wrong.lens.dist_coeffs)
    assert rep["correction"]["key"] == Correction(refined, flat).key != wrong.key
    raw = read_rgb(sorted((tmp_path / "coll" / "s1" / "tiles").iterdir())[4])
    assert np.array_equal(np.load(frame_path(plan.work, 4, "image")), CaptureCalibration(refined, flat, HW)(raw)[0])
    again, rep_again = prepare_section(tmp_path / "coll" / "s1", store, given, StitchOptions(shard=256), corrector)
    assert rep_again == rep and all(np.array_equal(a, b) for a, b in zip(again.mats, plan.mats))
