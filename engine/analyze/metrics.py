"""Segmentation metrics summed over a whole dataset (not averaged per image)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


def void_border_mask(truth: np.ndarray, width: int) -> np.ndarray:
    """``True`` where a pixel is counted: not within ``width`` px (chessboard distance) of a pixel
    of another truth label. ``width`` 0 keeps every pixel."""
    if width <= 0:
        return np.ones(truth.shape, bool)
    kernel = np.ones((2 * width + 1, 2 * width + 1), np.uint8)
    hi = cv2.dilate(truth, kernel, borderType=cv2.BORDER_REPLICATE)
    lo = cv2.erode(truth, kernel, borderType=cv2.BORDER_REPLICATE)
    return hi == lo


def confusion(truth: np.ndarray, pred: np.ndarray, codes: list[int], valid: np.ndarray | None = None) -> np.ndarray:
    """Confusion matrix ``(n, n + 1)``: rows true class, columns predicted class, the last column
    predictions outside ``codes`` (always wrong). Pixels outside ``valid`` or whose truth is not in
    ``codes`` are not counted."""
    if truth.shape != pred.shape:
        raise ValueError(f"truth {truth.shape} and prediction {pred.shape} differ in shape")
    lut = np.full(256, -1, np.int64)
    lut[np.asarray(codes, np.int64)] = np.arange(len(codes))
    t, p = lut[truth.ravel()], lut[pred.ravel()]
    keep = t >= 0
    if valid is not None:
        keep &= valid.ravel().astype(bool)
    n = len(codes)
    p = np.where(p >= 0, p, n)
    return np.bincount(t[keep] * (n + 1) + p[keep], minlength=n * (n + 1)).reshape(n, n + 1)


@dataclass
class SegmentationScores:
    codes: list[int]
    confusion: np.ndarray

    @property
    def intersection(self) -> np.ndarray:
        return np.diag(self.confusion[:, : len(self.codes)]).astype(np.float64)

    @property
    def union(self) -> np.ndarray:
        n = len(self.codes)
        return self.confusion.sum(1) + self.confusion[:, :n].sum(0) - np.diag(self.confusion[:, :n])

    @property
    def iou(self) -> np.ndarray:
        """Per-class IoU; NaN for classes absent from both truth and prediction."""
        u = self.union.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(u > 0, self.intersection / u, np.nan)

    @property
    def mean_iou(self) -> float:
        return float(np.nanmean(self.iou))

    @property
    def pixel_accuracy(self) -> float:
        total = self.confusion.sum()
        return float(self.intersection.sum() / total) if total else float("nan")

    def add(self, truth: np.ndarray, pred: np.ndarray, valid: np.ndarray | None = None, void_border: int = 0) -> None:
        """Count one image; ``void_border`` > 0 leaves out a band that wide around truth class boundaries."""
        if void_border > 0:
            band = void_border_mask(truth, void_border)
            valid = band if valid is None else band & valid.astype(bool)
        self.confusion = self.confusion + confusion(truth, pred, self.codes, valid)

    def to_dict(self, names: dict[int, str] | None = None) -> dict:
        names = names or {}
        return {
            "mean_iou": self.mean_iou,
            "pixel_accuracy": self.pixel_accuracy,
            "pixels": int(self.confusion.sum()),
            "classes": [
                {
                    "code": c,
                    "name": names.get(c, str(c)),
                    "iou": None if np.isnan(v) else float(v),
                    "truth_pixels": int(t),
                }
                for c, v, t in zip(self.codes, self.iou, self.confusion.sum(1))
            ],
            "confusion": self.confusion.tolist(),
        }

    @classmethod
    def empty(cls, codes: list[int]) -> SegmentationScores:
        return cls(list(codes), np.zeros((len(codes), len(codes) + 1), np.int64))

    def table(self, names: dict[int, str] | None = None) -> str:
        names = names or {}
        lines = [f"{'class':<16}{'IoU':>8}"]
        for c, v in zip(self.codes, self.iou):
            lines.append(f"{names.get(c, str(c)):<16}{v:>8.3f}")
        lines.append(f"{'mean IoU':<16}{self.mean_iou:>8.3f}")
        lines.append(f"{'pixel accuracy':<16}{self.pixel_accuracy:>8.3f}")
        return "\n".join(lines)
