"""Graph-cut seams refined at full resolution in a band around the low-resolution seam (OpenCV).

The low-res cut (:func:`~engine.stitch.seams.seam_labels`) decides which frames meet where. Each
low-res pixel within ``band + 1`` low-res px of another frame's pixels is given to the pair of its
owner and the nearest such frame (:func:`seam_partners`, one map for the whole panorama), so the
bands of a junction's pairs never overlap. Each pair is cut again at full resolution in its band,
over the band's box (a strip) only: inside the band either frame may own a pixel it covers,
outside it every pixel keeps its low-res owner. The cost is the colour difference alone
(``COST_COLOR``): at full resolution the gradient-normalised cost of the low-res cut makes a
sharp-edged speck as cheap to cut through as texture. The strips make a full-resolution owner map
that is -1 outside every band (renderers keep the low-res rule there); each of its pixels is
written by one pair at most, so it depends on neither order nor timing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from engine.stitch.register import compose, translation
from engine.stitch.warp import warp

BAND = 2
"""Half-width (low-res px) of the band around a low-res seam that is cut again at full resolution."""


@dataclass(frozen=True)
class Strip:
    """A pair's refined owners ``owner`` ``(h, w)`` int16 at panorama offset ``(y0, x0)``, -1 outside its band."""

    y0: int
    x0: int
    owner: np.ndarray


@dataclass(frozen=True)
class PairFrame:
    """A corrected frame ``image`` ``(fh, fw, 3)`` uint8, ``valid`` ``(fh, fw)`` uint8, its
    frame→panorama transform ``M`` (2×3 or 3×3) and per-channel ``gain`` ``(3,)``."""

    index: int
    image: np.ndarray
    valid: np.ndarray
    M: np.ndarray
    gain: np.ndarray


def seam_partners(labels: np.ndarray, band: int = BAND) -> np.ndarray:
    """For each pixel of ``labels`` ``(Lh, Lw)`` within ``band + 1`` px of a pixel of another frame,
    the nearest such frame; -1 elsewhere ``(Lh, Lw)`` int16."""
    out = np.full(labels.shape, -1, np.int16)
    reach = band + 1
    for a in np.unique(labels[labels >= 0]):
        ys, xs = np.nonzero(labels == a)
        y0, x0 = max(int(ys.min()) - reach - 1, 0), max(int(xs.min()) - reach - 1, 0)
        crop = labels[y0 : int(ys.max()) + reach + 2, x0 : int(xs.max()) + reach + 2]
        other = (crop >= 0) & (crop != a)
        if not other.any():
            continue
        dist, nearest = cv2.distanceTransformWithLabels(
            (~other).astype(np.uint8), cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL
        )
        near = (crop == a) & (dist <= reach + 0.01)
        out[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]][near] = crop[other][nearest[near] - 1]
    return out


def seam_pairs(labels: np.ndarray, partners: np.ndarray) -> list[tuple[int, int]]:
    """The pairs ``(a, b)``, ``a < b``, of frames with a band (``partners``: :func:`seam_partners`)."""
    near = partners >= 0
    a, b = labels[near], partners[near]
    return sorted({(int(i), int(j)) for i, j in zip(np.minimum(a, b), np.maximum(a, b))})


def _nearest(n: int, scale: float, n_low: int) -> np.ndarray:
    """The low-res index nearest each of ``n`` full-res pixel centres along one axis."""
    return np.clip(np.floor(scale * (np.arange(n) + 0.5)).astype(np.int64), 0, n_low - 1)


def _span(idx: np.ndarray, lo: int, hi: int) -> tuple[int, int]:
    inside = np.flatnonzero((idx >= lo) & (idx < hi))
    return int(inside[0]), int(inside[-1]) + 1


def pair_band(
    labels: np.ndarray, partners: np.ndarray, scale: float, a: int, b: int, shape: tuple[int, int]
) -> tuple[int, int, np.ndarray, np.ndarray]:
    """The strip of pair ``(a, b)`` in the panorama of ``shape`` ``(H, W)``: its offset ``(y0, x0)``,
    the upsampled low-res owners ``(h, w)`` int16 and the band ``(h, w)`` bool (the pixels of ``a``
    whose partner is ``b`` and of ``b`` whose partner is ``a``, in ``labels`` at ``scale``), plus a
    low-res px around it."""
    mine = ((labels == a) & (partners == b)) | ((labels == b) & (partners == a))
    ys, xs = np.nonzero(mine)
    lh, lw = labels.shape
    ly0, lx0 = max(int(ys.min()) - 1, 0), max(int(xs.min()) - 1, 0)
    ly1, lx1 = min(int(ys.max()) + 2, lh), min(int(xs.max()) + 2, lw)
    rows, cols = _nearest(shape[0], scale, lh), _nearest(shape[1], scale, lw)
    y0, y1 = _span(rows, ly0, ly1)
    x0, x1 = _span(cols, lx0, lx1)
    at = np.ix_(rows[y0:y1], cols[x0:x1])
    return y0, x0, labels[at], mine[at]


def refine_pair(
    labels: np.ndarray,
    partners: np.ndarray,
    scale: float,
    fa: PairFrame,
    fb: PairFrame,
    shape: tuple[int, int],
    interpolation: int = cv2.INTER_CUBIC,
    cost: str = "COST_COLOR",
) -> Strip:
    """The full-resolution graph cut between frames ``fa`` and ``fb`` in their band (:func:`pair_band`)."""
    y0, x0, low, near = pair_band(labels, partners, scale, fa.index, fb.index, shape)
    h, w = low.shape
    images, masks = [], []
    for f in (fa, fb):
        F = compose(translation(-x0, -y0), f.M)
        images.append(warp(f.image, F, (w, h), interpolation).astype(np.float32) * f.gain.astype(np.float32))
        valid = warp(f.valid, F, (w, h), cv2.INTER_NEAREST) > 0
        masks.append((valid & ((low == f.index) | near)).astype(np.uint8) * 255)
    ms: Sequence[Any] = [cv2.UMat(m) for m in masks]
    cut = cv2.detail.GraphCutSeamFinder(cost).find(images, [(0, 0), (0, 0)], ms)  # type: ignore[arg-type]
    owner = np.full((h, w), -1, np.int16)
    for f, m in zip((fa, fb), cut):
        owner[near & (m.get() > 0)] = f.index
    return Strip(y0, x0, owner)


def paste(target: Any, strip: Strip) -> None:
    """Write ``strip``'s band into the owner map ``target`` ``(H, W)`` int16 (an array or a zarr array)."""
    h, w = strip.owner.shape
    at = (slice(strip.y0, strip.y0 + h), slice(strip.x0, strip.x0 + w))
    cur = np.array(target[at])
    put = strip.owner >= 0
    cur[put] = strip.owner[put]
    target[at] = cur


def refine_seams(
    labels: np.ndarray, scale: float, frames: Sequence[PairFrame | None], shape: tuple[int, int], band: int = BAND
) -> np.ndarray:
    """The whole refined owner map ``shape`` ``(H, W)`` int16 in memory (tests, small panoramas;
    sections refine pair by pair into their store)."""
    out = np.full(shape, -1, np.int16)
    partners = seam_partners(labels, band)
    for a, b in seam_pairs(labels, partners):
        fa, fb = frames[a], frames[b]
        if fa is not None and fb is not None:
            paste(out, refine_pair(labels, partners, scale, fa, fb, shape))
    return out
