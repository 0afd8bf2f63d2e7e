"""Pairwise registration: full-resolution SIFT (or, optionally, LoFTR) + RANSAC similarity or homography.

A pair ``(i, j)`` yields ``M``, the transform that maps pixels of frame ``j`` to pixels of frame
``i``: a similarity (2×3) by default, a homography (3×3, ``M[2, 2] = 1``) with
``RegisterOptions.model = "homography"`` (stages that tilt). Only the expected overlap (from a
prior transform) is searched.
``RegisterOptions.matcher = "loftr"`` finds the candidate matches with kornia's LoFTR
(:mod:`engine.stitch.learned`, weights from a local file) instead of SIFT + the ratio test.
The RANSAC fit (refined on its inliers) is kept as it is: a phase-correlation refinement
after it moved textured pairs of photographs by up to 0.66 px away from the truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np

Model = Literal["similarity", "homography"]
MODELS: tuple[str, ...] = ("similarity", "homography")


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
    intensity_fallback: bool = True
    min_correlation: float = 0.6
    fallback_points: int = 8
    matcher: Literal["sift", "loftr"] = "sift"
    matcher_weights: str | None = None
    min_confidence: float = 0.5
    model: Model = "similarity"
    max_perspective: float = 0.02

    def __post_init__(self) -> None:
        if self.matcher not in ("sift", "loftr"):
            raise ValueError(f"matcher must be 'sift' or 'loftr', not {self.matcher!r}")
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {', '.join(MODELS)}, not {self.model!r}")


@dataclass
class Edge:
    """A registered (or failed) pair.

    ``pts_i``/``pts_j``: RANSAC inliers; ``all_i``/``all_j``: every ratio-test match,
    kept so residuals can be judged against the global solution rather than the
    pairwise model that selected them. An edge registered from intensities
    (``method == "intensity"``) carries a grid of its overlap mapped through ``M`` instead,
    and its ECC ``correlation``.
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
    method: str = "features"
    correlation: float = float("nan")
    pts_i: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    pts_j: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    all_i: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    all_j: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))


def to_grey(img: np.ndarray) -> np.ndarray:
    return img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)


