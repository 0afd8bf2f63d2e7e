"""``lode evaluate``: store against mask files or truth labels, dataset-level sums, void borders."""

import json

import cv2
import numpy as np
import pytest
import zarr

from engine.analyze.metrics import SegmentationScores
from engine.classes import LUMENSTONE
from engine.errors import LodeInputError
from engine.io.integrity import mark_complete
from engine.io.ome import PyramidLayout, create_labels, write_block
from engine.synth import SectionSpec, write_panorama
from jobs.cli import main

LAYOUT = PyramidLayout((128, 128), chunk=64, levels=2)


@pytest.fixture(scope="module")
def store_and_masks(tmp_path_factory):
    """Two sections with truth labels and a perturbed prediction as labels/minerals; truth also as PNGs."""
    root = tmp_path_factory.mktemp("eval")
    store = root / "lode.ome.zarr"
    rng = np.random.default_rng(0)
    truths, preds = {}, {}
    (root / "masks" / "test").mkdir(parents=True)
    for i, (name, assoc) in enumerate((("sec-a", "S1"), ("sec-b", "S2"))):
        img = write_panorama(
            store, name, 150, 170, SectionSpec(seed=30 + i, association=assoc, grain_diameter=25), LAYOUT
        )
        truth = np.asarray(img["labels/truth/0"][:])
        pred = truth.copy()
        flip = rng.random(truth.shape) < 0.15
        pred[flip] = rng.choice([0, 1, 5, 8, 13], size=int(flip.sum()))
        lab = create_labels(img, "minerals", LUMENSTONE, LAYOUT)
        for y0 in range(0, 150, 128):
            for x0 in range(0, 170, 128):
                write_block(lab, pred[y0 : y0 + 128, x0 : x0 + 128], y0, x0, "label")
        mark_complete(lab)
        truths[name], preds[name] = truth, pred
        cv2.imwrite(str(root / "masks" / "test" / f"{name}.png"), truth)
    return store, root, truths, preds


@pytest.mark.parametrize("truth_kind", ["masks", "store"])
def test_evaluate_sums_over_the_dataset(store_and_masks, tmp_path, truth_kind, capsys):
    store, root, truths, preds = store_and_masks
    truth_arg = root if truth_kind == "masks" else store
    out = tmp_path / "e.json"
    assert main(["evaluate", "--pred", str(store), "--truth", str(truth_arg), "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    codes = sorted(
        set(np.unique(np.concatenate([t.ravel() for t in truths.values()])).tolist())
        | set(np.unique(np.concatenate([p.ravel() for p in preds.values()])).tolist())
    )
    ref = SegmentationScores.empty(codes)
    for s in truths:
        ref.add(truths[s], preds[s])
    assert [c["code"] for c in doc["classes"]] == codes
    assert doc["mean_iou"] == pytest.approx(ref.mean_iou) and doc["pixel_accuracy"] == pytest.approx(ref.pixel_accuracy)
    assert np.array_equal(np.array(doc["confusion"]), ref.confusion)
    assert set(doc["sections"]) == {"sec-a", "sec-b"}
    per_image_mean = np.nanmean([doc["sections"][s]["mean_iou"] for s in doc["sections"]])
    assert doc["mean_iou"] != pytest.approx(per_image_mean)
    assert "mean IoU" in capsys.readouterr().out


def test_void_borders_and_a_missing_truth(store_and_masks, tmp_path):
    store, root, truths, preds = store_and_masks
    out = tmp_path / "v.json"
    assert (
        main(["evaluate", "--pred", str(store), "--truth", str(root), "--void-borders", "2", "--json", str(out)]) == 0
    )
    doc = json.loads(out.read_text())
    assert doc["pixels"] < sum(t.size for t in truths.values())
    from engine.analyze.evaluate import evaluate_store

    (root / "masks" / "test" / "sec-b.png").rename(root / "masks" / "test" / "other.png")
    try:
        with pytest.raises(LodeInputError, match="sec-b"):
            evaluate_store(store, root)
    finally:
        (root / "masks" / "test" / "other.png").rename(root / "masks" / "test" / "sec-b.png")
    with pytest.raises(LodeInputError, match="no section with labels/minerals"):
        zarr.open_group(str(tmp_path / "empty.zarr"), mode="w")
        evaluate_store(tmp_path / "empty.zarr", root)
