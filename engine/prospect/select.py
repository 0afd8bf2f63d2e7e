"""Choosing the window scorer of a prospectivity method (``lode prospect map`` and the benchmark)."""

from __future__ import annotations

from pathlib import Path

from engine.errors import LodeInputError
from engine.prospect.score import CellScorer, CheckpointScorer, WindowScorer


def make_scorer(method: str, stack_path: Path, model: Path | None = None, seed: int = 0, shifts: int = 2,
                drop_top: int = 0) -> WindowScorer | CheckpointScorer:
    """The window scorer for a method: a trained checkpoint for mae/cae (loaded where it runs),
    fitted here for iforest/pca. ``shifts`` (mae/cae) averages ``shifts``² window lattices offset
    by one MAE patch (8 cells); ``drop_top`` (mae/cae/pca) leaves each cell's largest channel
    errors out of its error."""
    from engine.io.torchfile import verify_in_child
    from engine.prospect.stack import open_stack

    st = open_stack(stack_path)
    if method in ("mae", "cae"):
        if model is None:
            raise LodeInputError("--model", f"method {method} needs a checkpoint")
        scorer = CheckpointScorer.open(model, method, st.channels, st.measured, shifts, drop_top)
        verify_in_child(model, "engine.prospect.train", what="prospect checkpoint")
        return scorer
    from engine.prospect import baselines  # imports torch, which a driver shipping a checkpoint scorer must not

    cells = baselines.sample_cells(st, seed=seed)
    if method == "iforest":
        return CellScorer(baselines.IsolationForestScorer(cells, seed=seed, channels=st.measured))
    return CellScorer(baselines.PCAScorer(cells, channels=st.measured, drop_top=drop_top))
