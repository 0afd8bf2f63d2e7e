"""Annotation aids: scribbles → full label map, and where to annotate next.

``expand_scribbles`` spreads sparse scribbles through superpixels at several scales
(scikit-image's Felzenszwalb segments, which follow colour edges). A superpixel that
holds scribbles of one class takes that class; one whose scribbles conflict is split
among its classes by colour; the finest level that decides a pixel wins. Pixels that no
scribbled superpixel reaches are classified per compact SLIC superpixel by its mean
colour (k nearest labelled superpixels in CIELAB). Compact SLIC cells are not used to
vote: a cell straddling a grain edge would carry a scribble into the next grain.

``select_uncertain`` ranks regions (superpixels) by mean per-pixel uncertainty of a
model's class probabilities (normalised entropy) and takes the most uncertain ones
until a share of the image is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from skimage.color import rgb2lab
from skimage.segmentation import felzenszwalb, slic

if TYPE_CHECKING:
    from engine.analyze.sections import Section

UNLABELLED = 255


@dataclass(frozen=True)
class Level:
    """One superpixel scale: ``kind`` is ``felzenszwalb`` (scale, min_size) or ``slic`` (pixels per segment)."""

    kind: str
    size: float
    min_size: int = 20


DEFAULT_LEVELS: tuple[Level, ...] = (Level("felzenszwalb", 300.0, 50), Level("felzenszwalb", 60.0, 15))
"""Voting levels, coarse to fine (colour-coherent Felzenszwalb segments)."""
DEFAULT_REGIONS = Level("slic", 150.0)
"""Compact SLIC superpixels: the units that unreached pixels are classified in."""


def superpixels(image: np.ndarray, level: Level, seed: int = 0) -> np.ndarray:
    """(H, W) int64 segment ids of an (H, W, 3) uint8 image, 0..n-1."""
    if level.kind == "felzenszwalb":
        seg = felzenszwalb(image, scale=level.size, sigma=0.8, min_size=level.min_size)
    elif level.kind == "slic":
        n = max(1, int(image.shape[0] * image.shape[1] / level.size))
        seg = slic(image, n_segments=n, compactness=10.0, start_label=0, channel_axis=-1)
    else:
        raise ValueError(f"unknown superpixel kind {level.kind!r}")
    _, inv = np.unique(seg, return_inverse=True)
    return inv.reshape(seg.shape).astype(np.int64)


def _segment_means(seg: np.ndarray, feats: np.ndarray) -> np.ndarray:
    n = int(seg.max()) + 1
    cnt = np.maximum(np.bincount(seg.ravel(), minlength=n), 1)
    return np.stack(
        [np.bincount(seg.ravel(), weights=feats[..., i].ravel(), minlength=n) / cnt for i in range(feats.shape[-1])], 1
    )


def expand_scribbles(
    image: np.ndarray,
    scribbles: np.ndarray,
    levels: Sequence[Level] = DEFAULT_LEVELS,
    regions: Level = DEFAULT_REGIONS,
    unlabelled: int = UNLABELLED,
    k: int = 5,
) -> np.ndarray:
    """Full (H, W) uint8 label map from an RGB image and sparse scribbles (``unlabelled`` elsewhere).

    Args:
        image: (H, W, 3) uint8 RGB.
        scribbles: (H, W) uint8 class codes where scribbled, ``unlabelled`` elsewhere.
        levels: voting superpixel scales, coarse to fine (a finer decision overrides a coarser one).
        regions: superpixels in which pixels that no scribbled segment reaches are classified by colour.
        unlabelled: the "no scribble" value.
        k: neighbours for the colour classification of unreached superpixels.
    """
    if image.ndim != 3 or image.shape[-1] != 3 or image.shape[:2] != scribbles.shape:
        raise ValueError(f"image {image.shape} and scribbles {scribbles.shape} do not match")
    marked = scribbles != unlabelled
    if not marked.any():
        raise ValueError("no scribbles")
    codes = np.unique(scribbles[marked])
    code_index = np.full(256, -1, np.int64)
    code_index[codes] = np.arange(len(codes))
    K = len(codes)
    lab = rgb2lab(image)
    out = np.full(scribbles.shape, -1, np.int64)
    for level in levels:
        seg = superpixels(image, level)
        n = int(seg.max()) + 1
        votes = np.bincount(seg[marked] * K + code_index[scribbles[marked]], minlength=n * K).reshape(n, K)
        nclass = (votes > 0).sum(1)
        decided = nclass == 1
        seg_class = np.where(decided, votes.argmax(1), -1)
        px = decided[seg]
        out[px] = seg_class[seg[px]]
        conflicted = nclass > 1
        if conflicted.any():
            out = _split_conflicts(out, seg, conflicted, votes, lab, marked, scribbles, code_index)
    missing = out < 0
    if missing.any():
        out[missing] = _classify_by_colour(superpixels(image, regions), lab, out, missing, k)
    out[marked] = code_index[scribbles[marked]]
    return codes[out].astype(np.uint8)


def _split_conflicts(
    out: np.ndarray,
    seg: np.ndarray,
    conflicted: np.ndarray,
    votes: np.ndarray,
    lab: np.ndarray,
    marked: np.ndarray,
    scribbles: np.ndarray,
    code_index: np.ndarray,
) -> np.ndarray:
    """Pixels of conflicted segments take the segment's scribble class nearest in colour."""
    K = votes.shape[1]
    sel = conflicted[seg]
    m = marked & sel
    seg_m = seg[m]
    cls_m = code_index[scribbles[m]]
    key = seg_m * K + cls_m
    n = votes.shape[0]
    cnt = np.maximum(np.bincount(key, minlength=n * K), 1)
    means = np.stack([np.bincount(key, weights=lab[m][:, i], minlength=n * K) / cnt for i in range(3)], 1)
    means = means.reshape(n, K, 3)
    ys, xs = np.nonzero(sel)
    s = seg[ys, xs]
    d = ((lab[ys, xs][:, None, :] - means[s]) ** 2).sum(-1)
    d[votes[s] == 0] = np.inf
    out[ys, xs] = d.argmin(1)
    return out


