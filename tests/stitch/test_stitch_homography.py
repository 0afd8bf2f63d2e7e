"""The homography model: frames cut from a textured section through known homographies (a stage that tilts)."""

from functools import cache

import cv2
import numpy as np
import pytest

from engine.stitch.align import AlignOptions, solve
from engine.stitch.register import (
    RegisterOptions,
    apply,
    compose,
    invert,
    projective,
    register_pair,
    translation,
)
from engine.synth.captures import textured_section

HW = (300, 400)
SIDE = 3
STEP = (0.75 * HW[0], 0.75 * HW[1])
MARGIN = 40
TILT = 6e-5
FULL = np.full(HW, 255, np.uint8)
CORNERS = np.array([[0, 0], [HW[1] - 1, 0], [HW[1] - 1, HW[0] - 1], [0, HW[0] - 1]], np.float64)
GRID = np.stack(np.meshgrid(np.linspace(0, HW[1] - 1, 5), np.linspace(0, HW[0] - 1, 5)), -1).reshape(-1, 2)
EDGES = [(i, i + 1) for i in range(SIDE * SIDE) if (i + 1) % SIDE] + [(i, i + SIDE) for i in range(SIDE * (SIDE - 1))]


def _truth(tilt: float, seed: int = 1) -> list[np.ndarray]:
    """Frame → source homographies (3×3) of a 3×3 grid: a similarity after a perspective ``(g, h)`` about the
    frame's centre, each up to ``tilt`` (at 6e-5 the corners move up to about 5 px)."""
    rng = np.random.default_rng(seed)
    h, w = HW
    C = np.array([[1, 0, -(w - 1) / 2], [0, 1, -(h - 1) / 2], [0, 0, 1.0]])
    out = []
    for k in range(SIDE * SIDE):
        r, c = divmod(k, SIDE)
        t, s = np.deg2rad(rng.uniform(-0.3, 0.3)), 1 + rng.uniform(-0.002, 0.002)
        tx, ty = MARGIN + STEP[1] * c + rng.uniform(-4, 4), MARGIN + STEP[0] * r + rng.uniform(-4, 4)
        S = np.array([[s * np.cos(t), -s * np.sin(t), tx], [s * np.sin(t), s * np.cos(t), ty], [0, 0, 1]])
        g, hh = rng.uniform(-tilt, tilt, 2)
        out.append(projective(S @ np.linalg.inv(C) @ np.array([[1, 0, 0], [0, 1, 0], [g, hh, 1]]) @ C))
    return out


