"""Pairwise registration: full-resolution SIFT + RANSAC similarity.

A pair ``(i, j)`` yields ``M`` (2×3), the similarity that maps pixels of frame ``j`` to
pixels of frame ``i``. Only the expected overlap (from a prior transform) is searched.
The RANSAC fit (refined on its inliers) is kept as it is: a phase-correlation refinement
after it moved textured pairs of photographs by up to 0.66 px away from the truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np


@dataclass(frozen=True)
class RegisterOptions:
    ransac_px: float = 2.0
    ratio: float = 0.8
    min_inliers: int = 24
    min_inlier_ratio: float = 0.15
    max_features: int = 3000
    search_margin: float = 0.05
    max_deviation: float = 0.1
    max_rotation_deg: float = 3.0
    max_scale_dev: float = 0.03


@dataclass
class Edge:
    """A registered (or failed) pair.

    ``pts_i``/``pts_j``: RANSAC inliers; ``all_i``/``all_j``: every ratio-test match,
    kept so residuals can be judged against the global solution rather than the
    pairwise model that selected them.
    """

    i: int
    j: int
    ok: bool
    reason: str = ""
    M: np.ndarray | None = None
    matches: int = 0
    inliers: int = 0
    keypoints: tuple[int, int] = (0, 0)
    fit_rms_px: float = float("nan")
    pts_i: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    pts_j: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    all_i: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    all_j: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))


def to_grey(img: np.ndarray) -> np.ndarray:
    return img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)


def apply(M: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ M[:, :2].T + M[:, 2]


def invert(M: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(M)


def compose(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """``A ∘ B`` for 2×3 affine matrices."""
    return (np.vstack([A, [0, 0, 1]]) @ np.vstack([B, [0, 0, 1]]))[:2]


def translation(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0, dx], [0, 1.0, dy]])


def _rect_pts(hw: tuple[int, int]) -> np.ndarray:
    h, w = hw
    return np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float64)


def overlap_box(
    M: np.ndarray, hw_i: tuple[int, int], hw_j: tuple[int, int], margin: float
) -> tuple[int, int, int, int] | None:
    """Box ``(x0, y0, x1, y1)`` in frame ``i`` covered by frame ``j`` under ``M``, grown by ``margin``·size."""
    c = apply(M, _rect_pts(hw_j))
    h, w = hw_i
    g = margin * max(h, w)
    x0, y0 = max(0, int(c[:, 0].min() - g)), max(0, int(c[:, 1].min() - g))
    x1, y1 = min(w, int(np.ceil(c[:, 0].max() + g)) + 1), min(h, int(np.ceil(c[:, 1].max() + g)) + 1)
    if x1 - x0 < 16 or y1 - y0 < 16:
        return None
    return x0, y0, x1, y1


def detect(
    grey: np.ndarray, mask: np.ndarray | None, box: tuple[int, int, int, int] | None, max_features: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """SIFT keypoints ``(n, 2)`` (frame coordinates) and descriptors inside ``box``."""
    x0, y0, x1, y1 = box if box else (0, 0, grey.shape[1], grey.shape[0])
    sift = cv2.SIFT_create(nfeatures=max_features)  # type: ignore[attr-defined]  # in OpenCV, not its stubs
    m = None if mask is None else np.ascontiguousarray(mask[y0:y1, x0:x1])
    kps, desc = sift.detectAndCompute(np.ascontiguousarray(grey[y0:y1, x0:x1]), m)
    pts = np.array([k.pt for k in kps], np.float64).reshape(-1, 2) + (x0, y0)
    return pts, desc


def match(desc_i: np.ndarray | None, desc_j: np.ndarray | None, ratio: float) -> np.ndarray:
    """Index pairs ``(k, 2)`` passing Lowe's ratio test (mutual nearest not required).

    Exact (brute-force) nearest neighbours: FLANN's randomised trees draw from the process's
    ``rand()``, so the same pair matched differently from run to run.
    """
    if desc_i is None or desc_j is None or len(desc_i) < 2 or len(desc_j) < 2:
        return np.zeros((0, 2), int)
    knn = cv2.BFMatcher(cv2.NORM_L2).knnMatch(desc_j, desc_i, k=2)
    good = [(m[0].trainIdx, m[0].queryIdx) for m in knn if len(m) == 2 and m[0].distance < ratio * m[1].distance]
    return np.array(good, int).reshape(-1, 2)


def similarity_ok(M: np.ndarray, prior: np.ndarray | None, hw_j: tuple[int, int], opts: RegisterOptions) -> str:
    s = float(np.sqrt(abs(np.linalg.det(M[:, :2]))))
    ang = float(np.degrees(np.arctan2(M[1, 0], M[0, 0])))
    if abs(ang) > opts.max_rotation_deg:
        return f"rotation {ang:.2f} deg"
    if abs(s - 1) > opts.max_scale_dev:
        return f"scale {s:.4f}"
    if prior is not None:
        c = np.array([[(hw_j[1] - 1) / 2, (hw_j[0] - 1) / 2]])
        dev = float(np.linalg.norm(apply(M, c) - apply(prior, c)))
        if dev > opts.max_deviation * max(hw_j):
            return f"{dev:.1f} px from the expected position"
    return ""


def register_pair(
    i: int,
    j: int,
    img_i: np.ndarray,
    valid_i: np.ndarray,
    img_j: np.ndarray,
    valid_j: np.ndarray,
    prior: np.ndarray | None,
    opts: RegisterOptions = RegisterOptions(),
) -> Edge:
    """Register frame ``j`` onto frame ``i``; ``prior`` (j→i) bounds the search, or ``None`` for whole frames."""
    gi, gj = to_grey(img_i), to_grey(img_j)
    hw_i, hw_j = gi.shape[:2], gj.shape[:2]
    box_i = box_j = None
    if prior is not None:
        box_i = overlap_box(prior, hw_i, hw_j, opts.search_margin)
        box_j = overlap_box(invert(prior), hw_j, hw_i, opts.search_margin)
        if box_i is None or box_j is None:
            return Edge(i, j, False, "no expected overlap")
    pi, di = detect(gi, valid_i, box_i, opts.max_features)
    pj, dj = detect(gj, valid_j, box_j, opts.max_features)
    edge = Edge(i, j, False, keypoints=(len(pi), len(pj)))
    if min(len(pi), len(pj)) < opts.min_inliers:
        edge.reason = f"too few features ({len(pi)}, {len(pj)})"
        return edge
    mt = match(di, dj, opts.ratio)
    edge.matches = len(mt)
    if len(mt) < opts.min_inliers:
        edge.reason = f"too few matches ({len(mt)})"
        return edge
    a, b = pi[mt[:, 0]], pj[mt[:, 1]]
    M, inl = cv2.estimateAffinePartial2D(
        b, a, method=cv2.RANSAC, ransacReprojThreshold=opts.ransac_px, maxIters=5000, confidence=0.999, refineIters=20
    )
    if M is None:
        edge.reason = "RANSAC found no model"
        return edge
    inl = inl.ravel().astype(bool)
    edge.inliers = int(inl.sum())
    if edge.inliers < opts.min_inliers or edge.inliers < opts.min_inlier_ratio * len(mt):
        edge.reason = f"too few inliers ({edge.inliers} of {len(mt)})"
        return edge
    why = similarity_ok(M, prior, hw_j, opts)
    if why:
        edge.reason = why
        return edge
    edge.all_i, edge.all_j = a, b
    a, b = a[inl], b[inl]
    edge.M, edge.pts_i, edge.pts_j, edge.ok = M, a, b, True
    edge.fit_rms_px = float(np.sqrt(np.mean(np.sum((apply(M, b) - a) ** 2, axis=1))))
    return edge