def _classify_by_colour(seg: np.ndarray, lab: np.ndarray, out: np.ndarray, missing: np.ndarray, k: int) -> np.ndarray:
    from sklearn.neighbors import KNeighborsClassifier

    n = int(seg.max()) + 1
    means = _segment_means(seg, lab)
    known = np.bincount(seg[~missing], minlength=n) > 0
    seg_known = np.full(n, -1, np.int64)
    # majority decided class of each segment's already-labelled pixels
    lab_px = ~missing
    K = int(out.max()) + 1
    v = np.bincount(seg[lab_px] * K + out[lab_px], minlength=n * K).reshape(n, K)
    seg_known[known] = v[known].argmax(1)
    clf = KNeighborsClassifier(n_neighbors=min(k, int(known.sum())), weights="distance")
    clf.fit(means[known], seg_known[known])
    todo = np.unique(seg[missing])
    pred = np.full(n, -1, np.int64)
    pred[todo] = clf.predict(means[todo])
    return pred[seg[missing]]


UNCERTAINTY_MEASURES = ("least_confidence", "margin", "entropy")


def uncertainty(probabilities: np.ndarray, measure: str = "least_confidence") -> np.ndarray:
    """Per-pixel uncertainty in [0, 1] of (C, H, W) class probabilities (dequantised: see
    :func:`engine.io.ome.dequantise`; each pixel is normalised to sum 1).

    ``least_confidence`` is 1 - max p (the model's own probability of being wrong, so a
    region's mean is its expected error rate), ``margin`` 1 - (p1 - p2), ``entropy`` the
    entropy normalised by log C.
    """
    p = probabilities.astype(np.float32)
    p = p / np.maximum(p.sum(0, keepdims=True), 1e-6)
    if measure == "least_confidence":
        return 1.0 - p.max(0)
    if measure == "margin":
        top = np.sort(p, axis=0)
        return 1.0 - (top[-1] - top[-2]) if p.shape[0] > 1 else np.zeros(p.shape[1:], np.float32)
    if measure == "entropy":
        ent = -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(0)
        return ent / np.log(max(p.shape[0], 2))
    raise ValueError(f"unknown uncertainty measure {measure!r} (one of {UNCERTAINTY_MEASURES})")