@cache
def _captures(tilt: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Truth transforms and frames ``(h, w, 3)`` uint8 sampled (bicubic) from a textured section."""
    mats = _truth(tilt)
    src = textured_section((int(2 * MARGIN + 2 * STEP[0] + HW[0]), int(2 * MARGIN + 2 * STEP[1] + HW[1])), seed=1)
    flags = cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP
    return mats, [cv2.warpPerspective(src, M, HW[::-1], flags=flags) for M in mats]


def _prior(i: int, j: int) -> np.ndarray:
    (ri, ci), (rj, cj) = divmod(i, SIDE), divmod(j, SIDE)
    return translation(STEP[1] * (cj - ci), STEP[0] * (rj - ri))


def _rms(A: np.ndarray, B: np.ndarray, q: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.sum((apply(A, q) - apply(B, q)) ** 2, axis=1))))


@cache
def _align(tilt: float, model: str) -> list[np.ndarray]:
    truth, frames = _captures(tilt)
    opts = RegisterOptions(model=model)  # type: ignore[arg-type]
    edges = [register_pair(i, j, frames[i], FULL, frames[j], FULL, _prior(i, j), opts) for i, j in EDGES]
    assert all(e.ok and e.method == "features" for e in edges)
    al = solve(len(truth), edges, 4, truth[4], AlignOptions(model=model))  # type: ignore[arg-type]
    assert not al.rejected
    return al.transforms  # type: ignore[return-value]


def _per_frame(est: list[np.ndarray], truth: list[np.ndarray], q: np.ndarray) -> list[float]:
    """Each frame's RMS at ``q`` after the global homography that best takes ``est`` to ``truth`` (the gauge)."""
    G, _ = cv2.findHomography(np.concatenate([apply(m, q) for m in est]), np.concatenate([apply(t, q) for t in truth]))
    return [_rms(compose(G, m), t, q) for m, t in zip(est, truth)]


def test_projective_apply_invert_compose():
    rng = np.random.default_rng(0)
    A = np.array([[1.01, -0.02, 30], [0.02, 0.99, -7], [2e-5, -3e-5, 1]])
    B = np.array([[0.98, 0.01, -4], [-0.01, 1.02, 12], [0, 0, 1.0]])
    q = rng.uniform(0, 400, (20, 2))
    h = np.c_[q, np.ones(len(q))] @ A.T
    np.testing.assert_allclose(apply(A, q), h[:, :2] / h[:, 2:], rtol=1e-13)
    np.testing.assert_allclose(apply(invert(A), apply(A, q)), q, atol=1e-9)
    np.testing.assert_allclose(apply(compose(A, B[:2]), q), apply(A, apply(B[:2], q)), atol=1e-9)
    assert compose(B[:2], B[:2]).shape == (2, 3) and invert(B[:2]).shape == (2, 3)
    assert compose(A, B[:2]).shape == (3, 3) and compose(A, B)[2, 2] == 1


def test_pairwise_homography_matches_truth_on_its_overlap():
    truth, frames = _captures(TILT)
    for i, j in ((0, 1), (1, 4)):
        e = register_pair(i, j, frames[i], FULL, frames[j], FULL, _prior(i, j), RegisterOptions(model="homography"))
        assert e.ok and e.M is not None and e.M.shape == (3, 3) and e.inliers >= 50
        (x0, y0), (x1, y1) = e.pts_j.min(0), e.pts_j.max(0)
        box = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
        assert _rms(e.M, compose(invert(truth[i]), truth[j]), box) < 0.3


def test_global_homographies_of_a_tilted_grid_and_the_similarity_falls_short():
    truth, _ = _captures(TILT)
    hom = _align(TILT, "homography")
    assert all(m.shape == (3, 3) for m in hom)
    np.testing.assert_allclose(hom[4], truth[4])
    err = _per_frame(hom, truth, CORNERS)
    sim = _per_frame(_align(TILT, "similarity"), truth, CORNERS)
    assert max(err) < 0.3
    assert min(sim) > 1.0 and max(sim) > 4 * max(err)


def test_untilted_grid_gives_the_similarity_answer():
    truth, _ = _captures(0.0)
    hom, sim = _align(0.0, "homography"), _align(0.0, "similarity")
    assert max(_per_frame(sim, truth, CORNERS)) < 0.1
    assert max(_per_frame(hom, truth, CORNERS)) < 0.3
    apart = _per_frame(hom, [projective(m) for m in sim], GRID)
    assert max(apart) < 0.2 and float(np.sqrt(np.mean(np.square(apart)))) < 0.1


def test_confidence_and_lens_refinement_with_homographies():
    from engine.calibrate.lens import LensModel
    from engine.stitch.bundle import refine_lens
    from engine.stitch.confidence import predict_errors

    truth, frames = _captures(TILT)
    opts = RegisterOptions(model="homography")
    edges = [register_pair(i, j, frames[i], FULL, frames[j], FULL, _prior(i, j), opts) for i, j in EDGES]
    al = solve(len(truth), edges, 4, truth[4], AlignOptions(model="homography"))
    conf = predict_errors(edges, al, HW, AlignOptions(model="homography"))
    assert set(conf.frame_error_px) == set(range(len(truth)))
    assert all(0 < v < 0.3 for v in conf.frame_error_px.values())
    lens = LensModel(np.array([[400.0, 0, 199.5], [0, 400, 149.5], [0, 0, 1]]), np.zeros(5), HW, 0.1, 10)
    fit = refine_lens(edges, al.transforms, al.reference, lens)
    assert not fit.refined and "homography" in fit.reason


def test_model_is_validated():
    from engine.stitch.section import StitchOptions

    with pytest.raises(ValueError, match="model"):
        RegisterOptions(model="affine")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="model"):
        AlignOptions(model="affine")  # type: ignore[arg-type]
    opts = StitchOptions(model="homography")
    assert opts.register.model == opts.align.model == "homography"


