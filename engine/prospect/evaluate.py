"""How the field scores a prospectivity map against known deposits.

Every measure is over valid cells only (finite score); a deposit in an invalid
cell is counted as not evaluable and reported. Each deposit's *area rank* is the
share of valid area scoring above it (ties count half); from it:

- ROC AUC: deposit cells as positives, every other valid cell as negative
  (equal to scikit-learn's ``roc_auc_score`` on the same cells).
- Success-rate curve: share of deposits captured against share of area, and
  its area (1 - mean area rank).
- Capture at 10 %: share of deposits whose area rank is within the top 10 %.
- Prediction-area plot: against the score threshold, the share of deposits
  predicted and the share of area occupied; their intersection (P = 1 - A) and
  the normalised density P/A there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from engine.io.atomic import atomic_write_json


@dataclass
class ProspectMetrics:
    auc: float
    success_rate_area: float
    capture_top10: float
    pa_intersection_prediction: float
    pa_intersection_area: float
    pa_normalised_density: float
    n_deposits: int
    n_deposits_invalid: int
    area_ranks: list[float] = field(default_factory=list)


def deposit_cells(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Flat indices of deposit cells inside the grid (duplicates kept once)."""
    rows, cols = np.asarray(rows, dtype=int), np.asarray(cols, dtype=int)
    inside = (rows >= 0) & (rows < shape[0]) & (cols >= 0) & (cols < shape[1])
    return np.unique(np.ravel_multi_index((rows[inside], cols[inside]), shape))


