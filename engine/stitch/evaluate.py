"""Scores of a stitch against synthetic truth: alignment RMS, colour ΔE2000, seam visibility."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from skimage.color import deltaE_ciede2000, rgb2lab

from engine.calibrate.lens import LensModel, ideal_points
from engine.stitch.register import apply
from engine.stitch.seams import seam_boundary


def section_lens(report: dict, checkerboard: LensModel | None) -> LensModel | None:
    """The lens a section was stitched with: its report's refined lens (bundle adjustment), else the
    ``checkerboard`` fit the job was given."""
    fit = report.get("lens") or {}
    if checkerboard is None or not fit.get("refined"):
        return checkerboard
    return replace(checkerboard, dist_coeffs=np.asarray(fit["dist_coeffs"], np.float64))


def umeyama_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (2×3) taking ``src`` points to ``dst`` points."""
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    cov = b.T @ a / len(src)
    U, D, Vt = np.linalg.svd(cov)
    Sg = np.eye(2)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        Sg[1, 1] = -1
    R = U @ Sg @ Vt
    scale = np.trace(np.diag(D) @ Sg) / a.var(0).sum()
    t = md - scale * R @ ms
    return np.hstack([scale * R, t[:, None]])


def alignment_rms(
    est: list[np.ndarray | None],
    est_lens: LensModel | None,
    truth: list[np.ndarray | None],
    true_lens: LensModel,
    frame_hw: tuple[int, int],
    grid: int = 12,
    margin: float = 0.05,
) -> tuple[float, np.ndarray]:
    """RMS (px) of where a grid of raw (observed) pixels of every frame lands, after removing the global similarity.

    Each frame's grid goes through its estimated lens + transform and through the true
    lens + transform; frames missing on either side are skipped. Returns the RMS and
    the similarity (estimate → truth axes).
    """
    h, w = frame_hw
    xs = np.linspace(margin * w, (1 - margin) * w, grid)
    ys = np.linspace(margin * h, (1 - margin) * h, grid)
    raw = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)
    e_ideal = raw if est_lens is None else ideal_points(raw, est_lens)
    t_ideal = ideal_points(raw, true_lens)
    pairs = [
        (apply(me, e_ideal), apply(mt, t_ideal)) for me, mt in zip(est, truth) if me is not None and mt is not None
    ]
    P, Q = np.concatenate([p for p, _ in pairs]), np.concatenate([q for _, q in pairs])
    G = umeyama_similarity(P, Q)
    r = apply(G, P) - Q
    return float(np.sqrt(np.mean(np.sum(r**2, axis=1)))), G


def frame_errors(
    est: list[np.ndarray | None],
    est_lens: LensModel | None,
    truth: list[np.ndarray | None],
    true_lens: LensModel,
    frame_hw: tuple[int, int],
    grid: int = 12,
    margin: float = 0.05,
) -> list[float | None]:
    """Per frame, the RMS (px) of :func:`alignment_rms`'s grid after the same global similarity
    (``None`` where either side is missing)."""
    _, G = alignment_rms(est, est_lens, truth, true_lens, frame_hw, grid, margin)
    h, w = frame_hw
    xs = np.linspace(margin * w, (1 - margin) * w, grid)
    ys = np.linspace(margin * h, (1 - margin) * h, grid)
    raw = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)
    e_ideal = raw if est_lens is None else ideal_points(raw, est_lens)
    t_ideal = ideal_points(raw, true_lens)
    out: list[float | None] = []
    for me, mt in zip(est, truth):
        if me is None or mt is None:
            out.append(None)
            continue
        r = apply(G, apply(me, e_ideal)) - apply(mt, t_ideal)
        out.append(float(np.sqrt(np.mean(np.sum(r**2, axis=1)))))
    return out


def _sampled(source: np.ndarray, G: np.ndarray, keep: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, ...]:
    """Up to ``n`` random pixels where ``keep``: their rows, columns and the source ``(n, 3)`` float64 at ``G``·xy."""
    import cv2

    ys, xs = np.nonzero(keep)
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(xs), size=max(256, min(n, len(xs)) // 256 * 256), replace=len(xs) < 256)
    pts = np.stack([xs[pick], ys[pick]], -1).astype(np.float64)
    q = apply(G, pts).astype(np.float32)
    truth = cv2.remap(source, q[:, 0].reshape(256, -1), q[:, 1].reshape(256, -1), cv2.INTER_CUBIC).reshape(-1, 3)
    return ys[pick], xs[pick], truth.astype(np.float64)


def _mean_delta_e(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(deltaE_ciede2000(rgb2lab(a[None] / 255), rgb2lab(b[None] / 255))))


def sample_delta_e(
    pano: np.ndarray, source: np.ndarray, G: np.ndarray, keep: np.ndarray, n: int = 200_000, seed: int = 0
) -> float:
    """Mean ΔE2000 between panorama pixels (``(h, w, 3)``, where ``keep``) and the source at ``G``·xy."""
    ys, xs, truth = _sampled(source, G, keep, n, seed)
    return _mean_delta_e(pano[ys, xs].astype(np.float64), truth)


def noise_floor_delta_e(
    source: np.ndarray, G: np.ndarray, keep: np.ndarray, sigma: float, n: int = 200_000, seed: int = 0
) -> float:
    """Mean ΔE2000 that sensor noise alone costs on the pixels :func:`sample_delta_e` draws: the source there
    against itself plus N(0, ``sigma``) grey levels, rounded to 8 bits. A panorama built from frames with that
    noise cannot come closer without smoothing the section itself."""
    _, _, truth = _sampled(source, G, keep, n, seed)
    noisy = np.clip(np.round(truth + np.random.default_rng(seed + 1).normal(0.0, sigma, truth.shape)), 0, 255)
    return _mean_delta_e(noisy, truth)


def seam_masks(
    labels: np.ndarray, scale: float, shape: tuple[int, int], away_px: float
) -> tuple[np.ndarray, np.ndarray]:
    """Full-resolution masks: pixels on seams, and owned pixels at least ``away_px`` from any seam or edge."""
    import cv2

    h, w = shape
    b = seam_boundary(labels).astype(np.uint8)
    owned = (labels >= 0).astype(np.uint8)
    dist = cv2.distanceTransform(((b == 0) & (owned > 0)).astype(np.uint8), cv2.DIST_L2, 3) / scale
    up = lambda a, interp: cv2.resize(a, (w, h), interpolation=interp)  # noqa: E731
    on_seam = up(b * 255, cv2.INTER_NEAREST) > 0
    away = up(dist.astype(np.float32), cv2.INTER_LINEAR) >= away_px
    return on_seam, away


def gradient_ratio(pano: np.ndarray, on_seam: np.ndarray, interior: np.ndarray) -> float:
    """Mean grey gradient magnitude on seams over the mean in the interior."""
    import cv2

    g = cv2.cvtColor(pano, cv2.COLOR_RGB2GRAY).astype(np.float32)
    mag = cv2.magnitude(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1))
    return float(mag[on_seam].mean() / mag[interior].mean())


def truth_in_panorama(source: np.ndarray, G: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The source resampled onto the panorama grid (``G``: panorama → source)."""
    import cv2

    return cv2.warpAffine(
        source, G, (shape[1], shape[0]), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT
    )
