import cv2
import numpy as np
import pytest
import zarr

from engine.io.layout import TRUTH, label_path
from engine.io.ome import PyramidLayout
from engine.synth import ASSOCIATIONS, Section, SectionSpec, write_lumenstone, write_panorama


def test_rendering_is_deterministic_and_block_consistent():
    s = Section(SectionSpec(seed=3, association="S2"))
    rgb, lab = s.render(0, 0, 400, 500)
    rgb2, lab2 = Section(SectionSpec(seed=3, association="S2")).render(0, 0, 400, 500)
    assert np.array_equal(rgb, rgb2) and np.array_equal(lab, lab2)
    part_rgb, part_lab = s.render(137, 211, 190, 240)
    assert np.array_equal(rgb[137:327, 211:451], part_rgb)
    assert np.array_equal(lab[137:327, 211:451], part_lab)
    other, _ = Section(SectionSpec(seed=4, association="S2")).render(0, 0, 400, 500)
    assert not np.array_equal(rgb, other)


@pytest.mark.parametrize("assoc", ["S1", "S2", "S3"])
def test_class_shares_follow_the_association(assoc):
    a = ASSOCIATIONS[assoc]
    _, lab = Section(SectionSpec(seed=11, association=assoc, grain_diameter=40)).render(0, 0, 1200, 1200)
    codes, counts = np.unique(lab, return_counts=True)
    assert set(codes.tolist()) <= set(a.shares)
    share = dict(zip(codes.tolist(), counts / lab.size))
    target = {c: v / sum(a.shares.values()) for c, v in a.shares.items()}
    assert abs(share[0] - target[0]) < 0.06
    dominant = max((c for c in target if c), key=target.get)
    assert max((c for c in share if c), key=share.get) == dominant


def test_grain_boundaries_are_shaded_and_minerals_have_their_colour():
    spec = SectionSpec(
        seed=2, association="S1", noise=0.0, texture=0.0, scratches_per_cell=0, pits_per_cell=0, colour_jitter=0.0
    )
    rgb, lab = Section(spec).render(0, 0, 400, 400)
    inner = cv2.erode((lab == 8).astype(np.uint8), np.ones((15, 15), np.uint8)).astype(bool)
    assert inner.any()
    assert np.abs(rgb[inner].mean(0) - np.array(spec.colors[8])).max() < 3
    edge = cv2.morphologyEx(lab, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    assert rgb[edge].mean() < rgb[~edge & (lab > 0)].mean()


def test_lumenstone_layout(tmp_path):
    write_lumenstone(tmp_path, n_train=2, n_test=1, size=(96, 128), associations=("S1", "S3"), seed=1)
    imgs = sorted((tmp_path / "imgs" / "train").glob("*.png"))
    masks = sorted((tmp_path / "masks" / "train").glob("*.png"))
    assert [p.name for p in imgs] == [p.name for p in masks] and len(imgs) == 2
    assert len(list((tmp_path / "imgs" / "test").glob("*.png"))) == 1
    img = cv2.imread(str(imgs[1]))
    mask = cv2.imread(str(masks[1]), cv2.IMREAD_UNCHANGED)
    assert img.shape == (96, 128, 3) and mask.shape == (96, 128) and mask.dtype == np.uint8
    assert set(np.unique(mask)) <= set(ASSOCIATIONS["S3"].shares)


def test_panorama_store_matches_direct_render(tmp_path):
    spec = SectionSpec(seed=9)
    write_panorama(tmp_path / "p.zarr", "s", 300, 500, spec, PyramidLayout((128, 256), 64, 2))
    g = zarr.open_group(str(tmp_path / "p.zarr"), mode="r")
    rgb, lab = Section(spec).render(0, 0, 300, 500)
    assert np.array_equal(np.moveaxis(g["s/0"][:], 0, -1), rgb)
    assert np.array_equal(g[label_path("s", TRUTH)][:], lab)
    assert np.array_equal(g[label_path("s", TRUTH, 1)][:], lab[::2, ::2])