def area_ranks(score: np.ndarray, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Area rank of each deposit cell (share of valid cells scoring higher, ties half)
    and the mask of deposit cells that are valid."""
    flat = np.asarray(score, dtype=np.float64).ravel()
    ok = np.isfinite(flat[cells])
    s = flat[cells[ok]]
    sorted_valid = np.sort(flat[np.isfinite(flat)])
    n = sorted_valid.size
    above = n - np.searchsorted(sorted_valid, s, side="right")
    ties = np.searchsorted(sorted_valid, s, side="right") - np.searchsorted(sorted_valid, s, side="left")
    return (above + 0.5 * ties) / n, ok


def deposit_ranks(score: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each deposit's score and area rank, in the deposits' order (NaN for one outside the grid or on an
    invalid cell; deposits sharing a cell share its rank)."""
    score = np.asarray(score)
    rows, cols = np.asarray(rows, dtype=int), np.asarray(cols, dtype=int)
    inside = np.flatnonzero((rows >= 0) & (rows < score.shape[0]) & (cols >= 0) & (cols < score.shape[1]))
    cells = np.ravel_multi_index((rows[inside], cols[inside]), score.shape)
    at = np.full(rows.shape, np.nan)
    at[inside] = score.ravel()[cells]
    ranks, ok = area_ranks(score, cells)
    rank = np.full(rows.shape, np.nan)
    rank[inside[ok]] = ranks
    return at, rank


def roc_auc(score: np.ndarray, cells: np.ndarray) -> float:
    """ROC AUC with deposit cells as positives and all other valid cells as negatives."""
    flat = np.asarray(score, dtype=np.float64).ravel()
    pos_mask = np.zeros(flat.size, dtype=bool)
    pos_mask[cells] = True
    valid = np.isfinite(flat)
    pos = np.sort(flat[pos_mask & valid])
    neg = np.sort(flat[~pos_mask & valid])
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    below = np.searchsorted(neg, pos, side="left")
    equal = np.searchsorted(neg, pos, side="right") - below
    return float((below.sum() + 0.5 * equal.sum()) / (pos.size * neg.size))


def prediction_area(score: np.ndarray, cells: np.ndarray, n_thresholds: int = 200) -> dict[str, np.ndarray]:
    """Share of deposits predicted and of area occupied at each score threshold."""
    flat = np.asarray(score, dtype=np.float64).ravel()
    valid = flat[np.isfinite(flat)]
    dep = flat[cells]
    dep = dep[np.isfinite(dep)]
    thresholds = np.quantile(valid, np.linspace(0, 1, n_thresholds))
    sv = np.sort(valid)
    sd = np.sort(dep)
    area = (sv.size - np.searchsorted(sv, thresholds, side="left")) / sv.size
    pred = (sd.size - np.searchsorted(sd, thresholds, side="left")) / max(sd.size, 1)
    return {"threshold": thresholds, "prediction": pred, "area": area}


def _pa_intersection(pa: dict[str, np.ndarray]) -> tuple[float, float]:
    diff = pa["prediction"] - (1 - pa["area"])
    i = int(np.argmin(np.abs(diff)))
    return float(pa["prediction"][i]), float(pa["area"][i])


def evaluate(score: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> ProspectMetrics:
    """All measures for one map and one set of deposit cells."""
    score = np.asarray(score)
    cells = deposit_cells(rows, cols, score.shape)
    ranks, ok = area_ranks(score, cells)
    pa = prediction_area(score, cells)
    p, a = _pa_intersection(pa)
    return ProspectMetrics(
        auc=roc_auc(score, cells[ok]),
        success_rate_area=float(1 - ranks.mean()) if ranks.size else float("nan"),
        capture_top10=float((ranks <= 0.10).mean()) if ranks.size else float("nan"),
        pa_intersection_prediction=p,
        pa_intersection_area=a,
        pa_normalised_density=float(p / a) if a > 0 else float("nan"),
        n_deposits=int(ok.sum()),
        n_deposits_invalid=int((~ok).sum()),
        area_ranks=[float(r) for r in ranks],
    )


def success_curve(ranks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Step curve (area share, deposit share captured) from area ranks."""
    r = np.sort(np.asarray(ranks))
    x = np.concatenate([[0.0], r, [1.0]])
    y = np.concatenate([[0.0], np.arange(1, r.size + 1) / max(r.size, 1), [1.0]])
    return x, y


def plot_success(results: dict[str, ProspectMetrics], path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    for name, m in results.items():
        x, y = success_curve(np.array(m.area_ranks))
        ax.step(x, y, where="post", label=f"{name} (area {m.success_rate_area:.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.axvline(0.1, color="grey", lw=0.6)
    ax.set(
        xlabel="share of area (ranked by score)",
        ylabel="share of deposits captured",
        xlim=(0, 1),
        ylim=(0, 1),
        title="Success-rate curves",
    )
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_prediction_area(
    score: np.ndarray, rows: np.ndarray, cols: np.ndarray, path: str | Path, title: str = ""
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = deposit_cells(rows, cols, np.asarray(score).shape)
    pa = prediction_area(score, cells)
    p, a = _pa_intersection(pa)
    q = np.linspace(0, 1, pa["threshold"].size)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.plot(q, 100 * pa["prediction"], "C0", label="deposits predicted (%)")
    ax.set(xlabel="score threshold (quantile of area)", ylabel="deposits predicted (%)", ylim=(0, 100))
    ax2 = ax.twinx()
    ax2.plot(q, 100 * pa["area"], "C1", label="area occupied (%)")
    ax2.set_ylim(100, 0)
    ax2.set_ylabel("area occupied (%)")
    ax.set_title(f"{title} P-A intersection: {100 * p:.0f}% deposits / {100 * a:.0f}% area")
    fig.legend(loc="upper left", bbox_to_anchor=(0.12, 0.86), fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_map(
    score: np.ndarray, rows: np.ndarray, cols: np.ndarray, path: str | Path, title: str = "", max_side: int = 1024
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    step = max(1, int(np.ceil(max(score.shape) / max_side)))
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.imshow(score[::step, ::step], cmap="magma", interpolation="nearest")
    ax.scatter(
        np.asarray(cols) / step, np.asarray(rows) / step, s=14, facecolors="none", edgecolors="cyan", linewidths=0.8
    )
    ax.set_title(title)
    ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(results: dict[str, ProspectMetrics], out: str | Path, extra: dict | None = None) -> Path:
    """JSON with every measure per map (area ranks included), written atomically."""
    out = Path(out)
    atomic_write_json(out, {"maps": {k: asdict(v) for k, v in results.items()}, **(extra or {})}, indent=2)
    return out
