"""Least-visible seams by graph cut on colour and gradient differences (OpenCV), at low resolution.

The result is a label map over the low-resolution panorama: which frame owns each
pixel (-1: none). Renderers blur each frame's ownership into a blend weight, so every
output shard derives identical weights from the same small map.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np


def seam_labels(
    images: list[np.ndarray | None],
    masks: list[np.ndarray | None],
    corners: list[tuple[int, int]],
    shape: tuple[int, int],
    cost: str = "COST_COLOR_GRAD",
) -> np.ndarray:
    """Label map ``(h, w)`` int16 of the owning frame per pixel, from warped low-res frames.

    ``images[k]`` (uint8 RGB) and ``masks[k]`` (uint8) sit at ``corners[k] = (x, y)`` in
    a canvas of ``shape``; ``None`` entries are skipped.
    """
    keep = [k for k, im in enumerate(images) if im is not None]
    h, w = shape
    labels = np.full((h, w), -1, np.int16)
    if not keep:
        return labels
    imgs = [np.asarray(images[k], np.float32) for k in keep]
    # the stubs know UMat(UMat) only; OpenCV builds one from an array
    ms: Sequence[Any] = [
        cv2.UMat(np.ascontiguousarray(np.asarray(masks[k], np.uint8)))  # type: ignore[call-overload]
        for k in keep
    ]
    cs = [(int(corners[k][0]), int(corners[k][1])) for k in keep]
    if len(keep) > 1:
        finder = cv2.detail.GraphCutSeamFinder(cost)
        ms = finder.find(imgs, cs, ms)  # type: ignore[arg-type]  # the stubs say UMat; OpenCV takes arrays too
    score = np.full((h, w), -1.0, np.float32)
    for k, m, (x, y) in zip(keep, ms, cs):
        m = m.get() if isinstance(m, cv2.UMat) else np.asarray(m)
        own = np.asarray(masks[k])
        dist = cv2.distanceTransform((own > 0).astype(np.uint8), cv2.DIST_L2, 3)
        s = np.where(m > 0, dist + 1e6, np.where(own > 0, dist, -1.0)).astype(np.float32)
        mh, mw = m.shape
        y0, x0, y1, x1 = max(y, 0), max(x, 0), min(y + mh, h), min(x + mw, w)
        if y1 <= y0 or x1 <= x0:
            continue
        sub = s[y0 - y : y1 - y, x0 - x : x1 - x]
        cur = score[y0:y1, x0:x1]
        better = sub > cur
        cur[better] = sub[better]
        labels[y0:y1, x0:x1][better] = k
    return labels


def seam_boundary(labels: np.ndarray) -> np.ndarray:
    """Pixels with a 4-neighbour owned by another frame (both owned)."""
    b = np.zeros(labels.shape, bool)
    dy = (labels[1:] != labels[:-1]) & (labels[1:] >= 0) & (labels[:-1] >= 0)
    dx = (labels[:, 1:] != labels[:, :-1]) & (labels[:, 1:] >= 0) & (labels[:, :-1] >= 0)
    b[1:] |= dy
    b[:-1] |= dy
    b[:, 1:] |= dx
    b[:, :-1] |= dx
    return b
