"""Bad-input catalogue, point samples in ``lode prospect stack``: an unknown column, a CRS other than
the grid's, NaN coordinates, an empty file, and point-file options on a grid layer each fail with exit
2 and one line naming the file, and leave an earlier output as it was."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.jobs.test_bad_input import earlier_output, fails_naming  # noqa: F401 (a fixture)
from tests.jobs.test_bad_input_grids import CELL, NORTH, SIZE, WEST, region, stack_argv


def points_spec(tmp_path: Path, csv: str, **layer) -> tuple[Path, Path]:
    """A stack spec of one grid layer and one geochem layer from ``samples.csv`` (text ``csv``)."""

    def add(spec):
        spec["layers"].append({"name": "Cu", "path": "samples.csv", "kind": "geochem", **layer})

    spec = region(tmp_path, {"mag": None}, add)
    (spec.parent / "samples.csv").write_text(csv)
    return spec, spec.parent / "samples.csv"


def samples_csv(rows: int = 50, crs: str = "EPSG:32633", nan_at: int | None = None) -> str:
    rng = np.random.default_rng(0)
    lines = ["x,y,crs,Cu"]
    for i in range(rows):
        x, y = WEST + rng.uniform(0, SIZE * CELL), NORTH - rng.uniform(0, SIZE * CELL)
        lines.append(f"{'' if i == nan_at else x},{y},{crs},{rng.uniform(1, 100)}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    "csv, layer, reason",
    [
        (samples_csv(), {"column": "Au"}, "no column 'Au'"),
        (samples_csv(crs="EPSG:32634"), {}, "samples are in EPSG:32634, the stack's grid in EPSG:32633"),
        (samples_csv(nan_at=7), {}, "1 samples have NaN or infinite coordinates (rows [7])"),
        ("", {}, "empty point file"),
        ("x,y,crs,Cu\n", {}, "no samples in point file"),
    ],
    ids=["unknown column", "other crs", "nan coordinates", "empty", "header only"],
)
def test_bad_point_file(tmp_path, earlier_output, capsys, csv, layer, reason):
    spec, samples = points_spec(tmp_path, csv, **layer)
    out = earlier_output / "stack.zarr"
    err = fails_naming(stack_argv(spec, out), samples, capsys, earlier_output, reason)
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_point_options_on_a_grid_layer_and_a_categorical_point_layer(tmp_path, earlier_output, capsys):
    def edit(spec):
        spec["layers"][0]["max_distance"] = 3
        spec["layers"].append({"name": "geology", "path": "samples.csv", "kind": "categorical"})

    spec = region(tmp_path, {"mag": None}, edit)
    (spec.parent / "samples.csv").write_text(samples_csv())
    err = fails_naming(stack_argv(spec, earlier_output / "s.zarr"), spec, capsys, earlier_output, "max_distance")
    assert "apply to point files" in err and "can be geochem or continuous layers, not categorical" in err
    assert len(err.strip().splitlines()) == 1