@pytest.mark.slow
@pytest.mark.ray
def test_prepared_section_with_homographies(tmp_path, corrector):
    """Registration to the render plan (its 3×3 transforms render: see the test above): an untilted
    degraded grid, its lens not refined, within 0.3 px of the truth and predicted so."""
    from engine.calibrate.lens import LensModel, fit_lens
    from engine.stitch.evaluate import alignment_rms
    from engine.stitch.frames import Correction
    from engine.stitch.section import StitchOptions, create_root, prepare_section
    from engine.synth.captures import CaptureConfig, calibration_frames, capture_grid, write_section

    cfg = CaptureConfig.degraded(frame_hw=(200, 300), seed=22)
    lens = fit_lens(calibration_frames(cfg)["checkerboard"])
    caps = capture_grid(textured_section(cfg.source_hw, seed=23), cfg)
    write_section(tmp_path / "coll", "s1", caps)
    create_root(tmp_path / "out.zarr")
    opts = StitchOptions(shard=256, model="homography")
    plan, rep = prepare_section(tmp_path / "coll" / "s1", tmp_path / "out.zarr", Correction(lens), opts, corrector)
    assert all(m is not None and m.shape == (3, 3) for m in plan.mats)
    assert rep["frames_placed"] == 9 and not rep["lens"]["refined"] and "homography" in rep["lens"]["reason"]
    assert all(abs(f["scale"] - 1) < 0.01 and abs(f["rotation_deg"]) < 0.5 for f in rep["frames"])
    true_lens = LensModel(caps.lens.camera_matrix, caps.lens.dist_coeffs, cfg.frame_hw)
    rms, _ = alignment_rms(list(plan.mats), lens, caps.transforms, true_lens, cfg.frame_hw)
    assert rms < 0.3 and rep["rms_px"] < 0.3


def test_render_warps_frames_through_their_homographies():
    """Tilted frames rendered (multiband, 128 px shards) at their true homographies give back the section
    they were cut from; with the perspective row dropped they do not."""
    from engine.stitch.render import ShardFrame, blend_box, render_shard, touches

    truth, frames = _captures(TILT)
    src = textured_section((int(2 * MARGIN + 2 * STEP[0] + HW[0]), int(2 * MARGIN + 2 * STEP[1] + HW[1])), seed=1)
    H, W = src.shape[:2]
    scale = 0.25
    lh, lw = int(np.ceil(H * scale)), int(np.ceil(W * scale))
    centres = np.concatenate([apply(M, np.array([[(HW[1] - 1) / 2, (HW[0] - 1) / 2]])) for M in truth])
    yy, xx = np.mgrid[:lh, :lw]
    pts = np.stack([(xx + 0.5) / scale - 0.5, (yy + 0.5) / scale - 0.5], -1)
    labels = np.argmin(np.linalg.norm(pts[..., None, :] - centres, axis=-1), axis=-1).astype(np.int16)

    def render(mats: list[np.ndarray]) -> np.ndarray:
        out = np.zeros((H, W, 3), np.uint8)
        for y0 in range(0, H, 128):
            for x0 in range(0, W, 128):
                h, w = min(128, H - y0), min(128, W - x0)
                ks = [k for k, M in enumerate(mats) if touches(M, HW, *blend_box(y0, x0, h, w, 3))]
                shard = render_shard(
                    y0,
                    x0,
                    h,
                    w,
                    [ShardFrame(k, mats[k], np.ones(3)) for k in ks],
                    [frames[k] for k in ks],
                    [FULL] * len(ks),
                    labels,
                    scale,
                    levels=3,
                )
                out[y0 : y0 + h, x0 : x0 + w] = shard.transpose(1, 2, 0)
        return out

    inner = (slice(MARGIN + 10, H - MARGIN - 10), slice(MARGIN + 10, W - MARGIN - 10))
    err_h = np.abs(render(truth).astype(np.float32) - src)[inner].mean()
    err_a = np.abs(render([M[:2] / M[2, 2] for M in truth]).astype(np.float32) - src)[inner].mean()
    assert err_h < 1.0 and err_a > 10 * err_h, (err_h, err_a)
