"""Blend kernels for overlapping windows: one function, three kinds."""

from __future__ import annotations

from typing import Literal

import numpy as np

BlendKind = Literal["gaussian", "sin2", "flat"]


def blend_weights(
    window: int, kind: BlendKind = "gaussian", sigma_scale: float = 0.125, peak_floor: float | None = None
) -> np.ndarray:
    """Weights ``(window, window)`` float32 for blending overlapping windows.

    - ``gaussian``: MONAI's ``gaussian`` importance map (sigma = ``sigma_scale * window``,
      clamped below at the map's minimum or 1e-3, whichever is larger, so no pixel gets zero
      weight); with ``peak_floor`` the map is instead divided by its peak and clamped below at
      ``peak_floor`` (the lineament U-Net's convention, 1e-3);
    - ``sin2``: ``sin²(π (i + ½) / window)`` per axis; on a lattice of stride ``window / 2`` the
      weights of the windows covering a cell sum to one;
    - ``flat``: ones (windows that do not overlap).
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if kind == "gaussian":
        sigma = np.float32(window * sigma_scale)
        x = np.arange(-(window - 1) / 2.0, (window - 1) / 2.0 + 1, dtype=np.float32)
        g = np.exp(x**2 / (np.float32(-2) * sigma**2)).astype(np.float32)
        w = np.outer(g, g)
        if peak_floor is not None:
            return np.maximum(w / w.max(), np.float32(peak_floor)).astype(np.float32)
        return np.maximum(w, max(float(w.min()), 1e-3)).astype(np.float32)
    if kind == "sin2":
        t = np.sin(np.pi * (np.arange(window) + 0.5) / window) ** 2
        return np.outer(t, t).astype(np.float32)
    if kind == "flat":
        return np.ones((window, window), np.float32)
    raise ValueError(f"unknown blend kind {kind!r} (gaussian, sin2 or flat)")
