"""A grain's pixels recovered from its label image and its ``grains.parquet`` row.

The grain table stores a grain's class, area and bounding box, not a grain-id image. Inside the
bounding box, the grain is the connected component of its class that fills that box with exactly
``area_px`` pixels: no other component can (it would have to touch the grain, and then be part
of it). Both 8- and 4-connected tables are matched.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.ndimage import binary_dilation
from skimage.measure import label as sk_label


def bbox_of(row: Any) -> tuple[int, int, int, int]:
    """``(y0, x0, y1, x1)`` of a grain row, end-exclusive."""
    return int(row.bbox_y0), int(row.bbox_x0), int(row.bbox_y1), int(row.bbox_x1)


def grain_mask(crop: np.ndarray, row: Any, at: tuple[int, int] | None = None) -> np.ndarray | None:
    """Boolean mask ``(h, w)`` of the grain of ``row`` in ``crop``, the label image over its
    bounding box; with ``at`` (a pixel of the crop) only the component holding that pixel is
    considered. None when no component matches the row (the labels changed since the table)."""
    code, area = int(row.class_code), int(row.area_px)
    h, w = crop.shape
    for connectivity in (2, 1):
        comps = sk_label(crop == code, connectivity=connectivity)
        ids = [int(comps[at])] if at is not None else list(np.unique(comps[comps > 0]))
        for i in ids:
            if i == 0:
                continue
            mask = comps == i
            if int(mask.sum()) != area:
                continue
            rows, cols = np.any(mask, axis=1), np.any(mask, axis=0)
            if rows[0] and rows[-1] and cols[0] and cols[-1] and h == len(rows) and w == len(cols):
                return mask
    return None


def neighbour_codes(labels: Any, row: Any, mask: np.ndarray, void: int) -> list[int]:
    """Class codes of the pixels 8-adjacent to the grain (``labels`` is the full (y, x) array)."""
    y0, x0, y1, x1 = bbox_of(row)
    H, W = labels.shape
    ey0, ex0, ey1, ex1 = max(y0 - 1, 0), max(x0 - 1, 0), min(y1 + 1, H), min(x1 + 1, W)
    ring = np.asarray(labels[ey0:ey1, ex0:ex1])
    inner = np.zeros(ring.shape, bool)
    inner[y0 - ey0 : y1 - ey0, x0 - ex0 : x1 - ex0] = mask
    grown = binary_dilation(inner, np.ones((3, 3), bool))
    around = ring[grown & ~inner]
    return sorted(int(c) for c in np.unique(around) if int(c) not in (void, int(row.class_code)))
