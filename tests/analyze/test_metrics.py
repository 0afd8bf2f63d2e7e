"""Dataset-level segmentation metrics against torchmetrics and a direct confusion count."""

import numpy as np
import torch
from torchmetrics.functional.classification import multiclass_confusion_matrix, multiclass_jaccard_index

from engine.analyze.metrics import SegmentationScores, confusion


def test_iou_summed_over_dataset_matches_torchmetrics():
    rng = np.random.default_rng(0)
    codes = [0, 1, 2, 6, 8]
    truths = [rng.choice(codes, size=(40, 50)).astype(np.uint8) for _ in range(3)]
    preds = [np.where(rng.random((40, 50)) < 0.7, t, rng.choice(codes, size=(40, 50))).astype(np.uint8) for t in truths]
    truths[0][truths[0] == 8] = 6  # class 8 absent from one image's truth
    scores = SegmentationScores.empty(codes)
    for t, p in zip(truths, preds):
        scores.add(t, p)
    lut = np.zeros(256, np.int64)
    lut[codes] = np.arange(len(codes))
    t_all = torch.from_numpy(lut[np.concatenate([t.ravel() for t in truths])])
    p_all = torch.from_numpy(lut[np.concatenate([p.ravel() for p in preds])])
    ref_cm = multiclass_confusion_matrix(p_all, t_all, num_classes=len(codes)).numpy()
    assert np.array_equal(scores.confusion[:, : len(codes)], ref_cm)
    ref_iou = multiclass_jaccard_index(p_all, t_all, num_classes=len(codes), average="none").numpy()
    assert np.allclose(scores.iou, ref_iou)
    assert np.isclose(scores.pixel_accuracy, (t_all == p_all).float().mean().item())


def test_absent_classes_and_out_of_set_predictions():
    truth = np.array([[0, 0, 1, 1]], np.uint8)
    pred = np.array([[0, 9, 1, 1]], np.uint8)
    cm = confusion(truth, pred, [0, 1, 2])
    assert cm.tolist() == [[1, 0, 0, 1], [0, 2, 0, 0], [0, 0, 0, 0]]
    s = SegmentationScores([0, 1, 2], cm)
    assert np.isnan(s.iou[2]) and s.iou[0] == 0.5 and s.iou[1] == 1.0
    assert s.pixel_accuracy == 0.75


def test_void_pixels_are_neither_right_nor_wrong():
    truth = np.array([[0, 1, 1, 0]], np.uint8)
    pred = np.array([[0, 0, 1, 1]], np.uint8)
    valid = np.array([[True, False, True, False]])
    s = SegmentationScores([0, 1], confusion(truth, pred, [0, 1], valid))
    assert s.confusion.sum() == 2 and s.pixel_accuracy == 1.0


def _brute_force_valid(truth: np.ndarray, width: int) -> np.ndarray:
    h, w = truth.shape
    out = np.zeros_like(truth, bool)
    for y in range(h):
        for x in range(w):
            win = truth[max(y - width, 0) : y + width + 1, max(x - width, 0) : x + width + 1]
            out[y, x] = (win == truth[y, x]).all()
    return out


def test_void_borders_leave_out_exactly_the_band_around_truth_boundaries():
    from torchmetrics.functional.classification import multiclass_jaccard_index

    from engine.analyze.metrics import void_border_mask

    rng = np.random.default_rng(4)
    codes = [0, 3, 5]
    truth = np.kron(rng.choice(codes, size=(6, 7)), np.ones((5, 5), np.int64)).astype(np.uint8)
    pred = np.where(rng.random(truth.shape) < 0.8, truth, rng.choice(codes, size=truth.shape)).astype(np.uint8)
    for width in (1, 2):
        valid = void_border_mask(truth, width)
        assert np.array_equal(valid, _brute_force_valid(truth, width))
        s = SegmentationScores.empty(codes)
        s.add(truth, pred, void_border=width)
        assert s.confusion.sum() == valid.sum() < truth.size
        lut = np.zeros(256, np.int64)
        lut[codes] = np.arange(3)
        t = torch.from_numpy(np.where(valid, lut[truth], -1).ravel())
        p = torch.from_numpy(lut[pred].ravel())
        ref = multiclass_jaccard_index(p, t, num_classes=3, average="none", ignore_index=-1).numpy()
        assert np.allclose(s.iou, ref)
    assert void_border_mask(truth, 0).all()
