"""Flat-field and dark-frame correction.

``corrected = (raw - dark) / flat`` (applied by :mod:`engine.calibrate.capture`) where
``flat`` is the dark-subtracted white reference, fitted by a smooth 2-D polynomial (vignetting is smooth; noise and dust
are not) and normalised to 1 at the optical centre, so the centre keeps its level
and the falloff towards the corners is undone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from engine.errors import LodeInputError
from engine.io.atomic import atomic_path


@dataclass(frozen=True)
class FlatField:
    """Per-pixel, per-channel gain ``flat`` (h, w, c) float32 and ``dark`` offset (h, w, c) float32."""

    flat: np.ndarray
    dark: np.ndarray

    @property
    def frame_hw(self) -> tuple[int, int]:
        return self.flat.shape[:2]

    @cached_property
    def key(self) -> str:
        """A hash of ``flat`` and ``dark``, computed once and pickled with the field."""
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.flat).tobytes())
        h.update(np.ascontiguousarray(self.dark).tobytes())
        return h.hexdigest()

    def save(self, path: str | Path) -> None:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, flat=self.flat, dark=self.dark)

    @classmethod
    def load(cls, path: str | Path) -> FlatField:
        p = Path(path)
        try:
            with np.load(p) as z:
                flat, dark = z["flat"].astype(np.float32), z["dark"].astype(np.float32)
        except (OSError, KeyError, ValueError) as exc:
            raise LodeInputError(p, f"cannot read flat field: {exc}") from exc
        if flat.shape != dark.shape or flat.ndim != 3 or not np.all(np.isfinite(flat)) or flat.min() <= 0:
            raise LodeInputError(p, "flat field needs finite positive flat and dark of the same (h, w, c) shape")
        return cls(flat, dark)


def _mean_stack(frames: Sequence[np.ndarray], source: str | Path, hw: tuple[int, ...] | None) -> np.ndarray:
    if not frames:
        raise LodeInputError(source, "no frames")
    shape = frames[0].shape if hw is None else hw
    acc = np.zeros(shape, np.float64)
    for f in frames:
        if f.shape != shape:
            raise LodeInputError(source, f"frame of shape {f.shape}, expected {shape}")
        acc += f
    return (acc / len(frames)).astype(np.float32)


def smooth_surface(img: np.ndarray, degree: int = 4, step: int = 4) -> np.ndarray:
    """Least-squares 2-D polynomial of ``degree`` fitted to each channel of ``img`` (h, w, c)."""
    h, w, c = img.shape
    terms = [(i, j) for i in range(degree + 1) for j in range(degree + 1 - i)]  # x**i * y**j

    def scaled(t: np.ndarray, n: int) -> np.ndarray:
        return t / max(n - 1, 1) * 2 - 1

    ys, xs = np.mgrid[0:h:step, 0:w:step]
    u, v = scaled(xs.ravel(), w), scaled(ys.ravel(), h)
    basis = np.stack([u**i * v**j for i, j in terms], axis=-1)
    coef, *_ = np.linalg.lstsq(basis, img[::step, ::step].reshape(-1, c), rcond=None)
    # Over the whole frame, as separable terms: rows (h, degree+1) @ coefficients (j, i) @ columns (i, w).
    powers = np.arange(degree + 1)
    rows, cols = scaled(np.arange(h), h)[:, None] ** powers, scaled(np.arange(w), w)[:, None] ** powers
    grid = np.zeros((degree + 1, degree + 1, c))
    grid[tuple(np.array(terms).T)] = coef
    return np.stack([rows @ grid[:, :, k].T @ cols.T for k in range(c)], axis=-1).astype(np.float32)


def fit_flat(
    flat_frames: Sequence[np.ndarray],
    dark_frames: Sequence[np.ndarray] | None = None,
    degree: int = 4,
    source: str | Path = "calibration",
) -> FlatField:
    """Average white references (and darks), subtract the dark, fit a smooth surface, normalise at the centre."""
    flat = _mean_stack(flat_frames, Path(source) / "flat", None)
    if flat.ndim == 2:
        flat = flat[..., None]
    dark = (
        _mean_stack(dark_frames, Path(source) / "dark", None).reshape(flat.shape)
        if dark_frames
        else np.zeros_like(flat)
    )
    gain = flat - dark
    if degree:
        gain = smooth_surface(gain, degree)
    h, w = gain.shape[:2]
    cy, cx, r = h // 2, w // 2, max(2, min(h, w) // 20)
    centre = gain[cy - r : cy + r, cx - r : cx + r].reshape(-1, gain.shape[2]).mean(axis=0)
    if np.any(centre <= 0) or gain.min() <= 0:
        raise LodeInputError(Path(source) / "flat", "flat frames are not brighter than the dark frames")
    return FlatField((gain / centre).astype(np.float32), dark.astype(np.float32))