@dataclass(frozen=True)
class Selection:
    mask: np.ndarray  # (H, W) bool, pixels to annotate next
    regions: np.ndarray  # (H, W) int64 region ids
    ranked: np.ndarray  # region ids, most uncertain first, only those selected
    scores: np.ndarray  # mean uncertainty of each selected region

    @property
    def share(self) -> float:
        return float(self.mask.mean())


def select_uncertain(
    probabilities: np.ndarray,
    share: float = 0.1,
    image: np.ndarray | None = None,
    region_px: float = 150.0,
    measure: str = "least_confidence",
) -> Selection:
    """The most uncertain superpixels that together cover at most ``share`` of the image.

    Regions are SLIC superpixels of ``image`` ((H, W, 3) uint8) when given, else of the
    probabilities themselves; they are taken in order of mean uncertainty (the share of
    uncertainty per annotated pixel), skipping any that would overrun the budget.
    """
    if not 0 < share <= 1:
        raise ValueError(f"share must be in (0, 1], got {share}")
    unc = uncertainty(probabilities, measure)
    H, W = unc.shape
    n = max(1, int(H * W / region_px))
    if image is not None:
        regions = slic(image, n_segments=n, compactness=10.0, start_label=0, channel_axis=-1)
    else:
        p = probabilities.astype(np.float32).transpose(1, 2, 0)
        p /= max(float(p.max()), 1e-6)
        regions = slic(p, n_segments=n, compactness=0.1, start_label=0, channel_axis=-1)
    _, inv = np.unique(regions, return_inverse=True)
    regions = inv.reshape(H, W).astype(np.int64)
    nreg = int(regions.max()) + 1
    size = np.bincount(regions.ravel(), minlength=nreg)
    score = np.bincount(regions.ravel(), weights=unc.ravel(), minlength=nreg) / np.maximum(size, 1)
    budget = share * H * W
    chosen, used = [], 0
    for r in np.argsort(-score, kind="stable"):
        if used + size[r] <= budget:
            chosen.append(r)
            used += size[r]
    ranked = np.array(chosen, np.int64)
    keep = np.zeros(nreg, bool)
    keep[ranked] = True
    return Selection(keep[regions], regions, ranked, score[ranked])


def level_arrays(section: Section, max_pixels: int) -> tuple[np.ndarray, np.ndarray | None, int]:
    """A section's probabilities (c, y, x) float32, dequantised, and its RGB image (y, x, 3) uint8 or
    None, at the finest pyramid level within ``max_pixels`` (then subsampled by powers of 2 until
    within), and the downsampling factor from level 0."""
    import zarr

    from engine.errors import LodeInputError
    from engine.io.ome import dequantise

    node = section.image["probabilities"]
    levels = sorted(int(k) for k in node.array_keys() if k.isdigit()) if isinstance(node, zarr.Group) else [0]
    if not levels:
        raise LodeInputError(f"{section.source}/probabilities", "no probability arrays")
    H, W = section.shape
    k = next((k for k in levels if (H >> k) * (W >> k) <= max_pixels), levels[-1])
    prob_arr = node[str(k)] if isinstance(node, zarr.Group) else node
    if not isinstance(prob_arr, zarr.Array):
        raise LodeInputError(f"{section.source}/probabilities/{k}", "is not an array")
    if prob_arr.ndim != 3:
        raise LodeInputError(f"{section.source}/probabilities", f"expected (c, y, x), got shape {prob_arr.shape}")
    stride = 1
    while (prob_arr.shape[1] // stride) * (prob_arr.shape[2] // stride) > max_pixels:
        stride *= 2
    prob = dequantise(prob_arr, np.asarray(prob_arr[:, ::stride, ::stride]))
    img = None
    level = section.image.get(str(k))
    if isinstance(level, zarr.Array) and level.shape[0] == 3:
        cand = np.asarray(level[:, ::stride, ::stride]).transpose(1, 2, 0)
        if cand.shape[:2] == prob.shape[1:] and cand.dtype == np.uint8:
            img = np.ascontiguousarray(cand)
    return prob, img, (2**k) * stride
