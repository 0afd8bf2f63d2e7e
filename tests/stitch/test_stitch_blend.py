"""Multiband blending of stitched shards against truth: shards rendered apart equal the panorama
rendered whole, an exposure and colour step the gains leave is spread out (feathering keeps it
visible), and away from seams, and in the fine detail along them, the frames' content is kept."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import zarr

from engine.io.layout import SEAM_LABELS, SEAM_REFINED
from engine.stitch.frames import Correction
from engine.stitch.register import compose, invert, translation
from engine.stitch.render import RenderPlan, ShardFrame, _multiband, blend_box, blend_halo, read_box, render_shard
from engine.stitch.seams import seam_labels
from engine.stitch.section import StitchOptions, create_partial, create_root, prepare_section, render_sections
from engine.stitch.warp import FrameWarper
from engine.synth.captures import CaptureConfig, capture_grid, textured_section, write_section

FH, FW = 200, 300
STEP = (150, 225)
H, W = FH + STEP[0], FW + STEP[1]
SCALE = 0.5
EXPOSURE = np.array([[1.0, 1.0, 1.0], [0.85, 0.9, 0.95], [1.12, 1.05, 1.0], [0.92, 1.0, 1.1]], np.float32)
OFFSET = np.array([[0, 0, 0], [10, -6, 0], [-8, 4, 12], [6, 10, -10]], np.float32)


def _rotation(deg: float, cx: float, cy: float) -> np.ndarray:
    return cv2.getRotationMatrix2D((cx, cy), deg, 1.0)


def _section(
    mats: list[np.ndarray], valids: list[np.ndarray], seed: int
) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """The scene ``(H, W, 3)`` uint8, its frames (each seen at ``mats[k]``, frame → scene, with
    ``EXPOSURE[k]`` and ``OFFSET[k]``) and their graph-cut seam labels at ``SCALE``."""
    scene = textured_section((H, W), seed=seed)
    images = [
        np.clip(
            cv2.warpAffine(scene, M, (FW, FH), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP) * EXPOSURE[k] + OFFSET[k],
            0,
            255,
        ).astype(np.uint8)
        for k, M in enumerate(mats)
    ]
    S = np.array([[SCALE, 0, 0.5 * SCALE - 0.5], [0, SCALE, 0.5 * SCALE - 0.5]])
    lh, lw = int(np.ceil(H * SCALE)), int(np.ceil(W * SCALE))
    small = [cv2.resize(im, None, fx=SCALE, fy=SCALE, interpolation=cv2.INTER_AREA) for im in images]
    masks = [cv2.resize(v, None, fx=SCALE, fy=SCALE, interpolation=cv2.INTER_NEAREST) for v in valids]
    ml = [compose(compose(S, M), invert(S)) for M in mats]
    warped = [cv2.warpAffine(im, m, (lw, lh), flags=cv2.INTER_LINEAR) for im, m in zip(small, ml)]
    wmasks = [cv2.warpAffine(v, m, (lw, lh), flags=cv2.INTER_NEAREST) for v, m in zip(masks, ml)]
    labels = seam_labels(warped, wmasks, [(0, 0)] * len(mats), (lh, lw))  # type: ignore[arg-type]
    return scene, images, labels


def render_by_shards(
    images: list[np.ndarray],
    valids: list[np.ndarray],
    mats: list[np.ndarray],
    labels: np.ndarray,
    shard: int,
    blend: str = "multiband",
    levels: int | None = None,
    hw: tuple[int, int] = (H, W),
    refined: np.ndarray | None = None,
) -> np.ndarray:
    """The panorama ``hw`` ``(H, W, 3)`` uint8 rendered shard by shard, each from the frames the plan reads for it
    and its box of ``refined`` (full-resolution seam owners) if given."""
    gains = tuple(np.ones(3) for _ in mats)
    plan = RenderPlan(
        "s",
        "",
        "",
        "",
        (FH, FW),
        tuple(mats),
        gains,
        SCALE,
        1.5,
        hw,
        shard,
        blend,
        levels,
        refined is not None,  # type: ignore[arg-type]
    )
    out = np.zeros((*hw, 3), np.uint8)
    for b in plan.blocks:
        ks = plan.touching(b)
        shard_px = render_shard(
            b.y0,
            b.x0,
            b.h,
            b.w,
            [ShardFrame(k, mats[k], gains[k]) for k in ks],
            [images[k] for k in ks],
            [valids[k] for k in ks],
            labels,
            SCALE,
            blend=plan.blend,
            levels=plan.levels,
            refined=None if refined is None else read_box(refined, *plan.box(b)),
        )
        out[b.y0 : b.y0 + b.h, b.x0 : b.x0 + b.w] = shard_px.transpose(1, 2, 0)
    return out


def _grid_mats() -> list[np.ndarray]:
    return [translation((k % 2) * STEP[1], (k // 2) * STEP[0]) for k in range(4)]


def _owners(labels: np.ndarray) -> np.ndarray:
    return cv2.resize(labels.astype(np.float32), (W, H), interpolation=cv2.INTER_NEAREST).astype(np.int64)


def _seam_jump(err: np.ndarray, owners: np.ndarray, r: int) -> float:
    """Mean |step| of ``err`` ``(H, W, 3)`` from ``r`` px before to ``r`` px after the seam, per channel,
    averaged along each seam (pair of owners, direction) first so the texture cancels."""
    total, n = 0.0, 0
    for o, e in ((owners, err), (owners.T, err.transpose(1, 0, 2))):
        ys, xs = np.nonzero((o[:, 1:] != o[:, :-1]) & (o[:, 1:] >= 0) & (o[:, :-1] >= 0))
        keep = (xs - r + 1 >= 0) & (xs + r < o.shape[1])
        ys, xs = ys[keep], xs[keep]
        pair = o[ys, xs] * 100 + o[ys, xs + 1]
        step = e[ys, xs + r] - e[ys, xs - r + 1]
        for p in np.unique(pair):
            sel = pair == p
            total += float(np.abs(step[sel].mean(0)).sum()) * sel.sum()
            n += 3 * int(sel.sum())
    return total / n


def _gradient(img: np.ndarray) -> np.ndarray:
    g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return cv2.magnitude(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1))


def test_blend_option_is_checked():
    assert StitchOptions().blend == "multiband"
    with pytest.raises(ValueError, match="'laplace'"):
        StitchOptions(blend="laplace")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="blend_levels"):
        StitchOptions(blend_levels=0)


@pytest.mark.parametrize("levels", [None, 5])
def test_shards_rendered_apart_equal_the_panorama_rendered_whole(levels):
    mats = [
        compose(
            translation((k % 2) * STEP[1] + 0.37 * k, (k // 2) * STEP[0] - 0.61 * k), _rotation(0.6 * k - 1, 150, 100)
        )
        for k in range(4)
    ]
    valids = [np.full((FH, FW), 255, np.uint8) for _ in mats]
    cv2.fillPoly(valids[1], [np.array([[0, 0], [90, 0], [0, 70]])], 0)
    cv2.circle(valids[2], (FW - 1, 0), 40, 0, -1)
    _, images, labels = _section(mats, valids, seed=7)
    whole = render_by_shards(images, valids, mats, labels, 1024, "multiband", levels)
    apart = render_by_shards(images, valids, mats, labels, 128, "multiband", levels)
    diff = np.abs(whole.astype(np.int16) - apart.astype(np.int16))
    assert np.mean(diff <= 1) >= 0.9999 and diff.max() <= 2
    assert (whole > 0).any(axis=-1).mean() > 0.9


def test_multiband_built_around_each_frames_pixels_equals_it_built_over_the_whole_box():
    """Each frame's pyramids span only the pixels it owns plus the coarsest band's reach: the blend
    equals the one whose every pyramid spans the whole box (the renderer before that bound)."""
    mats = [
        compose(translation((k % 2) * STEP[1] + 0.3 * k, (k // 2) * STEP[0] - 0.4 * k), _rotation(0.5 * k, 150, 100))
        for k in range(4)
    ]
    valids = [np.full((FH, FW), 255, np.uint8) for _ in mats]
    cv2.circle(valids[3], (0, 0), 50, 0, -1)
    _, images, labels = _section(mats, valids, seed=11)
    frames = [ShardFrame(k, M, EXPOSURE[k] / EXPOSURE[0]) for k, M in enumerate(mats)]
    levels = 3
    by0, bx0, bh, bw = blend_box(0, 0, H, W, levels)
    args = (by0, bx0, bh, bw, frames, images, valids, labels, SCALE, FrameWarper(), levels)
    bounded, whole = _multiband(*args), _multiband(*args, margin=10**6)
    assert blend_halo(levels) + (2 << levels) < min(H, W) / 3
    diff = np.abs(bounded - whole)
    assert diff.max() <= 0.25, diff.max()
    mine_images, mine_valids = list(images), list(valids)
    released = _multiband(*args[:5], mine_images, mine_valids, *args[7:], release=True)
    assert np.array_equal(released, bounded) and mine_images == [] and mine_valids == []
    assert len(images) == len(valids) == 4  # without release the caller's lists are left as they are


def test_multiband_spreads_the_exposure_step_and_keeps_detail():
    mats = _grid_mats()
    valids = [np.full((FH, FW), 255, np.uint8) for _ in mats]
    scene, images, labels = _section(mats, valids, seed=5)
    owners = _owners(labels)
    feather = render_by_shards(images, valids, mats, labels, 1024, "feather")
    multi = render_by_shards(images, valids, mats, labels, 1024, "multiband")
    truth = scene.astype(np.float32)
    jumps = {
        name: [_seam_jump(out.astype(np.float32) - truth, owners, r) for r in (1, 2, 4)]
        for name, out in (("feather", feather), ("multiband", multi))
    }
    assert all(m < 0.35 * f for m, f in zip(jumps["multiband"], jumps["feather"])), jumps

    seam = np.zeros((H, W), bool)
    seam[:, 1:] |= owners[:, 1:] != owners[:, :-1]
    seam[1:] |= owners[1:] != owners[:-1]
    dist = cv2.distanceTransform((~seam).astype(np.uint8), cv2.DIST_L2, 3)
    # the frames' own content: each pixel from its owner, with the owner's exposure and colour errors
    content = np.zeros((H, W, 3), np.float32)
    for k, M in enumerate(mats):
        warped = cv2.warpAffine(images[k], M, (W, H), flags=cv2.INTER_CUBIC)
        content[owners == k] = warped[owners == k]
    away = (dist > 64) & (owners >= 0)
    assert away.mean() > 0.2
    assert np.abs(multi.astype(np.float32) - content)[away].max() <= 1

    on_seam, interior = dist <= 2, dist > 64
    gm, gt = _gradient(multi), _gradient(scene)
    ratio = (gm[on_seam].mean() / gm[interior].mean()) / (gt[on_seam].mean() / gt[interior].mean())
    assert abs(ratio - 1) < 0.02, ratio


@pytest.mark.ray
def test_stitch_render_shards_agree_with_one_shard(tmp_path, corrector):
    """Through the render stage: a degraded section's 128 px multiband shards, each read with the
    frames its halo touches and its box of the refined seam map, equal the panorama rendered as one shard."""
    pin = json.loads((Path(__file__).parent / "fixtures" / "render_pinned.json").read_text())["secA"]["config"]
    cfg = CaptureConfig.degraded(frame_hw=(200, 300), seed=pin["seed"], rows=pin["rows"], cols=pin["cols"])
    write_section(tmp_path / "coll", "secA", capture_grid(None, cfg))
    store = tmp_path / "out.zarr"
    create_root(store)
    plan, _ = prepare_section(tmp_path / "coll" / "secA", store, Correction(), StitchOptions(shard=128), corrector)
    assert plan.blend == "multiband" and plan.levels == 4 and len(plan.units) > 10 and plan.seam_refined
    group = zarr.open_group(str(store), mode="r")[plan.group]
    whole = replace(plan, section="whole", group=".whole.partial", shard=1024)
    create_partial(whole, group[SEAM_LABELS][:], 1)
    refined = group[SEAM_REFINED][:]
    assert (refined >= 0).mean() > 0.01
    zarr.open_group(str(store), mode="r+")[whole.group][SEAM_REFINED][...] = refined
    run = render_sections([plan, whole], "serial")
    assert not run.failed and run.ran == len(plan.units) + 1
    root = zarr.open_group(str(store), mode="r")
    a, b = (root[p.group]["0"][:].astype(np.int16) for p in (plan, whole))
    diff = np.abs(a - b)
    assert np.mean(diff <= 1) >= 0.9999 and diff.max() <= 2