def apply(M: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Points ``(n, 2)`` through ``M``: 2×3 affine, or 3×3 projective (with the divide)."""
    out = pts @ M[:, :2].T + M[:, 2]
    return out if len(M) == 2 else out[:, :2] / out[:, 2:]


def projective(M: np.ndarray) -> np.ndarray:
    """``M`` as a 3×3 matrix with ``[2, 2] = 1`` (a 2×3 affine gains the row ``[0, 0, 1]``)."""
    return np.vstack([M, [0, 0, 1]]) if len(M) == 2 else M / M[2, 2]


def invert(M: np.ndarray) -> np.ndarray:
    """The inverse of a 2×3 affine (2×3) or of a 3×3 projective matrix (3×3)."""
    return cv2.invertAffineTransform(M) if len(M) == 2 else projective(np.linalg.inv(M))


def compose(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """``A ∘ B``: 2×3 when both are 2×3 affine, else 3×3 projective."""
    AB = projective(A) @ projective(B)
    return AB[:2] if len(A) == len(B) == 2 else projective(AB)


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
    """SIFT keypoints ``(n, 2)`` (frame coordinates) and descriptors inside ``box``, in a fixed order.

    OpenCV's threads find keypoints in an order that varies from run to run, and RANSAC's samples
    and the global solve's points follow that order: they are sorted by position, scale and angle.
    """
    x0, y0, x1, y1 = box if box else (0, 0, grey.shape[1], grey.shape[0])
    sift = cv2.SIFT_create(nfeatures=max_features)  # type: ignore[attr-defined]  # in OpenCV, not its stubs
    m = None if mask is None else np.ascontiguousarray(mask[y0:y1, x0:x1])
    kps, desc = sift.detectAndCompute(np.ascontiguousarray(grey[y0:y1, x0:x1]), m)
    order = sorted(range(len(kps)), key=lambda k: (kps[k].pt[1], kps[k].pt[0], kps[k].size, kps[k].angle))
    pts = np.array([kps[k].pt for k in order], np.float64).reshape(-1, 2) + (x0, y0)
    return pts, None if desc is None else desc[order]


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


def local_similarity(M: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """The similarity (2×3) closest to ``M`` at points ``pts`` ``(n, 2)``: ``M`` itself when 2×3.

    A homography's upper-left 2×2 is not its local scale and rotation: its translation, times the
    perspective terms, is folded into it."""
    return M if len(M) == 2 else fit_similarity(pts, apply(M, pts))


def similarity_ok(
    M: np.ndarray, prior: np.ndarray | None, hw_j: tuple[int, int], opts: RegisterOptions, pts: np.ndarray | None = None
) -> str:
    """Why ``M`` (j → i) is implausible for a stage move, or ``""``: rotation, scale, the distance from ``prior``
    and, for a homography, how far it bends away from a similarity. A homography is judged at the points
    ``pts`` of frame ``j`` it was fitted to (the frame's corners when ``None``): it is used there only, and a
    fit to a narrow overlap is loose elsewhere."""
    S = local_similarity(M, _rect_pts(hw_j) if pts is None else pts)
    if len(M) == 3:
        q = _rect_pts(hw_j) if pts is None else pts
        bend = float(np.abs(apply(M, q) - apply(S, q)).max())
        if bend > opts.max_perspective * max(hw_j):
            return f"perspective bends the overlap by {bend:.1f} px"
    s = float(np.sqrt(abs(np.linalg.det(S[:, :2]))))
    ang = float(np.degrees(np.arctan2(S[1, 0], S[0, 0])))
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


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (2×3) taking points ``src`` to ``dst`` (no outliers)."""
    x, y = src[:, 0], src[:, 1]
    one, zero = np.ones_like(x), np.zeros_like(x)
    A = np.concatenate([np.stack([x, -y, one, zero], 1), np.stack([y, x, zero, one], 1)])
    (a, b, tx, ty), *_ = np.linalg.lstsq(A, np.concatenate([dst[:, 0], dst[:, 1]]), rcond=None)
    return np.array([[a, -b, tx], [b, a, ty]])


def register_intensity(
    gi: np.ndarray, valid_i: np.ndarray, gj: np.ndarray, valid_j: np.ndarray, prior: np.ndarray, opts: RegisterOptions
) -> tuple[np.ndarray, float, np.ndarray] | str:
    """Similarity ``j → i`` from the pixels of the expected overlap, for overlaps too smooth for keypoints.

    Phase correlation of the overlap at ``prior`` finds the shift; ECC (``cv2.findTransformECC``,
    affine, invariant to gain and offset) refines it on the overlap of frame ``i``, and the affine
    is projected onto the similarity that best reproduces it over that overlap. Returns
    ``(M, correlation, grid_j)`` (``grid_j``: points of the overlap in frame ``j``) or why it failed.
    """
    hw_i, hw_j = gi.shape[:2], gj.shape[:2]
    box = overlap_box(prior, hw_i, hw_j, 0.0)
    if box is None:
        return "no expected overlap"
    x0, y0, x1, y1 = box
    size = (x1 - x0, y1 - y0)
    to_box = compose(translation(-x0, -y0), prior)
    ref = gi[y0:y1, x0:x1].astype(np.float32)
    mov = cv2.warpAffine(gj.astype(np.float32), to_box, size, flags=cv2.INTER_LINEAR)
    seen = (cv2.warpAffine(valid_j, to_box, size, flags=cv2.INTER_NEAREST) > 0) & (valid_i[y0:y1, x0:x1] > 0)
    if seen.sum() < 1024 or float(ref[seen].std()) < 1.0:
        return "no texture in the overlap"
    ref = np.where(seen, ref - ref[seen].mean(), 0).astype(np.float32)
    mov = np.where(seen, mov - mov[seen].mean(), 0).astype(np.float32)
    (dx, dy), _ = cv2.phaseCorrelate(ref, mov, cv2.createHanningWindow(size, cv2.CV_32F))
    M = compose(translation(-dx, -dy), prior)
    box = overlap_box(M, hw_i, hw_j, 0.0)
    if box is None:
        return "no overlap at the correlation peak"
    x0, y0, x1, y1 = box
    size = (x1 - x0, y1 - y0)
    j_valid = cv2.warpAffine(valid_j, compose(translation(-x0, -y0), M), size, flags=cv2.INTER_NEAREST)
    mask = cv2.erode(((j_valid > 0) & (valid_i[y0:y1, x0:x1] > 0)).astype(np.uint8), np.ones((9, 9), np.uint8))
    if mask.sum() < 1024:
        return "no overlap at the correlation peak"
    W0 = compose(invert(M), translation(x0, y0)).astype(np.float32)
    crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 200, 1e-6)
    try:
        cc, W = cv2.findTransformECCWithMask(
            gi[y0:y1, x0:x1].astype(np.float32),
            gj.astype(np.float32),
            mask,
            cv2.erode(valid_j, np.ones((5, 5), np.uint8)),
            W0,
            cv2.MOTION_AFFINE,
            crit,
            5,
        )
    except cv2.error as exc:
        return f"ECC did not converge ({str(exc).strip().splitlines()[-1][:80]})"
    if not np.isfinite(cc) or cc < opts.min_correlation:
        return f"correlation {cc:.2f} < {opts.min_correlation}"
    ys, xs = np.nonzero(mask)
    k = opts.fallback_points
    gx = np.linspace(xs.min(), xs.max(), k)
    gy = np.linspace(ys.min(), ys.max(), k)
    grid = np.stack(np.meshgrid(gx, gy), -1).reshape(-1, 2)
    grid = grid[mask[grid[:, 1].astype(int), grid[:, 0].astype(int)] > 0]
    grid_j = apply(np.asarray(W, np.float64), grid)
    return fit_similarity(grid_j, grid + (x0, y0)), float(cc), grid_j


def _register_features(edge: Edge, gi, valid_i, gj, valid_j, prior, opts: RegisterOptions) -> str:
    """SIFT + RANSAC on the expected overlaps; fills ``edge`` and returns ``""``, or why it failed."""
    hw_i, hw_j = gi.shape[:2], gj.shape[:2]
    box_i = box_j = None
    if prior is not None:
        box_i = overlap_box(prior, hw_i, hw_j, opts.search_margin)
        box_j = overlap_box(invert(prior), hw_j, hw_i, opts.search_margin)
        if box_i is None or box_j is None:
            return "no expected overlap"
    if opts.matcher == "loftr":
        from engine.stitch.learned import load_loftr, loftr_matches

        net = load_loftr(str(opts.matcher_weights), _device())
        a, b = loftr_matches(net, gi, valid_i, box_i, gj, valid_j, box_j, opts.min_confidence)
        edge.keypoints = (len(a), len(b))
        edge.matches = len(a)
        if len(a) < opts.min_inliers:
            return f"too few LoFTR matches ({len(a)})"
    else:
        pi, di = detect(gi, valid_i, box_i, opts.max_features)
        pj, dj = detect(gj, valid_j, box_j, opts.max_features)
        edge.keypoints = (len(pi), len(pj))
        if min(len(pi), len(pj)) < opts.min_inliers:
            return f"too few features ({len(pi)}, {len(pj)})"
        mt = match(di, dj, opts.ratio)
        edge.matches = len(mt)
        if len(mt) < opts.min_inliers:
            return f"too few matches ({len(mt)})"
        a, b = pi[mt[:, 0]], pj[mt[:, 1]]
    M, inl = _ransac(b, a, opts)
    if M is None:
        return "RANSAC found no model"
    edge.inliers = int(inl.sum())
    if edge.inliers < opts.min_inliers or edge.inliers < opts.min_inlier_ratio * len(a):
        return f"too few inliers ({edge.inliers} of {len(a)})"
    why = similarity_ok(M, prior, hw_j, opts, b[inl])
    if why:
        return why
    edge.all_i, edge.all_j = a, b
    edge.M, edge.pts_i, edge.pts_j, edge.ok = M, a[inl], b[inl], True
    edge.fit_rms_px = float(np.sqrt(np.mean(np.sum((apply(M, b[inl]) - a[inl]) ** 2, axis=1))))
    return ""


def _ransac(src: np.ndarray, dst: np.ndarray, opts: RegisterOptions) -> tuple[np.ndarray | None, np.ndarray]:
    """RANSAC of ``opts.model`` taking ``src`` ``(n, 2)`` to ``dst`` ``(n, 2)``, refined on its inliers
    (OpenCV's Levenberg–Marquardt): ``M`` (2×3 or 3×3, or ``None``) and the inlier mask ``(n,)``."""
    if opts.model == "similarity":
        M, inl = cv2.estimateAffinePartial2D(
            src,
            dst,
            method=cv2.RANSAC,
            ransacReprojThreshold=opts.ransac_px,
            maxIters=5000,
            confidence=0.999,
            refineIters=20,
        )
    else:
        M, inl = cv2.findHomography(src, dst, cv2.RANSAC, opts.ransac_px, maxIters=5000, confidence=0.999)
    if M is None:
        return None, np.zeros(len(src), bool)
    return (M if len(M) == 2 else projective(M)), inl.ravel().astype(bool)


def _device() -> str:
    """This process's device: CUDA only where Ray gave the task a GPU (and torch sees it)."""
    import ray

    from engine.raster.runner import local_device

    return local_device(ray.is_initialized() and bool(ray.get_gpu_ids()))


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
    """Register frame ``j`` onto frame ``i``; ``prior`` (j→i) bounds the search, or ``None`` for whole frames.

    Where keypoints fail and a ``prior`` is given, the overlap's intensities are registered
    instead (:func:`register_intensity`); that fit is a similarity, as a 3×3 matrix under the homography model.
    """
    gi, gj = to_grey(img_i), to_grey(img_j)
    edge = Edge(i, j, False)
    why = _register_features(edge, gi, valid_i, gj, valid_j, prior, opts)
    if not why or prior is None or not opts.intensity_fallback or why == "no expected overlap":
        edge.reason = why
        return edge
    got = register_intensity(gi, valid_i, gj, valid_j, prior, opts)
    if isinstance(got, str):
        edge.reason = f"{why}; intensity: {got}"
        return edge
    M, cc, grid_j = got
    bad = similarity_ok(M, prior, gj.shape[:2], opts)
    if bad:
        edge.reason = f"{why}; intensity: {bad}"
        return edge
    if opts.model == "homography":
        M = projective(M)
    grid_i = apply(M, grid_j)
    edge.M, edge.ok, edge.method, edge.correlation = M, True, "intensity", cc
    edge.pts_i = edge.all_i = grid_i
    edge.pts_j = edge.all_j = grid_j
    edge.fit_rms_px = 0.0
    edge.reason = f"registered by intensity ({why})"
    return edge
