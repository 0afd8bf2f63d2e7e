"""Lens (Brown–Conrady) calibration from checkerboard frames, and point undistortion.

A corrected frame keeps the camera matrix of the lens (``newCameraMatrix = K``), so
its pixel grid is the ideal pinhole grid of the same size. Frames are undistorted by
:mod:`engine.calibrate.capture`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from engine.errors import LodeInputError
from engine.io.atomic import atomic_write_json


@dataclass(frozen=True)
class LensModel:
    """Camera matrix ``K`` (3×3), distortion ``(k1, k2, p1, p2, k3)`` and frame size ``(h, w)``."""

    camera_matrix: np.ndarray
    dist_coeffs: np.ndarray
    frame_hw: tuple[int, int]
    rms_px: float | None = None
    views: int | None = None

    def to_dict(self) -> dict:
        return {
            "camera_matrix": np.asarray(self.camera_matrix).tolist(),
            "dist_coeffs": np.asarray(self.dist_coeffs).ravel().tolist(),
            "frame_hw": list(self.frame_hw),
            "rms_px": self.rms_px,
            "views": self.views,
        }

    @classmethod
    def from_dict(cls, d: dict, source: str | Path = "lens") -> LensModel:
        try:
            K = np.asarray(d["camera_matrix"], dtype=np.float64)
            dist = np.asarray(d["dist_coeffs"], dtype=np.float64).ravel()
            hw = tuple(int(v) for v in d["frame_hw"])
        except (KeyError, TypeError, ValueError) as exc:
            raise LodeInputError(source, f"not a lens model: {exc}") from exc
        if K.shape != (3, 3) or dist.size not in (4, 5, 8, 12, 14) or len(hw) != 2 or not np.all(np.isfinite(K)):
            raise LodeInputError(source, "lens model needs a finite 3×3 camera_matrix, 4–14 dist_coeffs, frame_hw")
        return cls(K, dist, hw, d.get("rms_px"), d.get("views"))

    @classmethod
    def identity(cls, frame_hw: tuple[int, int]) -> LensModel:
        h, w = frame_hw
        K = np.array([[w, 0, (w - 1) / 2], [0, w, (h - 1) / 2], [0, 0, 1]], dtype=np.float64)
        return cls(K, np.zeros(5), frame_hw)

    @property
    def is_identity(self) -> bool:
        return not np.any(self.dist_coeffs)

    def save(self, path: str | Path) -> None:
        atomic_write_json(Path(path), self.to_dict(), indent=1)

    @classmethod
    def load(cls, path: str | Path) -> LensModel:
        p = Path(path)
        try:
            return cls.from_dict(json.loads(p.read_text()), p)
        except (OSError, json.JSONDecodeError) as exc:
            raise LodeInputError(p, f"cannot read lens model: {exc}") from exc


def find_corners(image: np.ndarray, pattern: tuple[int, int], detect_px: int = 1280) -> np.ndarray | None:
    """Sub-pixel inner corners ``(n, 2)`` of a checkerboard, or ``None`` if not found.

    The pattern is found on a copy at most ``detect_px`` wide, then every corner is
    refined on the full-resolution frame.
    """
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    scale = min(1.0, detect_px / max(grey.shape))
    small = grey if scale == 1.0 else cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    flags = cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE
    ok, corners = cv2.findChessboardCorners(small, pattern, flags=flags)
    if not ok:
        return None
    corners = ((corners + 0.5) / scale - 0.5).astype(np.float32)
    win = max(5, int(round(5 / scale)))
    crit = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, 1e-4)
    corners = cv2.cornerSubPix(grey, corners, (win, win), (-1, -1), crit)
    return corners.reshape(-1, 2)


def fit_lens(
    images: Sequence[np.ndarray],
    pattern: tuple[int, int] = (9, 6),
    source: str | Path = "checkerboard",
    min_views: int = 4,
    fix_k3: bool = True,
) -> LensModel:
    """Fit ``K`` and ``(k1, k2, p1, p2, k3)`` from checkerboard views (``pattern`` = inner corners).

    ``k3`` is held at 0 by default: it is poorly constrained beyond the board's reach
    and lets the corners of the frame run away (OpenCV's advice for ordinary lenses).

    Raises:
        LodeInputError: fewer than ``min_views`` views show the whole pattern.
    """
    if not images:
        raise LodeInputError(source, "no checkerboard frames")
    hw = images[0].shape[:2]
    obj = np.zeros((pattern[0] * pattern[1], 3), np.float32)
    obj[:, :2] = np.mgrid[1 : pattern[0] + 1, 1 : pattern[1] + 1].T.reshape(-1, 2)
    obj_pts, img_pts = [], []
    for img in images:
        if img.shape[:2] != hw:
            raise LodeInputError(source, f"checkerboard frames differ in size: {img.shape[:2]} vs {hw}")
        c = find_corners(img, pattern)
        if c is not None:
            obj_pts.append(obj)
            img_pts.append(c.astype(np.float32))
    if len(img_pts) < min_views:
        raise LodeInputError(
            source, f"checkerboard {pattern} found in {len(img_pts)} of {len(images)} frames; need {min_views}"
        )
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # OpenCV's threaded solver differs between runs in the 12th digit
    try:
        rms, K, dist, _, _ = cv2.calibrateCamera(
            obj_pts, img_pts, (hw[1], hw[0]), None, None, flags=cv2.CALIB_FIX_K3 if fix_k3 else 0
        )
    finally:
        cv2.setNumThreads(threads)
    return LensModel(K, dist.ravel()[:5], (int(hw[0]), int(hw[1])), float(rms), len(img_pts))


def ideal_points(points: np.ndarray, lens: LensModel) -> np.ndarray:
    """Ideal (undistorted) pixel coordinates ``(n, 2)`` of observed pixel coordinates."""
    pts = np.asarray(points, np.float64).reshape(-1, 1, 2)
    if lens.is_identity:
        return pts.reshape(-1, 2)
    crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 30, 1e-10)
    K = lens.camera_matrix
    return cv2.undistortPoints(pts, K, lens.dist_coeffs, None, None, K, crit).reshape(-1, 2)
