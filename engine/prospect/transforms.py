"""Per-layer transforms that put source layers of different kinds on one footing.

Geochemistry is compositional and log-normal: ``log10`` (optionally centred
log-ratios across a group of elements) then robust scaling. Continuous layers
(magnetics, radiometrics) get robust scaling. Categorical layers (geology) become
one-hot channels. Lines (faults) become distance to the nearest trace.
All functions keep NaN where the input is NaN.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from scipy import ndimage

CLIP = 10.0


def log10_positive(values: np.ndarray, floor: float | None = None) -> np.ndarray:
    """``log10`` of concentrations; non-positive values are clamped to ``floor``
    (default: half the smallest positive value, the usual detection-limit rule)."""
    v = np.asarray(values, dtype=np.float32)
    finite = np.isfinite(v)
    if floor is None:
        pos = v[finite & (v > 0)]
        floor = float(pos.min()) / 2 if pos.size else 1e-6
    out = np.full(v.shape, np.nan, dtype=np.float32)
    out[finite] = np.log10(np.maximum(v[finite], floor))
    return out


def centred_log_ratio(logs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Centred log-ratio across a group of ``log10`` element layers (NaN if any part is NaN)."""
    stack = np.stack([np.asarray(x, dtype=np.float32) for x in logs])
    centre = stack.mean(axis=0)
    return [x - centre for x in stack]


def robust_stats(values: np.ndarray, max_samples: int = 1_000_000) -> tuple[float, float]:
    """Median and inter-quartile range of the finite values (strided subsample when large)."""
    v = np.asarray(values)
    step = max(1, int(np.ceil(np.sqrt(v.size / max_samples))))
    sample = v[::step, ::step] if v.ndim == 2 else v[::step]
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return 0.0, 1.0
    q1, med, q3 = np.percentile(sample, [25, 50, 75])
    iqr = float(q3 - q1)
    return float(med), iqr if iqr > 1e-12 else float(np.std(sample) or 1.0)


def robust_scale(
    values: np.ndarray, stats: tuple[float, float] | None = None
) -> tuple[np.ndarray, tuple[float, float]]:
    """``(x - median) / IQR``, clipped to ``±CLIP``; returns the scaled layer and the stats used."""
    med, iqr = stats if stats is not None else robust_stats(values)
    out = (np.asarray(values, dtype=np.float32) - np.float32(med)) / np.float32(iqr)
    np.clip(out, -CLIP, CLIP, out=out)
    return out, (med, iqr)


def one_hot(codes: np.ndarray, classes: Iterable[int]) -> np.ndarray:
    """One channel per class code: (H, W) -> (K, H, W) float32; NaN where ``codes`` is NaN."""
    c = np.asarray(codes)
    nan = ~np.isfinite(c) if c.dtype.kind == "f" else np.zeros(c.shape, dtype=bool)
    out = np.stack([(c == k).astype(np.float32) for k in classes])
    out[:, nan] = np.nan
    return out


def distance_to_mask(trace: np.ndarray, cell_size: float) -> np.ndarray:
    """Euclidean distance (map units) from every cell to the nearest ``True`` cell."""
    if not trace.any():
        return np.full(trace.shape, np.inf, dtype=np.float32)
    return (ndimage.distance_transform_edt(~trace) * cell_size).astype(np.float32)


def distance_feature(distance: np.ndarray, cell_size: float) -> np.ndarray:
    """``log1p(distance in cells)``: resolves the near field, compresses the far field."""
    return np.log1p(np.asarray(distance, dtype=np.float32) / np.float32(cell_size))
