"""Buffer precision, recall and F1 between predicted and true line sets.

Precision is the share of predicted line length within ``tolerance`` of a true line, recall the
share of true line length within ``tolerance`` of a predicted line (both exact vector overlays).
"""

from __future__ import annotations

from collections.abc import Sequence

import shapely


def _union(lines: Sequence[shapely.Geometry]) -> shapely.Geometry:
    return shapely.union_all([ln for ln in lines if not ln.is_empty]) if lines else shapely.MultiLineString()


def buffer_scores(
    pred: Sequence[shapely.Geometry], truth: Sequence[shapely.Geometry], tolerance: float
) -> dict[str, float]:
    """``{"precision", "recall", "f1"}`` at a buffer ``tolerance`` (map units).

    An empty prediction has precision 0 against a non-empty truth (and F1 0).
    """
    p, t = _union(pred), _union(truth)
    p_len, t_len = p.length, t.length
    precision = p.intersection(t.buffer(tolerance)).length / p_len if p_len > 0 else (1.0 if t_len == 0 else 0.0)
    recall = t.intersection(p.buffer(tolerance)).length / t_len if t_len > 0 else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1)}
