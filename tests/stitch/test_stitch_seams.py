"""Seams refined at full resolution near the low-res seam, against truth: a speck that one frame
holds on the low-res seam is not cut through (the panorama shows it whole or not at all, where the
upsampled low-res seam shows part of it), the refined cut's colour difference is lower, and shards
rendered apart with the refined map equal the panorama rendered whole, junctions included."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import zarr

from engine.io.layout import SEAM_REFINED
from engine.stitch.frames import Correction
from engine.stitch.refine import PairFrame, refine_seams, seam_pairs, seam_partners
from engine.stitch.register import compose, invert, translation
from engine.stitch.seams import seam_labels
from engine.stitch.section import StitchOptions, stitch_section
from engine.synth.captures import CaptureConfig, capture_grid, textured_section, write_section
from tests.stitch.test_stitch_blend import FH, FW, SCALE, render_by_shards

MAGENTA = (255, 0, 255)


def _pair(speck_in: int, seed: int = 3):
    """Two frames side by side (225 px apart) of a textured scene, each with its own noise (σ 4 DN),
    a low-res seam (a wave through the middle of the overlap: the low-res cut, given) and a speck
    (magenta disc, 4 px across: 2 low-res px) in frame ``speck_in`` only, centred on that seam.
    Returns the scene (the truth), the scene with the speck, frames, masks, transforms, labels."""
    step = 225
    hw = (FH, FW + step)
    scene = textured_section(hw, seed=seed)
    rng = np.random.default_rng(seed)
    images = [np.clip(scene[:, x : x + FW] + rng.normal(0, 4, (FH, FW, 3)), 0, 255).astype(np.uint8) for x in (0, step)]
    mats = [translation(0, 0), translation(step, 0)]
    lh, lw = int(np.ceil(hw[0] * SCALE)), int(np.ceil(hw[1] * SCALE))
    ly, lx = np.mgrid[:lh, :lw]
    labels = np.where(lx < 131 + np.rint(3 * np.sin(ly / 8)), 0, 1).astype(np.int16)
    row = lh // 2
    col = int(np.flatnonzero(labels[row, 1:] != labels[row, :-1])[0]) + 1
    yy, xx = np.mgrid[: hw[0], : hw[1]]
    speck = (yy - ((row + 0.5) / SCALE - 0.5)) ** 2 + (xx - (col / SCALE - 0.5)) ** 2 <= 4.0
    x0 = speck_in * step
    images[speck_in][speck[:, x0 : x0 + FW]] = MAGENTA
    defect = scene.copy()
    defect[speck] = MAGENTA
    valids = [np.full((FH, FW), 255, np.uint8) for _ in mats]
    return scene, defect, speck, images, valids, mats, labels


def _upsampled(labels: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    ys = np.clip(np.floor(SCALE * (np.arange(hw[0]) + 0.5)).astype(int), 0, labels.shape[0] - 1)
    xs = np.clip(np.floor(SCALE * (np.arange(hw[1]) + 0.5)).astype(int), 0, labels.shape[1] - 1)
    return labels[np.ix_(ys, xs)]


def _cut_cost(owner: np.ndarray, warped: list[np.ndarray]) -> float:
    """Summed colour difference ``|I_a - I_b|`` (L2 over RGB) on both pixels of every 4-neighbour
    pair that ``owner`` ``(H, W)`` gives to frames ``a != b``; ``warped[k]`` ``(H, W, 3)``."""
    diff = np.linalg.norm(warped[0].astype(np.float64) - warped[1], axis=-1)
    total = 0.0
    for o, d in ((owner, diff), (owner.T, diff.T)):
        cut = (o[:, 1:] != o[:, :-1]) & (o[:, 1:] >= 0) & (o[:, :-1] >= 0)
        total += float((d[:, 1:][cut] + d[:, :-1][cut]).sum())
    return total


@pytest.mark.parametrize("speck_in", [0, 1])
def test_refined_seam_shows_a_speck_whole_or_not_at_all(speck_in):
    """The upsampled low-res seam cuts the speck: the panorama shows part of it (it differs from
    both the truth and the scene with the speck by over 100 DN there). The refined cut goes around
    it, so the panorama shows one frame's content there: the truth where the cut gives the speck's
    pixels to the frame without it, the whole speck where it gives them to the frame that holds it
    (a cut between two frames cannot tell which one is right)."""
    scene, defect, speck, images, valids, mats, labels = _pair(speck_in)
    hw = scene.shape[:2]
    refined = refine_seams(labels, SCALE, [PairFrame(k, images[k], valids[k], mats[k], np.ones(3)) for k in (0, 1)], hw)
    owners = np.unique(refined[speck])
    assert len(owners) == 1 and owners[0] >= 0
    plain = render_by_shards(images, valids, mats, labels, 1024, hw=hw, refined=None).astype(np.float32)
    refine = render_by_shards(images, valids, mats, labels, 1024, hw=hw, refined=refined).astype(np.float32)
    err = {
        name: float(np.abs(out - truth)[speck].max())
        for name, out, truth in (
            ("plain-truth", plain, scene),
            ("plain-defect", plain, defect),
            ("refined-truth", refine, scene),
            ("refined-defect", refine, defect),
        )
    }
    assert err["plain-truth"] > 100 and err["plain-defect"] > 100, err
    shown, hidden = ("refined-defect", "refined-truth")
    if owners[0] != speck_in:
        shown, hidden = hidden, shown
    assert err[shown] <= 25 and err[hidden] > 200, err


def test_refined_cut_costs_less_than_the_upsampled_low_res_cut():
    scene, _, _, images, valids, mats, labels = _pair(1)
    hw = scene.shape[:2]
    refined = refine_seams(labels, SCALE, [PairFrame(k, images[k], valids[k], mats[k], np.ones(3)) for k in (0, 1)], hw)
    low = _upsampled(labels, hw)
    warped = [cv2.warpAffine(im, M, hw[::-1]) for im, M in zip(images, mats)]
    overlap = np.zeros(hw, bool)
    overlap[:, 225:FW] = True
    low_cost = _cut_cost(np.where(overlap, low, -1), warped)
    refined_cost = _cut_cost(np.where(overlap, np.where(refined >= 0, refined, low), -1), warped)
    assert (refined >= 0).sum() <= FH * 14  # ±2 low-res px around the seam: 12 full-res px a row, 14 where it bends
    assert refined_cost < 0.7 * low_cost, (refined_cost, low_cost)


def _rotation(deg: float, cx: float, cy: float) -> np.ndarray:
    return cv2.getRotationMatrix2D((cx, cy), deg, 1.0)


def test_shards_rendered_apart_with_refined_seams_equal_the_panorama_rendered_whole():
    """Four tilted frames (a 2×2 grid with a junction and cut-away corners), their low-res graph
    cut refined: 128 px shards, each reading its box of the refined map, equal one 1024 px shard."""
    step = (150, 225)
    hw = (FH + step[0], FW + step[1])
    mats = [
        compose(
            translation((k % 2) * step[1] + 0.37 * k, (k // 2) * step[0] - 0.61 * k), _rotation(0.6 * k - 1, 150, 100)
        )
        for k in range(4)
    ]
    valids = [np.full((FH, FW), 255, np.uint8) for _ in mats]
    cv2.fillPoly(valids[1], [np.array([[0, 0], [90, 0], [0, 70]])], 0)
    cv2.circle(valids[2], (FW - 1, 0), 40, 0, -1)
    scene = textured_section(hw, seed=7)
    rng = np.random.default_rng(7)
    images = [
        np.clip(
            cv2.warpAffine(scene, M, (FW, FH), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP)
            + rng.normal(0, 4, (FH, FW, 3)),
            0,
            255,
        ).astype(np.uint8)
        for M in mats
    ]
    S = np.array([[SCALE, 0, 0.5 * SCALE - 0.5], [0, SCALE, 0.5 * SCALE - 0.5]])
    lh, lw = int(np.ceil(hw[0] * SCALE)), int(np.ceil(hw[1] * SCALE))
    small = [cv2.resize(im, None, fx=SCALE, fy=SCALE, interpolation=cv2.INTER_AREA) for im in images]
    masks = [cv2.resize(v, None, fx=SCALE, fy=SCALE, interpolation=cv2.INTER_NEAREST) for v in valids]
    ml = [compose(compose(S, M), invert(S)) for M in mats]
    warped = [cv2.warpAffine(im, m, (lw, lh), flags=cv2.INTER_LINEAR) for im, m in zip(small, ml)]
    wmasks = [cv2.warpAffine(v, m, (lw, lh), flags=cv2.INTER_NEAREST) for v, m in zip(masks, ml)]
    labels = seam_labels(warped, wmasks, [(0, 0)] * 4, (lh, lw))  # type: ignore[arg-type]
    frames = [PairFrame(k, images[k], valids[k], mats[k], np.ones(3)) for k in range(4)]
    refined = refine_seams(labels, SCALE, frames, hw)

    assert len(seam_pairs(labels, seam_partners(labels))) >= 4
    assert len(np.unique(refined[refined >= 0])) == 4
    assert ((refined >= 0) & (refined != _upsampled(labels, hw))).sum() > 100
    whole = render_by_shards(images, valids, mats, labels, 1024, hw=hw, refined=refined)
    apart = render_by_shards(images, valids, mats, labels, 128, hw=hw, refined=refined)
    diff = np.abs(whole.astype(np.int16) - apart.astype(np.int16))
    assert np.mean(diff <= 1) >= 0.9999 and diff.max() <= 2
    assert not np.array_equal(whole, render_by_shards(images, valids, mats, labels, 1024, hw=hw, refined=None))


@pytest.mark.ray
def test_stitch_refines_seams_unless_switched_off(tmp_path, corrector):
    """A 2×2 section stitched with ``seam_refine`` on and off: the report records the switch, and
    only the refined section stores a full-resolution owner map, -1 away from its seams."""
    write_section(tmp_path / "coll", "s", capture_grid(None, CaptureConfig(rows=2, cols=2, frame_hw=(FH, FW), seed=4)))
    reports = {
        on: stitch_section(
            tmp_path / "coll" / "s",
            tmp_path / f"{on}.zarr",
            Correction(),
            StitchOptions(shard=256, seam_refine=on),
            executor="serial",
            corrector=corrector,
        )
        for on in (True, False)
    }
    assert reports[True]["options"]["seam_refine"] and not reports[False]["options"]["seam_refine"]
    refined_report = reports[True]["seam_labels"]["refined"]
    assert refined_report["array"] == SEAM_REFINED and refined_report["pairs"] >= 4
    assert reports[False]["seam_labels"]["refined"] is None and "seam_refine" not in reports[False]["timings_s"]
    on, off = (zarr.open_group(str(tmp_path / f"{on}.zarr"), mode="r")["s"] for on in (True, False))
    assert SEAM_REFINED not in off
    refined = on[SEAM_REFINED][:]
    assert refined.shape == tuple(reports[True]["panorama_hw"]) and 0.01 < (refined >= 0).mean() < 0.2
    assert set(np.unique(refined)) == {-1, 0, 1, 2, 3}
