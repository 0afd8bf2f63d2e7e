"""Scorer selection and deposit scoring: what ``lode prospect map`` / ``score`` and the prospect
benchmark share.

- :func:`make_scorer`: the window scorer of a method (``mae``/``cae`` from a checkpoint, loaded where
  it runs; ``iforest``/``pca`` fitted here on sampled cells).
- :func:`read_deposits`: the deposits of a split, from a CSV with ``easting`` and ``northing``.
- :func:`evaluate_maps`: every map's metrics on those deposits, with plots, ``metrics.json`` and the
  deposits' scores and area ranks (``deposit_ranks.csv``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from engine.errors import LodeInputError

if TYPE_CHECKING:
    import pandas as pd

    from engine.prospect.score import CellScorer, CheckpointScorer

METHODS = ("mae", "cae", "iforest", "pca")
DEPOSIT_RANKS = "deposit_ranks.csv"


def make_scorer(
    method: str, stack_path: Path, model: Path | None = None, seed: int = 0, shifts: int = 2, drop_top: int = 0
) -> CheckpointScorer | CellScorer:
    """The window scorer for a method: a trained checkpoint for mae/cae (loaded where it runs, so torch
    stays out of this process), fitted here for iforest/pca. ``shifts`` (mae/cae) averages ``shifts``²
    window lattices offset by one MAE patch (8 cells); ``drop_top`` (mae/cae/pca) leaves each cell's
    largest channel errors out of its error."""
    from engine.io.torchfile import verify_in_child
    from engine.prospect import score
    from engine.prospect.stack import open_stack

    st = open_stack(stack_path)
    if method in ("mae", "cae"):
        if model is None:
            raise LodeInputError("--model", f"method {method} needs a checkpoint")
        scorer = score.CheckpointScorer.open(model, method, st.channels, st.measured, shifts, drop_top)
        verify_in_child(model, "engine.prospect.train", what="prospect checkpoint")
        return scorer
    from engine.prospect import baselines  # imports torch: only for the per-cell methods

    cells = baselines.sample_cells(st, seed=seed)
    if method == "iforest":
        return score.CellScorer(baselines.IsolationForestScorer(cells, seed=seed, channels=st.measured))
    return score.CellScorer(baselines.PCAScorer(cells, channels=st.measured, drop_top=drop_top))


def read_deposits(path: Path, split: str = "heldout") -> pd.DataFrame:
    """Deposits of ``split`` (``"all"``: every deposit) from a CSV with easting and northing columns."""
    import pandas as pd

    if not path.exists():
        raise LodeInputError(path, "deposits file not found")
    dep = pd.read_csv(path)
    if not {"easting", "northing"} <= set(dep.columns):
        raise LodeInputError(path, "needs easting and northing columns")
    if split != "all":
        if "split" not in dep.columns:
            raise LodeInputError(path, "no split column; use --split all")
        dep = dep[dep["split"] == split]
    if dep.empty:
        raise LodeInputError(path, f"no deposits in split {split!r}")
    return dep


def evaluate_maps(maps: list[Path], deposits: Path, split: str, out: Path) -> dict[str, dict[str, Any]]:
    """Score each map (named by its ``method`` attribute) on the deposits of ``split``: a prediction-area
    plot and a map per method, one success-rate plot, ``metrics.json``, and ``deposit_ranks.csv`` (the
    deposits with each map's score and area rank, ``<method>_score`` and ``<method>_area_rank``: the
    share of valid area scoring above the deposit); returns the summary per method."""
    import zarr

    from engine.io.atomic import atomic_write_text
    from engine.prospect import evaluate as ev
    from engine.prospect.score import read_score
    from engine.prospect.stack import Grid

    dep = read_deposits(deposits, split)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    table = dep.copy()
    for m in maps:
        s = read_score(m)
        attrs = zarr.open_group(m, mode="r").attrs
        grid = Grid.from_dict(cast(dict, attrs["grid"]))
        rows, cols = grid.rowcol(dep["easting"].to_numpy(), dep["northing"].to_numpy())
        name = str(attrs.get("method", m.stem))
        results[name] = ev.evaluate(s, rows, cols)
        table[f"{name}_score"], table[f"{name}_area_rank"] = ev.deposit_ranks(s, rows, cols)
        ev.plot_prediction_area(s, rows, cols, out / f"prediction_area_{name}.png", title=name)
        ev.plot_map(s, rows, cols, out / f"map_{name}.png", title=f"{name} prospectivity, {split} deposits")
    ev.plot_success(results, out / "success_rate.png")
    ev.write_report(results, out / "metrics.json", {"deposits": str(deposits), "split": split})
    atomic_write_text(out / DEPOSIT_RANKS, table.to_csv(index=False))
    return {
        k: {
            "auc": v.auc,
            "success_rate_area": v.success_rate_area,
            "capture_top10": v.capture_top10,
            "pa_prediction": v.pa_intersection_prediction,
            "pa_area": v.pa_intersection_area,
            "n": v.n_deposits,
        }
        for k, v in results.items()
    }
