"""Augmentation and the sampler as a Ray Data source, against exact cuts of synthetic masks."""

import numpy as np
import pytest

from engine.io.images import read_mask
from engine.synth import write_lumenstone
from engine.train.augment import VOID, AugmentParams, augment_patch
from engine.train.data import pairs
from engine.train.sampler import SamplerParams
from engine.train.source import StreamPlan, patch_dataset, stream_rows

NONE = AugmentParams(rotation=0, scale=0, flips=False, brightness=0, color=0)


def _image(h=120, w=140, seed=0):
    rng = np.random.default_rng(seed)
    mask = rng.integers(0, 4, (h, w), dtype=np.uint8)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return img, mask


class _FixedAngle:
    """Stands in for the generator: every uniform draw is ``angle``."""

    def __init__(self, angle: float):
        self.angle = angle

    def uniform(self, lo, hi, size=None):
        return self.angle


def test_identity_and_quarter_turn_are_exact_cuts():
    img, mask = _image()
    a, m = augment_patch(img, mask, 30, 40, 48, NONE, np.random.default_rng(0))
    assert np.array_equal(a, img[30:78, 40:88]) and np.array_equal(m, mask[30:78, 40:88])
    quarter = AugmentParams(rotation=90, scale=0, flips=False, brightness=0, color=0)
    a, m = augment_patch(img, mask, 30, 40, 48, quarter, _FixedAngle(90.0))
    assert np.array_equal(m, np.rot90(mask[30:78, 40:88], 1)) and np.array_equal(a, np.rot90(img[30:78, 40:88], 1))


def test_rotation_keeps_labels_nearest_and_voids_only_pixels_without_data():
    img, mask = _image(200, 220)
    p = AugmentParams(rotation=45, scale=0.1, flips=True, brightness=0.1, color=0.05)
    inner_void = corner_void = 0
    for seed in range(20):
        _, m = augment_patch(img, mask, 70, 80, 64, p, np.random.default_rng(seed))
        assert set(np.unique(m).tolist()) <= {0, 1, 2, 3}
        inner_void += int((m == VOID).sum())
        _, mc = augment_patch(img, mask, 0, 0, 64, p, np.random.default_rng(seed))
        assert set(np.unique(mc).tolist()) <= {0, 1, 2, 3, VOID}
        corner_void += int((mc == VOID).sum())
    assert inner_void == 0 and corner_void > 0


def test_colour_changes_the_image_but_not_the_mask():
    img, mask = _image()
    p = AugmentParams(rotation=0, scale=0, flips=False, brightness=0.2, color=0.1)
    a, m = augment_patch(img, mask, 10, 10, 48, p, np.random.default_rng(3))
    assert np.array_equal(m, mask[10:58, 10:58]) and not np.array_equal(a, img[10:58, 10:58])
    ratio = a.astype(float).sum((0, 1)) / img[10:58, 10:58].astype(float).sum((0, 1))
    assert np.all(np.abs(ratio - 1) < 0.32) and np.ptp(ratio) > 1e-3


@pytest.fixture(scope="module")
def small_collection(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    return write_lumenstone(
        root, n_train=3, n_test=1, size=(160, 200), associations=("S1", "S2"), seed=2, grain_diameter=30
    )


def _plan(root, cache, epochs=(0, 1), tasks=2, per_task=12, patch=64):
    files = pairs(root, "train")
    codes = sorted({int(c) for _, m in files for c in np.unique(read_mask(m))})
    return StreamPlan(
        tuple(str(i) for i, _ in files),
        tuple(str(m) for _, m in files),
        SamplerParams(classes=tuple(codes), patch=patch, downscale=4),
        seed=5,
        epochs=epochs,
        tasks=tasks,
        per_task=per_task,
        cache_dir=str(cache),
        rows_per_block=5,
    )


def test_streams_are_disjoint_and_counts_are_the_drawn_patches(small_collection, tmp_path):
    plan = _plan(small_collection, tmp_path)
    rows = {(e, t): stream_rows(plan, e, t) for e in plan.epochs for t in range(plan.tasks)}
    for e in plan.epochs:
        keys = [
            {(str(im), int(y), int(x)) for b in rows[(e, t)] for im, y, x in zip(b["image"], b["y0"], b["x0"])}
            for t in range(plan.tasks)
        ]
        assert not keys[0] & keys[1] and all(len(k) > 8 for k in keys)
    assert [len(b["y0"]) for b in rows[(0, 0)]] == [5, 5, 2]
    lut = {c: i for i, c in enumerate(plan.params.classes)}
    for b in rows[(1, 1)]:
        for m, y, x, counts in zip(b["mask"], b["y0"], b["x0"], b["counts"]):
            cut = read_mask(m)[y : y + 64, x : x + 64]
            expect = np.zeros(len(lut), np.int64)
            for c, n in zip(*np.unique(cut, return_counts=True)):
                expect[lut[int(c)]] = n
            assert np.array_equal(counts, expect)
    again = stream_rows(plan, 1, 1)
    assert all(
        np.array_equal(a["y0"], b["y0"]) and np.array_equal(a["seed"], b["seed"]) for a, b in zip(again, rows[(1, 1)])
    )


@pytest.mark.ray
def test_ray_dataset_yields_every_drawn_patch_cut_and_mapped(ray_session, small_collection, tmp_path):
    plan = _plan(small_collection, tmp_path, epochs=(3,), per_task=10)
    got = patch_dataset(plan, None).take_all()
    assert len(got) == plan.tasks * plan.per_task
    lut = np.full(256, VOID, np.uint8)
    lut[list(plan.params.classes)] = np.arange(len(plan.params.classes))
    expected = {}
    for t in range(plan.tasks):
        for b in stream_rows(plan, 3, t):
            for m, y, x, c in zip(b["mask"], b["y0"], b["x0"], b["counts"]):
                expected.setdefault(tuple(c.tolist()), []).append(lut[read_mask(m)[y : y + 64, x : x + 64]])
    for row in got:
        assert row["image"].shape == (3, 64, 64) and row["target"].shape == (64, 64)
        cands = expected[tuple(row["counts"].tolist())]
        assert any(np.array_equal(row["target"], c) for c in cands)
        hist = np.bincount(row["target"].ravel(), minlength=len(plan.params.classes))
        assert np.array_equal(hist, row["counts"])
